"""`hydrodeploy explain FILE.ded [--component C]`: which rewrites apply, and why the others don't.

For each component, lists every decoupling and partitioning rewrite tried: ``+`` applicable, with
what would move or the partition key; ``-`` rejected, with the reason and the source location.
"""

from __future__ import annotations

import argparse
from typing import Any

from hydrodeploy.errors import HydrodeployError
from hydrodeploy.language import load_program
from hydrodeploy.rewrites.base import Applicable
from hydrodeploy.rewrites.explain import Attempt, explain


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "explain",
        help="list the rewrites that apply to each component, and why the others do not",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE.ded")
    p.add_argument("--component", metavar="C", help="only this component")
    p.add_argument("--applicable", action="store_true", help="only list the rewrites that apply")
    p.set_defaults(run=run)


def _line(attempt: Attempt, only_applicable: bool) -> list[str]:
    result = attempt.result
    what = f" of {', '.join(attempt.rules)}" if attempt.rules else ""
    if isinstance(result, Applicable):
        lines = [f"    + {result.rewrite}{what}: {result.summary}"]
        lines += [f"        {d}" for d in result.details]
        return lines
    if only_applicable:
        return []
    where = f"  [{result.span}]" if result.span is not None else ""
    return [f"    - {result.rewrite}{what}: {result.reason}{where}"]


def run(args: argparse.Namespace) -> int:
    program = load_program(args.file)
    if args.component is not None and program.component(args.component) is None:
        names = ", ".join(c.name for c in program.components)
        raise HydrodeployError(f"{args.file}: no component '{args.component}' (components: {names})")
    for report in explain(program, args.component):
        instances = f"{report.instances} instance{'s' if report.instances != 1 else ''}"
        rules = f"{report.rules} rule{'s' if report.rules != 1 else ''}"
        print(f"{report.component} ({instances}, {rules})")
        print("  decoupling")
        lines = [line for a in report.decoupling for line in _line(a, args.applicable)]
        print("\n".join(lines) if lines else "    (no candidate)")
        print("  partitioning")
        lines = [line for a in report.partitioning for line in _line(a, args.applicable)]
        print("\n".join(lines) if lines else "    (none)")
    return 0
