"""The confirmation record: the order of deployments, the confirmed speed-up, resuming, and what it
says about a configuration whose windows disagree."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hydrodeploy.optimize.confirm import Confirmation, Visit, ramp_counts


def _visit(iteration: int, *throughputs: float) -> Visit:
    return Visit(iteration, 256, list(throughputs), [50.0] * len(throughputs))


def test_the_order_turns_around_every_pair() -> None:
    assert Confirmation(0, 3, 3).order() == [0, 3, 3, 0, 0, 3]


def test_the_speedup_is_the_mean_final_window_over_the_mean_base_window() -> None:
    record = Confirmation(0, 2, 2, visits=[_visit(0, 100, 140), _visit(2, 600), _visit(2, 500, 700), _visit(0, 120)])
    assert record.speedup == (600 + 500 + 700) / 3 / ((100 + 140 + 120) / 3)
    # pair by pair, whichever came first in the pair
    assert record.pair_speedups() == [600 / 120, 600 / 120]
    assert record.complete and record.pending() == []


def test_an_interrupted_confirmation_continues_with_the_deployments_it_lacks() -> None:
    record = Confirmation(0, 1, 2, visits=[_visit(0, 100), _visit(1, 300), _visit(1, 310)])
    assert record.pending() == [0]
    assert not record.complete
    assert record.pair_speedups() == [3.0]


def test_a_failed_deployment_ends_the_confirmation() -> None:
    failed = Visit(1, 256, [], [], error="could not be measured: a node stopped answering")
    record = Confirmation(0, 1, 2, visits=[_visit(0, 100), failed])
    assert record.pending() == []
    assert not record.complete
    assert record.speedup is None
    assert "stopped: iteration 1 could not be measured" in record.describe(3.0)


def test_the_description_names_a_configuration_whose_windows_disagree() -> None:
    steady = Confirmation(0, 1, 1, visits=[_visit(0, 100, 110), _visit(1, 400, 420)])
    text = steady.describe(4.1)
    assert "not steady" not in text
    assert "3.90x the base program" in text and "the sweeps gave 4.10x" in text
    shaky = Confirmation(0, 1, 1, visits=[_visit(0, 4608, 1536), _visit(1, 20000, 21000)])
    assert "the base program is not steady at this load: its windows differ by up to 3.0x" in shaky.describe(None)


def test_a_window_that_completed_nothing_is_named_not_divided_by() -> None:
    stalled = Confirmation(0, 1, 2, visits=[_visit(0, 900, 0), _visit(1, 3000, 3100), _visit(1, 3050, 2900), _visit(0, 0, 0)])
    text = stalled.describe(3.2)
    assert "the base program is not steady at this load: a window completed nothing, another 900 requests/s" in text
    assert stalled.pair_speedups() == [3050 / 450]  # the second pair's base completed nothing: no ratio
    assert stalled.speedup == (3000 + 3100 + 3050 + 2900) / 4 / (900 / 4)


def test_a_record_belongs_to_one_measurement_of_the_final_iteration() -> None:
    record = Confirmation(0, 2, 2, final_started=1000.0)
    assert record.confirms(2, 2, 1000.0)
    assert not record.confirms(2, 2, 2000.0)  # iteration 2 measured again since
    assert not record.confirms(3, 2, 1000.0)
    assert not record.confirms(2, 3, 1000.0)


visits = st.builds(
    Visit,
    st.sampled_from([0, 4]),
    st.integers(1, 4096),
    st.lists(st.floats(0, 1e6, allow_nan=False), max_size=3),
    st.lists(st.floats(0, 1e4, allow_nan=False), max_size=3),
    st.sampled_from(["", "could not be measured: gone"]),
)


@given(st.integers(1, 5), st.floats(0, 2e9, allow_nan=False), st.lists(visits, max_size=8))
def test_the_record_survives_its_file(pairs: int, started: float, measured: list[Visit]) -> None:
    record = Confirmation(0, 4, pairs, started, measured)
    again = Confirmation.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record
    assert again.speedup == record.speedup


def test_a_fresh_deployment_is_ramped_up_by_doubling_from_an_eighth_of_its_clients() -> None:
    assert ramp_counts(4096) == [512, 1024, 2048]
    assert ramp_counts(100) == [12, 24, 48, 96]  # never reaching the measured count itself
    assert ramp_counts(7) == []  # too few clients to be a burst


@given(st.integers(min_value=1, max_value=1 << 20))
def test_a_ramp_rises_below_the_measured_count(clients: int) -> None:
    ramp = ramp_counts(clients)
    assert all(0 < n < clients for n in ramp)
    assert ramp == sorted(set(ramp))
    assert len(ramp) <= 4


def test_the_machine_conditions_of_the_deployments_are_named() -> None:
    from hydrodeploy.optimize.confirm import machine_conditions, median_fsync_ms

    final = {
        "a/0": {"log": {"fsyncs": 10, "fsync_ns": 20_000_000}},  # 2 ms each
        "b/0": {"log": {"fsyncs": 4, "fsync_ns": 40_000_000}},  # 10 ms
        "c/0": {"log": {"fsyncs": 5, "fsync_ns": 25_000_000}},  # 5 ms
        "d/0": {"log": {"fsyncs": 0, "fsync_ns": 0}},  # logs nothing: not counted
    }
    assert median_fsync_ms(final) == pytest.approx(5.0)
    assert median_fsync_ms({"a/0": {"log": {"fsyncs": 0, "fsync_ns": 0}}}) is None
    quiet = [Visit(0, 8, [100.0], [10.0], steal=[0.01]), Visit(1, 8, [300.0], [10.0], steal=[0.02])]
    assert machine_conditions(quiet) == ""
    busy = [Visit(0, 8, [100.0], [10.0], steal=[0.01], fsync_ms=2.5), Visit(1, 8, [30.0], [900.0], steal=[0.2], fsync_ms=40.0)]
    text = machine_conditions(busy)
    assert "up to 20% of this machine's CPU" in text and "2.5-40.0 ms" in text
    record = Confirmation(0, 1, 1, visits=busy)
    assert text in record.describe(3.0)


def test_fresh_deployments_are_measured_at_the_knee_of_the_sweep() -> None:
    from types import SimpleNamespace

    from hydrodeploy.optimize.confirm import knee_clients

    def points(*pairs: tuple[int, float], steal: float = 0.0) -> list[Any]:
        return [SimpleNamespace(clients=n, throughput=t, host_steal=steal) for n, t in pairs]

    sweep = points((256, 5766), (512, 6944), (1024, 7934), (2048, 8296), (2048, 8100), (4096, 1358))
    assert knee_clients(sweep, 8198.0, 2048) == 1024  # 7,934 is 97% of the peak's mean
    assert knee_clients(sweep, 9000.0, 2048) == 2048  # nothing below reached 95%: the peak itself
    # a count's points are averaged: one lucky window does not make a knee
    lucky = points((512, 8000), (512, 6000), (1024, 7900), (2048, 8200))
    assert knee_clients(lucky, 8200.0, 2048) == 1024
    assert knee_clients([], 100.0, 64) == 64
    # a window the hypervisor took 35% of the CPU in does not count while its count has others
    stolen = points((512, 6000), (1024, 7900), (2048, 8200)) + points((1024, 3000), steal=0.35)
    assert knee_clients(stolen, 8200.0, 2048) == 1024


def test_windows_the_hypervisor_took_much_of_are_measured_again_and_not_counted() -> None:
    # a voting deployment: 6,357 requests/s while the hypervisor took 14% of the CPU, 3,153 at 33%
    visit = Visit(1, 256, [6357.0, 3153.0], [50.0, 50.0], steal=[0.14, 0.33])
    assert visit.counted == [6357.0]  # nothing else measured: the window it took least of counts
    assert visit.not_counted == 1 and visit.wants_window(2)
    visit.throughputs += [6000.0, 6100.0]
    visit.steal += [0.0, 0.01]
    assert visit.counted == [6000.0, 6100.0] and visit.not_counted == 2 and visit.stolen == 2
    assert not visit.wants_window(2)
    record = Confirmation(0, 1, 1, visits=[_visit(0, 1500, 1700), visit])
    assert record.speedup == pytest.approx(6050 / 1600)
    assert record.pair_speedups() == [pytest.approx(6050 / 1600)]
    assert "2 windows in which it took more than 10% not counted" in record.describe(None)


def test_a_window_with_no_record_of_the_hypervisor_counts() -> None:
    # records written before the hypervisor's share was measured
    assert Visit(0, 8, [100.0, 120.0], [10.0, 10.0]).counted == [100.0, 120.0]
    assert Visit(0, 8, [100.0, 120.0], [10.0, 10.0], steal=[0.2]).counted == [120.0]


@given(st.lists(st.floats(min_value=0.0, max_value=0.6), min_size=8, max_size=8), st.integers(min_value=1, max_value=4))
def test_a_deployment_measures_its_windows_and_at_most_a_few_more(steal: list[float], windows: int) -> None:
    visit = Visit(0, 8, [], [])
    while visit.wants_window(windows):
        visit.throughputs.append(100.0 + len(visit.throughputs))
        visit.steal.append(steal[len(visit.steal)])
    clean = sum(1 for s in visit.steal if s <= 0.10)
    assert windows <= len(visit.throughputs) <= windows + 2
    assert clean >= windows or len(visit.throughputs) == windows + 2
    assert visit.counted and len(visit.counted) == (clean or 1)
    if not clean:  # every window stolen: the one the hypervisor took least of
        assert visit.counted == [visit.throughputs[visit.steal.index(min(visit.steal))]]
