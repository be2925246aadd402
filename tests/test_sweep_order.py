"""The order in which a sweep measures client counts (:func:`hydrodeploy.bench.experiment.sweep`):
geometric counts until the throughput plateaus, and the counts between the best one and its
neighbours measured as soon as the peak is bracketed, before any count further past it.

The bench here replays a throughput curve instead of deploying anything: what is tested is the
sweep's decisions, which depend only on the points it gets back."""

from __future__ import annotations

import asyncio
from typing import Any

from hydrodeploy.bench.experiment import Observer, sweep
from hydrodeploy.bench.measure import Plateau, Point
from hydrodeploy.bench.workload import ClientsSpec, WindowsSpec


class _ScriptedCurve:
    """Answers each point with the throughput of a fixed curve (requests/s by client count)."""

    def __init__(self, curve: dict[int, float], p99_ms: dict[int, float] | None = None) -> None:
        self.curve = curve
        self.p99_ms = p99_ms or {}
        self.measured: list[int] = []

    async def point(self, index: int, clients: int, windows: Any, settings: Any, repeat: int = 0) -> tuple[Point, Any]:
        self.measured.append(clients)
        throughput = self.curve[clients]
        p99 = self.p99_ms.get(clients, 10.0)
        point = Point(
            index=index, clients=clients, repeat=repeat, throughput=throughput, p50_ms=1.0, p90_ms=1.0, p99_ms=p99,
            p999_ms=p99, mean_ms=1.0, completed=1, sent=1, retries=0, duplicates=0, unmatched=0, series=[throughput],
            bin_s=1.0, cv=0.0, client_cpu=0.0, little_ratio=1.0, unstable=False, client_bound=False,
        )  # fmt: skip
        return point, None


def _run(bench: _ScriptedCurve, counts: list[int], refine: int, slo: float | None = None) -> list[int]:
    windows = WindowsSpec(warmup_s=0, measure_s=1, cooldown_s=0, bin_s=1)
    plateau = Plateau(0.05, 2, slo)
    result = asyncio.run(sweep(bench, windows, counts, 1, ClientsSpec(), plateau, Observer(), refine))  # type: ignore[arg-type]
    assert [p.clients for p in result.points] == bench.measured
    return bench.measured


CURVE = {1: 100.0, 2: 200.0, 3: 280.0, 4: 300.0, 6: 320.0, 8: 250.0, 16: 200.0, 32: 150.0, 5: 330.0, 7: 300.0}


def test_the_peak_is_narrowed_down_as_soon_as_it_is_bracketed() -> None:
    # 8 falls short of 4: 3 and 6 next, before 16 (the second step without gain ends the sweep)
    assert _run(_ScriptedCurve(CURVE), [1, 2, 4, 8, 16, 32], refine=1) == [1, 2, 4, 8, 3, 6, 16]


def test_further_rounds_narrow_around_the_new_best() -> None:
    # 6 became the best: a second round measures between it and its new neighbours 4 and 8
    assert _run(_ScriptedCurve(CURVE), [1, 2, 4, 8, 16, 32], refine=2) == [1, 2, 4, 8, 3, 6, 16, 5, 7]


def test_no_refinement_measures_only_the_geometric_counts() -> None:
    assert _run(_ScriptedCurve(CURVE), [1, 2, 4, 8, 16, 32], refine=0) == [1, 2, 4, 8, 16]


def test_a_curve_still_rising_at_the_last_count_is_not_narrowed() -> None:
    rising = {1: 100.0, 2: 200.0, 4: 400.0}
    assert _run(_ScriptedCurve(rising), [1, 2, 4], refine=1) == [1, 2, 4]


def test_an_slo_break_brackets_the_peak_and_ends_the_sweep_after_narrowing() -> None:
    curve = {1: 100.0, 2: 200.0, 4: 400.0, 8: 800.0, 3: 300.0, 6: 600.0}
    bench = _ScriptedCurve(curve, p99_ms={8: 500.0, 6: 500.0})
    # 8 breaks the 100 ms SLO: the best within it is 4; 3 and 6 are measured, 6 breaks it too
    assert _run(bench, [1, 2, 4, 8, 16], refine=1, slo=100.0) == [1, 2, 4, 8, 3, 6]
