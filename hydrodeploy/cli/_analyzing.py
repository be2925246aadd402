"""The body of `hydrodeploy analyze` (see :mod:`hydrodeploy.cli.analyze`): progress, the loop,
the summary and the report."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hydrodeploy.bench.measure import Point
from hydrodeploy.bench.workload import WorkloadSpec, load_workload
from hydrodeploy.deploy import ProcessFailure, load_cluster
from hydrodeploy.deploy.cluster import LOCAL_DEFAULT, AnyClusterSpec, ClusterSpec
from hydrodeploy.deploy.gcpfile import GcpClusterSpec
from hydrodeploy.deploy.sshfile import SshClusterSpec
from hydrodeploy.optimize.loop import Analysis, AnalyzeError, LoopObserver
from hydrodeploy.report.analysis import render, write_summary
from hydrodeploy.report.rundir import RunDirectory, versions


class _Progress(LoopObserver):
    """Renders the loop's progress with rich, on stderr."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True)
        self.task = self.progress.add_task("starting", total=None)
        self.started = 0.0
        self.seconds = 0.0
        self.iteration = 0

    def status(self, text: str) -> None:
        self.seconds = 0.0
        self.progress.update(self.task, description=text, total=None, completed=0)

    def warning(self, text: str) -> None:
        self.progress.console.print(f"[yellow]warning:[/] {escape(text)}")

    def note(self, text: str) -> None:
        self.progress.console.print(text, markup=False)

    def iteration_started(self, index: int, description: str, machines: int) -> None:
        self.iteration = index
        self.progress.console.print(f"[bold]iteration {index}[/]: {escape(description)} ({machines} machines)")

    def point_started(self, index: int, clients: int, repeat: int, seconds: float) -> None:
        self.started, self.seconds = time.monotonic(), seconds
        again = f" (repeat {repeat + 1})" if repeat else ""
        self.progress.update(
            self.task, description=f"iteration {self.iteration}, point {index}: {clients} clients{again}", total=seconds, completed=0
        )

    def point_done(self, point: Point) -> None:
        flags = [f for f, on in (("unstable", point.unstable), ("host-saturated", point.host_saturated)) if on]
        mark = f"  [{', '.join(flags)}]" if flags else ""
        self.progress.console.print(
            f"  point {point.index:>2}  {point.clients:>5} clients  {point.throughput:>10,.0f} req/s  "
            f"p50 {point.p50_ms:7.2f} ms  p99 {point.p99_ms:7.2f} ms{mark}"
        )

    async def tick(self) -> None:
        while True:
            if self.seconds:
                self.progress.update(self.task, completed=min(self.seconds, time.monotonic() - self.started))
            await asyncio.sleep(0.2)


def _cluster_from(data: dict[str, Any]) -> AnyClusterSpec:
    kind = data.get("kind", "local")
    if kind == "ssh":
        return SshClusterSpec.model_validate(data)
    if kind == "gcp":
        return GcpClusterSpec.model_validate(data)
    return ClusterSpec.model_validate(data)


def _resumed(path: Path) -> tuple[WorkloadSpec, AnyClusterSpec]:
    spec_file = path / "spec.yaml"
    if not (path / "iterations").is_dir() and not spec_file.exists():
        raise AnalyzeError(f"{path}: not a run directory of hydrodeploy analyze (no spec.yaml)")
    try:
        spec = yaml.safe_load(spec_file.read_text())
        workload = WorkloadSpec.model_validate(spec["workload"])
        cluster = _cluster_from(spec["cluster"])
    except (OSError, KeyError, TypeError, yaml.YAMLError, ValidationError) as exc:
        raise AnalyzeError(f"{spec_file}: cannot read the analysis settings: {exc}") from None
    return workload, cluster


async def _execute(analysis: Analysis, view: _Progress) -> str:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    ticker = loop.create_task(view.tick())
    try:
        return await analysis.run()
    finally:
        ticker.cancel()
        loop.remove_signal_handler(signal.SIGTERM)


def analyze_workload(args: argparse.Namespace) -> int:
    out = Console(emoji=False)
    if not out.is_terminal:
        out = Console(width=160, emoji=False)
    err = Console(stderr=True, emoji=False)
    if args.resume:
        path = Path(args.resume)
        if not path.is_dir():
            raise AnalyzeError(f"{path}: no such run directory")
        workload, cluster_spec = _resumed(path)
        run_dir = RunDirectory.reopen(path, keep_iterations=_measured_iterations(path))
    else:
        if not args.workload:
            raise AnalyzeError("give a workload file (or --resume RUN_DIR)")
        workload = load_workload(args.workload)
        cluster_path = args.cluster or workload.cluster
        cluster_spec = load_cluster(cluster_path) if cluster_path else LOCAL_DEFAULT
        run_dir = RunDirectory.create(Path(args.reports), workload.name + "-analyze")
        run_dir.write_spec(
            {
                "workload": workload.model_dump(),
                "cluster": cluster_spec.model_dump(),
                "command": sys.argv,
                "versions": versions(),
            }
        )
    view = _Progress(err)
    analysis = Analysis(workload, cluster_spec, run_dir, view)
    failure: ProcessFailure | None = None
    interrupted: BaseException | None = None
    stopped = ""
    try:
        with view.progress:
            stopped = asyncio.run(_execute(analysis, view))
    except ProcessFailure as exc:
        failure = exc
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        interrupted = exc
    finally:
        run_dir.close()
    write_summary(run_dir.path)
    report = render(run_dir.path)
    out.print(_table(run_dir.path))
    if stopped:
        out.print(f"stopped: {stopped}")
    out.print(f"report: {report}")
    out.print(f"run directory: {run_dir.path}")
    if failure is not None:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    if interrupted is not None:
        err.print(f"interrupted: every process stopped; continue with: hydrodeploy analyze --resume {run_dir.path}")
        return 130 if isinstance(interrupted, KeyboardInterrupt) else 143
    return 0


def _measured_iterations(path: Path) -> list[int]:
    import json

    out = []
    for f in sorted((path / "iterations").glob("*/iteration.json")):
        data = json.loads(f.read_text())
        if data.get("status") == "measured":
            out.append(int(data["index"]))
    return out


def _table(path: Path) -> Table:
    import json

    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").exists() else {"iterations": []}
    table = Table(title="iterations")
    for column in ("#", "machines", "max req/s", "predicted", "p50 ms", "p99 ms", "kept", "rewrite"):
        table.add_column(column, justify="left" if column == "rewrite" else "right")
    for e in summary["iterations"]:
        table.add_row(
            str(e["index"]),
            str(e["machines"]),
            "-" if e["max_throughput"] is None else f"{e['max_throughput']:,.0f}",
            "-" if e["predicted_throughput"] is None else f"{e['predicted_throughput']:,.0f}",
            "-" if e["p50_ms"] is None else f"{e['p50_ms']:.1f}",
            "-" if e["p99_ms"] is None else f"{e['p99_ms']:.1f}",
            {True: "yes", False: "no", None: "-"}[e["kept"]],
            escape(e["rewrite"] or "base program"),
        )
    return table
