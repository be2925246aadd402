"""From what the client processes and nodes reported to one measured point.

Throughput is the requests completed in the measurement window (summed over client processes)
per second; the per-bin series gives its coefficient of variation. Latencies are the client
processes' HdrHistograms merged. A point is *unstable* when the per-bin throughput varies by more
than :data:`UNSTABLE_CV`; it is *client-bound* when a client process used more than
:data:`CLIENT_CPU_SATURATED` of a core, or when Little's law N = X * R is off by more than
:data:`LITTLE_TOLERANCE` (the clients did not keep N requests outstanding). The host's own CPU
use is recorded too: above :data:`HOST_CPU_SATURATED` the machine running the emulated machines
is itself saturated, so quotas no longer emulate independent machines. Node counters are
differenced between the start and the end of the window.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from hdrh.histogram import HdrHistogram

from hydrodeploy.bench.client import new_histogram

UNSTABLE_CV = 0.15
CLIENT_CPU_SATURATED = 0.9
LITTLE_TOLERANCE = 0.2
HOST_CPU_SATURATED = 0.9
STEAL_NOTICEABLE = 0.05  # share of the CPU time taken by the hypervisor worth a warning
# A window in which the hypervisor took more than this share of this machine's CPU is not counted
# while its client count (or its deployment) has others, and another is measured in its place: one
# voting deployment measured 6,357 requests/s with 14% taken and 3,153 with 33%, its parent
# 1,546-1,876 with at most 4%; a 2PC sweep under 39% found 1.18x where its confirmation found 8.16x.
STOLEN = 0.10
STOLEN_REMEASURES = 3  # windows a sweep measures again because the hypervisor took one, at most
# a refinement measures between two client counts only when they are further apart than this
REFINE_MIN_RATIO = 1.2
# A peak's points at one client count that differ by this much from first to last: the deployment's
# throughput changed while it was measured (it slowed as it ran, or the machine did), and the
# mean of its points is as uncertain as that change
DRIFT_FLAG = 0.15


@dataclass(frozen=True)
class NodeUsage:
    """One node over the measurement window."""

    address: str
    cpu: float  # cores used (process CPU seconds per second)
    quota: float | None  # cores allowed, None when unthrottled
    ticks_per_s: float
    facts_in_per_s: float
    msgs_out_per_s: float
    bytes_out_per_s: float
    throttled_s: float
    top_rules: list[tuple[int, str, float, int]]  # (number, head, CPU share of the node's rule time, firings)

    @property
    def saturation(self) -> float:
        """CPU against the quota (or against one core when unthrottled)."""
        return self.cpu / (self.quota or 1.0)


@dataclass(frozen=True)
class Point:
    index: int
    clients: int
    repeat: int
    throughput: float  # requests per second over the window
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    completed: int
    sent: int
    retries: int
    duplicates: int
    unmatched: int
    series: list[float]  # throughput per bin (requests/s)
    bin_s: float
    cv: float
    client_cpu: float  # the busiest client process, cores
    little_ratio: float  # N / (X * R); 1 when the closed loop is tight
    unstable: bool
    client_bound: bool
    host_cpu: float = math.nan  # busy fraction of the CPUs that ran the processes (all, or those they were pinned to)
    nodes: list[NodeUsage] = field(default_factory=list)
    histogram: bytes = b""
    host_steal: float = math.nan  # share of this machine's CPU time the hypervisor gave to other guests
    machine_ms: float = math.nan  # this machine's speed over the window (:class:`~hydrodeploy.profile.machine.SpeedMeter`; higher: slower)

    @property
    def host_saturated(self) -> bool:
        return self.host_cpu > HOST_CPU_SATURATED

    @property
    def bottleneck(self) -> NodeUsage | None:
        return max(self.nodes, key=lambda n: n.saturation, default=None)

    def row(self) -> dict[str, Any]:
        """The results.csv row."""
        neck = self.bottleneck
        return {
            "point": self.index,
            "clients": self.clients,
            "repeat": self.repeat,
            "throughput": round(self.throughput, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "p999_ms": round(self.p999_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
            "completed": self.completed,
            "sent": self.sent,
            "retries": self.retries,
            "duplicates": self.duplicates,
            "cv": round(self.cv, 4),
            "client_cpu": round(self.client_cpu, 3),
            "little_ratio": round(self.little_ratio, 3),
            "unstable": int(self.unstable),
            "client_bound": int(self.client_bound),
            "host_cpu": round(self.host_cpu, 3),
            "bottleneck": neck.address if neck else "",
            "bottleneck_cpu": round(neck.cpu, 3) if neck else "",
            "host_steal": round(self.host_steal, 3),
            "machine_ms": round(self.machine_ms, 3),
        }


CSV_COLUMNS = (
    "point", "clients", "repeat", "throughput", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "mean_ms",
    "completed", "sent", "retries", "duplicates", "cv", "client_cpu", "little_ratio", "unstable",
    "client_bound", "host_cpu", "bottleneck", "bottleneck_cpu", "host_steal", "machine_ms",
)


def merge_histograms(encoded: Sequence[bytes]) -> HdrHistogram:
    merged = new_histogram()
    for blob in encoded:
        if blob:
            merged.add(HdrHistogram.decode(blob))
    return merged


def _ms(hist: HdrHistogram, q: float) -> float:
    return float(hist.get_value_at_percentile(q)) / 1000.0 if hist.get_total_count() else math.nan


def node_usage(
    before: Mapping[str, Mapping[str, Any]],
    after: Mapping[str, Mapping[str, Any]],
    quotas: Mapping[str, float | None],
    throttle_before: Mapping[str, Mapping[str, float]],
    throttle_after: Mapping[str, Mapping[str, float]],
) -> list[NodeUsage]:
    out: list[NodeUsage] = []
    for address, end in after.items():
        start = before.get(address)
        if start is None:
            continue
        wall = max(1e-9, end["wall"] - start["wall"])
        sent_before = {(r, d): (m, b) for r, d, m, b in start["channels"]["sent"]}
        msgs = bytes_ = 0
        for rel, dest, m, b in end["channels"]["sent"]:
            m0, b0 = sent_before.get((rel, dest), (0, 0))
            msgs += m - m0
            bytes_ += b - b0
        rules_before = {r[0]: r for r in start["rules"]}
        spent = []
        for number, head, _kind, calls, _facts, ns in end["rules"]:
            r0 = rules_before.get(number)
            spent.append((number, head, ns - (r0[5] if r0 else 0), calls - (r0[3] if r0 else 0)))
        total_ns = sum(s[2] for s in spent) or 1
        top = sorted(spent, key=lambda s: -s[2])[:5]
        throttled = throttle_after.get(address, {}).get("throttled_s", 0.0) - throttle_before.get(address, {}).get(
            "throttled_s", 0.0
        )
        out.append(
            NodeUsage(
                address=address,
                cpu=(end["cpu"] - start["cpu"]) / wall,
                quota=quotas.get(address),
                ticks_per_s=(end["ticks"] - start["ticks"]) / wall,
                facts_in_per_s=(end["facts_in"] - start["facts_in"]) / wall,
                msgs_out_per_s=msgs / wall,
                bytes_out_per_s=bytes_ / wall,
                throttled_s=throttled,
                top_rules=[(n, h, ns / total_ns, calls) for n, h, ns, calls in top],
            )
        )
    return out


def summarize(
    index: int,
    clients: int,
    repeat: int,
    results: Sequence[Mapping[str, Any]],
    nodes: list[NodeUsage],
    host_cpu: float = math.nan,
    host_steal: float = math.nan,
) -> Point:
    """One point from the client processes' ``result`` messages and the nodes' usage."""
    measure = float(results[0]["measure"])
    n_bins = max(len(r["bins"]) for r in results)
    bins = [0] * n_bins
    for r in results:
        for i, count in enumerate(r["bins"]):
            bins[i] += count
    bin_s = measure / n_bins
    series = [b / bin_s for b in bins]
    measured = sum(int(r["completed_measured"]) for r in results)
    throughput = measured / measure
    hist = merge_histograms([r["histogram"] for r in results])
    mean_ms = sum(int(r["latency_sum_us"]) for r in results) / measured / 1000.0 if measured else math.nan
    cv = statistics.pstdev(series) / statistics.fmean(series) if len(series) > 1 and any(series) else 0.0
    client_cpu = max(float(r["cpu"]) / measure for r in results)
    little = clients / (throughput * mean_ms / 1000.0) if measured else math.inf
    unstable = cv > UNSTABLE_CV or measured == 0
    client_bound = client_cpu > CLIENT_CPU_SATURATED or abs(little - 1.0) > LITTLE_TOLERANCE
    return Point(
        index=index,
        clients=clients,
        repeat=repeat,
        throughput=throughput,
        p50_ms=_ms(hist, 50),
        p90_ms=_ms(hist, 90),
        p99_ms=_ms(hist, 99),
        p999_ms=_ms(hist, 99.9),
        mean_ms=mean_ms,
        completed=measured,
        sent=sum(int(r["sent"]) for r in results),
        retries=sum(int(r["retries"]) for r in results),
        duplicates=sum(int(r["duplicates"]) for r in results),
        unmatched=sum(int(r["unmatched"]) for r in results),
        series=series,
        bin_s=bin_s,
        cv=cv,
        client_cpu=client_cpu,
        little_ratio=little,
        unstable=unstable,
        client_bound=client_bound,
        host_cpu=host_cpu,
        nodes=nodes,
        histogram=hist.encode(),
        host_steal=host_steal,
    )


class Plateau:
    """Decides when a sweep stops: after ``steps`` consecutive client counts that each improve
    the best throughput so far by less than ``gain``, or once p99 exceeds the SLO."""

    def __init__(self, gain: float, steps: int, slo_p99_ms: float | None) -> None:
        self.gain = gain
        self.steps = steps
        self.slo = slo_p99_ms
        self.best = 0.0
        self.stalled = 0

    def update(self, throughput: float, p99_ms: float) -> str | None:
        if self.slo is not None and p99_ms > self.slo:
            return f"p99 {p99_ms:.2f} ms exceeds the SLO of {self.slo:g} ms"
        if throughput > self.best * (1 + self.gain):
            self.stalled = 0
        else:
            self.stalled += 1
        self.best = max(self.best, throughput)
        if self.stalled >= self.steps:
            return f"throughput plateaued ({self.steps} steps under {self.gain:.0%} gain)"
        return None


@dataclass(frozen=True)
class Peak:
    """Where a sweep peaked: the client count whose mean throughput over its points is highest
    (among the counts within the SLO, when any is), that mean, and the point that stands for it
    (the one closest to the mean, the earlier of two as close: measured before the deployment had
    run longer; its latencies and profile describe the peak)."""

    clients: int
    throughput: float
    point: Point
    measurements: tuple[float, ...]  # the throughput of every point at that count, in order

    @property
    def drift(self) -> float | None:
        """How the throughput at the peak's client count changed from its first point to its last
        (-0.16: the last measured 16% less), None with one point."""
        if len(self.measurements) < 2 or self.measurements[0] <= 0:
            return None
        return self.measurements[-1] / self.measurements[0] - 1

    def describe(self) -> str:
        where = f"{self.throughput:,.0f} requests/s at {self.clients} clients"
        if len(self.measurements) > 1:
            where += " (mean of " + ", ".join(f"{x:,.0f}" for x in self.measurements)
            drift = self.drift
            if drift_flagged(drift):
                where += f"; {drifted(drift)}"
            where += ")"
        return where


def drift_flagged(change: float | None) -> TypeGuard[float]:
    """Whether a peak's drift (:attr:`Peak.drift`) is large enough to say so."""
    return change is not None and abs(change) >= DRIFT_FLAG


def drift_moved(change: float) -> str:
    """How the deployment's throughput moved: "slowed 16%", "sped up 20%"."""
    return f"{'slowed' if change < 0 else 'sped up'} {abs(change):.0%}"


def drifted(change: float) -> str:
    """What a flagged drift (:func:`drift_flagged`) says about a peak's mean."""
    return f"the deployment {drift_moved(change)} between the first and the last while measured: the mean is no more certain than that"


def stalled(group: Sequence[Point], earlier: Sequence[Point]) -> bool:
    """Whether the deployment stopped answering: none of ``group``'s points completed a request
    while an earlier point did. Such a point measures a wedged deployment (a node fell so far
    behind that it no longer catches up), not its configuration at that client count."""
    return bool(group) and all(p.completed == 0 for p in group) and any(p.completed for p in earlier)


def stolen(point: Point) -> bool:
    """Whether the hypervisor took more than :data:`STOLEN` of this machine's CPU in the point's
    window (a point without a record of it was not)."""
    return point.host_steal > STOLEN


def counted_windows(steal: Sequence[float]) -> list[int]:
    """Which of one client count's windows count, given the hypervisor's share of the CPU in each
    (nan: not recorded, which counts): those it took at most :data:`STOLEN` of or, when there is
    none such, the one it took least of. (A quick voting sweep whose four windows at one client
    lost 30-53% of the CPU stopped on the p99 of the window that lost 53%, 229 ms against an SLO of
    200; the one that lost 30% had 16 ms.)"""
    clean = [i for i, share in enumerate(steal) if not share > STOLEN]
    if clean or not steal:
        return clean
    return [min(range(len(steal)), key=lambda i: steal[i])]


def counted(points: Sequence[Point]) -> list[Point]:
    """The points of one client count that count (:func:`counted_windows`)."""
    return [points[i] for i in counted_windows([p.host_steal for p in points])]


class StealGuard:
    """A sweep's budget of windows measured again because the hypervisor took one
    (:data:`STOLEN_REMEASURES`)."""

    def __init__(self, budget: int = STOLEN_REMEASURES) -> None:
        self.left = budget

    def again(self, point: Point) -> bool:
        """Whether to measure ``point``'s client count once more in its place."""
        if not stolen(point) or self.left <= 0:
            return False
        self.left -= 1
        return True


def stolen_note(point: Point) -> str:
    return (
        f"the hypervisor took {point.host_steal:.0%} of this machine's CPU while {point.clients} clients were "
        f"measured ({point.throughput:,.0f} requests/s): measuring them again"
    )


def peak(points: Sequence[Point], slo_p99_ms: float | None = None) -> Peak | None:
    """The sweep's peak (:class:`Peak`); a count is within the SLO when all its points are.
    Points that completed no request do not count when others did (:func:`stalled`), nor points
    the hypervisor took more than :data:`STOLEN` of the CPU in when their count has others (:func:`counted`)."""
    if any(p.completed for p in points):
        points = [p for p in points if p.completed]
    by_count: dict[int, list[Point]] = {}
    for point in points:
        by_count.setdefault(point.clients, []).append(point)
    if not by_count:
        return None
    by_count = {n: counted(group) for n, group in by_count.items()}
    mean = {n: statistics.fmean(p.throughput for p in group) for n, group in by_count.items()}
    within = [n for n, group in by_count.items() if slo_p99_ms is None or max(p.p99_ms for p in group) <= slo_p99_ms]
    best = max(within or by_count, key=lambda n: (mean[n], -n))
    group = by_count[best]
    standing = min(group, key=lambda p: abs(p.throughput - mean[best]))  # ties: the earliest
    return Peak(best, mean[best], standing, tuple(p.throughput for p in group))


def measured_peak(top: Peak) -> dict[str, Any]:
    """A peak as iteration records and reports keep it."""
    point = top.point
    return {
        "max_throughput": top.throughput,
        "measurements": list(top.measurements),
        "drift": top.drift,
        "p50_ms": point.p50_ms,
        "p99_ms": point.p99_ms,
        "clients": top.clients,
        "point": point.index,
        "host_cpu": point.host_cpu,
        "host_saturated": point.host_saturated,
        "host_steal": point.host_steal,
        "machine_ms": point.machine_ms,
    }


def unconfirmed(points: Sequence[Point], slo_p99_ms: float | None, measurements: int) -> int | None:
    """The peak's client count while it has fewer than ``measurements`` points, else None. One
    window at the peak is the highest of several noisy draws, so it overstates what the
    configuration sustains; the mean over repeated windows does not."""
    best = peak(points, slo_p99_ms)
    if best is None or len(best.measurements) >= measurements:
        return None
    return best.clients


def bracketed(points: Sequence[Point], slo_p99_ms: float | None) -> bool:
    """Whether a client count above the peak's was measured (the sweep went past its peak)."""
    best = peak(points, slo_p99_ms)
    return best is not None and any(p.clients > best.clients for p in points)


def refinement(points: Sequence[Point], slo_p99_ms: float | None) -> list[int]:
    """Client counts that narrow down where a sweep peaked: the geometric midpoints between the
    peak's client count (:func:`peak`) and the measured counts on either side of it, where the two
    are more than :data:`REFINE_MIN_RATIO` apart. Nothing until a higher count was measured (fell
    short of the best, or broke the SLO): the peak is not bracketed yet. A geometric sweep
    (factor 2) brackets the peak but can miss it by a sizeable margin, and by more for a deeper
    pipeline, whose throughput rises and falls more steeply with the requests in flight."""
    top = peak(points, slo_p99_ms)
    if top is None:
        return []
    best = top.clients
    counts = sorted({p.clients for p in points})
    i = counts.index(best)
    if i + 1 == len(counts):
        return []
    out = []
    for other in counts[max(0, i - 1) : i] + counts[i + 1 : i + 2]:
        low, high = sorted((best, other))
        middle = round(math.sqrt(low * high))
        if high / low > REFINE_MIN_RATIO and low < middle < high:
            out.append(middle)
    return out
