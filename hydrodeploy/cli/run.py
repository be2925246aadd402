"""`hydrodeploy run WORKLOAD.yaml [--cluster FILE] [--quick]`: deploy once, sweep closed-loop
clients until throughput plateaus, and write a run directory.

The run directory ``<reports>/<timestamp>_<name>/`` gets spec.yaml, results.csv (one row per
point, written as each point finishes), per-point data and every process's log under
iterations/00/, throughput_latency.png and summary.json; ``<reports>/latest`` points to it.
Interrupting the run (Ctrl-C, SIGTERM) stops every process and keeps the points measured so far.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "run",
        help="deploy a workload's protocol, sweep closed-loop clients, write a run directory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("workload", metavar="WORKLOAD.yaml")
    p.add_argument(
        "--cluster",
        metavar="FILE",
        help="cluster file (default: the workload's, else the built-in equal of clusters/local.yaml)",
    )
    p.add_argument("--quick", action="store_true", help="short windows and few client counts (under a minute)")
    p.add_argument("--reports", metavar="DIR", default="reports", help="where run directories go (default reports/)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # deploying, measuring and plotting pull in asyncio, pydantic, matplotlib and rich: import
    # them only when this verb runs, so that the other verbs start fast
    from hydrodeploy.cli._running import run_workload

    return run_workload(args)
