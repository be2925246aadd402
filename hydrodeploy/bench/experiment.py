"""Deploy a program once with its benchmark client processes, then measure points and sweeps.

:class:`Bench` is a running deployment of one program plus client processes;
:meth:`Bench.point` measures one client count (warm-up, measurement, cool-down) and returns a
:class:`~hydrodeploy.bench.measure.Point`; :func:`sweep` walks the client counts until the
throughput plateaus or the SLO breaks. The library never prints: progress goes to an
:class:`Observer`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from hydrodeploy.bench.client import ClientSpec, LoadParams
from hydrodeploy.bench.measure import (
    Peak,
    Plateau,
    Point,
    StealGuard,
    bracketed,
    counted,
    node_usage,
    peak,
    refinement,
    stalled,
    stolen,
    stolen_note,
    summarize,
    unconfirmed,
)
from hydrodeploy.bench.workload import ClientsSpec, WindowsSpec
from hydrodeploy.deploy import Cluster, Deployment, Member, python_module
from hydrodeploy.language import ir, load_program
from hydrodeploy.profile.machine import SpeedMeter
from hydrodeploy.runtime.node import NodeSpec
from hydrodeploy.runtime.topology import Topology, client_process_name
from hydrodeploy.simulate.clients import ClientProtocol

START_DELAY_S = 0.3  # between sending a load and its start: every client process gets it first
RESULT_SLACK_S = 30.0  # how long after its windows a client process may take to report a point
MAX_CONFIRMING = 4  # extra points a sweep may spend confirming its peak


def cpu_times(cpus: Sequence[int] | None = None) -> Any:
    """``psutil.cpu_times()`` of this machine, or summed over ``cpus`` only."""
    if cpus is None:
        return psutil.cpu_times()
    per_cpu = psutil.cpu_times(percpu=True)
    rows = [per_cpu[c] for c in cpus if c < len(per_cpu)]
    return type(per_cpu[0])._make(sum(column) for column in zip(*rows, strict=True))


def host_busy(before: Any, after: Any) -> float:
    """The busy fraction of the CPUs counted by two :func:`cpu_times` (of the orchestrator's
    machine: where the local cluster's processes run)."""
    idle = (after.idle - before.idle) + (getattr(after, "iowait", 0.0) - getattr(before, "iowait", 0.0))
    total = _elapsed(before, after)
    return max(0.0, 1.0 - idle / total) if total > 0 else math.nan


def _elapsed(before: Any, after: Any) -> float:
    """CPU seconds of every kind between two :func:`cpu_times` (guest time is inside user)."""
    return float(sum(getattr(after, f) - getattr(before, f) for f in after._fields if f not in ("guest", "guest_nice")))


def host_steal(before: Any, after: Any) -> float:
    """The share of the CPU time between two :func:`cpu_times` that the hypervisor gave to other
    virtual machines (``steal``): on a shared host, the reason a configuration measured slower
    than it did minutes before. NaN where the kernel does not count it."""
    if not hasattr(after, "steal"):
        return math.nan
    total = _elapsed(before, after)
    return max(0.0, (after.steal - before.steal) / total) if total > 0 else math.nan


class Observer:
    """Progress of an experiment; the CLI renders it. Every method is optional."""

    def status(self, text: str) -> None:
        pass

    def warning(self, text: str) -> None:
        pass

    def point_started(self, index: int, clients: int, repeat: int, seconds: float) -> None:
        pass

    def point_done(self, point: Point) -> None:
        pass


@dataclass(frozen=True)
class Window:
    """The raw counters at both ends of a point's measurement window: every node's ``metrics``
    (per-rule CPU and firings, channels, process CPU), its host's limit counters, and this
    machine's ``psutil.cpu_times()`` (for profilers and cost models)."""

    before: dict[str, dict[str, Any]]
    after: dict[str, dict[str, Any]]
    throttle_before: dict[str, dict[str, float]]
    throttle_after: dict[str, dict[str, float]]
    host_busy: float


@dataclass
class SweepResult:
    points: list[Point] = field(default_factory=list)
    stopped: str = ""  # why the sweep ended

    def peak(self, slo_p99_ms: float | None = None) -> Peak | None:
        return peak(self.points, slo_p99_ms)


def _node_config(spec: NodeSpec) -> dict[str, Any]:
    return {
        "address": spec.address,
        "component": spec.component,
        "index": spec.index,
        "program": spec.program,
        "instances": spec.instances,
        "partitions": spec.partitions,
        "durable_log": spec.durable_log,
        "profile": spec.profile,
        "engine": spec.engine,
    }


class Bench:
    """A deployed program with ``client_processes`` benchmark client processes."""

    def __init__(
        self,
        program_path: str | Path,
        cluster: Cluster,
        log_dir: Path,
        client_processes: int = 2,
        durable_dir: Path | None = None,
        engine: str | None = None,
        topology: Topology | None = None,
        seed: int = 0,
        speed_meter: bool = False,
    ) -> None:
        self.program_path = str(Path(program_path).resolve())
        self.program: ir.Program = load_program(self.program_path)
        ClientProtocol.of(self.program)  # fail before deploying when clients cannot drive it
        self.topology = topology or Topology.of(self.program)
        self.cluster = cluster
        self.log_dir = log_dir
        self.durable_dir = durable_dir or log_dir
        self.client_processes = client_processes
        self.durable_dir.mkdir(parents=True, exist_ok=True)
        instances = {c: list(a) for c, a in self.topology.instances.items()}
        partitions = {a: list(p) for a, p in self.topology.partitions.items()}
        members: list[Member] = []
        for component, address, index in self.topology.addresses():
            durable = str(self.durable_dir / f"{address.replace('/', '-')}.jsonl") if self.program.logs else None
            spec = NodeSpec(
                address=address,
                component=component,
                index=index,
                program=self.program_path,
                instances=instances,
                secret="",
                control=("", 0),
                durable_log=durable,
                partitions=partitions,
                engine=engine,
            )
            members.append(Member(address, "node", python_module("hydrodeploy.runtime.node"), _node_config(spec)))
        for p in range(client_processes):
            cspec = ClientSpec(client_process_name(p), p, client_processes, self.program_path, instances, "", ("", 0), seed=seed)
            members.append(Member(cspec.name, "clients", python_module("hydrodeploy.bench.client"), cspec.to_config()))
        self.deployment = Deployment(cluster, members, log_dir)
        self.last_window: Window | None = None  # the raw counters of the last measured point
        # called with "start" and "end" when a point's measurement window starts and ends
        # (profilers sample their own counters there)
        self.window_hooks: list[Callable[[str], None]] = []
        # this machine's speed over every window (:class:`SpeedMeter`), on a local cluster
        self.meter = SpeedMeter() if speed_meter else None

    @property
    def machines(self) -> int:
        return len(self.deployment.nodes())

    async def start(self) -> None:
        if self.meter is not None:
            self.meter.start()
        await self.deployment.start()

    async def point(
        self,
        index: int,
        clients: int,
        windows: WindowsSpec,
        settings: ClientsSpec,
        repeat: int = 0,
        record: bool = False,
    ) -> tuple[Point, list[dict[str, Any]]]:
        """Measure ``clients`` closed-loop clients; the point and every client process's raw
        result (with every request and reply when ``record``)."""
        dep = self.deployment
        names = dep.client_processes()
        start_at = time.time() + START_DELAY_S
        loads = []
        for p, name in enumerate(names):
            mine = tuple(n for n in range(clients) if n % len(names) == p)
            params = LoadParams(
                point=index,
                clients=mine,
                start_at=start_at,
                warmup=windows.warmup_s,
                measure=windows.measure_s,
                cooldown=windows.cooldown_s,
                bin_s=windows.bin_s,
                payload_bytes=settings.payload_bytes,
                keys=settings.keys,
                timeout_ms=settings.timeout_ms,
                record=record,
            )
            loads.append((name, {"t": "load", **asdict(params)}))
        busy = [(name, msg) for name, msg in loads if msg["clients"]]
        results = asyncio.ensure_future(self._loads(busy, START_DELAY_S + windows.total_s))
        try:
            loop = asyncio.get_running_loop()
            mono_start = loop.time() + (start_at - time.time())
            await dep.guard(asyncio.sleep(max(0.0, mono_start + windows.warmup_s - loop.time())))
            for hook in self.window_hooks:
                hook("start")
            pinned = self.cluster.pinned_cpus()
            before, throttle_before = await dep.metrics(), dep.limit_stats()
            host_before = cpu_times()
            pinned_before = host_before if pinned is None else cpu_times(pinned)
            window_start = time.monotonic()
            await dep.guard(asyncio.sleep(max(0.0, mono_start + windows.warmup_s + windows.measure_s - loop.time())))
            after, throttle_after = await dep.metrics(), dep.limit_stats()
            host_after = cpu_times()
            pinned_after = host_after if pinned is None else cpu_times(pinned)
            window_end = time.monotonic()
            for hook in self.window_hooks:
                hook("end")
            raw = await dep.guard(results)
        finally:
            if not results.done():
                results.cancel()
            elif not results.cancelled():
                results.exception()  # retrieved: the failure is raised by the guard above
        quotas = {n: dep.peers[n].host.cpus for n in dep.nodes()}
        usage = node_usage(before, after, quotas, throttle_before, throttle_after)
        self.last_window = Window(before, after, throttle_before, throttle_after, host_busy(host_before, host_after))
        # a point is host-saturated when the CPUs its processes run on are (all of them, or the
        # ones the local cluster pinned them to); the cost model counts the whole machine
        point = summarize(index, clients, repeat, raw, usage, host_busy(pinned_before, pinned_after), host_steal(host_before, host_after))
        if self.meter is not None:
            point = replace(point, machine_ms=self.meter.median(window_start, window_end))
        return point, raw

    async def _loads(self, loads: Sequence[tuple[str, dict[str, Any]]], seconds: float) -> list[dict[str, Any]]:
        """Send every client process its load; their results (each at most ``seconds`` + slack
        away: a client process that never reports is an error, not a hang)."""
        names = [name for name, _ in loads]
        msgs = dict(loads)
        dep = self.deployment
        futs = [dep.request(name, msgs[name], "result", timeout=seconds + RESULT_SLACK_S) for name in names]
        return list(await asyncio.gather(*futs))

    async def stop(self) -> dict[str, dict[str, Any]]:
        """Stop gracefully; the nodes' final counters."""
        try:
            return await self.deployment.stop()
        finally:
            self._stop_meter()

    def close(self) -> None:
        try:
            self.deployment.close()
        finally:
            self._stop_meter()

    def _stop_meter(self) -> None:
        if self.meter is not None:
            self.meter.stop()


async def sweep_counts(
    counts: Sequence[int],
    points: list[Point],
    plateau: Plateau,
    slo_p99_ms: float | None,
    refine: int,
    measure: Callable[[int], Awaitable[list[Point] | None]],
    confirm: int = 1,
) -> str | None:
    """The order of a sweep: ``measure`` each client count (it appends its points to ``points``
    and returns them, or None to end the sweep) until ``plateau`` stops it, and ``refine`` rounds
    of :func:`~hydrodeploy.bench.measure.refinement`, each as soon as the peak is bracketed —
    points measured after an overload can find the system slower than it was (larger queues and
    state). Once bracketed, and again at the end, the peak's client count is measured until it has
    ``confirm`` points (:func:`~hydrodeploy.bench.measure.unconfirmed`); when that lowers its mean
    below another count's, that count is confirmed in turn (at most :data:`MAX_CONFIRMING` extra
    points in all). The sweep also stops when the deployment stops answering
    (:func:`~hydrodeploy.bench.measure.stalled`). Why the sweep stopped; None when ``measure``
    ended it."""
    rounds = refine
    confirming = MAX_CONFIRMING
    stopped: str | None = None

    async def measured(clients: int) -> list[Point] | None:
        nonlocal stopped
        earlier = list(points)
        group = await measure(clients)
        if group is not None and stalled(group, earlier):
            stopped = f"the deployment stopped answering (no request completed at {clients} clients after earlier points)"
            return None
        return group

    async def narrow() -> bool:
        nonlocal rounds
        extra = refinement(points, slo_p99_ms) if rounds else []
        rounds -= bool(extra)
        for clients in extra:
            if await measured(clients) is None:
                return False
        return True

    async def confirmed() -> bool:
        nonlocal confirming
        while confirming > 0 and (clients := unconfirmed(points, slo_p99_ms, confirm)) is not None:
            confirming -= 1
            if await measured(clients) is None:
                return False
        return True

    for clients in counts:
        group = await measured(clients)
        if group is None:
            return stopped
        kept = counted(group)
        # a count whose every window the hypervisor took tells nothing of the configuration: it
        # neither ends the sweep on its latency nor counts towards a plateau (a quick sweep on SSH
        # hosts stopped at 4 clients on the 507 ms p99 of a window that lost 64% of the CPU)
        reason = None if all(stolen(p) for p in kept) else plateau.update(sum(p.throughput for p in kept) / len(kept), max(p.p99_ms for p in kept))
        if not await narrow():
            return stopped
        if bracketed(points, slo_p99_ms) and not await confirmed():
            return stopped
        if reason is not None:
            return reason if await confirmed() else stopped
    while rounds and refinement(points, slo_p99_ms):
        if not await narrow():
            return stopped
    return "every client count measured" if await confirmed() else stopped


async def sweep(
    bench: Bench,
    windows: WindowsSpec,
    counts: Sequence[int],
    repeats: int,
    settings: ClientsSpec,
    plateau: Plateau,
    observer: Observer,
    refine: int = 0,
    confirm: int = 1,
) -> SweepResult:
    """Measure each client count ``repeats`` times until the throughput plateaus or the SLO
    breaks (the decision uses the mean over the repeats), narrowing down the peak ``refine``
    times and measuring it until it has ``confirm`` points (:func:`sweep_counts`)."""
    result = SweepResult()
    guard = StealGuard()

    async def measure(clients: int) -> list[Point]:
        group: list[Point] = []
        repeat = 0
        while repeat < repeats:
            index = len(result.points)
            observer.point_started(index, clients, repeat, windows.total_s + START_DELAY_S)
            point, _ = await bench.point(index, clients, windows, settings, repeat)
            observer.point_done(point)
            result.points.append(point)
            group.append(point)
            if guard.again(point):
                observer.warning(stolen_note(point))
                continue
            repeat += 1
        return group

    result.stopped = await sweep_counts(counts, result.points, plateau, plateau.slo, refine, measure, confirm) or ""
    return result
