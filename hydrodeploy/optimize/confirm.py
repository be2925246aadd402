"""The speed-up confirmed: the base program and the final configuration redeployed in turn.

A loop measures the base program first and the final configuration minutes later, each in its own
sweep. This machine's speed is not constant over minutes (a fixed workload's CPU time on an idle
machine moved between 8 and 17 ms in blocks of tens of seconds), and a deployment can also slow as it
runs, so a ratio of two sweeps carries whatever changed between them. After the loop, both
configurations are deployed afresh in alternation - base, final, final, base, base, final, ... -
and measured at the knee of their sweeps (the fewest clients that reached 95% of the peak;
past it a closed loop only queues): a change of speed that lasts longer than a pair
touches both sides of it, and a steady one is cancelled by the order turning around every pair.
The confirmed speed-up is the mean of every final window over the mean of every base window.

:class:`Confirmation` is the record (``confirmation.json`` in the run directory, written after each
deployment, so an interrupted confirmation continues where it stopped).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hydrodeploy.bench.measure import STEAL_NOTICEABLE, STOLEN, Point, counted, counted_windows
from hydrodeploy.bench.workload import WindowsSpec

CONFIRMATION_FILE = "confirmation.json"
VISIT_WINDOWS = 2  # windows measured on every deployment, at least
# A window in which the hypervisor took more than STOLEN of this machine's CPU is not counted while
# the deployment has others, and another window is measured in its place, up to EXTRA_WINDOWS more.
EXTRA_WINDOWS = 2
# A fresh deployment is brought up to its client count through these unmeasured windows, doubling
# from an eighth of it: thousands of clients starting at once are a burst no sweep ever sent (a
# scaled 2PC's first window at 4,096 clients measured 321 requests/s, its second 9,853).
RAMP_WINDOWS = WindowsSpec(warmup_s=0.5, measure_s=0.5, cooldown_s=0.1, bin_s=0.25)
RAMP_FROM = 8


KNEE_SHARE = 0.95  # a fresh deployment is measured at the fewest clients that reached this share of the peak


def knee_clients(points: Sequence[Point], peak_throughput: float, peak_clients: int) -> int:
    """Where a fresh deployment is measured: the fewest clients (up to the peak's) whose points
    averaged at least :data:`KNEE_SHARE` of the peak's throughput. Past the knee a closed loop
    only queues: more requests wait in the nodes' carried state, which some programs scan every
    tick, and a deployment started there can tip into that slow state (2PC's final configuration,
    fresh at its peak's 2,048 clients, measured 2,432 and then 171 requests/s; its sweep reached
    96% of that peak at 1,024)."""
    by_count: dict[int, list[Point]] = {}
    for p in points:
        by_count.setdefault(p.clients, []).append(p)
    # as the peak counts them: windows the hypervisor took do not, while their count has others
    means = {n: statistics.fmean(p.throughput for p in counted(group)) for n, group in by_count.items()}
    near = [n for n, mean in means.items() if n <= peak_clients and mean >= KNEE_SHARE * peak_throughput]
    return min(near, default=peak_clients)


def ramp_counts(clients: int) -> list[int]:
    """The client counts a fresh deployment runs before it is measured at ``clients``."""
    out, n = [], clients // RAMP_FROM
    while 0 < n < clients:
        out.append(n)
        n *= 2
    return out


@dataclass
class Visit:
    """One deployment of one configuration and the windows measured on it."""

    iteration: int
    clients: int
    throughputs: list[float]
    p99_ms: list[float]
    error: str = ""  # why the deployment measured nothing (it failed)
    steal: list[float] = field(default_factory=list)  # per window: the host's CPU time the hypervisor took
    fsync_ms: float | None = None  # the median node's mean fsync of its durable log over the deployment (None: none logged)
    machine_ms: list[float] = field(default_factory=list)  # per window: this machine's speed (Point.machine_ms)

    def _steal(self) -> list[float]:
        """Per window: the hypervisor's share of the CPU in it (nan: not recorded)."""
        steal = self.steal + [math.nan] * (len(self.throughputs) - len(self.steal))
        return steal[: len(self.throughputs)]

    def _stolen(self) -> list[bool]:
        """Per window: whether the hypervisor took more than :data:`STOLEN` of the CPU in it (a
        window without a record of it is not)."""
        return [s > STOLEN for s in self._steal()]

    @property
    def counted(self) -> list[float]:
        """The windows that count, as in a sweep (:func:`~hydrodeploy.bench.measure.counted_windows`)."""
        return [self.throughputs[i] for i in counted_windows(self._steal())]

    @property
    def not_counted(self) -> int:
        return len(self.throughputs) - len(self.counted)

    @property
    def stolen(self) -> int:
        """Windows the hypervisor took more than :data:`STOLEN` of the CPU in (the least taken of them counts when every window was)."""
        return self._stolen().count(True)

    def wants_window(self, windows: int) -> bool:
        """Whether to measure another window: fewer than ``windows`` count, and fewer than
        ``windows`` + :data:`EXTRA_WINDOWS` were measured."""
        clean = self._stolen().count(False)
        return clean < windows and len(self.throughputs) < windows + EXTRA_WINDOWS


@dataclass
class Confirmation:
    base: int  # iteration index of the base program
    final: int  # iteration index of the final configuration
    pairs: int
    final_started: float = 0.0  # when the final iteration's measurement started: a remeasured one starts anew
    visits: list[Visit] = field(default_factory=list)

    def confirms(self, final: int, pairs: int, final_started: float) -> bool:
        """Whether this record belongs to that final iteration's measurement, with that many pairs."""
        return (self.final, self.pairs, self.final_started) == (final, pairs, final_started)

    def order(self) -> list[int]:
        """The iteration of every deployment, in turn: base and final, then final and base, ..."""
        out: list[int] = []
        for k in range(self.pairs):
            out.extend((self.base, self.final) if k % 2 == 0 else (self.final, self.base))
        return out

    def pending(self) -> list[int]:
        """The deployments still to measure (a failed deployment ends the confirmation)."""
        if any(v.error for v in self.visits):
            return []
        return self.order()[len(self.visits) :]

    def windows(self, iteration: int) -> list[float]:
        """The windows that count (:attr:`Visit.counted`) of every deployment of ``iteration``."""
        return [t for v in self.visits if v.iteration == iteration for t in v.counted]

    @property
    def complete(self) -> bool:
        return not self.pending() and not any(v.error for v in self.visits)

    @property
    def speedup(self) -> float | None:
        """Mean final window over mean base window; None until both were measured."""
        base, final = self.windows(self.base), self.windows(self.final)
        if not base or not final or statistics.fmean(base) <= 0:
            return None
        return statistics.fmean(final) / statistics.fmean(base)

    def pair_speedups(self) -> list[float]:
        """The ratio within each measured pair of deployments."""
        out = []
        for k in range(0, len(self.visits) - 1, 2):
            a, b = self.visits[k], self.visits[k + 1]
            by = {a.iteration: a.counted, b.iteration: b.counted}
            base, final = by.get(self.base), by.get(self.final)
            if base and final and statistics.fmean(base) > 0:
                out.append(statistics.fmean(final) / statistics.fmean(base))
        return out

    def describe(self, sweeps: float | None) -> str:
        """One sentence: what was deployed, what each measured, the confirmed speed-up."""
        base, final = self.windows(self.base), self.windows(self.final)
        failed = next((v for v in self.visits if v.error), None)
        parts = [f"the base program and iteration {self.final} deployed in turn ({len(self.visits)} deployments)"]
        if base and final:
            parts.append(
                f"base {statistics.fmean(base):,.0f} requests/s ({spread(base)}), "
                f"iteration {self.final} {statistics.fmean(final):,.0f} ({spread(final)})"
            )
        unstable = [(name, w) for name, w in (("the base program", base), (f"iteration {self.final}", final)) if _unstable(w)]
        for name, w in unstable:
            if min(w) > 0:
                parts.append(f"{name} is not steady at this load: its windows differ by up to {max(w) / min(w):.1f}x")
            else:
                parts.append(f"{name} is not steady at this load: a window completed nothing, another {max(w):,.0f} requests/s")
        speedup = self.speedup
        if speedup is not None:
            pairs = ", ".join(f"{r:.2f}x" for r in self.pair_speedups())
            text = f"{speedup:.2f}x the base program (pair by pair: {pairs})"
            if sweeps is not None:
                text += f"; the sweeps gave {sweeps:.2f}x"
            parts.append(text)
        if failed is not None:
            parts.append(f"stopped: iteration {failed.iteration} {failed.error}")
        machine = machine_conditions(self.visits)
        if machine:
            parts.append(machine)
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "final": self.final,
            "pairs": self.pairs,
            "final_started": self.final_started,
            "visits": [asdict(v) for v in self.visits],
            "speedup": self.speedup,
            "pair_speedups": self.pair_speedups(),
            "complete": self.complete,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Confirmation:
        visits = [visit_from_json(v) for v in data.get("visits", [])]
        return Confirmation(int(data["base"]), int(data["final"]), int(data["pairs"]), float(data.get("final_started", 0.0)), visits)


def visit_from_json(data: Mapping[str, Any]) -> Visit:
    return Visit(
        int(data["iteration"]), int(data["clients"]), [float(t) for t in data["throughputs"]],
        [float(p) for p in data["p99_ms"]], str(data.get("error", "")), [float(s) for s in data.get("steal", [])],
        None if data.get("fsync_ms") is None else float(data["fsync_ms"]),
        [float(m) for m in data.get("machine_ms", [])],
    )  # fmt: skip


def machine_conditions(visits: Sequence[Visit]) -> str:
    """What this machine did to the deployments, as far as recorded: the hypervisor's share of
    the CPU when it was noticeable, and how long the durable logs' fsyncs took (the emulated
    machines share one disk)."""
    parts = []
    steal = [x for v in visits for x in v.steal if not math.isnan(x)]
    if steal and max(steal) > STEAL_NOTICEABLE:
        parts.append(f"the hypervisor took up to {max(steal):.0%} of this machine's CPU in a window")
    dropped = sum(v.not_counted for v in visits)
    if dropped:
        parts.append(f"{dropped} window{'s' if dropped > 1 else ''} in which it took more than {STOLEN:.0%} not counted")
    fsyncs = [v.fsync_ms for v in visits if v.fsync_ms is not None]
    if fsyncs:
        parts.append(f"durable-log fsyncs took {min(fsyncs):.1f}-{max(fsyncs):.1f} ms (the median node of each deployment)")
    return "; ".join(parts)


def median_fsync_ms(final: Mapping[str, Mapping[str, Any]]) -> float | None:
    """From every node's final counters: the median over the nodes that logged of each one's mean
    fsync in milliseconds (the emulated machines of a local cluster share this machine's disk:
    when it slows down, every durable log does). None when no node logged."""
    means = sorted(
        n["log"]["fsync_ns"] / n["log"]["fsyncs"] / 1e6 for n in final.values() if (n.get("log") or {}).get("fsyncs")
    )
    return means[len(means) // 2] if means else None


UNSTEADY = 1.3  # windows of one configuration this far apart (highest over lowest): not steady


def _unstable(values: list[float]) -> bool:
    return len(values) > 1 and (min(values) <= 0 or max(values) / min(values) >= UNSTEADY)


def spread(values: list[float]) -> str:
    """How many windows, and their range."""
    if len(values) == 1:
        return "one window"
    return f"{len(values)} windows, {min(values):,.0f}-{max(values):,.0f}"
