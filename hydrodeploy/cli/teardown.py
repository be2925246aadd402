"""`hydrodeploy teardown [RUN_DIR]`: remove whatever a crashed run left behind.

Reads RUN_DIR/cluster.json (default: reports/latest): on SSH hosts, stops the run's processes
still running (SIGTERM to each process group, SIGKILL after the grace period) and removes its
remote run directories; on GCP, deletes the instances labelled with the run id. Safe to repeat.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "teardown",
        help="remove what a crashed run left on its hosts (processes, remote files, GCP instances)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?", default="reports/latest", help="the run directory (default reports/latest)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from hydrodeploy.deploy.teardown import teardown

    for line in teardown(Path(args.run_dir)):
        print(line)
    return 0
