"""Faults of a running `hydrodeploy run`: a node killed mid-run is reported (naming it, with its
last log lines) and the run ends without hanging; interrupting or killing the orchestrator leaves
no process (and no cgroup) behind, and an interrupted run keeps the points it measured."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from network_harness import (
    PROTOCOLS,
    ROOT,
    WINDOWS,
    cgroup_dirs_of,
    descendants,
    pid_in_log,
    swept_counts,
    wait_for,
    wait_gone,
)

from hydrodeploy.bench.experiment import Bench
from hydrodeploy.bench.measure import Point, counted
from hydrodeploy.bench.workload import ClientsSpec
from hydrodeploy.deploy import ProcessFailure
from hydrodeploy.deploy.local import LocalCluster, clean_stale
from hydrodeploy.report.load import load_points

pytestmark = pytest.mark.e2e

NO_HANG_S = 60.0


def workload(tmp: Path, clients: list[int], measure_s: float, cluster: str) -> Path:
    path = tmp / "wl.yaml"
    path.write_text(
        f"""
name: fault
protocol: {PROTOCOLS / "voting.ded"}
cluster: {ROOT / "clusters" / cluster}
clients: {{processes: 2}}
windows: {{warmup_s: 0.2, measure_s: {measure_s}, cooldown_s: 0.1, bin_s: 0.25}}
sweep: {{clients: {clients}, plateau_steps: 99}}
"""
    )
    return path


def _interruptible() -> None:
    # a shell starting the test run in the background ignores SIGINT for it, and children inherit
    # that; the run under test is interrupted as from a terminal, so it starts with the default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_run(tmp: Path, wl: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hydrodeploy.cli.main", "run", str(wl), "--reports", str(tmp / "reports")],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
    )


def run_dir(tmp: Path) -> Path:
    return (tmp / "reports" / "latest").resolve()


def logs(tmp: Path) -> Path:
    return run_dir(tmp) / "iterations" / "00" / "logs"


def started(tmp: Path, node: str) -> bool:
    log = logs(tmp) / f"{node.replace('/', '-')}.log"
    return log.exists() and f"{node}: started" in log.read_text()


def measured_rows(tmp: Path) -> list[dict[str, str]]:
    path = run_dir(tmp) / "results.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def test_killed_node_is_reported_with_its_last_log_lines(tmp_path: Path) -> None:
    proc = start_run(tmp_path, workload(tmp_path, [4, 8], measure_s=30.0, cluster="local-unthrottled.yaml"))
    try:
        wait_for(lambda: (tmp_path / "reports" / "latest").exists() and started(tmp_path, "participant/1"), what="the node")
        children = descendants(proc.pid)
        victim = pid_in_log(logs(tmp_path) / "participant-1.log")
        assert victim is not None and victim in {c.pid for c in children}
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=NO_HANG_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert "node participant/1 was killed by SIGKILL" in err
    assert "participant/1: started" in err  # its last log lines
    assert "participant-1.log" in err
    assert wait_gone(children) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_everything_and_keeps_measured_points(tmp_path: Path, sig: int) -> None:
    proc = start_run(tmp_path, workload(tmp_path, [1, 2, 4, 8, 16, 32], measure_s=0.5, cluster="local.yaml"))
    try:
        wait_for(lambda: (tmp_path / "reports" / "latest").exists() and len(measured_rows(tmp_path)) >= 1, what="a point")
        children = descendants(proc.pid)
        assert len(children) == 7  # 4 nodes, 2 client processes, the speed meter
        assert sum("hydrodeploy.profile.machine" in " ".join(c.cmdline()) for c in children) == 1
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=NO_HANG_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
    assert "interrupted" in err
    rows = measured_rows(tmp_path)
    assert 1 <= len(rows) < 6
    assert all(float(r["throughput"]) > 0 for r in rows)
    summary = json.loads((run_dir(tmp_path) / "summary.json").read_text())
    assert summary["iterations"][0]["max_throughput"] == max(float(r["throughput"]) for r in rows)
    assert wait_gone(children) == []
    assert cgroup_dirs_of(proc.pid) == []


def test_killed_orchestrator_takes_every_process_with_it(tmp_path: Path) -> None:
    proc = start_run(tmp_path, workload(tmp_path, [4], measure_s=30.0, cluster="local.yaml"))
    try:
        wait_for(lambda: (tmp_path / "reports" / "latest").exists() and started(tmp_path, "leader/0"), what="the leader")
        wait_for(lambda: len(descendants(proc.pid)) == 7, what="every process")  # and the speed meter, which ends with it
        children = descendants(proc.pid)
        proc.kill()
        proc.communicate(timeout=NO_HANG_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_gone(children) == []
    # its cgroups outlive it (empty); the next run removes them
    clean_stale()
    assert cgroup_dirs_of(proc.pid) == []


def test_failing_tick_is_reported_with_the_traceback(tmp_path: Path) -> None:
    """A rule whose Python function raises stops its node with status 3; the run names the node
    and shows the error from its log."""
    (tmp_path / "boomfns.py").write_text("def boom(x):\n    raise ValueError(f'boom on {x}')\n")
    program = tmp_path / "boom.ded"
    program.write_text(
        """
.component server
.input req(client, id, payload) @ server
.output resp(id)
.function boom(x) -> (y) = "boomfns:boom"
server {
  resp@client(y) :~ req(client, id, _), boom(id, y).
}
"""
    )

    async def go() -> None:
        bench = Bench(program, LocalCluster(name="t"), tmp_path / "logs", client_processes=1)
        try:
            await bench.start()
            await bench.point(0, 1, WINDOWS, ClientsSpec())
        finally:
            bench.close()

    with pytest.raises(ProcessFailure) as info:
        asyncio.run(go())
    failure = info.value
    assert failure.name == "server/0" and failure.role == "node"
    assert "exited with status 3" in str(failure)
    assert any("ValueError: boom on" in line for line in failure.tail)


def test_quick_run_of_the_shipped_voting_workload(tmp_path: Path) -> None:
    """`hydrodeploy run workloads/voting.yaml --quick`: the run directory with results, plot and
    summary, and no process left behind."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hydrodeploy.cli.main", "run", str(ROOT / "workloads" / "voting.yaml"), "--quick"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children: dict[int, psutil.Process] = {}
    while proc.poll() is None:  # remember every process the run started
        children.update((c.pid, c) for c in descendants(proc.pid))
        time.sleep(0.05)
    out, err = proc.communicate(timeout=NO_HANG_S)
    assert proc.returncode == 0, err
    assert len(children) >= 6
    assert wait_gone(list(children.values())) == []
    run = (tmp_path / "reports" / "latest").resolve()
    assert run.parent == tmp_path / "reports" and run.name.endswith("_voting-quick")
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == {"protocol", "cluster", "iterations"}
    assert summary["protocol"] == "voting" and summary["cluster"] == "local"
    (it,) = summary["iterations"]
    assert set(it) == {"index", "machines", "max_throughput", "p50_ms", "p99_ms", "predicted_throughput", "rewrite", "kept"}
    assert it["index"] == 0 and it["machines"] == 4 and it["kept"] is True
    assert it["predicted_throughput"] is None and it["rewrite"] is None
    assert it["max_throughput"] > 0 and 0 < it["p50_ms"] <= it["p99_ms"]
    points = load_points(run, 0)
    assert len(measured_rows(tmp_path)) == len(points)
    assert swept_counts(points) == [1, 4, 16, 48]
    assert all(p.machine_ms > 0 for p in points)  # the speed meter read every window of the local deployment
    by_count: dict[int, list[Point]] = {}
    for point in points:
        by_count.setdefault(point.clients, []).append(point)
    means = [statistics.fmean(p.throughput for p in counted(group)) for group in by_count.values()]
    assert max(means) == pytest.approx(it["max_throughput"], abs=0.1)
    assert (run / "throughput_latency.png").read_bytes().startswith(b"\x89PNG")
    assert (run / "spec.yaml").exists() and (run / "iterations" / "00" / "program.ded").exists()
    final = json.loads((run / "iterations" / "00" / "final_metrics.json").read_text())
    # node processes collect only young generations (one full collection at start-up, before any tick)
    assert {node["gc_collections"][2] for node in final.values()} == {1}
    assert all(node["gc_collections"][0] > 0 for node in final.values())
    assert "measured points" in out and "bottleneck at the best point: leader/0" in out
