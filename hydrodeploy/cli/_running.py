"""The body of `hydrodeploy run` (see :mod:`hydrodeploy.cli.run`): progress, the sweep, the
run directory's summary and plot, and the table at the end."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hydrodeploy.bench.experiment import Bench, Observer, SweepResult, sweep
from hydrodeploy.bench.measure import STEAL_NOTICEABLE, Plateau, Point, peak
from hydrodeploy.bench.workload import WorkloadSpec, load_workload
from hydrodeploy.deploy import ProcessFailure, load_cluster, open_cluster
from hydrodeploy.deploy.cluster import LOCAL_DEFAULT
from hydrodeploy.deploy.host import Cluster
from hydrodeploy.language import load_program
from hydrodeploy.report.load import load_points
from hydrodeploy.report.plots import throughput_latency
from hydrodeploy.report.rundir import RunDirectory, summary, versions
from hydrodeploy.rewrites.chain import load_topology


class _Progress(Observer):
    """Renders the experiment's progress with rich, on stderr."""

    def __init__(self, console: Console, run_dir: RunDirectory) -> None:
        self.console = console
        self.run_dir = run_dir
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("starting", total=None)
        self.started = 0.0
        self.seconds = 0.0

    def status(self, text: str) -> None:
        self.progress.update(self.task, description=text, total=None, completed=0)

    def warning(self, text: str) -> None:
        self.progress.console.print(f"[yellow]warning:[/] {text}")

    def point_started(self, index: int, clients: int, repeat: int, seconds: float) -> None:
        again = f" (repeat {repeat + 1})" if repeat else ""
        self.started, self.seconds = time.monotonic(), seconds
        self.progress.update(self.task, description=f"point {index}: {clients} clients{again}", total=seconds, completed=0)

    def point_done(self, point: Point) -> None:
        self.run_dir.add_result(0, point)
        self.progress.update(self.task, completed=self.seconds)
        self.progress.console.print(
            f"point {point.index:>2}  {point.clients:>4} clients  {point.throughput:>10,.0f} req/s  "
            f"p50 {point.p50_ms:7.2f} ms  p99 {point.p99_ms:7.2f} ms{_flags(point)}"
        )

    async def tick(self) -> None:
        while True:
            if self.seconds:
                self.progress.update(self.task, completed=min(self.seconds, time.monotonic() - self.started))
            await asyncio.sleep(0.2)


def _flags(point: Point) -> str:
    flags = [
        f
        for f, on in (
            ("unstable", point.unstable),
            ("client-bound", point.client_bound),
            ("host-saturated", point.host_saturated),
        )
        if on
    ]
    return f"  [{', '.join(flags)}]" if flags else ""


async def _execute(bench: Bench, workload: WorkloadSpec, quick: bool, view: _Progress, run_dir: RunDirectory) -> SweepResult:
    """Deploy, sweep, stop; every point is written to the run directory as it finishes."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    ticker = loop.create_task(view.tick())
    windows, counts, repeats = workload.plan(quick)
    plateau = Plateau(workload.sweep.plateau_gain, workload.sweep.plateau_steps, workload.slo.p99_ms)

    try:
        view.status(f"deploying {bench.machines} nodes and {bench.client_processes} client processes")
        await bench.start()
        result = SweepResult()
        try:
            refine = 0 if quick else workload.sweep.refine_rounds()
            confirm = 1 if quick else workload.sweep.confirm_points()
            result = await sweep(bench, windows, counts, repeats, workload.clients, plateau, view, refine, confirm)
        finally:
            view.status("stopping")
            final = await asyncio.shield(bench.stop()) if bench.deployment.failure is None else {}
            run_dir.write_json("iterations/00/final_metrics.json", final)
        return result
    finally:
        ticker.cancel()
        loop.remove_signal_handler(signal.SIGTERM)


def run_workload(args: argparse.Namespace) -> int:
    workload = load_workload(args.workload)
    cluster_path = args.cluster or workload.cluster
    cluster_spec = load_cluster(cluster_path) if cluster_path else LOCAL_DEFAULT
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # a file or a pipe: do not wrap the table at 80 columns
    err = Console(stderr=True)
    run_dir = RunDirectory.create(Path(args.reports), workload.name + ("-quick" if args.quick else ""))
    iteration = run_dir.iteration(0)
    shutil.copyfile(workload.protocol, iteration / "program.ded")
    run_dir.write_spec(
        {
            "workload": workload.model_dump(),
            "cluster": cluster_spec.model_dump(),
            "quick": bool(args.quick),
            "command": sys.argv,
            "versions": versions(),
        }
    )
    cluster: Cluster = open_cluster(cluster_spec, run_dir=run_dir.path)
    view = _Progress(err, run_dir)
    for warning in cluster.warnings:
        view.warning(warning)
    warned = len(cluster.warnings)
    result = SweepResult()
    failure: ProcessFailure | None = None
    interrupted: BaseException | None = None
    bench: Bench | None = None
    try:
        bench = Bench(
            workload.protocol,
            cluster,
            iteration / "logs",
            client_processes=workload.clients.processes,
            durable_dir=iteration / "durable",
            # partitions written next to a rewritten program (`hydrodeploy rewrite`, `hydrodeploy plan`)
            topology=load_topology(load_program(workload.protocol), workload.protocol),
            speed_meter=cluster_spec.kind == "local",
        )
        run_dir.write_json(
            "iterations/00/topology.json",
            {"instances": bench.topology.instances, "partitions": bench.topology.partitions},
        )
        with view.progress:
            result = asyncio.run(_execute(bench, workload, args.quick, view, run_dir))
    except ProcessFailure as exc:
        failure = exc
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        interrupted = exc
    finally:
        if bench is not None:
            bench.close()
        cluster.close()
        run_dir.close()
    for warning in cluster.warnings[warned:]:  # e.g. a host where cleaning up failed
        err.print(f"[yellow]warning:[/] {warning}")
    points = _measured(run_dir)
    if points:
        machines = bench.machines if bench is not None else 0
        run_dir.write_json("summary.json", summary(workload.protocol_name(), cluster_spec.name, [(0, machines, points)]))
        throughput_latency(
            points,
            run_dir.path / "throughput_latency.png",
            f"{workload.protocol_name()} on cluster {cluster_spec.describe()}",
            f"{machines} nodes, {workload.clients.processes} client processes",
        )
        top = peak(points)
        assert top is not None
        out.print(_table(points, top.point))
        if len(top.measurements) > 1:
            out.print(f"maximum: {top.describe()}")
        out.print(_bottleneck(top.point))
    if result.stopped:
        out.print(f"sweep stopped: {result.stopped}")
    pinned = bench.cluster.pinned_cpus() if bench is not None else None
    if pinned:
        cpus = ", ".join(str(c) for c in pinned)
        out.print(f"placement: nodes pinned to CPU {cpus}, client processes to CPU {pinned[0]} (machine.pack)")
    out.print(f"run directory: {run_dir.path}")
    if failure is not None:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    if interrupted is not None:
        err.print(f"interrupted: every process stopped; {len(points)} measured points kept in {run_dir.path}")
        return 130 if isinstance(interrupted, KeyboardInterrupt) else 143
    if not points or max(p.throughput for p in points) <= 0:
        err.print("error: no request completed")
        return 1
    return 0


def _measured(run_dir: RunDirectory) -> list[Point]:
    """The points recorded in the run directory (all of them, also after an interruption)."""
    return load_points(run_dir.path, iteration=0)


def _bottleneck(point: Point) -> str:
    """Where the best point spent its time: the most saturated node and its costliest rules."""
    neck = point.bottleneck
    if neck is None:
        return ""
    quota = f" of its {neck.quota:g}-core quota" if neck.quota else " (unthrottled)"
    rules = ", ".join(f"rule {n} '{head}' {share:.0%}" for n, head, share, _ in neck.top_rules[:3] if share > 0)
    text = f"bottleneck at the best point: {neck.address} used {neck.cpu:.2f} cores{quota}"
    if rules:
        text += f"; its rule time: {rules}"
    if point.host_saturated:
        text += f"\nwarning: this machine's CPUs were {point.host_cpu:.0%} busy: quotas no longer emulate separate machines"
    if point.host_steal > STEAL_NOTICEABLE:
        text += (
            f"\nwarning: the hypervisor gave {point.host_steal:.0%} of this machine's CPU time to other guests during "
            "the best point: it measured slower than the machine can run"
        )
    return text


def _table(points: list[Point], best: Point) -> Table:
    table = Table(title="measured points (best marked *)")
    for column in ("point", "clients", "req/s", "p50 ms", "p99 ms", "cv", "bottleneck", "flags"):
        table.add_column(column, justify="right" if column not in ("bottleneck", "flags") else "left")
    for p in points:
        neck = p.bottleneck
        where = f"{neck.address} {neck.cpu:.2f} cpu" if neck else ""
        table.add_row(
            f"{p.index}{'*' if p is best else ''}",
            str(p.clients),
            f"{p.throughput:,.0f}",
            f"{p.p50_ms:.2f}",
            f"{p.p99_ms:.2f}",
            f"{p.cv:.2f}",
            where,
            _flags(p).strip(" []"),
        )
    return table
