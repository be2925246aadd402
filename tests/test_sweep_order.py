"""The order in which a sweep measures client counts (:func:`hydrodeploy.bench.experiment.sweep`):
geometric counts until the throughput plateaus, and the counts between the best one and its
neighbours measured as soon as the peak is bracketed, before any count further past it; then the
peak's count measured again, its maximum the mean of its points; and how far those points drifted
apart, as the sweep, the analyze report and the capacity plan say it.

The bench here replays a throughput curve instead of deploying anything: what is tested is the
sweep's decisions, which depend only on the points it gets back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hydrodeploy.bench.experiment import MAX_CONFIRMING, Observer, SweepResult, sweep
from hydrodeploy.bench.measure import STOLEN_REMEASURES, Plateau, Point, measured_peak, peak
from hydrodeploy.bench.workload import ClientsSpec, WindowsSpec


class _ScriptedCurve:
    """Answers each point with the throughput of a fixed curve (requests/s by client count)."""

    def __init__(
        self,
        curve: dict[int, float | list[float]],
        p99_ms: dict[int, float | list[float]] | None = None,
        steal: dict[int, list[float]] | None = None,
    ) -> None:
        self.curve = curve
        self.p99_ms = p99_ms or {}
        self.steal = steal or {}  # per count: the hypervisor's share of the CPU in successive measurements
        self.measured: list[int] = []

    async def point(self, index: int, clients: int, windows: Any, settings: Any, repeat: int = 0) -> tuple[Point, Any]:
        value = self.curve[clients]  # a list: successive measurements of that count
        nth = self.measured.count(clients)
        throughput = value if isinstance(value, float) else value[nth]
        steals = self.steal.get(clients, [])
        steal = steals[nth] if nth < len(steals) else 0.0
        self.measured.append(clients)
        p99s = self.p99_ms.get(clients, 10.0)
        p99 = p99s if isinstance(p99s, float) else p99s[nth]
        point = Point(
            index=index, clients=clients, repeat=repeat, throughput=throughput, p50_ms=1.0, p90_ms=1.0, p99_ms=p99,
            p999_ms=p99, mean_ms=1.0, completed=int(throughput > 0), sent=1, retries=0, duplicates=0, unmatched=0, series=[throughput],
            bin_s=1.0, cv=0.0, client_cpu=0.0, little_ratio=1.0, unstable=False, client_bound=False, host_steal=steal,
        )  # fmt: skip
        return point, None


def _sweep(bench: _ScriptedCurve, counts: list[int], refine: int, slo: float | None = None, confirm: int = 1) -> SweepResult:
    windows = WindowsSpec(warmup_s=0, measure_s=1, cooldown_s=0, bin_s=1)
    plateau = Plateau(0.05, 2, slo)
    result = asyncio.run(sweep(bench, windows, counts, 1, ClientsSpec(), plateau, Observer(), refine, confirm))  # type: ignore[arg-type]
    assert [p.clients for p in result.points] == bench.measured
    return result


def _run(bench: _ScriptedCurve, counts: list[int], refine: int, slo: float | None = None, confirm: int = 1) -> list[int]:
    _sweep(bench, counts, refine, slo, confirm)
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


def test_the_peak_is_measured_again_once_bracketed_and_its_maximum_is_the_mean() -> None:
    # 4 peaks at 400 in one lucky window; 8 falls short and brackets it: 4 again (300) before 16
    curve: dict[int, float | list[float]] = {1: 100.0, 2: 200.0, 4: [400.0, 300.0], 8: 250.0, 16: 200.0, 32: 150.0}
    bench = _ScriptedCurve(curve)
    result = _sweep(bench, [1, 2, 4, 8, 16, 32], refine=0, confirm=2)
    assert bench.measured == [1, 2, 4, 8, 4, 16]
    top = result.peak()
    assert top is not None
    assert (top.clients, top.throughput, top.measurements) == (4, 350.0, (400.0, 300.0))


def test_a_peak_that_confirmation_lowers_below_another_count_hands_the_confirmation_on() -> None:
    # 8 brackets 4, whose mean falls to 260, under 8's single 300: 8 is measured again (300, 280:
    # mean 290) at once, before 16 (the second step without gain ends the sweep)
    curve: dict[int, float | list[float]] = {1: 100.0, 2: 200.0, 4: [320.0, 200.0], 8: [300.0, 280.0], 16: 150.0, 32: 100.0}
    bench = _ScriptedCurve(curve)
    result = _sweep(bench, [1, 2, 4, 8, 16, 32], refine=0, confirm=2)
    assert bench.measured == [1, 2, 4, 8, 4, 8, 16]
    top = result.peak()
    assert top is not None and (top.clients, top.throughput) == (8, 290.0)


def test_a_peak_at_the_last_count_is_confirmed_at_the_end() -> None:
    rising: dict[int, float | list[float]] = {1: 100.0, 2: 200.0, 4: [400.0, 380.0]}
    assert _run(_ScriptedCurve(rising), [1, 2, 4], refine=1, confirm=2) == [1, 2, 4, 4]


def test_confirmation_spends_a_bounded_number_of_points() -> None:
    # a rising curve whose every second measurement is 1: each confirmation hands the peak down
    counts = [1, 2, 3, 4, 5, 6, 7]
    curve: dict[int, float | list[float]] = {n: [100.0 * n, 1.0, 1.0] for n in counts}
    bench = _ScriptedCurve(curve)
    _sweep(bench, counts, refine=0, confirm=2)
    assert len(bench.measured) == len(counts) + MAX_CONFIRMING


def test_a_deployment_that_stops_answering_ends_the_sweep_and_is_not_averaged_in() -> None:
    # past its peak the deployment wedges (a node so far behind it never catches up): the
    # confirmation of 8 completes nothing, and measuring more counts would only find it wedged
    curve: dict[int, float | list[float]] = {1: 100.0, 2: 200.0, 4: 400.0, 8: [800.0, 0.0], 16: 300.0, 32: 0.0}
    bench = _ScriptedCurve(curve)
    result = _sweep(bench, [1, 2, 4, 8, 16, 32], refine=0, confirm=2)
    assert bench.measured == [1, 2, 4, 8, 16, 8]
    assert result.stopped.startswith("the deployment stopped answering")
    top = peak(result.points)
    assert top is not None and top.clients == 8 and top.throughput == 800.0 and top.measurements == (800.0,)


def test_a_configuration_that_never_answers_still_has_its_points() -> None:
    bench = _ScriptedCurve({1: 0.0, 2: 0.0, 4: 0.0})
    result = _sweep(bench, [1, 2, 4], refine=0)
    assert not result.stopped.startswith("the deployment stopped")
    top = peak(result.points)
    assert top is not None and top.throughput == 0.0


def test_a_peak_whose_points_drift_apart_says_how_far() -> None:
    # 4 measured 400 first and 300 when confirmed: the deployment slowed 25% while measured, and
    # the mean (350) is no more certain than that
    curve: dict[int, float | list[float]] = {1: 100.0, 2: 200.0, 4: [400.0, 300.0], 8: 250.0, 16: 200.0, 32: 150.0}
    top = _sweep(_ScriptedCurve(curve), [1, 2, 4, 8, 16, 32], refine=0, confirm=2).peak()
    assert top is not None and top.drift == pytest.approx(-0.25)
    assert "(mean of 400, 300; the deployment slowed 25% between the first and the last" in top.describe()
    assert measured_peak(top)["drift"] == pytest.approx(-0.25)
    # points that agree within the flag stand without comment; one point has no drift
    steady: dict[int, float | list[float]] = {**curve, 4: [400.0, 380.0]}
    top = _sweep(_ScriptedCurve(steady), [1, 2, 4, 8, 16, 32], refine=0, confirm=2).peak()
    assert top is not None and top.describe() == "390 requests/s at 4 clients (mean of 400, 380)"
    single = _sweep(_ScriptedCurve(curve), [1, 2, 4, 8, 16, 32], refine=0, confirm=1).peak()
    assert single is not None and single.drift is None and measured_peak(single)["drift"] is None


def test_reports_and_plans_say_when_a_measurement_drifted(tmp_path: Path) -> None:
    from hydrodeploy.report.analysis import _chain_blocks
    from hydrodeploy.report.plan import _track_record

    base = {"index": 0, "machines": 8, "kept": True, "status": "measured",
            "measured": {"max_throughput": 2005.0, "measurements": [2133.0, 1877.0], "drift": -0.12, "clients": 512}}
    scaled = {"index": 1, "machines": 14, "kept": True, "status": "measured", "parent": 0, "description": "a rewrite",
              "measured": {"max_throughput": 5410.5, "measurements": [5896.0, 4925.0], "drift": 4925 / 5896 - 1,
                           "clients": 512, "prediction_error": 0.09}}  # fmt: skip
    blocks = [b for b in _chain_blocks(tmp_path, [base, scaled]) if isinstance(b, str)]
    assert blocks[0] == "**0. Base program** — 2,005 requests/s on 8 machines."  # 12%: within the flag
    assert any(
        "measured 5,410 requests/s (the mean of 5,896, 4,925 at 512 clients: the deployment slowed 16% between "
        "the first and the last while measured" in b
        for b in blocks
    )
    run = SimpleNamespace(kept=[base, scaled])
    assert _track_record(run) == [  # type: ignore[arg-type]
        "this run's predictions against what its kept iterations measured: +9% (iteration 1) measured while the "
        "deployment slowed 16%"
    ]


def test_a_window_the_hypervisor_took_is_measured_again_and_does_not_count() -> None:
    """At 4 clients the hypervisor took 35% of the CPU: the sweep measures 4 again at once, the
    peak is the clean window's, and the stolen window stays among the sweep's points."""
    curve: dict[int, float | list[float]] = {1: 100.0, 2: 200.0, 4: [120.0, 400.0], 8: 380.0, 16: 300.0, 32: 250.0}
    bench = _ScriptedCurve(curve, steal={4: [0.35, 0.02]})
    result = _sweep(bench, [1, 2, 4, 8, 16, 32], refine=0)
    assert bench.measured[:4] == [1, 2, 4, 4]
    top = peak(result.points)
    assert top is not None and top.clients == 4
    assert top.throughput == 400.0 and top.measurements == (400.0,)
    assert [p.throughput for p in result.points if p.clients == 4] == [120.0, 400.0]


def test_a_sweep_measures_stolen_windows_again_only_within_its_budget() -> None:
    """Every window stolen: each is measured again until the budget is spent, then the sweep goes
    on, and a count whose windows were all stolen counts the one the hypervisor took least of."""
    counts = [1, 2, 4, 8, 16]
    curve: dict[int, float | list[float]] = {n: [float(n * 10)] * 4 for n in counts}
    curve[1] = [10.0, 12.0, 3.0, 11.0]
    bench = _ScriptedCurve(curve, steal={n: [0.5] * 4 for n in counts} | {1: [0.3, 0.35, 0.55, 0.4]})
    result = _sweep(bench, counts, refine=0)
    assert len(result.points) - len(set(bench.measured)) == STOLEN_REMEASURES
    top = peak(result.points)
    assert top is not None and top.throughput == 160.0
    low = peak([p for p in result.points if p.clients == 1])
    assert low is not None and low.measurements == (10.0,)


def test_a_window_the_hypervisor_took_most_of_does_not_end_the_sweep_on_its_latency() -> None:
    """A quick voting sweep on SSH hosts (CI, 22 November): every window at 1 client lost 30-53% of
    the CPU to the hypervisor, and the one that lost 53% had a p99 of 229 ms against an SLO of 200.
    The window it took least of stands for the count, and the sweep goes on."""
    curve: dict[int, float | list[float]] = {1: [608.0, 75.0, 317.5, 567.5], 4: 214.0, 16: 5000.0, 48: 7000.0}
    # and once the budget of windows measured again is spent, a count's only window, stolen with a
    # p99 of 507 ms (CI, 22 November), does not end it either
    p99: dict[int, float | list[float]] = {1: [15.9, 229.1, 42.8, 10.4], 4: 506.6}
    bench = _ScriptedCurve(curve, p99_ms=p99, steal={1: [0.297, 0.533, 0.38, 0.317], 4: [0.644]})
    result = _sweep(bench, [1, 4, 16, 48], refine=0, slo=200.0)
    assert bench.measured == [1, 1, 1, 1, 4, 16, 48]
    low = peak([p for p in result.points if p.clients == 1], 200.0)
    assert low is not None and low.measurements == (608.0,)
