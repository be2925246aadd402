"""The SSH backend: the user's own machines, reached with paramiko.

Opening an :class:`SshCluster` connects to every host (in parallel; at most
``ssh.max_startups`` handshakes at once per host, each with ``connect_timeout_s`` and
``connect_retries``), checks its host key against ``known_hosts`` (an unknown key is refused,
with its fingerprint, unless ``host_key_policy: accept-new``; a changed key is always refused),
probes its Python, ships the code bundle (:mod:`hydrodeploy.deploy.bundle`) once per host and
code version, and creates the run's directory ``<workdir>/runs/<run id>/`` (mode 0700). A host
that cannot be reached fails the whole cluster with an error naming it, and whatever was set up
on the others is removed.

Each process of a deployment runs under the host agent's ``launch`` supervisor
(:mod:`hydrodeploy.deploy.hostagent`) on its own SSH channel: in its own process group, with a
per-run pid file, its configuration (and the deployment secret) on stdin, its output streamed
back into the run directory (``logs/<node>.log``, and every line prefixed by node into
``logs/hosts.log``). A connection carries at most ``ssh.max_sessions`` channels (sshd's
``MaxSessions``); more processes open more connections. Nodes listen on the host's address (the
IP connected to, or the host's ``address:``), the orchestrator on the address its SSH connections
leave from (or ``orchestrator_address:``): nothing listens on a wildcard address.

A process is recorded with ``perf`` on its host (:meth:`SshHost.perf_record`): the host agent's
``perf`` operation records it by its remote pid and sends ``perf script`` back gzip-compressed.

Closing stops what still runs (SIGTERM to each process group, SIGKILL after ``stop_grace_s``),
fetches what the processes wrote (durable logs, profiles) into the run directory, kills anything
left that carries the run's marker, removes the remote run directory and records the outcome in
``<run dir>/cluster.json``, from which ``hydrodeploy teardown`` can finish the job after a crash.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import gzip
import hashlib
import io
import json
import os
import shlex
import socket
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import paramiko

from hydrodeploy.deploy.bundle import (
    Bundle,
    agent_path,
    build_bundle,
    describe_bundle,
    program_files,
    tar_files,
)
from hydrodeploy.deploy.host import (
    Cluster,
    DeployError,
    Host,
    PerfRecording,
    ProcessHandle,
    ProcessSpec,
)
from hydrodeploy.deploy.hostagent import PERF_UNAVAILABLE
from hydrodeploy.deploy.sshfile import MachineProfile, SshClusterSpec, SshSettings
from hydrodeploy.deploy.teardown import STATE_FILE

T = TypeVar("T")
MERGED_LOG = "hosts.log"
LOST = 255  # the status of a process whose SSH connection died (as ssh(1) reports it)

# Run by the host's python3 before the bundle is there (``python3 -c``); arguments: workdir, hash.
PROBE = """
import json, os, sys, sysconfig
w = os.path.expanduser(sys.argv[1])
b = os.path.join(w, 'bundles', sys.argv[2])
print(json.dumps({'python': sys.version.split()[0], 'ext_suffix': sysconfig.get_config_var('EXT_SUFFIX') or '',
                  'workdir': w, 'bundle': os.path.isfile(os.path.join(b, '.complete')), 'home': os.path.expanduser('~')}))
"""
UNPACK = """
import compileall, gzip, hashlib, io, os, shutil, sys, tarfile
w, h = sys.argv[1], sys.argv[2]
final = os.path.join(w, 'bundles', h)
if os.path.isfile(os.path.join(final, '.complete')):
    sys.exit(0)
raw = gzip.decompress(sys.stdin.buffer.read())
if hashlib.sha256(raw).hexdigest() != h:
    sys.exit('bundle corrupted in transit: its sha256 is not ' + h)
tmp = final + '.tmp-%d' % os.getpid()
os.makedirs(tmp, mode=0o755)
with tarfile.open(fileobj=io.BytesIO(raw)) as t:
    t.extractall(tmp, **({'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}))
compileall.compile_dir(tmp, quiet=2)
open(os.path.join(tmp, '.complete'), 'w').close()
try:
    os.rename(tmp, final)
except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
"""


MKDIR = (
    "import os, sys; os.makedirs(sys.argv[1] + '/runs', exist_ok=True); r = sys.argv[1] + '/runs/' + sys.argv[2]; "
    "os.mkdir(r, 0o700); os.makedirs(r + '/out/durable')"
)


class HostKeyRefused(DeployError):
    """A host whose key is unknown (and the policy is strict) or differs from known_hosts."""


class HostUnreachable(DeployError):
    """Hosts that could not be reached or set up."""


def fingerprint(key: paramiko.PKey) -> str:
    """The key's SHA-256 fingerprint as OpenSSH prints it (``SHA256:...``)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}-{os.urandom(3).hex()}"


# ---- resolving the cluster file against ~/.ssh/config -------------------------------------------


@dataclass(frozen=True)
class Target:
    """One host, as it will be connected to."""

    label: str  # as the cluster file names it
    hostname: str
    port: int
    user: str
    keys: tuple[str, ...]  # identity files to offer (empty: the agent, then ~/.ssh/id_*)
    python: tuple[str, ...]
    workdir: str
    address: str | None  # where its processes listen (None: the IP connected to)
    profile: MachineProfile

    def known_hosts_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def resolve_targets(spec: SshClusterSpec) -> list[Target]:
    """Every host with the cluster file's defaults and ``~/.ssh/config`` applied (explicit keys
    of the cluster file win)."""
    config: paramiko.SSHConfig | None = None
    if spec.ssh_config and os.path.isfile(spec.ssh_config):
        try:
            config = paramiko.SSHConfig.from_path(spec.ssh_config)
        except (OSError, paramiko.ssh_exception.ConfigParseError) as exc:
            raise DeployError(f"cannot read the SSH config {spec.ssh_config}: {exc}") from None
    targets = []
    for h in spec.hosts:
        found: dict[str, Any] = dict(config.lookup(h.host)) if config is not None else {}
        user = h.user or spec.user or found.get("user") or getpass.getuser()
        port = h.port or (spec.port if spec.port != 22 else int(found.get("port", 22)))
        key = h.key or spec.key
        keys = (key,) if key else tuple(os.path.expanduser(k) for k in found.get("identityfile", []))
        label = h.host if (h.port in (None, 22)) else f"{h.host}:{h.port}"
        targets.append(
            Target(
                label=label,
                hostname=str(found.get("hostname", h.host)),
                port=port,
                user=user,
                keys=keys,
                python=tuple(shlex.split(h.python or spec.python)),
                workdir=h.workdir or spec.workdir,
                address=h.address,
                profile=spec.profile(h),
            )
        )
    return targets


# ---- host keys ------------------------------------------------------------------------------------


class KnownHosts:
    """The known_hosts file of a cluster, and what to do with a key it does not hold."""

    def __init__(self, path: str, accept_new: bool) -> None:
        self.path = path
        self.accept_new = accept_new
        self.lock = threading.Lock()
        self.added: list[str] = []  # "host fingerprint" of keys accepted by accept-new

    def load_into(self, client: paramiko.SSHClient) -> None:
        if os.path.isfile(self.path):
            try:
                client.load_host_keys(self.path)
            except OSError as exc:
                raise DeployError(f"cannot read known_hosts {self.path}: {exc}") from None

    def policy(self, label: str) -> paramiko.MissingHostKeyPolicy:
        known = self

        class Policy(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
                known.missing(label, hostname, key)

        return Policy()

    def missing(self, label: str, hostname: str, key: paramiko.PKey) -> None:
        fp = fingerprint(key)
        if not self.accept_new:
            raise HostKeyRefused(
                f"host {label}: unknown host key {key.get_name()} {fp}, not in {self.path}; refusing to connect. "
                f"If the fingerprint is right, add the key to that file or set host_key_policy: accept-new"
            )
        with self.lock:
            keys = paramiko.HostKeys()
            if os.path.isfile(self.path):
                keys.load(self.path)
            found = keys.lookup(hostname)
            if found is not None and found.get(key.get_name()) == key:
                return
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            self.added.append(f"{label} {key.get_name()} {fp}")


# ---- connections --------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        errors = {str(e) for e in exc.errors.values()}
        return "; ".join(sorted(errors)) or str(exc)
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text


def connect(target: Target, settings: SshSettings, known: KnownHosts, agent: bool, handshakes: threading.Semaphore) -> paramiko.SSHClient:
    """An authenticated connection to ``target``; network failures are retried, a refused host
    key or failed authentication is not."""
    last: BaseException | None = None
    t = settings.connect_timeout_s
    keys: Any = list(target.keys) or None  # paramiko takes a list of files too
    for attempt in range(settings.connect_retries):
        if attempt:
            time.sleep(settings.retry_backoff_s * 2 ** (attempt - 1))
        client = paramiko.SSHClient()
        known.load_into(client)
        client.set_missing_host_key_policy(known.policy(target.label))
        try:
            with handshakes:
                client.connect(
                    target.hostname,
                    port=target.port,
                    username=target.user,
                    key_filename=keys,
                    timeout=t,
                    banner_timeout=t,
                    auth_timeout=t,
                    channel_timeout=t,
                    allow_agent=agent,
                    look_for_keys=not target.keys,
                )
        except HostKeyRefused:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyRefused(
                f"host {target.label}: its host key {exc.key.get_name()} {fingerprint(exc.key)} does not match the "
                f"one in {known.path} ({fingerprint(exc.expected_key)}); refusing to connect (the host was "
                f"reinstalled, or someone is intercepting the connection)"
            ) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise DeployError(f"host {target.label}: the key {', '.join(target.keys)} is encrypted; load it into ssh-agent") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise DeployError(f"host {target.label}: authentication as {target.user} failed: {exc}") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            last = exc
            continue
        transport = client.get_transport()
        assert transport is not None
        if settings.keepalive_s:
            transport.set_keepalive(int(settings.keepalive_s))
        return client
    reason = _reason(last) if last is not None else "no attempt"
    raise HostUnreachable(
        f"host {target.label}: cannot connect to {target.hostname} port {target.port} "
        f"({settings.connect_retries} attempt{'s' if settings.connect_retries > 1 else ''}): {reason}"
    )


@dataclass
class _Connection:
    client: paramiko.SSHClient
    channels: list[paramiko.Channel] = field(default_factory=list)

    def room(self, limit: int) -> bool:
        self.channels = [c for c in self.channels if not c.closed]
        return len(self.channels) < limit

    @property
    def transport(self) -> paramiko.Transport:
        transport = self.client.get_transport()
        assert transport is not None
        return transport


# ---- processes ------------------------------------------------------------------------------------


class _Merged:
    """``hosts.log``: every remote process's output, line by line, prefixed by its name."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "ab")  # noqa: SIM115 - open for the cluster's lifetime
        self.lock = threading.Lock()

    def lines(self, prefix: bytes, lines: Sequence[bytes]) -> None:
        with self.lock:
            if self.file.closed:  # a straggler after the cluster closed: its own log has it
                return
            for line in lines:
                self.file.write(prefix + line + b"\n")
            self.file.flush()

    def close(self) -> None:
        with self.lock:
            self.file.close()


class RemoteProcess(ProcessHandle):
    """A process on an SSH host, supervised by the host agent over one channel."""

    def __init__(self, name: str, host: SshHost, channel: paramiko.Channel, log_path: Path, merged: _Merged) -> None:
        self.name = name
        self.host = host
        self.pid = 0  # the remote pid, once the agent reported it
        self.log_path = log_path
        self.channel = channel
        self._merged = merged
        self._status: int | None = None
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"ssh-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        prefix = f"{self.name}@{self.host.label} | ".encode()
        partial = b""
        try:
            with open(self.log_path, "ab") as log:
                while True:
                    try:
                        data = self.channel.recv(65536)
                    except (OSError, EOFError, paramiko.SSHException):
                        data = b""
                    if not data:
                        break
                    log.write(data)
                    log.flush()
                    lines = (partial + data).split(b"\n")
                    partial = lines.pop()
                    if not self.pid:
                        self._find_pid(lines)
                    self._merged.lines(prefix, lines)
            if partial:
                self._merged.lines(prefix, [partial])
        finally:
            # after the output ends the exit status follows (or the channel closes: -1)
            status = self.channel.recv_exit_status()
            self._status = LOST if status < 0 else status
            self._done.set()

    def _find_pid(self, lines: list[bytes]) -> None:
        for line in lines:
            if line.startswith(b"hydrodeploy-launcher: ") and b" started as pid " in line:
                with contextlib.suppress(ValueError):
                    self.pid = int(line.split(b" started as pid ")[1].split()[0])

    def returncode(self) -> int | None:
        if not self._done.is_set():
            return None
        status = self._status
        assert status is not None
        if 128 < status < 128 + 65:
            return -(status - 128)
        return status

    def send_signal(self, sig: int) -> None:
        if self._done.is_set():
            return
        # when the channel is gone, the agent has stopped the group already (or teardown will)
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self.channel.sendall(f"signal {int(sig)}\n".encode())

    def wait(self, timeout: float) -> int | None:
        self._done.wait(timeout)
        return self.returncode()

    def describe_exit(self) -> str:
        if self._done.is_set() and self._status == LOST:
            return f"lost: the SSH connection to {self.host.label} ended"
        return super().describe_exit()

    def detach(self) -> None:
        """Close stdin: the agent stops the process group if it still runs."""
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self.channel.shutdown_write()


# ---- hosts ------------------------------------------------------------------------------------------


class SshHost(Host):
    """One SSH machine: its connections, its bundle and the run's directory on it."""

    def __init__(self, cluster: SshCluster, target: Target) -> None:
        self.cluster = cluster
        self.target = target
        self.label = target.label
        self.name = target.label
        self.cpus: float | None = None  # nothing limits a process's CPU on a real machine
        self.address = target.address or ""
        self.profile = target.profile
        self.settings = cluster.spec.ssh
        self.python = target.python
        self.workdir = ""
        self.run_dir = ""
        self.bundle_dir = ""
        self.local_address = ""
        self.python_version = ""
        self.processes: list[RemoteProcess] = []
        self._connections: list[_Connection] = []
        self._lock = threading.Lock()
        self._handshakes = threading.Semaphore(self.settings.max_startups)
        self._programs: dict[str, str] = {}  # local program path -> remote path
        self._tunnels: dict[int, int] = {}  # local control port -> its remote end's port
        self.outputs: dict[str, Path] = {}  # remote path under the run dir -> local file
        self._perf_checked = False
        self._perf_problem: str | None = None

    # ---- connections and commands ---------------------------------------------------------------

    def _connect(self) -> _Connection:
        client = connect(self.target, self.settings, self.cluster.known, self.cluster.spec.agent, self._handshakes)
        conn = _Connection(client)
        with self._lock:
            self._connections.append(conn)
        return conn

    def open_channel(self) -> paramiko.Channel:
        """A new session channel on a connection with room for it (sshd's MaxSessions)."""
        with self._lock:
            conn = next((c for c in self._connections if c.transport.is_active() and c.room(self.settings.max_sessions)), None)
        if conn is None:
            conn = self._connect()
        try:
            channel = conn.transport.open_session(timeout=self.settings.connect_timeout_s)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise DeployError(f"host {self.label}: cannot open an SSH channel: {_reason(exc)}") from None
        with self._lock:
            conn.channels.append(channel)
        return channel

    def run(self, argv: Sequence[str], stdin: bytes = b"", timeout: float | None = None) -> tuple[int, bytes, bytes]:
        """Run a command to completion; (status, stdout, stderr)."""
        channel = self.open_channel()
        try:
            return _communicate(channel, argv, stdin, timeout or self.settings.command_timeout_s)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise DeployError(f"host {self.label}: `{shlex.join(argv)[:80]}` failed: {_reason(exc)}") from None

    def check(self, argv: Sequence[str], what: str, stdin: bytes = b"", timeout: float | None = None) -> bytes:
        status, out, err = self.run(argv, stdin, timeout)
        if status != 0:
            detail = (err or out).decode("utf-8", "replace").strip().splitlines()
            raise DeployError(f"host {self.label}: {what} failed (status {status}): {detail[-1] if detail else 'no output'}")
        return out

    def agent(self, *args: str) -> list[str]:
        return [*self.python, "-S", agent_path(self.bundle_dir), *args]

    # ---- setting up ---------------------------------------------------------------------------------

    def prepare(self, bundle: Bundle, run_id: str) -> None:
        """Connect, probe the host's Python, ship the bundle, create the run directory."""
        conn = self._connect()
        sock = conn.transport.sock
        assert isinstance(sock, socket.socket)  # a direct TCP connection (no ProxyCommand)
        sockname = sock.getsockname()
        peer = conn.transport.getpeername()
        self.local_address = str(sockname[0])
        self.address = self.address or str(peer[0])
        status, out, err = self.run([*self.python, "-c", PROBE, self.target.workdir, bundle.sha256])
        if status != 0:
            detail = (err or out).decode("utf-8", "replace").strip()
            raise DeployError(
                f"host {self.label}: cannot run {shlex.join(self.python)} (status {status}: {detail or 'no output'}); "
                f"install python3 there or set python: in the cluster file"
            )
        probe = json.loads(out)
        self.python_version = str(probe["python"])
        if bundle.native and probe["ext_suffix"] != bundle.ext_suffix:
            raise DeployError(
                f"host {self.label}: its Python {self.python_version} loads extension modules *{probe['ext_suffix']}, but the "
                f"code bundle's ({', '.join(bundle.native)}) are *{bundle.ext_suffix}; run hydrodeploy with the same "
                f"Python version as the hosts, or point python: at a matching interpreter"
            )
        self.workdir = str(probe["workdir"])
        if not probe["bundle"]:
            self.check([*self.python, "-c", UNPACK, self.workdir, bundle.sha256], f"unpacking {describe_bundle(bundle)}", bundle.data)
        self.bundle_dir = f"{self.workdir}/bundles/{bundle.sha256}"
        self.check([*self.python, "-S", "-c", MKDIR, self.workdir, run_id], "creating the run directory")
        self.run_dir = f"{self.workdir}/runs/{run_id}"  # from now on, closing cleans it up

    def ship_program(self, local: str) -> str:
        """The remote path of a program file, shipped with its Python modules on first use."""
        with self._lock:
            remote = self._programs.get(local)
        if remote is not None:
            return remote
        name, modules = program_files(local)
        files: dict[str, Path | bytes] = {f"program/{name}": Path(local)}
        files.update({f"modules/{rel}": path for rel, path in modules.items()})
        self.check(self.agent("put", self.run_dir), f"shipping {name}", tar_files(files))
        remote = f"{self.run_dir}/program/{name}"
        with self._lock:
            self._programs[local] = remote
        return remote

    # ---- processes ------------------------------------------------------------------------------------

    def start(self, spec: ProcessSpec) -> ProcessHandle:
        argv = list(spec.argv)
        if argv and argv[0] == sys.executable:  # a hydrodeploy module: the host's Python, bundle only
            argv = [*self.python, "-S", *argv[1:]]
        payload = spec.stdin
        with contextlib.suppress(ValueError):
            config = json.loads(spec.stdin)
            if isinstance(config, dict):
                payload = json.dumps(self._localize(config)).encode()
        safe = _safe(spec.name)
        command = self.agent(
            "launch", self.run_dir, safe,
            "--path", f"{self.bundle_dir}:{self.run_dir}/modules",
            "--grace", str(self.settings.stop_grace_s),
            "--", *argv,
        )  # fmt: skip
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        channel = self.open_channel()
        try:
            channel.set_combine_stderr(True)
            channel.exec_command(shlex.join(command))
            channel.sendall(f"{len(payload)}\n".encode() + payload)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            channel.close()
            raise DeployError(f"host {self.label}: cannot start {spec.name}: {_reason(exc)}") from None
        handle = RemoteProcess(spec.name, self, channel, spec.log_path, self.cluster.merged(spec.log_path.parent))
        with self._lock:
            self.processes.append(handle)
        return handle

    def _localize(self, config: dict[str, Any]) -> dict[str, Any]:
        """A process configuration for this machine: the program file it reads is shipped, a
        durable log it writes goes to the run directory (fetched back at the end), and with
        ``control: tunnel`` the orchestrator's control port is reached through this host's end
        of a reverse SSH tunnel."""
        out = dict(config)
        control = out.get("control")
        if self.cluster.spec.control == "tunnel" and isinstance(control, list) and len(control) == 2:
            out["control"] = ["127.0.0.1", self.tunnel(int(control[1]))]
        program = out.get("program")
        if isinstance(program, str) and os.path.isfile(program):
            out["program"] = self.ship_program(program)
        durable = out.get("durable_log")
        if isinstance(durable, str):
            remote = f"out/durable/{os.path.basename(durable)}"
            self.outputs[remote] = Path(durable)
            out["durable_log"] = f"{self.run_dir}/{remote}"
        return out

    def tunnel(self, local_port: int) -> int:
        """The port on this host's loopback interface that leads to ``127.0.0.1:local_port``
        here (a reverse SSH tunnel, opened on first use)."""
        with self._lock:
            remote = self._tunnels.get(local_port)
            conn = next((c for c in self._connections if c.transport.is_active()), None)
        if remote is not None:
            return remote
        if conn is None:
            conn = self._connect()

        def accept(channel: paramiko.Channel, origin: tuple[str, int], server: tuple[str, int]) -> None:
            threading.Thread(target=_splice, args=(channel, local_port), name=f"tunnel-{self.label}", daemon=True).start()

        try:
            remote = conn.transport.request_port_forward("127.0.0.1", 0, handler=accept)
        except paramiko.SSHException as exc:
            raise DeployError(
                f"host {self.label}: sshd refused the reverse tunnel for control: tunnel ({exc}); "
                f"it needs AllowTcpForwarding yes (or remote)"
            ) from None
        with self._lock:
            self._tunnels[local_port] = remote
        return remote

    # ---- perf -----------------------------------------------------------------------------------------

    def perf_problem(self) -> str | None:
        """Checked once per cluster, by the host agent's ``perf-check`` on the host."""
        if not self._perf_checked:
            self._perf_problem = self._perf("perf-check", (), self.settings.command_timeout_s).reason
            self._perf_checked = True
        return self._perf_problem

    def perf_record(self, pid: int, seconds: float, frequency: int) -> PerfRecording:
        """``perf record`` and ``perf script`` run on the host (the symbols are the host's); the
        script's text comes back gzip-compressed; the recording is removed there."""
        args = (self.run_dir, str(pid), f"{seconds:g}", str(frequency))
        return self._perf("perf", args, seconds + self.settings.command_timeout_s)

    def _perf(self, op: str, args: Sequence[str], timeout: float) -> PerfRecording:
        try:
            status, out, err = self.run(self.agent(op, *args), timeout=timeout)
        except DeployError as exc:
            return PerfRecording(reason=str(exc))
        last = (err.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
        if status == PERF_UNAVAILABLE:
            return PerfRecording(reason=f"host {self.label}: {last}")
        if status != 0:
            return PerfRecording(reason=f"host {self.label}: the host agent's {op} failed (status {status}): {last}")
        try:
            return PerfRecording(gzip.decompress(out).decode(errors="replace"))
        except (OSError, EOFError) as exc:
            return PerfRecording(reason=f"host {self.label}: perf script's output arrived damaged: {exc}")

    # ---- stopping -------------------------------------------------------------------------------------

    def running(self) -> list[RemoteProcess]:
        with self._lock:
            return [p for p in self.processes if p.returncode() is None]

    def fetch(self, local_logs: dict[str, Path], artifacts: Path) -> None:
        """Copy what the run's processes wrote back: durable logs and other outputs to where the
        orchestrator expects them (unclaimed outputs under ``artifacts``), logs where the streamed
        copy is shorter than the remote one."""
        data = self.check(self.agent("fetch", self.run_dir), "fetching the run's files")
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                name = member.name
                target: Path | None = None
                if name.startswith("logs/"):
                    local = local_logs.get(Path(name).stem)
                    if local is not None and (not local.exists() or local.stat().st_size < member.size):
                        target = local
                elif name in self.outputs:
                    target = self.outputs[name]
                elif name.startswith("out/") and ".." not in Path(name).parts:
                    target = artifacts / _safe(self.label) / name[len("out/") :]
                source = tar.extractfile(member)
                if target is None or source is None:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read())

    def cleanup(self) -> dict[str, Any]:
        """Kill whatever of the run is left on this host and remove the run directory."""
        out = self.check(self.agent("cleanup", self.run_dir, "--grace", str(self.settings.stop_grace_s)), "cleaning up")
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    def disconnect(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.client.close()


def _splice(channel: paramiko.Channel, local_port: int) -> None:
    """Carry one tunnelled connection between its channel and ``127.0.0.1:local_port``."""
    try:
        sock = socket.create_connection(("127.0.0.1", local_port), timeout=10.0)
    except OSError:
        channel.close()
        return
    sock.settimeout(None)

    def outward() -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            while data := sock.recv(65536):
                channel.sendall(data)
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            channel.shutdown_write()

    back = threading.Thread(target=outward, daemon=True)
    back.start()
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        while data := channel.recv(65536):
            sock.sendall(data)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    back.join()
    sock.close()
    channel.close()


def _drain(recv: Callable[[int], bytes], into: io.BytesIO) -> None:
    while True:
        data = recv(65536)
        if not data:
            return
        into.write(data)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "-" for c in name)


def parallel(items: Sequence[T], fn: Callable[[T], Any], width: int) -> list[BaseException | None]:
    """Run ``fn`` on every item with at most ``width`` at once; each item's exception or None."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(width, len(items)))) as pool:
        futures = [pool.submit(fn, item) for item in items]
    return [f.exception() for f in futures]


# ---- the cluster -------------------------------------------------------------------------------------


class SshCluster(Cluster):
    """The hosts of an SSH cluster file, ready to start processes (see the module docstring)."""

    def __init__(self, spec: SshClusterSpec, run_dir: Path | None = None, run_id: str | None = None, extra_state: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.warnings: list[str] = []
        self.run_id = run_id or new_run_id()
        self.run_dir = run_dir
        self.known = KnownHosts(spec.known_hosts, spec.host_key_policy == "accept-new")
        self.machines: list[SshHost] = []
        self.problems: list[str] = []
        self._extra_state = extra_state or {}
        self._merged: dict[Path, _Merged] = {}
        self._merged_lock = threading.Lock()
        self._local: Any = None  # a LocalCluster for client processes with clients: local
        self._log_dirs: set[Path] = set()
        self._closed = False
        try:
            self.bundle = build_bundle()
            self.machines = [SshHost(self, t) for t in resolve_targets(spec)]
            self._write_state("starting")
            failures = parallel(self.machines, lambda m: m.prepare(self.bundle, self.run_id), 32)
            failed = [(m, e) for m, e in zip(self.machines, failures, strict=True) if e is not None]
            for _, exc in failed:
                if not isinstance(exc, DeployError):
                    raise exc
            if failed:
                raise _combined([e for _, e in failed if isinstance(e, DeployError)], len(self.machines))
            for added in self.known.added:
                self.warnings.append(f"accepted a new host key (host_key_policy: accept-new): {added}; saved to {self.known.path}")
            locals_ = {m.local_address for m in self.machines}
            if spec.orchestrator_address is None and len(locals_) > 1:
                self.warnings.append(
                    f"the hosts are reached from different local addresses ({', '.join(sorted(locals_))}); processes connect "
                    f"back to {self.orchestrator_address()} (set orchestrator_address: to choose)"
                )
            self._write_state("open")
        except BaseException:
            self.close()
            raise

    # ---- Cluster ----------------------------------------------------------------------------------------

    def hosts(self, nodes: Sequence[str], client_processes: int) -> tuple[dict[str, Host], list[Host]]:
        """Nodes round-robin over the hosts in file order; client processes continue the round
        (``clients: hosts``) or run on this machine (``clients: local``)."""
        n = len(self.machines)
        node_hosts: dict[str, Host] = {a: self.machines[i % n] for i, a in enumerate(nodes)}
        if self.spec.clients == "local":
            return node_hosts, [self._local_host(i) for i in range(client_processes)]
        return node_hosts, [self.machines[(len(nodes) + j) % n] for j in range(client_processes)]

    def _local_host(self, i: int) -> Host:
        from hydrodeploy.deploy.local import LocalCluster, LocalHost

        if self._local is None:
            self._local = LocalCluster(name=f"{self.name}-clients")
        return LocalHost(self._local, f"clients-{i}", None, None, self.orchestrator_address())

    def orchestrator_address(self) -> str:
        if self.spec.control == "tunnel":
            return "127.0.0.1"  # the processes come through their host's tunnel
        if self.spec.orchestrator_address:
            return self.spec.orchestrator_address
        return self.machines[0].local_address if self.machines else "127.0.0.1"

    def merged(self, log_dir: Path) -> _Merged:
        with self._merged_lock:
            self._log_dirs.add(log_dir)
            merged = self._merged.get(log_dir)
            if merged is None:
                merged = self._merged[log_dir] = _Merged(log_dir / MERGED_LOG)
            return merged

    def machine_profiles(self) -> list[dict[str, Any]]:
        return [{"host": m.label, "vcpus": m.profile.vcpus, "price_per_hour": m.profile.price_per_hour} for m in self.machines]

    def cost_per_hour(self) -> float | None:
        prices = [m.profile.price_per_hour for m in self.machines]
        return None if any(p is None for p in prices) else sum(p for p in prices if p is not None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._local is not None:
            self._local.close()
        running = [p for m in self.machines for p in m.running()]
        for proc in running:
            proc.send_signal(15)
        deadline = time.monotonic() + self.spec.ssh.stop_grace_s
        for proc in running:
            proc.wait(max(0.0, deadline - time.monotonic()))
        for proc in running:
            if proc.returncode() is None:
                proc.send_signal(9)
        for proc in running:
            proc.wait(2.0)
        for machine in self.machines:
            for proc in machine.processes:
                proc.detach()
        logs = {_safe(p.name): p.log_path for m in self.machines for p in m.processes}
        if self.run_dir is not None:
            artifacts = self.run_dir / "artifacts"
        else:
            artifacts = next(iter(logs.values())).parent / "artifacts" if logs else Path("artifacts")

        def finish(machine: SshHost) -> None:
            if not machine.run_dir:
                return  # never set up: nothing of the run is there
            try:
                if machine.processes:
                    machine.fetch(logs, artifacts)
            finally:
                result = machine.cleanup()
                if result.get("left"):
                    raise DeployError(f"host {machine.label}: processes {result['left']} could not be killed")

        failures = parallel(self.machines, finish, 32)
        for machine, exc in zip(self.machines, failures, strict=True):
            if exc is not None:
                problem = str(exc) if isinstance(exc, DeployError) else f"host {machine.label}: {exc!r}"
                self.problems.append(problem)
                retry = f"`hydrodeploy teardown {self.run_dir}`" if self.run_dir is not None else "`hydrodeploy teardown RUN_DIR`"
                self.warnings.append(f"cleaning up failed: {problem}; something of the run may be left there: run {retry}")
        for machine in self.machines:
            machine.disconnect()
        with self._merged_lock:
            for merged in self._merged.values():
                merged.close()
            self._merged = {}
        self._write_state("incomplete" if self.problems else "closed")

    # ---- the state file -------------------------------------------------------------------------------

    def state(self, status: str) -> dict[str, Any]:
        state: dict[str, Any] = {"kind": "ssh", **self._extra_state}  # a GCP cluster's record says kind gcp
        state.update(self._ssh_state(status))
        return state

    def _ssh_state(self, status: str) -> dict[str, Any]:
        return {
            "status": status,
            "run_id": self.run_id,
            "spec": self.spec.model_dump(),
            "bundle": getattr(self, "bundle", None) and self.bundle.sha256,
            "hosts": [
                {
                    "host": m.label,
                    "hostname": m.target.hostname,
                    "port": m.target.port,
                    "user": m.target.user,
                    "address": m.address,
                    "python": m.python_version,
                    "workdir": m.workdir,
                    "run_dir": m.run_dir,
                }
                for m in self.machines
            ],
            "machines": self.machine_profiles(),
            "cost_per_hour": self.cost_per_hour(),
            "problems": self.problems,
        }

    def _write_state(self, status: str) -> None:
        if self.run_dir is None:
            return
        path = self.run_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(status), indent=2) + "\n")
        os.replace(tmp, path)


def _combined(errors: list[DeployError], total: int) -> DeployError:
    if len(errors) == 1:
        return errors[0]
    kind = HostKeyRefused if all(isinstance(e, HostKeyRefused) for e in errors) else HostUnreachable
    lines = "\n".join(f"  {e}" for e in errors)
    return kind(f"{len(errors)} of {total} hosts could not be set up:\n{lines}")


# ---- teardown after a crash -------------------------------------------------------------------------


def teardown_ssh(state: dict[str, Any]) -> list[str]:
    """Kill whatever a run (recorded in its ``cluster.json``) left on its hosts and remove its
    remote run directories. One line per host saying what was done."""
    spec = SshClusterSpec.model_validate(state["spec"])
    run_id = str(state["run_id"])
    recorded = {h["host"]: h for h in state.get("hosts", [])}
    known = KnownHosts(spec.known_hosts, spec.host_key_policy == "accept-new")
    agent_source = (Path(__file__).with_name("hostagent.py")).read_bytes()
    targets = resolve_targets(spec)
    lines: dict[str, str] = {}

    def clean(target: Target) -> None:
        handshakes = threading.Semaphore(spec.ssh.max_startups)
        client = connect(target, spec.ssh, known, spec.agent, handshakes)
        try:
            host_state = recorded.get(target.label, {})
            run_dir = host_state.get("run_dir") or f"{host_state.get('workdir') or target.workdir}/runs/{run_id}"
            argv = [*target.python, "-S", "-", "cleanup", run_dir, "--grace", str(spec.ssh.stop_grace_s)]
            try:
                status, out, err = _exec(client, argv, agent_source, spec.ssh.command_timeout_s)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise DeployError(f"host {target.label}: cleanup failed: {_reason(exc)}") from None
            if status != 0 and not out.strip():
                detail = err.decode("utf-8", "replace").strip().splitlines()
                raise DeployError(f"host {target.label}: cleanup failed (status {status}): {detail[-1] if detail else 'no output'}")
            result = json.loads(out.decode().strip().splitlines()[-1])
            stopped = sorted(set(result["signalled"]) | set(result["killed"]))
            what = f"stopped {len(stopped)} process group{'s' if len(stopped) != 1 else ''} ({', '.join(stopped)})" if stopped else "nothing was running"
            gone = "removed its run directory" if result["removed"] else "no run directory"
            if result["left"]:
                raise DeployError(f"host {target.label}: processes {result['left']} survived SIGKILL")
            lines[target.label] = f"host {target.label}: {what}; {gone}"
        finally:
            client.close()

    failures = parallel(targets, clean, 32)
    errors = [e for e in failures if e is not None]
    for exc in errors:
        if not isinstance(exc, DeployError):
            raise exc
    if errors:
        raise _combined([e for e in errors if isinstance(e, DeployError)], len(targets))
    return [lines[t.label] for t in targets]


def _exec(client: paramiko.SSHClient, argv: Sequence[str], stdin: bytes, timeout: float) -> tuple[int, bytes, bytes]:
    transport = client.get_transport()
    assert transport is not None
    return _communicate(transport.open_session(timeout=timeout), argv, stdin, timeout)


def _communicate(channel: paramiko.Channel, argv: Sequence[str], stdin: bytes, timeout: float) -> tuple[int, bytes, bytes]:
    """Run a command on a fresh channel, feed it ``stdin``, collect its output and status."""
    channel.settimeout(timeout)
    out, err = io.BytesIO(), io.BytesIO()
    try:
        channel.exec_command(shlex.join(argv))
        errors = threading.Thread(target=_drain, args=(channel.recv_stderr, err), daemon=True)
        errors.start()
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        _drain(channel.recv, out)
        errors.join()
        return channel.recv_exit_status(), out.getvalue(), err.getvalue()
    finally:
        channel.close()
