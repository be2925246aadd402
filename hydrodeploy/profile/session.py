"""A profiled sweep: measure a deployed configuration point by point, profiling every node.

Each point of the sweep (:func:`hydrodeploy.bench.experiment.sweep`'s rules: geometric client
counts until the throughput plateaus or p99 breaks the SLO) also yields a
:class:`~hydrodeploy.profile.counters.WindowProfile` of every node over the measurement window,
with the CPU psutil saw each process use. After the sweep, one more point at the best client
count runs with ``perf`` recording the best point's bottleneck on the host it runs on (a separate
point: sampling must not slow the points that are measured); its stacks are folded and
attributed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydrodeploy.bench.experiment import Bench, Observer, sweep_counts
from hydrodeploy.bench.measure import Peak, Plateau, Point, StealGuard, peak, stolen_note
from hydrodeploy.bench.workload import ClientsSpec, WindowsSpec
from hydrodeploy.deploy import DeployError, ProcessFailure
from hydrodeploy.deploy.host import PerfRecording
from hydrodeploy.profile import perf
from hydrodeploy.profile.counters import WindowProfile, window_profile
from hydrodeploy.profile.perf import PerfProfile
from hydrodeploy.profile.sampler import WindowSampler


class TolerantPlateau(Plateau):
    """The sweep's stopping rule, tolerant of one latency spike: it stops after ``steps`` client
    counts that each improve the best throughput within the SLO by less than ``gain``, or after
    ``breaches`` consecutive client counts whose p99 exceeds the SLO (a single breach, such as a
    client's re-sent request, does not end the sweep; a point over the SLO never counts as the
    best)."""

    def __init__(self, gain: float, steps: int, slo_p99_ms: float | None, breaches: int = 2) -> None:
        super().__init__(gain, steps, slo_p99_ms)
        self.breaches = breaches
        self.over = 0

    def update(self, throughput: float, p99_ms: float) -> str | None:
        if self.slo is not None and p99_ms > self.slo:
            self.over += 1
            self.stalled += 1  # not an improvement within the SLO either
            if self.over >= self.breaches:
                return f"p99 exceeded the SLO of {self.slo:g} ms at {self.over} client counts in a row"
            if self.stalled >= self.steps:
                return f"throughput plateaued ({self.steps} steps under {self.gain:.0%} gain within the SLO)"
            return None
        self.over = 0
        return super().update(throughput, p99_ms)


@dataclass
class Measured:
    points: list[Point] = field(default_factory=list)
    profiles: list[WindowProfile] = field(default_factory=list)
    perf: PerfProfile | None = None
    stopped: str = ""

    def peak(self, slo_p99_ms: float | None = None) -> Peak | None:
        """The sweep's peak (:func:`~hydrodeploy.bench.measure.peak`)."""
        return peak(self.points, slo_p99_ms)

    def best_index(self, slo_p99_ms: float | None = None) -> int | None:
        """The position of the point that stands for the peak."""
        top = self.peak(slo_p99_ms)
        return None if top is None else self.points.index(top.point)


async def _perf_point(
    bench: Bench,
    index: int,
    clients: int,
    windows: WindowsSpec,
    settings: ClientsSpec,
    target: str,
    out_dir: Path,
) -> PerfProfile:
    """One more point at ``clients`` with perf recording ``target`` on its host during the
    measurement window (a separate point, so that sampling never slows the measured ones)."""
    dep = bench.deployment
    pid = dep.handle(target).pid
    host = dep.peers[target].host
    frequency = perf.frequency_for(host.cpus or 1.0, windows.measure_s)
    recording: list[asyncio.Task[PerfRecording]] = []

    def hook(event: str) -> None:
        if event == "start":
            task = asyncio.to_thread(host.perf_record, pid, windows.measure_s, frequency)
            recording.append(asyncio.get_running_loop().create_task(task))

    bench.window_hooks[:] = [hook]
    try:
        await bench.point(index, clients, windows, settings)
    finally:
        bench.window_hooks[:] = []
    result = await recording[0] if recording else PerfRecording(reason="the measurement window never started")
    if result.reason is not None:
        return PerfProfile(target, pid, False, result.reason, windows.measure_s, frequency)
    window = bench.last_window
    assert window is not None
    samples = perf.parse_samples(result.script)
    if not samples:
        return PerfProfile(target, pid, False, "perf recorded no sample (the node was idle)", windows.measure_s, frequency)
    start, end = window.before.get(target), window.after.get(target)
    rules: dict[str, float] = {}
    cpu = 0.0
    if start is not None and end is not None:
        from hydrodeploy.profile.counters import node_profile

        usage = node_profile(start, end, "", None)
        rules = {f"{r.head} (rule {r.number})": r.cpu for r in usage.rules if r.cpu > 0}
        cpu = usage.cpu
    out_dir.mkdir(parents=True, exist_ok=True)
    return perf.summarize(target, pid, samples, windows.measure_s, frequency, rules, cpu, out_dir)


async def profiled_sweep(
    bench: Bench,
    windows: WindowsSpec,
    counts: Sequence[int],
    repeats: int,
    settings: ClientsSpec,
    plateau: Plateau,
    observer: Observer,
    perf_dir: Path | None,
    on_point: Callable[[Point, WindowProfile], None],
    slo_p99_ms: float | None = None,
    local: bool = True,
    refine: int = 0,
    confirm: int = 1,
) -> Measured:
    """Sweep ``counts`` (``refine`` rounds between the best and its neighbours, the peak measured
    until it has ``confirm`` points) like
    :func:`hydrodeploy.bench.experiment.sweep`, profiling each point; then, with ``perf_dir``, one
    more point at the best client count under perf."""
    dep = bench.deployment
    pids = {n: dep.handle(n).pid for n in dep.nodes()} | {n: dep.handle(n).pid for n in dep.client_processes()}
    sampler = WindowSampler(pids if local else {})
    bench.window_hooks[:] = [sampler]
    components = {a: c for c, a, _ in bench.topology.addresses()}
    quotas = {n: dep.peers[n].host.cpus for n in dep.nodes()}
    clients = set(dep.client_processes())
    out = Measured()

    guard = StealGuard()

    async def measure(n: int) -> list[Point] | None:
        """The points at ``n`` clients (a window the hypervisor took is measured again, within
        :class:`StealGuard`'s budget); None when a node stopped answering (the sweep ends)."""
        group: list[Point] = []
        repeat = 0
        while repeat < repeats:
            index = len(out.points)
            observer.point_started(index, n, repeat, windows.total_s)
            try:
                point, _ = await bench.point(index, n, windows, settings, repeat)
            except ProcessFailure:
                raise
            except DeployError as exc:  # a node stopped answering under this load: the sweep ends here
                if not out.points:
                    raise
                out.stopped = f"the measurement at {n} clients failed: {exc}"
                observer.warning(out.stopped)
                return None
            window = bench.last_window
            assert window is not None
            cores, _ = sampler.result()
            client_cpu = sum(v for k, v in cores.items() if k in clients) if cores else math.nan
            own = sum(cores.values()) if cores else math.nan
            profile = window_profile(
                index, n, point.throughput, window.before, window.after, components, quotas, window.host_busy,
                window.throttle_before, window.throttle_after, {k: v for k, v in cores.items() if k in components},
                client_cpu, own, point.host_steal,
            )  # fmt: skip
            out.points.append(point)
            out.profiles.append(profile)
            on_point(point, profile)
            observer.point_done(point)
            group.append(point)
            if guard.again(point):
                observer.warning(stolen_note(point))
                continue
            repeat += 1
        return group

    try:
        stopped = await sweep_counts(counts, out.points, plateau, slo_p99_ms, refine, measure, confirm)
        if stopped is None:  # a node stopped answering: out.stopped says where
            return out
        out.stopped = stopped
    finally:
        bench.window_hooks[:] = []
    best = out.best_index(slo_p99_ms)
    if perf_dir is not None and best is not None:
        neck = max(out.profiles[best].nodes, key=lambda x: x.saturation)
        problem = await asyncio.to_thread(dep.peers[neck.address].host.perf_problem)
        if problem is not None:
            out.perf = PerfProfile(neck.address, dep.handle(neck.address).pid, False, problem)
        else:
            observer.status(f"profiling {neck.address} with perf at {out.points[best].clients} clients")
            out.perf = await _perf_point(bench, len(out.points), out.points[best].clients, windows, settings, neck.address, perf_dir)
    return out
