"""Profiles: counters differenced over a window, perf stacks folded and attributed, flame graphs."""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hydrodeploy.deploy import hostagent
from hydrodeploy.profile import perf
from hydrodeploy.profile.counters import WindowProfile, node_profile, window_profile
from hydrodeploy.profile.flamegraph import draw, tree

PERF_SCRIPT = (Path(__file__).parent / "data" / "perf_script.txt").read_text()  # `perf script -F comm,tid,ip,sym,dso`


def test_samples_are_parsed_leaf_first_and_categorised() -> None:
    samples = perf.parse_samples(PERF_SCRIPT)
    assert len(samples) == 8
    assert samples[1][0] == perf.Frame("tcp_sendmsg_locked", "[kernel.kallsyms]")
    cats = [perf.category(s) for s in samples]
    assert cats == [
        perf.INTERPRETER,
        perf.SOCKETS,
        perf.SERIALIZATION,
        perf.AUTHENTICATION,
        perf.DISK,
        perf.EVENT_LOOP,
        perf.KERNEL,
        perf.INTERPRETER,
    ]


def test_folded_stacks_are_root_first_with_the_category_above_the_root() -> None:
    folded = perf.fold(perf.parse_samples(PERF_SCRIPT), "leader/0")
    assert folded[f"leader/0;{perf.INTERPRETER};_PyEval_EvalFrameDefault"] == 2
    assert folded[f"leader/0;{perf.SOCKETS};__send;entry_SYSCALL_64_after_hwframe;tcp_sendmsg;tcp_sendmsg_locked"] == 1
    assert sum(folded.values()) == 8


def test_interpreter_time_is_split_between_rules_and_runtime_by_the_counters() -> None:
    cats = {perf.INTERPRETER: 60, perf.SOCKETS: 40}
    attribution, rules = perf.attribute(cats, {"votes (rule 1)": 0.01, "ballot (rule 0)": 0.02}, node_cpu=0.05)
    assert attribution["rules (program)"] == pytest.approx(0.6)  # 0.03 of 0.05 cores, within the interpreter's 60%
    assert attribution["Python runtime (evaluator, transport, asyncio)"] == pytest.approx(0.0)
    assert attribution[perf.SOCKETS] == pytest.approx(0.4)
    assert rules["ballot (rule 0)"] == pytest.approx(0.4)
    # rules never get more than the interpreter's share
    attribution, _ = perf.attribute({perf.INTERPRETER: 10, perf.SOCKETS: 90}, {"r": 0.04}, node_cpu=0.05)
    assert attribution["rules (program)"] == pytest.approx(0.1)


def test_frequency_gives_enough_samples_for_small_quotas() -> None:
    assert perf.frequency_for(0.05, 4.0) == 10_000
    assert perf.frequency_for(1.0, 4.0) == 500
    assert perf.frequency_for(4.0, 4.0) == perf.MIN_FREQUENCY
    assert perf.frequency_for(0.001, 1.0) == perf.MAX_FREQUENCY


def test_summary_writes_folded_stacks_and_a_flame_graph(tmp_path: Path) -> None:
    samples = perf.parse_samples(PERF_SCRIPT)
    result = perf.summarize("leader/0", 42, samples, 2.0, 999, {"ballot (rule 0)": 0.01}, 0.05, tmp_path)
    assert result.available and result.samples == 8
    assert (tmp_path / "perf.folded").read_text().count("\n") == len(perf.fold(samples, "leader/0"))
    image = tmp_path / "flamegraph.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.categories[perf.INTERPRETER] == 2
    assert perf.PerfProfile.from_json(result.to_json()) == result


def test_flame_graph_tree_counts_every_sample(tmp_path: Path) -> None:
    root = tree({"a;b;c": 3, "a;b": 1, "a;d": 2})
    assert root.count == 6 and root.children["a"].children["b"].count == 4
    draw({"a;b;c": 3, "a;d": 2}, tmp_path / "f.png", "t")
    assert (tmp_path / "f.png").stat().st_size > 1000


def _metrics(wall: float, cpu: float, ticks: int, rules: list[list[Any]], sent: list[list[Any]], received: list[list[Any]]) -> dict[str, Any]:
    return {
        "address": "leader/0",
        "wall": wall,
        "cpu": cpu,
        "ticks": ticks,
        "wakeups": ticks // 2,
        "facts_in": ticks * 10,
        "rules": rules,
        "channels": {"sent": sent, "received": received, "frames_sent": ticks * 2},
        "frames": {"frames": ticks * 2 // 5, "bytes": 0, "forged": 0, "malformed": 0, "truncated": 0},
        "log": {"records": 0, "bytes": 0, "fsyncs": 0, "fsync_ns": 0},
        "tick_cpu_ns": {"evaluate": int(cpu * 0.5e9), "log": 0, "send": int(cpu * 0.2e9)},
    }


def test_node_profile_differences_counters_over_the_window() -> None:
    start = _metrics(10.0, 1.0, 100, [[0, "ballot", ":~", 50, 150, 10_000_000]], [["ballot", "participant/0", 150, 4500]], [["client_in", "client/1", 50, 2000]])
    end = _metrics(12.0, 1.1, 300, [[0, "ballot", ":~", 250, 750, 30_000_000]], [["ballot", "participant/0", 750, 22500]], [["client_in", "client/1", 250, 10000]])
    node = node_profile(start, end, "leader", 0.05, throttled_s=0.3)
    assert node.cpu == pytest.approx(0.05)
    assert node.saturation == pytest.approx(1.0)
    assert node.ticks_per_s == pytest.approx(100)
    assert node.wakeups_per_s == pytest.approx(50)
    assert node.rules[0].cpu == pytest.approx(0.01) and node.rules[0].facts_per_s == pytest.approx(300)
    assert node.msgs_out_per_s == pytest.approx(300) and node.msgs_in_per_s == pytest.approx(100)
    assert node.frames_out_per_s == pytest.approx(200)
    assert node.frames_in_per_s == pytest.approx(40)
    parts = node.runtime_parts()
    assert parts["rules"] == pytest.approx(0.01)
    assert sum(parts.values()) == pytest.approx(node.cpu)
    profile = window_profile(3, 64, 1000.0, {"leader/0": start}, {"leader/0": end}, {"leader/0": "leader"}, {"leader/0": 0.05}, 0.5)
    assert profile.wall_s == pytest.approx(2.0)
    back = WindowProfile.from_json(profile.to_json())
    assert back == profile
    assert math.isnan(back.client_cpu)


@pytest.mark.skipif(hostagent.perf_problem() is not None, reason=f"{hostagent.perf_problem()}")
def test_a_local_host_records_its_process_with_perf(tmp_path: Path) -> None:
    from hydrodeploy.deploy import ProcessSpec
    from hydrodeploy.deploy.local import LocalCluster

    busy = ("python3", "-c", "import sys; sys.stdin.read(); n = 0\nwhile True: n += 1")
    cluster = LocalCluster()
    try:
        nodes, _ = cluster.hosts(["busy/0"], 0)
        host = nodes["busy/0"]
        handle = host.start(ProcessSpec("busy/0", busy, b"", tmp_path / "busy.log", tmp_path))
        assert host.perf_problem() is None
        recording = host.perf_record(handle.pid, 1.0, 999)
    finally:
        cluster.close()
    assert recording.reason is None
    samples = perf.parse_samples(recording.script)
    assert len(samples) >= 20  # a second of a busy process at 999 Hz, on cores others may share
    categories = Counter(perf.category(s) for s in samples)
    assert categories.most_common(1)[0][0] == perf.INTERPRETER


def test_missing_perf_is_reported_and_the_counters_carry_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hydrodeploy.deploy.local import LocalCluster
    from hydrodeploy.report.analysis import _bottleneck_blocks

    cluster = LocalCluster()
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # a machine without perf
    try:
        nodes, _ = cluster.hosts(["leader/0"], 0)
        reason = nodes["leader/0"].perf_problem()
        recording = nodes["leader/0"].perf_record(os.getpid(), 0.1, 999)
    finally:
        cluster.close()
    assert reason is not None and reason.startswith("perf is not installed")
    assert recording.reason == reason and recording.script == ""
    iteration = {
        "index": 0,
        "bottleneck": {"address": "leader/0", "evidence": ["leader/0 used 0.050 cores"], "rules": [], "parts": {}},
        "perf": perf.PerfProfile("leader/0", 0, False, reason).to_json(),
    }
    blocks = _bottleneck_blocks(tmp_path, [iteration])
    assert any(isinstance(b, str) and "perf did not run: perf is not installed" in b and "counters" in b for b in blocks)


def test_the_hypervisors_share_of_a_window_is_recorded_with_the_point() -> None:
    from collections import namedtuple

    from hydrodeploy.bench.experiment import host_busy, host_steal
    from hydrodeploy.bench.measure import CSV_COLUMNS, summarize

    Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")
    before = Times(100.0, 0.0, 20.0, 500.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0)
    after = Times(130.0, 0.0, 30.0, 540.0, 0.0, 0.0, 0.0, 30.0, 5.0, 0.0)  # 100 s: 40 busy, 40 idle, 20 stolen
    assert host_steal(before, after) == pytest.approx(0.2)
    assert host_busy(before, after) == pytest.approx(0.6)  # stolen time is not idle: the CPUs could not run anything else
    assert math.isnan(host_steal(namedtuple("T", "user idle")(1.0, 1.0), namedtuple("T", "user idle")(2.0, 2.0)))
    result = {"measure": 1.0, "bins": [10, 10], "completed_measured": 20, "histogram": b"", "latency_sum_us": 20_000,
              "cpu": 0.01, "sent": 20, "retries": 0, "duplicates": 0, "unmatched": 0}  # fmt: skip
    point = summarize(0, 1, 0, [result], [], host_cpu=0.6, host_steal=0.2)
    row = point.row()
    assert row["host_steal"] == 0.2 and set(row) == set(CSV_COLUMNS)
