"""`hydrodeploy report RUN_DIR`: re-render a run's report from its files alone.

Writes summary.json, the plots, report.md and report.html into RUN_DIR from what the run left
there (points, profiles, iterations, decisions); nothing is measured or simulated.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "report",
        help="re-render a run directory's summary, plots and report from its files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from hydrodeploy.report.analysis import ReportError, render, write_summary

    path = Path(args.run_dir)
    if not path.is_dir() or not (path / "iterations").is_dir():
        raise ReportError(f"{path}: not a run directory (no iterations/)")
    write_summary(path)
    report = render(path)
    print(f"wrote {path / 'summary.json'}, {path / 'report.md'} and {report}")
    return 0
