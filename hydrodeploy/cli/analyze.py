"""`hydrodeploy analyze WORKLOAD.yaml [--cluster FILE] [--resume RUN_DIR]`: the optimizer loop.

Deploys the workload's protocol, sweeps closed-loop clients until throughput saturates, profiles
every node (per-rule CPU, perf on the bottleneck, messages), names the bottleneck, chooses the
rewrite (or combination, with partition counts placed by MILP within the workload's machine
budget and SLO) predicted to relieve it most, checks it against the base program in simulation,
redeploys and measures it, keeps it when throughput rose by the workload's minimum gain and rolls
it back otherwise; it stops when nothing is predicted to help or the iterations run out.

Writes a run directory (``<reports>/<timestamp>_<name>-analyze/``): every point, profile, perf
flame graph, the program and chain of rewrites of each iteration, predicted against measured,
summary.json, report.md and report.html. ``--resume RUN_DIR`` continues an interrupted run.
Exit 0; 2 on a bad workload, cluster or run directory; 1 when a process dies; 130/143 when
interrupted (the run directory can be resumed).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "analyze",
        help="deploy, profile, find the bottleneck, rewrite, redeploy: repeat; report and capacity plan",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("workload", metavar="WORKLOAD.yaml", nargs="?")
    p.add_argument(
        "--cluster",
        metavar="FILE",
        help="cluster file (default: the workload's, else the built-in equal of clusters/local.yaml)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the analysis in this run directory")
    p.add_argument("--reports", metavar="DIR", default="reports", help="where run directories go (default reports/)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from hydrodeploy.cli._analyzing import analyze_workload

    return analyze_workload(args)
