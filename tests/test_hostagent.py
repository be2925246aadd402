"""The host agent that supervises processes on remote hosts, run here as it runs there (a script
under ``python3 -S``): configuration on stdin, a process group per process, a per-run pid file,
signals by command, the group stopped when the orchestrator's channel ends, and cleanup of
everything carrying the run's marker."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from hydrodeploy.deploy import hostagent
from hydrodeploy.profile import perf

AGENT = Path(__file__).resolve().parents[1] / "hydrodeploy" / "deploy" / "hostagent.py"
# a process that prints its stdin and leaves a grandchild in its process group
TREE = ("sh", "-c", "cat; echo; sleep 300 & echo child $!; wait")


def launch(run_dir: Path, name: str, argv: tuple[str, ...], payload: bytes) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-S", str(AGENT), "launch", str(run_dir), name, "--grace", "1", "--", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdin is not None
    proc.stdin.write(f"{len(payload)}\n".encode() + payload)
    proc.stdin.flush()
    return proc


def wait_for(predicate: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def marked(run_dir: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["environ"]):
        env = proc.info.get("environ") or {}
        if env.get("HYDRODEPLOY_RUN") == str(run_dir):
            found.append(proc.pid)
    return found


def started_pid(run_dir: Path, name: str) -> int:
    pid_file = run_dir / "pids" / f"{name}.pid"
    wait_for(pid_file.exists, "the pid file")
    return int(pid_file.read_text())


def test_launch_hands_over_stdin_and_stops_the_group_on_a_signal(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = launch(run_dir, "n-0", TREE, b'{"secret": "00ff"}')
    pgid = started_pid(run_dir, "n-0")
    assert os.getpgid(pgid) == pgid  # its own process group (setsid)
    assert os.getsid(pgid) == pgid
    wait_for(lambda: len(marked(run_dir)) == 2, "the process and its child")
    assert proc.stdin is not None
    proc.stdin.write(b"signal 15\n")
    proc.stdin.flush()
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM
    assert marked(run_dir) == []  # the grandchild went with the group
    assert not (run_dir / "pids" / "n-0.pid").exists()
    text = out.decode()
    assert '{"secret": "00ff"}' in text  # what the process printed (here: its stdin, on purpose)
    assert "hydrodeploy-launcher: n-0: started as pid" in text
    assert "hydrodeploy-launcher: n-0: killed by SIGTERM" in text
    assert (run_dir / "logs" / "n-0.log").read_text() == text


def test_the_group_is_stopped_when_the_orchestrator_goes_away(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = launch(run_dir, "n-0", ("sh", "-c", "trap '' TERM; sleep 300 & wait"), b"")
    started_pid(run_dir, "n-0")
    wait_for(lambda: len(marked(run_dir)) == 2, "the process and its child")
    assert proc.stdin is not None
    proc.stdin.close()  # the SSH channel closed: SIGTERM (ignored here), SIGKILL after the grace
    proc.wait(timeout=20)
    assert marked(run_dir) == []
    assert b"the orchestrator is gone" in (run_dir / "logs" / "n-0.log").read_bytes()


def test_exit_status_and_leftovers_of_a_finished_process(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = launch(run_dir, "n-0", ("sh", "-c", "sleep 300 & exit 3"), b"")
    # stdin stays open, as the orchestrator's channel does: its end would stop the process
    wait_for(lambda: proc.poll() is not None, "the agent to finish")
    assert proc.stdout is not None and proc.stdin is not None
    out = proc.stdout.read()
    proc.stdin.close()
    assert proc.returncode == 3
    assert b"exited with status 3" in out
    assert marked(run_dir) == []  # what it left in its group was killed


def test_cleanup_kills_what_the_run_left_and_removes_its_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = launch(run_dir, "n-0", TREE, b"")
    started_pid(run_dir, "n-0")
    wait_for(lambda: len(marked(run_dir)) == 2, "the process and its child")
    proc.kill()  # the supervisor dies outright: its child dies with it, the grandchild stays
    proc.wait()
    wait_for(lambda: len(marked(run_dir)) == 1, "the supervisor's child to die with it")
    out = subprocess.run(
        [sys.executable, "-S", str(AGENT), "cleanup", str(run_dir), "--grace", "1"], capture_output=True, check=True
    ).stdout
    result = json.loads(out)
    assert result["left"] == [] and result["removed"] is True
    assert len(result["signalled"]) == 1
    assert marked(run_dir) == []
    assert not run_dir.exists()


BUSY = ("python3", "-c", "n = 0\nwhile True: n += 1")
needs_perf = pytest.mark.skipif(hostagent.perf_problem() is not None, reason=f"{hostagent.perf_problem()}")


def agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-S", str(AGENT), *args], capture_output=True, env=env, timeout=60)


@needs_perf
def test_perf_records_a_process_and_sends_its_script_compressed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    busy = subprocess.Popen(BUSY)
    try:
        proc = agent("perf", str(run_dir), str(busy.pid), "1", "999")
    finally:
        busy.kill()
        busy.wait()
    assert proc.returncode == 0, proc.stderr
    text = gzip.decompress(proc.stdout).decode()
    samples = perf.parse_samples(text)
    assert len(samples) >= 20  # a second of a busy process at 999 Hz, on cores others may share
    assert all(line.split()[0] == "python3" for line in text.splitlines() if line and not line[0].isspace())
    assert list((run_dir / "perf").iterdir()) == []  # the recording is removed


def test_without_perf_on_the_path_the_perf_operations_say_so(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    env = dict(os.environ, PATH=str(tmp_path / "bin"))
    check = agent("perf-check", env=env)
    record = agent("perf", str(tmp_path / "run"), str(os.getpid()), "0.1", "999", env=env)
    for proc in (check, record):
        assert proc.returncode == hostagent.PERF_UNAVAILABLE
        assert proc.stderr.decode().strip().splitlines()[-1] == hostagent.PERF_MISSING


@needs_perf
def test_a_recording_carries_the_runs_marker_and_cleanup_stops_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    busy = subprocess.Popen(BUSY)
    recording = subprocess.Popen([sys.executable, "-S", str(AGENT), "perf", str(run_dir), str(busy.pid), "300", "99"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(marked(run_dir)) == 2, "perf record and its sleep")
        assert agent("cleanup", str(run_dir), "--grace", "1").returncode == 0
        _, err = recording.communicate(timeout=30)  # perf stopped long before its 300 s
    finally:
        busy.kill()
        busy.wait()
        recording.kill()
        recording.wait()
    # the agent outlived its recording (it was not in perf's process group) and said how it ended
    assert recording.returncode in (0, hostagent.PERF_UNAVAILABLE), err
    assert marked(run_dir) == [] and not run_dir.exists()


@pytest.mark.parametrize("op", [["nonsense"], []])
def test_unknown_operations_are_refused(op: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-S", str(AGENT), *op], capture_output=True)
    assert proc.returncode == 2
