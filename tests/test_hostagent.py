"""The host agent that supervises processes on remote hosts, run here as it runs there (a script
under ``python3 -S``): configuration on stdin, a process group per process, a per-run pid file,
signals by command, the group stopped when the orchestrator's channel ends, and cleanup of
everything carrying the run's marker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

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


@pytest.mark.parametrize("op", [["nonsense"], []])
def test_unknown_operations_are_refused(op: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-S", str(AGENT), *op], capture_output=True)
    assert proc.returncode == 2
