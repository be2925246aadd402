"""perf on the bottleneck where it runs: a profiled sweep on real SSH hosts (OpenSSH sshd in
network namespaces, :mod:`hydrodeploy.testing.sshd`) records the bottleneck node with ``perf`` on
its host through the host agent, brings the ``perf script`` text back and attributes it; on a host
without perf the profile names the host and the sweep's measurements stand."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from network_harness import swept_counts
from test_ssh_e2e import ROOT, run_dirs, settle

from hydrodeploy.bench.experiment import Bench, Observer
from hydrodeploy.bench.measure import Plateau
from hydrodeploy.bench.workload import ClientsSpec, WindowsSpec
from hydrodeploy.deploy import hostagent
from hydrodeploy.deploy.cluster import load_cluster, open_cluster
from hydrodeploy.deploy.ssh import SshHost
from hydrodeploy.profile import perf
from hydrodeploy.profile.session import Measured, profiled_sweep
from hydrodeploy.testing.sshd import SshdHosts, unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(unavailable() is not None, reason=f"{unavailable()}")]

WINDOWS = WindowsSpec(warmup_s=0.3, measure_s=1.5, cooldown_s=0.2, bin_s=0.25)


@pytest.fixture(scope="module")
def hosts() -> Iterator[SshdHosts]:
    with SshdHosts(2) as made:
        yield made


def profiled(hosts: SshdHosts, tmp_path: Path) -> tuple[Measured, dict[str, Any]]:
    """One profiled sweep of voting on the hosts (two client counts, then the perf point into
    ``tmp_path/perf``), and what was true on the hosts while it ran."""
    cluster = open_cluster(load_cluster(hosts.cluster_file(tmp_path / "netns.yaml")), tmp_path)
    bench = Bench(ROOT / "protocols" / "voting.ded", cluster, tmp_path / "logs", client_processes=1)

    async def run() -> tuple[Measured, dict[str, Any]]:
        await bench.start()
        measured = await profiled_sweep(
            bench, WINDOWS, [4, 16], 1, ClientsSpec(), Plateau(0.0, 99, None), Observer(), tmp_path / "perf",
            lambda point, profile: None, local=False,
        )  # fmt: skip
        dep = bench.deployment
        seen: dict[str, Any] = {
            "hosts": {n: p.host for n, p in dep.peers.items()},
            "pids": {n: dep.handle(n).pid for n in dep.peers},
            "running": {h.address: h.pids() for h in hosts.hosts},  # what runs in each host's namespace
        }
        seen["recordings"] = [p for h in cluster.machines for p in Path(h.run_dir).glob("perf/*")]  # type: ignore[attr-defined]
        await bench.stop()
        return measured, seen

    try:
        return asyncio.run(run())
    finally:
        bench.close()


@pytest.mark.skipif(hostagent.perf_problem() is not None, reason=f"{hostagent.perf_problem()}")
def test_the_bottleneck_is_recorded_with_perf_on_its_ssh_host(hosts: SshdHosts, tmp_path: Path) -> None:
    measured, seen = profiled(hosts, tmp_path)
    assert swept_counts(measured.points) == [4, 16] and all(p.throughput > 0 for p in measured.points)
    result = measured.perf
    assert result is not None and result.available, result
    assert result.reason == ""
    # the most saturated node of the best point, recorded by its remote pid on its SSH host
    best = measured.best_index()
    assert best is not None
    assert result.node == max(measured.profiles[best].nodes, key=lambda n: n.saturation).address
    host = seen["hosts"][result.node]
    assert isinstance(host, SshHost)
    assert result.pid == seen["pids"][result.node] > 0
    assert result.pid in seen["running"][host.address]  # a process of that host, not of this machine
    # samples came back and were attributed
    assert result.samples > 0 and sum(result.categories.values()) == result.samples
    assert perf.INTERPRETER in result.categories
    assert sum(result.attribution.values()) == pytest.approx(1.0)
    assert result.rules, "the node's rule counters split the interpreter's share"
    folded = (tmp_path / "perf" / "perf.folded").read_text().splitlines()
    assert folded and all(line.startswith(f"{result.node};") for line in folded)
    assert sum(int(line.rsplit(" ", 1)[1]) for line in folded) == result.samples
    assert (tmp_path / "perf" / "flamegraph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen["recordings"] == []  # perf.data was removed on the host right after perf script
    assert settle(hosts) == {}
    assert run_dirs(hosts) == []


def test_a_host_without_perf_is_named_and_the_measurements_stand(tmp_path: Path) -> None:
    empty = tmp_path / "bin"  # the commands' PATH on the host: no perf there
    empty.mkdir()
    with SshdHosts(1, path=str(empty)) as bare:
        measured, seen = profiled(bare, tmp_path)
        assert settle(bare) == {}
    address = bare.hosts[0].address
    assert swept_counts(measured.points) == [4, 16] and all(p.throughput > 0 for p in measured.points)
    result = measured.perf
    assert result is not None and not result.available
    assert result.reason == f"host {address}: perf is not installed (Debian: apt-get install linux-perf)"
    assert isinstance(seen["hosts"][result.node], SshHost)
    assert result.samples == 0 and not (tmp_path / "perf").exists()
