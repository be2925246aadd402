"""The local cluster's emulated machines: CPU quotas in per-process cgroups (or a warning and no
throttling where cgroups cannot be written), packing onto this machine's CPUs, network namespaces
with netem delay, and nothing left behind when the cluster closes."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from network_harness import PROTOCOLS, alive

from hydrodeploy.bench.experiment import Bench, cpu_times, host_busy
from hydrodeploy.bench.workload import ClientsSpec, WindowsSpec
from hydrodeploy.deploy import ProcessSpec
from hydrodeploy.deploy import local as local_mod
from hydrodeploy.deploy.local import (
    LocalCluster,
    cfs_period_s,
    cgroups_unavailable,
    namespaces_unavailable,
    pack_cpus,
    quota_for,
)

SLEEPER = (sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)")


def test_quota_keeps_the_kernel_minimum() -> None:
    assert quota_for(0.25, 10_000) == (10_000, 2_500)
    assert quota_for(0.05, 10_000) == (20_000, 1_000)
    assert quota_for(2.0, 10_000) == (10_000, 20_000)


def test_packing_fills_the_fewest_cpus_with_contiguous_runs_of_nodes() -> None:
    assert pack_cpus([0.05] * 14, [0, 1]) == [0] * 14  # 0.7 of a core: one CPU, the other free
    assert pack_cpus([0.05] * 16, [0, 1]) == [0] * 16  # 0.8: still one
    assert pack_cpus([0.05] * 17, [0, 1]) is None  # would need both: nothing pinned
    assert pack_cpus([0.25] * 9, [0, 1, 2, 3]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # 2.25 cores on three of four
    assert pack_cpus([0.1] * 3, [5]) is None  # a single CPU: nothing to choose
    assert pack_cpus([], [0, 1]) is None


@given(
    quotas=st.lists(st.sampled_from([0.05, 0.1, 0.25, 0.5]), min_size=1, max_size=60),
    cpus=st.integers(min_value=1, max_value=8),
)
def test_packing_properties(quotas: list[float], cpus: int) -> None:
    placed = pack_cpus(quotas, list(range(10, 10 + cpus)))
    needed = math.ceil(round(sum(quotas) / 0.8, 9))  # CPUs the quotas need at 0.8 of a core each
    if placed is None:
        assert needed >= cpus
        return
    assert needed < cpus and len(placed) == len(quotas)
    groups = sorted(set(placed))
    assert groups == list(range(10, 10 + len(groups)))  # the first CPUs, as few as hold the quotas
    assert len(groups) <= max(1, needed)
    assert placed == sorted(placed)  # contiguous runs in deployment order
    share = sum(quotas) / len(groups)
    for cpu in groups:  # equal shares, give or take the node that straddles a boundary
        assert sum(q for q, c in zip(quotas, placed, strict=True) if c == cpu) <= share + max(quotas) + 1e-9


def start_sleeper(cluster: LocalCluster, tmp: Path, name: str = "n/0") -> tuple[object, object]:
    hosts, _ = cluster.hosts([name], 0)
    handle = hosts[name].start(ProcessSpec(name, SLEEPER, b"", tmp / "n.log", tmp))
    return hosts[name], handle


@pytest.mark.skipif(cgroups_unavailable() is not None, reason=f"no writable cgroups: {cgroups_unavailable()}")
def test_process_gets_its_own_cpu_cgroup_and_it_is_removed(tmp_path: Path) -> None:
    cluster = LocalCluster(cpus=0.1)
    try:
        assert cluster.warnings == []
        host, handle = start_sleeper(cluster, tmp_path)
        assert host.cpus == 0.1  # type: ignore[attr-defined]
        handle.apply_limits()  # type: ignore[attr-defined]
        group = handle.group  # type: ignore[attr-defined]
        assert (group.path / "cpu.cfs_quota_us").read_text().strip() == "1000"
        assert (group.path / "cpu.cfs_period_us").read_text().strip() == "10000"
        assert group.pids() == [handle.pid]  # type: ignore[attr-defined]
        assert set(handle.cpu_stats()) >= {"nr_periods", "nr_throttled", "throttled_s"}  # type: ignore[attr-defined]
    finally:
        cluster.close()
    assert not alive(handle.pid)  # type: ignore[attr-defined]
    assert not group.path.exists()
    assert not group.path.parent.exists()


def _allowed_cpus(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no Cpus_allowed_list")


@pytest.mark.skipif(cgroups_unavailable() is not None, reason=f"no writable cgroups: {cgroups_unavailable()}")
@pytest.mark.skipif(cgroups_unavailable() is not None, reason=f"no writable cgroups: {cgroups_unavailable()}")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: nothing to pack")
@pytest.mark.parametrize("pack", [True, False])
def test_throttled_nodes_and_their_clients_share_the_first_cpu(tmp_path: Path, pack: bool) -> None:
    first = min(os.sched_getaffinity(0))
    cluster = LocalCluster(cpus=0.1, pack=pack)
    try:
        nodes, clients = cluster.hosts(["a/0", "a/1", "b/0"], 1)
        hosts = [*nodes.values(), clients[0]]
        handles = [h.start(ProcessSpec(f"p{i}", SLEEPER, b"", tmp_path / f"{i}.log", tmp_path)) for i, h in enumerate(hosts)]
        for handle in handles:
            allowed = os.sched_getaffinity(handle.pid)  # type: ignore[attr-defined]
            assert allowed == {first} if pack else allowed == os.sched_getaffinity(0)
        assert cluster.placement == (dict.fromkeys(["a/0", "a/1", "b/0"], first) if pack else {})
    finally:
        cluster.close()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU")
def test_a_point_counts_the_cpus_its_processes_are_pinned_to() -> None:
    """A deployment packed onto one CPU saturates it while the machine as a whole is half idle:
    the busy fraction that flags host-saturated points is taken over the pinned CPUs."""
    first = min(os.sched_getaffinity(0))
    spin = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass"],
        preexec_fn=lambda: os.sched_setaffinity(0, {first}),
    )
    others = sorted(os.sched_getaffinity(0) - {first})
    try:
        time.sleep(0.3)
        pinned_before, all_before, others_before = cpu_times([first]), cpu_times(), cpu_times(others)
        time.sleep(0.8)
        pinned_after, all_after, others_after = cpu_times([first]), cpu_times(), cpu_times(others)
    finally:
        spin.wait()
    assert host_busy(pinned_before, pinned_after) > 0.9
    if host_busy(others_before, others_after) > 0.9:
        pytest.skip("other programs kept the other CPUs busy too: the machine was not half idle")
    assert host_busy(all_before, all_after) < host_busy(pinned_before, pinned_after)


def test_without_writable_cgroups_the_cluster_says_so_and_runs_unthrottled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_mod, "CGROUP_CPU", tmp_path / "no-cgroups")
    cluster = LocalCluster(cpus=0.1)
    try:
        assert len(cluster.warnings) == 1
        assert "CPU limits not applied" in cluster.warnings[0] and "unthrottled" in cluster.warnings[0]
        host, handle = start_sleeper(cluster, tmp_path)
        assert host.cpus is None  # type: ignore[attr-defined]
        handle.apply_limits()  # type: ignore[attr-defined]
        assert handle.cpu_stats() == {}  # type: ignore[attr-defined]
        assert handle.returncode() is None  # type: ignore[attr-defined]
    finally:
        cluster.close()
    assert not alive(handle.pid)  # type: ignore[attr-defined]


def test_log_tail_and_exit_description(tmp_path: Path) -> None:
    cluster = LocalCluster()
    try:
        hosts, _ = cluster.hosts(["n/0"], 0)
        argv = (sys.executable, "-c", "import sys; print('\\n'.join(map(str, range(30)))); sys.exit(7)")
        handle = hosts["n/0"].start(ProcessSpec("n/0", argv, b"", tmp_path / "n.log", tmp_path))
        assert handle.wait(30) == 7
        assert handle.describe_exit() == "exited with status 7"
        assert handle.log_tail(3) == ["27", "28", "29"]
    finally:
        cluster.close()


@pytest.mark.e2e
@pytest.mark.skipif(namespaces_unavailable() is not None, reason=f"{namespaces_unavailable()}")
def test_voting_over_namespaces_with_netem_delay(tmp_path: Path) -> None:
    delay_ms = 3.0
    cluster = LocalCluster(name="netem", namespaces=True, delay_ms=delay_ms)
    network = cluster._network
    if network is None:
        cluster.close()
        pytest.skip(f"network namespaces unavailable here: {cluster.warnings}")
    delayed = network.netem_error is None
    if not delayed:  # a kernel without sch_netem: the cluster says so and runs without delay
        assert any("network delay not applied" in w for w in cluster.warnings)
    bridge = network.bridge
    namespaces: list[str] = []

    async def go() -> tuple[object, list[dict[str, object]]]:
        bench = Bench(PROTOCOLS / "voting.ded", cluster, tmp_path / "logs", client_processes=1)
        try:
            await bench.start()
            assert bench.deployment.directory is not None
            assert all(h.startswith("10.213.") for h, _ in bench.deployment.directory.nodes.values())
            namespaces.extend(network.namespaces)
            assert len(namespaces) == 5  # 4 nodes, 1 client process
            qdisc = subprocess.run(["tc", "-n", namespaces[0], "qdisc", "show"], capture_output=True, text=True).stdout
            assert ("netem" in qdisc and "delay 3ms" in qdisc) == delayed
            windows = WindowsSpec(warmup_s=0.2, measure_s=0.5, cooldown_s=0.1, bin_s=0.25)
            point, raw = await bench.point(0, 2, windows, ClientsSpec(), record=True)
            await bench.stop()
            return point, raw
        finally:
            bench.close()

    try:
        point, raw = asyncio.run(go())
    finally:
        cluster.close()
    assert point.completed > 0  # type: ignore[attr-defined]
    assert sum(int(r["outstanding"]) for r in raw) == 0  # type: ignore[call-overload]
    if delayed:  # four one-way hops (client, leader, participant, leader, client), each delayed
        assert point.p50_ms >= 4 * delay_ms * 0.95  # type: ignore[attr-defined]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in listed.split() for ns in namespaces)
    assert bridge not in subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout


def test_the_analysis_simulates_nodes_throttled_over_the_period_the_cgroup_enforces(tmp_path: Path) -> None:
    """A twentieth of a core over a 10 ms period is 1 ms every 20 ms in the cgroup; the performance
    simulation throttles over the same 20 ms (over 10 ms its nodes ticked twice as often with half
    the budget, on smaller batches)."""
    from hydrodeploy.bench.workload import load_workload
    from hydrodeploy.deploy.cluster import load_cluster
    from hydrodeploy.optimize.loop import Analysis, LoopObserver
    from hydrodeploy.report.rundir import RunDirectory

    root = Path(__file__).resolve().parent.parent
    workload = load_workload(root / "workloads" / "voting.yaml")
    cluster = load_cluster(root / "clusters" / "local-small.yaml")
    analysis = Analysis(workload, cluster, RunDirectory(tmp_path), LoopObserver())
    cpus = cluster.machine.cpus  # type: ignore[union-attr]
    assert cpus == 0.05
    assert analysis.period_s == cfs_period_s(cpus, 10_000) == 0.02
    assert cfs_period_s(0.25, 10_000) == 0.01
    assert cfs_period_s(None, 10_000) == 0.01
