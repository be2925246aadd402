"""End to end on real SSH hosts: three network namespaces on a bridge, each running OpenSSH's
sshd with a private working directory that hydrodeploy reaches only over SSH (see
:mod:`hydrodeploy.testing.sshd`). A quick voting run across them succeeds and leaves nothing
running; an unreachable host and an unknown host key are one clear error each and leave nothing
behind; a crashed run is cleaned up by ``hydrodeploy teardown``."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from network_harness import swept_counts

from hydrodeploy.bench.experiment import Bench
from hydrodeploy.bench.workload import ClientsSpec, WindowsSpec
from hydrodeploy.deploy import DeployError, ProcessSpec
from hydrodeploy.deploy.cluster import RunClusters, load_cluster, open_cluster
from hydrodeploy.deploy.gcp import GcpCluster, instance_names
from hydrodeploy.deploy.gcpfile import GcpClusterSpec
from hydrodeploy.deploy.ssh import HostKeyRefused, SshCluster, SshHost
from hydrodeploy.deploy.sshfile import SshClusterSpec
from hydrodeploy.report.load import load_points
from hydrodeploy.testing.sshd import SshdHost, SshdHosts, unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(unavailable() is not None, reason=f"{unavailable()}")]

ROOT = Path(__file__).resolve().parents[1]
SLEEPER = ("sh", "-c", "echo up; sleep 300")


@pytest.fixture(scope="module")
def hosts() -> Iterator[SshdHosts]:
    with SshdHosts(3) as made:
        yield made


@pytest.fixture(autouse=True)
def fresh_known_hosts(hosts: SshdHosts) -> Iterator[None]:
    hosts.write_known_hosts(hosts.hosts)
    yield
    settle(hosts)


def settle(hosts: SshdHosts) -> dict[str, list[str]]:
    """What still runs on the hosts once closing SSH sessions had a moment to end (polled, not
    timed: an empty answer returns at once)."""
    left = hosts.leftovers()
    deadline = time.monotonic() + 15.0
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = hosts.leftovers()
    return left


def run_dirs(hosts: SshdHosts) -> list[Path]:
    return [d for h in hosts.hosts for d in (h.workdir / "runs").glob("*")]


def env() -> dict[str, str]:
    """The environment of the orchestrator: no ssh-agent (only the cluster file's key)."""
    return {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}


def hydrodeploy(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hydrodeploy.cli.main", *args], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=timeout
    )


def test_a_quick_voting_run_across_three_ssh_hosts(hosts: SshdHosts, tmp_path: Path) -> None:
    cluster = hosts.cluster_file(tmp_path / "netns.yaml")
    reports = tmp_path / "reports"
    proc = hydrodeploy("run", "workloads/voting.yaml", "--quick", "--cluster", str(cluster), "--reports", str(reports))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "run directory:" in proc.stdout
    assert settle(hosts) == {}  # nothing left running on any host
    assert run_dirs(hosts) == []  # the remote run directories are gone ...
    for host in hosts.hosts:  # ... the bundle stays for the next run
        assert len(list((host.workdir / "bundles").glob("*/.complete"))) == 1

    run = (reports / "latest").resolve()
    state = json.loads((run / "cluster.json").read_text())
    assert state["kind"] == "ssh" and state["status"] == "closed" and state["problems"] == []
    placed = {h["host"]: h for h in state["hosts"]}
    assert set(placed) == {h.address for h in hosts.hosts}
    assert all(h["python"] and h["run_dir"].startswith(h["workdir"]) for h in placed.values())

    logs = run / "iterations" / "00" / "logs"
    leader = (logs / "leader-0.log").read_text()
    # nodes listen on their host's address, on the three hosts in turn
    assert "leader/0: pid" in leader and f"listening on {hosts.hosts[0].address}:" in leader
    assert f"listening on {hosts.hosts[1].address}:" in (logs / "participant-0.log").read_text()
    assert f"listening on {hosts.hosts[2].address}:" in (logs / "participant-1.log").read_text()
    assert "hydrodeploy-launcher: leader-0: exited with status 0" in leader
    merged = (logs / "hosts.log").read_text().splitlines()
    assert any(line.startswith(f"leader/0@{hosts.hosts[0].address} | ") for line in merged)
    assert any(line.startswith(f"clients/1@{hosts.hosts[2].address} | ") for line in merged)
    assert swept_counts(load_points(run, 0)) == [1, 4, 16, 48]  # the four quick client counts
    # the deployment secret travels on stdin only: no log, no spec, no state file holds config JSON
    for path in [*logs.iterdir(), run / "spec.yaml", run / "cluster.json"]:
        assert '"secret"' not in path.read_text()


def test_an_unreachable_host_is_named_and_nothing_is_left_on_the_others(hosts: SshdHosts, tmp_path: Path) -> None:
    dead = hosts.free_address()
    addresses = [h.address for h in hosts.hosts] + [dead]
    cluster = hosts.cluster_file(tmp_path / "netns.yaml", hosts=addresses, ssh={"connect_timeout_s": 2, "connect_retries": 2, "retry_backoff_s": 0.1})
    proc = hydrodeploy("run", "workloads/voting.yaml", "--quick", "--cluster", str(cluster), "--reports", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: host {dead}: cannot connect to {dead} port 22 (2 attempts): ")
    assert settle(hosts) == {}
    assert run_dirs(hosts) == []  # the reachable hosts were set up, then cleaned
    state = json.loads(next((tmp_path / "r").glob("*/cluster.json")).read_text())
    assert state["status"] == "closed"


def test_an_unknown_host_key_is_refused_with_its_fingerprint(hosts: SshdHosts, tmp_path: Path) -> None:
    stranger = hosts.hosts[1]
    hosts.write_known_hosts([hosts.hosts[0], hosts.hosts[2]])
    cluster = hosts.cluster_file(tmp_path / "netns.yaml")
    proc = hydrodeploy("run", "workloads/voting.yaml", "--quick", "--cluster", str(cluster), "--reports", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"host {stranger.address}: unknown host key ssh-ed25519 {stranger.fingerprint}" in lines[0]
    assert "refusing to connect" in lines[0] and "host_key_policy: accept-new" in lines[0]
    assert stranger.address not in hosts.known_hosts.read_text()  # nothing was added
    assert settle(hosts) == {}
    assert run_dirs(hosts) == []


def test_accept_new_saves_unknown_keys_but_a_changed_key_is_always_refused(hosts: SshdHosts, tmp_path: Path) -> None:
    hosts.write_known_hosts([hosts.hosts[0]])
    spec = load_cluster(hosts.cluster_file(tmp_path / "netns.yaml", host_key_policy="accept-new"))
    cluster = open_cluster(spec, tmp_path)
    try:
        added = [w for w in cluster.warnings if "accepted a new host key" in w]
        assert len(added) == 2 and hosts.hosts[1].fingerprint in " ".join(added)
    finally:
        cluster.close()
    text = hosts.known_hosts.read_text()
    assert all(h.address in text for h in hosts.hosts)
    # host 0's entry now holds host 2's key: a changed key, refused even under accept-new
    wrong = text.replace(hosts.hosts[0].host_key_line, hosts.hosts[2].host_key_line, 1)
    hosts.known_hosts.write_text(wrong)
    expected = f"host {hosts.hosts[0].address}: its host key ssh-ed25519 {hosts.hosts[0].fingerprint} does not match"
    with pytest.raises(HostKeyRefused, match=re.escape(expected)):
        open_cluster(spec, tmp_path)
    assert run_dirs(hosts) == []


def test_processes_beyond_max_sessions_open_more_connections(hosts: SshdHosts, tmp_path: Path) -> None:
    spec = load_cluster(hosts.cluster_file(tmp_path / "netns.yaml", ssh={"max_sessions": 3}))
    assert isinstance(spec, SshClusterSpec)
    cluster = SshCluster(spec, tmp_path)
    try:
        machine = cluster.machines[0]
        handles = [machine.start(ProcessSpec(f"s/{i}", SLEEPER, b"", tmp_path / f"s-{i}.log", tmp_path)) for i in range(7)]
        deadline = time.monotonic() + 30
        while not all(h.pid for h in handles) and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.05)
        assert all(h.returncode() is None for h in handles)
        assert len(machine._connections) >= 3  # 7 channels at 3 per connection
        assert len({h.pid for h in handles}) == 7  # type: ignore[attr-defined]
    finally:
        cluster.close()
    assert [h.returncode() for h in handles] == [-signal.SIGTERM] * 7
    assert settle(hosts) == {}
    assert run_dirs(hosts) == []


CRASHING_ORCHESTRATOR = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hydrodeploy.deploy import ProcessSpec
    from hydrodeploy.deploy.cluster import load_cluster, open_cluster
    cluster = open_cluster(load_cluster(sys.argv[1]), Path(sys.argv[2]))
    nodes, _ = cluster.hosts(["a/0", "b/0", "c/0"], 0)
    # processes that leave a child in their process group (as a profiler would)
    started = [
        host.start(ProcessSpec(name, ("sh", "-c", "sleep 300 & wait"), b"", Path(sys.argv[2]) / f"{name[0]}.log", Path.cwd()))
        for name, host in nodes.items()
    ]
    while not all(p.pid for p in started):  # the supervisors report the pids once running
        time.sleep(0.02)
    print("started", flush=True)
    time.sleep(300)
    """
)


def test_teardown_removes_what_a_crashed_run_left(hosts: SshdHosts, tmp_path: Path) -> None:
    cluster = hosts.cluster_file(tmp_path / "netns.yaml")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "spec.yaml").write_text(yaml.safe_dump({"cluster": "netns"}))
    orchestrator = subprocess.Popen(
        [sys.executable, "-c", CRASHING_ORCHESTRATOR, str(cluster), str(run_dir)], stdout=subprocess.PIPE, env=env()
    )
    assert orchestrator.stdout is not None
    assert orchestrator.stdout.readline() == b"started\n"
    # the worst crash: the supervisors on the hosts and the orchestrator die outright (the
    # supervisors first: else they would stop their process groups when the orchestrator's
    # channels close); the processes die with their supervisor, the children they started stay
    supervisors = [int(p.split()[0]) for h in hosts.hosts for p in h.processes() if "python3 -S" in p and "hostagent.py launch" in p]
    assert len(supervisors) == 3
    for pid in supervisors:
        os.kill(pid, signal.SIGKILL)
    orchestrator.kill()
    orchestrator.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        left = {a: [p for p in ps if "sshd" not in p] for a, ps in hosts.leftovers().items()}
        if sorted(len(ps) for ps in left.values()) == [1, 1, 1]:
            break
        time.sleep(0.05)
    assert sorted(p.split(None, 1)[1] for ps in left.values() for p in ps) == ["sleep 300"] * 3, left
    assert len(run_dirs(hosts)) == 3

    proc = hydrodeploy("teardown", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    assert all("stopped 1 process group" in line and "removed its run directory" in line for line in lines), lines
    assert settle(hosts) == {}
    assert run_dirs(hosts) == []
    assert json.loads((run_dir / "cluster.json").read_text())["status"] == "torn down"

    again = hydrodeploy("teardown", str(run_dir))  # safe to repeat
    assert again.returncode == 0, again.stderr
    assert all("nothing was running; no run directory" in line for line in again.stdout.strip().splitlines())


def test_every_host_runs_the_host_agent_from_one_unpacked_bundle(hosts: SshdHosts, tmp_path: Path) -> None:
    spec = load_cluster(hosts.cluster_file(tmp_path / "netns.yaml"))
    cluster = open_cluster(spec, tmp_path)
    try:
        assert isinstance(cluster, SshCluster)
        for machine in cluster.machines:
            assert isinstance(machine, SshHost)
            out = machine.check(["ls", f"{machine.workdir}/bundles"], "listing bundles").decode().split()
            assert cluster.bundle.sha256 in out  # (with the bundles of earlier code versions)
            assert not [name for name in out if ".tmp-" in name]  # unpacked atomically
            mode = machine.check(["stat", "-c", "%a", machine.run_dir], "stat").decode().strip()
            assert mode == "700"  # the run directory is private
    finally:
        cluster.close()


def recorded_gcp(hosts: SshdHosts, tmp_path: Path) -> tuple[GcpClusterSpec, Callable[[], GcpCluster], Any, list[SshdHost]]:
    """A GCP cluster file of two machines, and how to open it against recorded API answers (FAKE:
    the real service is not reachable from a test) whose instances are two of this machine's sshd
    hosts; with the replaying adapter (what it has not answered yet) and those two hosts."""
    from test_gcp import RECORDINGS, RUN_ID, values

    from hydrodeploy.testing.gcp import fake_compute, load_recording

    two = hosts.hosts[:2]
    hosts.known_hosts.write_text("")  # nothing known in advance: the keys come from the API
    spec = GcpClusterSpec.model_validate(
        {"name": "g", "kind": "gcp", "project": "demo-project", "zone": "us-central1-a", "machines": 2, "user": "root", "key": str(hosts.user_key)}
    )
    addresses = [h.address for h in two]
    recording = load_recording(RECORDINGS / "run_two_instances.json", values(spec, addresses, addresses, [h.host_key_line.split()[1] for h in two]))
    compute, adapter = fake_compute(recording)
    workdirs = {h.address: str(h.workdir) for h in two}

    def open_ssh(sspec: SshClusterSpec, run_dir: Path | None, run_id: str, state: dict[str, object]) -> SshCluster:
        # what only a real VM has: a startup script that finished (skipped), a home to work in
        # (each sshd host's private working directory instead), the python3 to use
        local = sspec.model_copy(
            update={
                "hosts": [h.model_copy(update={"workdir": workdirs[h.host]}) for h in sspec.hosts],
                "python": "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3",
                "agent": False,
            }
        )
        return SshCluster(local, run_dir, run_id, state)

    def create() -> GcpCluster:
        return GcpCluster(spec, tmp_path, compute=compute, run_id=RUN_ID, open_ssh=open_ssh, sleep=lambda s: None)

    return spec, create, adapter, two


async def one_point(bench: Bench) -> float:
    await bench.start()
    point, _ = await bench.point(0, 4, WindowsSpec(warmup_s=0.3, measure_s=0.5, cooldown_s=0.1, bin_s=0.25), ClientsSpec())
    await bench.stop()
    return point.throughput


def test_gcp_instances_become_ssh_hosts_checked_with_keys_from_guest_attributes(hosts: SshdHosts, tmp_path: Path) -> None:
    """The GCP backend end to end, the API answered from recorded responses (FAKE: the real
    service is not reachable from a test) whose instances are two of this machine's sshd hosts:
    their host keys come from the recorded guest attributes, the SSH connections are checked
    strictly against them, processes run, and closing deletes the instances by label."""
    from test_gcp import RUN_ID

    spec, create, adapter, two = recorded_gcp(hosts, tmp_path)
    cluster = create()
    try:
        known = (tmp_path / "known_hosts").read_text()
        assert all(f"{h.address} {h.host_key_line}" in known for h in two)
        # control: tunnel (the GCP default): the orchestrator listens on its own loopback
        # address, which the hosts (other network namespaces) reach only through SSH
        assert cluster.orchestrator_address() == "127.0.0.1"
        bench = Bench(ROOT / "protocols" / "voting.ded", cluster, tmp_path / "logs", client_processes=1)
        assert asyncio.run(one_point(bench)) > 0
        placed = {name: peer.host.address for name, peer in bench.deployment.peers.items()}
        assert placed == {
            "leader/0": two[0].address,
            "participant/0": two[1].address,
            "participant/1": two[0].address,
            "participant/2": two[1].address,
            "clients/0": two[0].address,
        }
    finally:
        cluster.close()
    assert settle(hosts) == {}
    assert run_dirs(hosts) == []
    state = json.loads((tmp_path / "cluster.json").read_text())
    assert state["kind"] == "gcp" and state["status"] == "closed"
    assert state["cost_per_hour"] == pytest.approx(2 * 0.194236)
    assert state["deleted"] == instance_names(spec, RUN_ID)
    assert [h["host"] for h in state["hosts"]] == [h.address for h in two]  # what the SSH part recorded
    assert state["instances"][1]["host_keys"] == [f"ssh-ed25519 {two[1].fingerprint}"]
    assert adapter.pending == []


def test_an_analysis_keeps_its_gcp_instances_from_one_deployment_to_the_next(hosts: SshdHosts, tmp_path: Path) -> None:
    """What ``hydrodeploy analyze`` does per iteration: deployments one after another on the
    clusters of one run. The instances are created once (the recording answers one creation:
    a second would fail), each deployment ends with its processes stopped and the hosts' run
    directory removed, and closing the run deletes the instances."""
    from test_gcp import RUN_ID

    spec, create, adapter, _ = recorded_gcp(hosts, tmp_path)
    clusters = RunClusters(spec, tmp_path, create=create)
    try:
        for deployment in range(3):
            cluster = clusters.deployment()
            bench = Bench(ROOT / "protocols" / "voting.ded", cluster, tmp_path / f"logs{deployment}", client_processes=1)
            try:
                assert asyncio.run(one_point(bench)) > 0
            finally:
                bench.close()
            assert settle(hosts) == {}
            assert run_dirs(hosts) == []
            assert json.loads((tmp_path / "cluster.json").read_text())["status"] == "kept"
            assert cluster.warnings == []
    finally:
        clusters.close()
    state = json.loads((tmp_path / "cluster.json").read_text())
    assert state["status"] == "closed" and state["deleted"] == instance_names(spec, RUN_ID)
    assert adapter.pending == []


def test_a_host_lost_mid_run_is_named_and_the_cleanup_problem_reported(hosts: SshdHosts, tmp_path: Path) -> None:
    lost = hosts.hosts[1]
    spec = load_cluster(hosts.cluster_file(tmp_path / "netns.yaml"))
    assert isinstance(spec, SshClusterSpec)
    cluster = SshCluster(spec, tmp_path)
    try:
        handle = cluster.machines[1].start(ProcessSpec("s/0", SLEEPER, b"", tmp_path / "s.log", tmp_path))
        deadline = time.monotonic() + 30
        while not handle.pid and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.05)
        hosts.crash(lost)
        assert handle.wait(60) == 255
        assert handle.describe_exit() == f"lost: the SSH connection to {lost.address} ended"
    finally:
        cluster.close()
        hosts.restart(lost)
    assert [w for w in cluster.warnings if w.startswith("cleaning up failed: ")] == [
        f"cleaning up failed: host {lost.address}: cannot connect to {lost.address} port 22 (2 attempts): "
        f"[Errno 111] Connection refused; something of the run may be left there: run `hydrodeploy teardown {tmp_path}`"
    ]
    assert json.loads((tmp_path / "cluster.json").read_text())["status"] == "incomplete"
    assert settle(hosts) == {}
    # the others were cleaned; the lost host's run directory is what teardown is for
    assert [d.parent.parent.parent.name for d in run_dirs(hosts)] == ["host1"]
    proc = hydrodeploy("teardown", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert run_dirs(hosts) == []


def test_client_processes_on_the_orchestrators_machine_and_durable_logs_fetched(hosts: SshdHosts, tmp_path: Path) -> None:
    spec = load_cluster(hosts.cluster_file(tmp_path / "netns.yaml", clients="local"))
    cluster = open_cluster(spec, tmp_path)
    durable = tmp_path / "durable"
    bench = Bench(ROOT / "protocols" / "two_pc.ded", cluster, tmp_path / "logs", client_processes=2, durable_dir=durable)

    async def one_point() -> float:
        await bench.start()
        # a window long enough that the first transactions complete within it on a loaded machine
        # (0.3 s of warm-up and 0.5 s of measurement once measured nothing while the suite ran)
        point, _ = await bench.point(0, 8, WindowsSpec(warmup_s=1.0, measure_s=1.0, cooldown_s=0.1, bin_s=0.25), ClientsSpec())
        await bench.stop()
        return point.throughput

    try:
        assert asyncio.run(one_point()) > 0
        placed = {name: peer.host.address for name, peer in bench.deployment.peers.items()}
        local = cluster.orchestrator_address()  # the bridge's address on this machine
        assert placed["clients/0"] == placed["clients/1"] == local
        assert {placed[n] for n in bench.deployment.nodes()} == {h.address for h in hosts.hosts}
    finally:
        bench.close()
    assert settle(hosts) == {}
    assert run_dirs(hosts) == []
    # the nodes' .log records (written on the hosts) were fetched back where the orchestrator keeps them
    records = {p.name: p.read_text().splitlines() for p in durable.glob("*.jsonl")}
    assert set(records) == {"coordinator-0.jsonl", "participant-0.jsonl", "participant-1.jsonl", "participant-2.jsonl"}
    assert all(records.values())
    assert json.loads(records["coordinator-0.jsonl"][0])[0] == "coord_commit_log"


@functools.cache
def other_python() -> str | None:
    """An interpreter here of another CPython minor version than this one, if there is one."""
    import glob
    import shutil

    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))
    candidates += [shutil.which(f"python3.{minor}") or "" for minor in range(8, 16)]
    for path in candidates:
        if not path or not os.access(path, os.X_OK):
            continue
        probe = subprocess.run([path, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"], capture_output=True, text=True)
        if probe.returncode != 0:
            continue  # e.g. a pyenv shim of a version that is not selected
        major, minor = map(int, probe.stdout.split())
        if (major, minor) >= (3, 8) and minor != sys.version_info.minor:
            return path
    return None


@pytest.mark.skipif(other_python() is None, reason="no interpreter of another Python version here")
def test_a_host_python_that_cannot_load_the_bundle_is_named(hosts: SshdHosts, tmp_path: Path) -> None:
    python = other_python()
    assert python is not None
    spec = load_cluster(hosts.cluster_file(tmp_path / "netns.yaml", python=python))
    with pytest.raises(DeployError) as info:
        open_cluster(spec, tmp_path)
    message = str(info.value)
    assert message.startswith(f"host {hosts.hosts[0].address}: its Python 3.") or "3 of 3 hosts could not be set up" in message
    assert "loads extension modules" in message and "pyhdrh" in message
    assert run_dirs(hosts) == []
