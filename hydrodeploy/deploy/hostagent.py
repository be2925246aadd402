"""The helper hydrodeploy runs on a remote host, over SSH (standard library only). Its perf
functions also record the local cluster's processes, in the orchestrator's own process.

It runs as a script with ``python3 -S`` (no site-packages: only the bundle and the standard
library are imported), either from the unpacked bundle or fed on stdin (``python3 -S -``):

``launch RUN_DIR NAME [--path P] [--grace S] -- ARGV...``
    Supervise one process of a run. Reads ``<length>\\n<bytes>`` from stdin and hands those
    bytes to the process's stdin (its configuration and the deployment secret: never on a
    command line, never logged). The process is started in its own session and process group
    (``setsid``), with ``PR_SET_PDEATHSIG`` so that it dies with its supervisor, with
    ``HYDRODEPLOY_RUN=RUN_DIR`` in its environment (how teardown recognises it) and its group
    id in ``RUN_DIR/pids/NAME.pid``. Its output goes to ``RUN_DIR/logs/NAME.log`` and to this
    script's stdout (the SSH channel). Afterwards stdin carries commands, one per line:
    ``signal N`` signals the process group. When stdin ends (the orchestrator closed the
    channel, or its connection died) the group gets SIGTERM, then SIGKILL after the grace
    period. When the process ends, whatever is left of its group is killed and the pid file
    removed. Exit status: the process's, or 128+N when signal N killed it.

``cleanup RUN_DIR [--grace S] [--keep]``
    Kill every process of the run (found by its environment marker and by the pid files):
    SIGTERM to their groups, SIGKILL after the grace period. Prints a JSON summary; removes
    RUN_DIR unless ``--keep``.

``fetch RUN_DIR``
    Write a tar.gz of ``RUN_DIR/logs`` and ``RUN_DIR/out`` (what the processes wrote) to stdout.

``put DIR``
    Extract a tar.gz read from stdin into DIR.

``perf-check``
    Whether ``perf`` can record processes here: exit 0, or :data:`PERF_UNAVAILABLE` with why
    (not installed, not permitted: ``kernel.perf_event_paranoid``) as the last line on stderr.

``perf RUN_DIR PID SECONDS FREQUENCY``
    ``perf record -e cpu-clock -F FREQUENCY -g -p PID`` for SECONDS into a file under
    ``RUN_DIR/perf/`` (perf carries the run's marker, so cleanup stops it), then ``perf script`` of
    it, gzip-compressed, to stdout (several MB of text: samples of deep stacks); the file is
    removed. When perf cannot record: :data:`PERF_UNAVAILABLE` and why, as ``perf-check``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable

MARKER = "HYDRODEPLOY_RUN"
PR_SET_PDEATHSIG = 1
PREFIX = b"hydrodeploy-launcher: "
PERF_EVENT = "cpu-clock"  # a software event: works in VMs and containers without hardware counters
PERF_FIELDS = "comm,tid,ip,sym,dso"
PERF_UNAVAILABLE = 3  # exit status of the perf operations when perf cannot record here
PERF_MISSING = "perf is not installed (Debian: apt-get install linux-perf)"


def _die_with_parent() -> Callable[[], None]:
    """What runs in the child between fork and exec: die when the supervisor dies."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl

    def setup() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


class _Out:
    """Writes to the SSH channel (stdout) and the log file; a closed channel is ignored."""

    def __init__(self, log_path: str) -> None:
        self.lock = threading.Lock()
        self.log = open(log_path, "ab")  # noqa: SIM115 - open for the process's lifetime
        self.channel_open = True
        self.at_line_start = True

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self.lock:
            self.at_line_start = data.endswith(b"\n")
            self.log.write(data)
            self.log.flush()
            if self.channel_open:
                try:
                    sys.stdout.buffer.write(data)
                    sys.stdout.buffer.flush()
                except (BrokenPipeError, OSError):
                    self.channel_open = False

    def say(self, text: str) -> None:
        self.write((b"" if self.at_line_start else b"\n") + PREFIX + text.encode() + b"\n")


class _Lines:
    """Unbuffered reading of a file descriptor by lines and by sizes (a daemon thread blocked
    in a buffered read would hold the buffer's lock when the interpreter exits)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def readline(self) -> bytes:
        while b"\n" not in self.buffer and self._fill():
            pass
        line, sep, rest = self.buffer.partition(b"\n")
        self.buffer = rest
        return line + sep

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size and self._fill():
            pass
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def launch(run_dir: str, name: str, argv: list[str], path: str, grace: float) -> int:
    stdin = _Lines(0)
    header = stdin.readline()
    try:
        size = int(header.strip() or b"0")
    except ValueError:
        size = 0
    payload = stdin.read(size)
    for sub in ("logs", "pids", "out"):
        os.makedirs(os.path.join(run_dir, sub), mode=0o700, exist_ok=True)
    out = _Out(os.path.join(run_dir, "logs", f"{name}.log"))
    env = dict(os.environ)
    env[MARKER] = run_dir
    env["PYTHONUNBUFFERED"] = "1"
    if path:
        env["PYTHONPATH"] = path
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=run_dir,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
    except OSError as exc:
        out.say(f"{name}: cannot start {argv[0]}: {exc}")
        return 127
    pid = proc.pid
    pid_file = os.path.join(run_dir, "pids", f"{name}.pid")
    with open(pid_file + ".tmp", "w") as f:
        f.write(f"{pid}\n")
    os.replace(pid_file + ".tmp", pid_file)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(payload)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    out.say(f"{name}: started as pid {pid} (process group {pid})")
    exited = threading.Event()
    reader = proc.stdout

    def pump() -> None:
        fd = reader.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            out.write(chunk)

    def control() -> None:
        while line := stdin.readline():
            parts = line.split()
            if len(parts) == 2 and parts[0] == b"signal" and parts[1].isdigit():
                _killpg(pid, int(parts[1]))
        if exited.is_set():
            return
        out.say(f"{name}: the orchestrator is gone: stopping process group {pid}")
        _killpg(pid, signal.SIGTERM)
        if not exited.wait(grace):
            _killpg(pid, signal.SIGKILL)

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()
    threading.Thread(target=control, daemon=True).start()
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # ended, not yet reaped: the group id is still ours
    exited.set()
    _killpg(pid, signal.SIGKILL)  # whatever it left behind in its group
    code = proc.wait()
    pumping.join(5.0)
    with contextlib.suppress(OSError):
        os.unlink(pid_file)
    if code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
        out.say(f"{name}: {how}")
        return 128 - code
    out.say(f"{name}: exited with status {code}")
    return code


# ---- cleanup --------------------------------------------------------------------------------


def _marked(run_dir: str) -> list[int]:
    """Processes whose environment carries the run's marker."""
    needle = f"{MARKER}={run_dir}".encode()
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle in env:
            found.append(int(entry))
    return found


def _groups(run_dir: str) -> dict[int, str]:
    """Process groups of the run: from its pid files and its marked processes."""
    groups: dict[int, str] = {}
    pids_dir = os.path.join(run_dir, "pids")
    if os.path.isdir(pids_dir) and not _proc_readable():
        for name in sorted(os.listdir(pids_dir)):
            if name.endswith(".pid"):
                with contextlib.suppress(OSError, ValueError), open(os.path.join(pids_dir, name)) as f:
                    groups[int(f.read().strip())] = name[: -len(".pid")]
    for pid in _marked(run_dir):
        with contextlib.suppress(OSError):
            groups.setdefault(os.getpgid(pid), f"pid {pid}")
    return groups


def _proc_readable() -> bool:
    return os.path.isfile(f"/proc/{os.getpid()}/environ")


def cleanup(run_dir: str, grace: float, keep: bool) -> int:
    run_dir = os.path.expanduser(run_dir)
    groups = _groups(run_dir)
    signalled = [name for pgid, name in groups.items() if _killpg(pgid, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _groups(run_dir):
        time.sleep(0.05)
    killed = [name for pgid, name in _groups(run_dir).items() if _killpg(pgid, signal.SIGKILL)]
    for pid in _marked(run_dir):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and _marked(run_dir):
        time.sleep(0.05)
    left = _marked(run_dir)
    removed = False
    if not keep and os.path.isdir(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
        removed = not os.path.exists(run_dir)
    print(json.dumps({"signalled": sorted(signalled), "killed": sorted(killed), "left": left, "removed": removed}))
    return 0 if not left else 1


def fetch(run_dir: str) -> int:
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|gz") as tar:
        for sub in ("logs", "out"):
            path = os.path.join(run_dir, sub)
            if os.path.isdir(path):
                tar.add(path, arcname=sub)
    return 0


def put(directory: str) -> int:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(directory, filter="data")
        else:  # Python < 3.11.4: the archive is our own
            tar.extractall(directory)
    return 0


# ---- perf --------------------------------------------------------------------------------------


def perf_problem() -> str | None:
    """Why perf cannot record processes here (None when it can)."""
    exe = shutil.which("perf")
    if exe is None:
        return PERF_MISSING
    try:
        run = subprocess.run(
            [exe, "record", "-e", PERF_EVENT, "-o", "/dev/null", "-q", "--", "true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"perf could not run: {exc}"
    if run.returncode == 0:
        return None
    reason = f"perf record is not permitted or failed: {_last_line(run.stderr)}"
    paranoid = _paranoid()
    return reason if paranoid is None else f"{reason} (kernel.perf_event_paranoid = {paranoid})"


def _paranoid() -> int | None:
    try:
        with open("/proc/sys/kernel/perf_event_paranoid") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["(no message)"])[-1]


def perf_record(
    pid: int, seconds: float, frequency: int, directory: str, write: Callable[[bytes], object], env: dict[str, str] | None = None
) -> str | None:
    """Record ``pid`` for ``seconds`` into a file under ``directory``, ``write`` its ``perf
    script`` and remove the file; None, or why perf did not record."""
    exe = shutil.which("perf")
    if exe is None:
        return PERF_MISSING
    os.makedirs(directory, mode=0o700, exist_ok=True)
    data = os.path.join(directory, f"{pid}-{os.getpid()}-{time.monotonic_ns()}.data")
    try:
        record = subprocess.run(
            [exe, "record", "-e", PERF_EVENT, "-F", str(frequency), "-g", "-p", str(pid), "-o", data, "--", "sleep", f"{seconds:g}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # a group of its own: what cleanup stops is the recording only
        )
        if record.returncode != 0:
            reason = f"perf record exited with status {record.returncode}: {_last_line(record.stderr)}"
            paranoid = _paranoid()
            return reason if paranoid is None else f"{reason} (kernel.perf_event_paranoid = {paranoid})"
        if not os.path.exists(data):
            return f"perf record wrote no data: {_last_line(record.stderr)}"
        script = subprocess.Popen([exe, "script", "-i", data, "-F", PERF_FIELDS], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert script.stdout is not None
        while chunk := script.stdout.read(1 << 20):
            write(chunk)
        script.wait()
        return None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(data)


def perf(run_dir: str, pid: int, seconds: float, frequency: int) -> int:
    env = dict(os.environ)
    env[MARKER] = run_dir  # cleanup stops a recording the orchestrator left behind
    with gzip.GzipFile(fileobj=sys.stdout.buffer, mode="wb", compresslevel=6) as out:
        reason = perf_record(pid, seconds, frequency, os.path.join(run_dir, "perf"), out.write, env)
    if reason is not None:
        print(reason, file=sys.stderr)
        return PERF_UNAVAILABLE
    return 0


def perf_check() -> int:
    reason = perf_problem()
    if reason is not None:
        print(reason, file=sys.stderr)
        return PERF_UNAVAILABLE
    return 0


def main(args: list[str]) -> int:
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    op, rest = args[0], args[1:]
    grace = 3.0
    if "--grace" in rest:
        i = rest.index("--grace")
        grace = float(rest[i + 1])
        del rest[i : i + 2]
    if op == "launch":
        path = ""
        split = rest.index("--")
        opts, argv = rest[:split], rest[split + 1 :]
        if "--path" in opts:
            i = opts.index("--path")
            path = opts[i + 1]
            del opts[i : i + 2]
        return launch(opts[0], opts[1], argv, path, grace)
    if op == "cleanup":
        keep = "--keep" in rest
        return cleanup(next(a for a in rest if a != "--keep"), grace, keep)
    if op == "fetch":
        return fetch(rest[0])
    if op == "put":
        return put(rest[0])
    if op == "perf-check":
        return perf_check()
    if op == "perf":
        return perf(rest[0], int(rest[1]), float(rest[2]), int(rest[3]))
    print(f"hostagent: unknown operation {op!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)  # at once: daemon threads may still be blocked reading stdin
