"""The `hydrodeploy` command: one module per verb, dispatched from here.

This is the only place that prints or exits. A :class:`HydrodeployError` is a user mistake: it is
printed as one located message and the exit code is 2. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hydrodeploy import __version__
from hydrodeploy.cli import analyze as analyze_cmd
from hydrodeploy.cli import check as check_cmd
from hydrodeploy.cli import explain as explain_cmd
from hydrodeploy.cli import plan as plan_cmd
from hydrodeploy.cli import report as report_cmd
from hydrodeploy.cli import rewrite as rewrite_cmd
from hydrodeploy.cli import run as run_cmd
from hydrodeploy.cli import simulate as simulate_cmd
from hydrodeploy.cli import teardown as teardown_cmd
from hydrodeploy.errors import HydrodeployError, LocatedError

VERBS = (check_cmd, simulate_cmd, run_cmd, explain_cmd, rewrite_cmd, teardown_cmd, analyze_cmd, report_cmd, plan_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hydrodeploy",
        description="Deploy, profile and automatically scale protocols written in sugared Dedalus.",
    )
    parser.add_argument("--version", action="version", version=f"hydrodeploy {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        verb.register(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except LocatedError as err:
        print(err.render(), file=sys.stderr)
        return 2
    except HydrodeployError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
