"""`hydrodeploy plan RUN_DIR --throughput X [--p99 MS] [--machine NAME] [-o DIR]`: capacity planning.

From an analyze run's measurements, the cheapest configuration (fewest machines; cost per hour
from the machine's price) predicted to sustain X requests/s, optionally with p99 at most MS in
simulation: the machines per component, the total, the cost per hour and the measurements the
prediction rests on. ``--machine`` names a profile of clusters/machines.yaml (default: the run's
own cluster machine). The configuration is written as a runnable experiment (default
``RUN_DIR/plans/...``): ``hydrodeploy run DIR/workload.yaml`` measures it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "plan",
        help="the cheapest configuration predicted to sustain a throughput, from an analyze run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--throughput", type=float, required=True, metavar="X", help="requests per second to sustain")
    p.add_argument("--p99", type=float, metavar="MS", help="p99 latency bound (checked in simulation)")
    p.add_argument("--machine", metavar="NAME", help="machine profile of clusters/machines.yaml (default: the run's)")
    p.add_argument("-o", "--output", metavar="DIR", help="where to write the planned configuration")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from hydrodeploy.report.plan import PlanError, make_plan, write_plan

    path = Path(args.run_dir)
    if not path.is_dir():
        raise PlanError(f"{path}: no such run directory")
    plan = make_plan(path, args.throughput, args.p99, args.machine)
    folder = write_plan(plan, path, Path(args.output) if args.output else None)
    print(plan.render())
    print(f"\nwritten to {folder}; measure it with: hydrodeploy run {folder / 'workload.yaml'}")
    return 0
