"""The local cluster: every node a real process on this machine, each an emulated machine.

An emulated machine is a process in its own CPU cgroup (cgroup v1, ``/sys/fs/cgroup/cpu``) whose
quota is ``cpus`` cores over a short CFS period (10 ms by default, so a throttled process waits at
most a few milliseconds, not the kernel's default 100 ms); optionally it also has its own network
namespace, attached to a per-run bridge, with ``tc netem`` delaying everything it sends. When
cgroups (or namespaces) cannot be set up, :attr:`LocalCluster.warnings` says so and the run goes on
unthrottled (or on loopback).

Throttled machines are *packed* onto this host's CPUs when their quotas leave a CPU free
(:func:`pack_cpus`): each node process is pinned to one CPU, the nodes filling as few CPUs as hold
their quotas at :data:`PACK_SHARE` of a core each, in deployment order (components that talk to
each other share a CPU), and the client processes join the first of them. On this virtual machine
a message between processes on different CPUs costs each side about twice the CPU of one between
processes on the same CPU (``python -m bench.event_loop --pinning``: the wake-up of the other
CPU), a cost no network between real machines charges to the machines' CPUs; packing keeps it out
of the emulated machines' quotas. Unthrottled nodes, and quotas that need every CPU, are not
pinned.

No process outlives a run: every child is started in its own session with
``PR_SET_PDEATHSIG = SIGKILL`` (it is killed when the orchestrator dies, however it dies), and
:meth:`LocalCluster.close` kills every process group still alive and removes the cgroups and
namespaces. Resources left by an orchestrator that was killed outright are removed by the next
run (:func:`clean_stale`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import io
import math
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hydrodeploy.deploy import hostagent
from hydrodeploy.deploy.host import (
    Cluster,
    DeployError,
    Host,
    PerfRecording,
    ProcessHandle,
    ProcessSpec,
)

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
CGROUP_BASE = "hydrodeploy"
MIN_QUOTA_US = 1000  # the kernel's smallest CFS quota
NETNS_DIR = Path("/var/run/netns")
SUBNET = "10.213"  # 10.213.<k>.0/24 per run, k in 1..254

PACK_SHARE = 0.8  # of a core: the node quotas packed onto one CPU (the rest: clients, orchestrator)

_PR_SET_PDEATHSIG = 1
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl
_setns = _libc.setns
_sched_setaffinity = _libc.sched_setaffinity
_MASK_WORDS = 16  # a cpu_set_t of 1,024 CPUs


def _cpu_mask(cpu: int) -> ctypes.Array[ctypes.c_ulong]:
    mask = (ctypes.c_ulong * _MASK_WORDS)()
    bits = ctypes.sizeof(ctypes.c_ulong) * 8
    mask[cpu // bits] = 1 << (cpu % bits)
    return mask


def _child_setup(parent: int, netns: str | None, cpu: int | None = None) -> Callable[[], None]:
    """What runs in the child between fork and exec: die with the orchestrator, enter the
    machine's network namespace, stay on its CPU. Only pre-resolved C calls: the parent may have
    threads. (Pinning here, before exec, covers every thread the node starts.)"""
    mask = None if cpu is None else _cpu_mask(cpu)

    def setup() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the orchestrator died before prctl took effect
            os._exit(1)
        if netns is not None:
            fd = os.open(str(NETNS_DIR / netns), os.O_RDONLY)
            if _setns(fd, _CLONE_NEWNET) != 0:
                os._exit(1)
            os.close(fd)
        if mask is not None and _sched_setaffinity(0, ctypes.sizeof(mask), mask) != 0:
            os._exit(1)

    return setup


def pack_cpus(quotas: Sequence[float], cpus: Sequence[int] | None = None, share: float = PACK_SHARE) -> list[int] | None:
    """The CPU of each node (quotas in deployment order), or None when the quotas need all of
    ``cpus`` (default: the CPUs this process may run on, where the local cluster's processes run):
    then nothing is pinned and the scheduler spreads the processes as it sees fit.
    Otherwise the nodes fill the fewest CPUs that hold their quotas at ``share`` of a core each, each
    CPU taking a contiguous run of nodes with an equal share of the total quota."""
    if cpus is None:
        cpus = sorted(os.sched_getaffinity(0))
    total = sum(quotas)
    groups = max(1, math.ceil(total / share - 1e-9))
    if not quotas or groups >= len(cpus):
        return None
    per_group = total / groups
    placed: list[int] = []
    before = 0.0
    for quota in quotas:
        group = min(groups - 1, int((before + quota / 2) / per_group))  # where the node's midpoint falls
        placed.append(cpus[group])
        before += quota
    return placed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)


# ---- CPU cgroups --------------------------------------------------------------------------------


def cgroups_unavailable() -> str | None:
    """Why per-process CPU quotas cannot be set here, or None when they can."""
    quota = CGROUP_CPU / "cpu.cfs_quota_us"
    if not quota.exists():
        return f"no cgroup v1 CPU controller at {CGROUP_CPU}"
    base = CGROUP_CPU / CGROUP_BASE
    try:
        base.mkdir(exist_ok=True)
        probe = base / f"probe-{os.getpid()}"
        probe.mkdir(exist_ok=True)
        try:
            (probe / "cpu.cfs_period_us").write_text("10000")
        finally:
            probe.rmdir()
    except OSError as exc:
        return f"cannot write cgroups under {base} ({exc.strerror or exc})"
    return None


def quota_for(cpus: float, period_us: int) -> tuple[int, int]:
    """(period, quota) in microseconds for ``cpus`` cores; the period grows when the quota would
    fall below the kernel's minimum of 1 ms."""
    if cpus * period_us < MIN_QUOTA_US:
        period_us = math.ceil(MIN_QUOTA_US / cpus)
    return period_us, max(MIN_QUOTA_US, round(cpus * period_us))


def cfs_period_s(cpus: float | None, period_us: int) -> float:
    """The CFS period, in seconds, a machine of ``cpus`` cores runs under (:func:`quota_for`):
    a twentieth of a core over a 10 ms period is 1 ms every 20 ms."""
    return (period_us if cpus is None else quota_for(cpus, period_us)[0]) / 1e6


class CpuGroup:
    """One emulated machine's CPU cgroup."""

    def __init__(self, path: Path, cpus: float, period_us: int) -> None:
        self.path = path
        self.cpus = cpus
        self.period_us, self.quota_us = quota_for(cpus, period_us)
        path.mkdir(parents=True, exist_ok=True)
        (path / "cpu.cfs_period_us").write_text(str(self.period_us))
        (path / "cpu.cfs_quota_us").write_text(str(self.quota_us))

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        with contextlib.suppress(OSError):
            for line in (self.path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key in ("nr_periods", "nr_throttled"):
                    out[key] = float(value)
                elif key == "throttled_time":
                    out["throttled_s"] = int(value) / 1e9
        return out

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def remove(self) -> None:
        _remove_cgroup(self.path)


def _remove_cgroup(path: Path) -> None:
    """Kill what is left in a cgroup and remove it (a cgroup must be empty to be removed)."""
    for _ in range(50):
        try:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except OSError:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


# ---- network namespaces ---------------------------------------------------------------------------


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", "-n", netns, *args] if netns else ["ip", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DeployError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.returncode}")


def _links() -> str:
    proc = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False)
    return proc.stdout


class Network:
    """A bridge ``hdbr<k>`` with 10.213.<k>.1/24, and one namespace per machine attached to it by
    a veth pair; ``tc netem`` on each namespace's side delays what it sends by ``delay_ms``."""

    def __init__(self, delay_ms: float) -> None:
        self.delay_ms = delay_ms
        self.k = self._free_subnet()
        self.bridge = f"hdbr{self.k}"
        self.namespaces: list[str] = []
        self._next = 2
        _ip("link", "add", self.bridge, "type", "bridge")
        try:
            _ip("link", "set", "dev", self.bridge, "alias", f"hydrodeploy:{os.getpid()}")
            _ip("addr", "add", f"{SUBNET}.{self.k}.1/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except DeployError:
            self.remove()
            raise
        self.gateway = f"{SUBNET}.{self.k}.1"
        self.netem_error: str | None = None
        if delay_ms > 0:
            self.netem_error = self._probe_netem()
            if self.netem_error is not None:
                self.delay_ms = 0.0

    def _probe_netem(self) -> str | None:
        """Why ``tc netem`` cannot be used here (e.g. a kernel without sch_netem), or None."""
        cmd = ["tc", "qdisc", "add", "dev", self.bridge, "root", "netem", "delay", "1ms"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            return "the `tc` command (iproute2) is not installed"
        if proc.returncode != 0:
            return f"`tc ... netem` failed: {proc.stderr.strip() or proc.returncode}"
        subprocess.run(["tc", "qdisc", "del", "dev", self.bridge, "root"], capture_output=True, check=False)
        return None

    @staticmethod
    def _free_subnet() -> int:
        # a veth outlives its removed namespace while the kernel still holds that (orphaned TCP
        # sockets of its processes time out): its subnet is not free yet
        used = {int(a or b) for a, b in re.findall(r"\bhd(?:br(\d+)|(\d+)v\d+)\b", _links())}
        for k in range(1, 255):
            if k not in used:
                return k
        raise DeployError("no free 10.213.<k>.0/24 subnet for a network (254 runs at once?)")

    def add(self) -> tuple[str, str]:
        """A new namespace; returns (its name, its address)."""
        i = self._next
        if i > 254:
            raise DeployError("at most 253 namespaced machines per run")
        self._next += 1
        ns = f"hd{self.k}n{i}"
        host_side, ns_side = f"hd{self.k}v{i}", f"hd{self.k}p{i}"
        address = f"{SUBNET}.{self.k}.{i}"
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _ip("link", "add", host_side, "type", "veth", "peer", "name", ns_side)
        _ip("link", "set", ns_side, "netns", ns)
        _ip("link", "set", host_side, "master", self.bridge)
        _ip("link", "set", host_side, "up")
        _ip("addr", "add", f"{address}/24", "dev", ns_side, netns=ns)
        _ip("link", "set", ns_side, "up", netns=ns)
        _ip("link", "set", "lo", "up", netns=ns)
        if self.delay_ms > 0:
            cmd = ["tc", "-n", ns, "qdisc", "add", "dev", ns_side, "root", "netem", "delay", f"{self.delay_ms}ms"]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise DeployError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}")
        return ns, address

    def remove(self) -> None:
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        self.namespaces = []


def namespaces_unavailable() -> str | None:
    if subprocess.run(["which", "ip"], capture_output=True, check=False).returncode != 0:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


# ---- stale resources --------------------------------------------------------------------------------


def clean_stale() -> None:
    """Remove the cgroups, namespaces and bridges of runs whose orchestrator is gone."""
    base = CGROUP_CPU / CGROUP_BASE
    if base.is_dir():
        for run in base.iterdir():
            owner = run.name.split("-", 1)[0]
            if run.is_dir() and owner.isdigit() and not _alive(int(owner)):
                for group in run.iterdir():
                    if group.is_dir():
                        _remove_cgroup(group)
                _remove_cgroup(run)
    if subprocess.run(["which", "ip"], capture_output=True, check=False).returncode != 0:
        return
    for k, owner in re.findall(r"hdbr(\d+)[^\n]*alias hydrodeploy:(\d+)", _links()):
        if _alive(int(owner)):
            continue
        if NETNS_DIR.is_dir():
            for ns in NETNS_DIR.iterdir():
                if re.fullmatch(rf"hd{k}n\d+", ns.name):
                    subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", f"hdbr{k}"], capture_output=True, check=False)


# ---- hosts and processes ------------------------------------------------------------------------------


class LocalProcess(ProcessHandle):
    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path, group: CpuGroup | None) -> None:
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path
        self.group = group

    def returncode(self) -> int | None:
        return self.popen.poll()

    def send_signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def apply_limits(self) -> None:
        if self.group is not None and self.popen.poll() is None:
            self.group.add(self.pid)

    def cpu_stats(self) -> dict[str, float]:
        return self.group.stats() if self.group is not None else {}


class LocalHost(Host):
    """One emulated machine: a CPU cgroup (when ``cpus`` is set and cgroups work) and a network
    namespace (when the cluster uses them)."""

    def __init__(
        self, cluster: LocalCluster, name: str, cpus: float | None, netns: str | None, address: str, cpu: int | None = None
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.cpus = cpus
        self.netns = netns
        self.address = address
        self.cpu = cpu  # the host CPU its processes are pinned to (None: any)

    def start(self, spec: ProcessSpec) -> ProcessHandle:
        group = self.cluster._cgroup(self.name, self.cpus)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as log:
            popen = subprocess.Popen(
                spec.argv,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=spec.cwd,
                start_new_session=True,
                preexec_fn=_child_setup(os.getpid(), self.netns, self.cpu),
            )
        assert popen.stdin is not None
        try:
            popen.stdin.write(spec.stdin)
            popen.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; the deployment reports it with its log
        handle = LocalProcess(spec.name, popen, spec.log_path, group)
        self.cluster._processes.append(handle)
        return handle

    def perf_problem(self) -> str | None:
        return self.cluster.perf_problem

    def perf_record(self, pid: int, seconds: float, frequency: int) -> PerfRecording:
        out = io.BytesIO()
        with tempfile.TemporaryDirectory(prefix="hydrodeploy-perf-") as directory:
            reason = hostagent.perf_record(pid, seconds, frequency, directory, out.write)
        if reason is not None:
            return PerfRecording(reason=reason)
        return PerfRecording(out.getvalue().decode(errors="replace"))


class LocalCluster(Cluster):
    """Processes on this machine. ``cpus`` is each node's quota (None: unthrottled); client
    processes are never throttled. ``pack``: pin throttled nodes to CPUs (:func:`pack_cpus`)."""

    def __init__(
        self,
        name: str = "local",
        cpus: float | None = None,
        cfs_period_us: int = 10_000,
        namespaces: bool = False,
        delay_ms: float = 0.0,
        pack: bool = True,
    ) -> None:
        self.name = name
        self.cpus = cpus
        self.cfs_period_us = cfs_period_us
        self.pack = pack
        self.placement: dict[str, int] = {}  # node address -> the CPU it is pinned to (empty: none pinned)
        self.warnings: list[str] = []
        self._processes: list[LocalProcess] = []
        self._groups: list[CpuGroup] = []
        self._network: Network | None = None
        self.run_id = f"{os.getpid()}-{os.urandom(3).hex()}"
        clean_stale()
        self._cgroups_ok = False
        if cpus is not None:
            reason = cgroups_unavailable()
            if reason is None:
                self._cgroups_ok = True
            else:
                self.warnings.append(f"CPU limits not applied: {reason}; running unthrottled")
        if namespaces or delay_ms > 0:
            reason = namespaces_unavailable()
            if reason is None:
                try:
                    self._network = Network(delay_ms)
                    if self._network.netem_error is not None:
                        self.warnings.append(
                            f"network delay not applied: {self._network.netem_error}; namespaces without delay"
                        )
                except DeployError as exc:
                    self.warnings.append(f"network namespaces not set up: {exc}; running on loopback")
            else:
                self.warnings.append(f"network namespaces not set up: {reason}; running on loopback")

    @property
    def throttled(self) -> bool:
        return self._cgroups_ok

    @functools.cached_property
    def perf_problem(self) -> str | None:
        """Why perf cannot record processes on this machine (checked once per cluster)."""
        return hostagent.perf_problem()

    def _cgroup(self, machine: str, cpus: float | None) -> CpuGroup | None:
        if cpus is None or not self._cgroups_ok:
            return None
        group = CpuGroup(CGROUP_CPU / CGROUP_BASE / self.run_id / _safe(machine), cpus, self.cfs_period_us)
        self._groups.append(group)
        return group

    def _host(self, name: str, cpus: float | None, cpu: int | None = None) -> LocalHost:
        if self._network is not None:
            netns, address = self._network.add()
            return LocalHost(self, name, cpus, netns, address, cpu)
        return LocalHost(self, name, cpus, None, "127.0.0.1", cpu)

    def hosts(self, nodes: Sequence[str], client_processes: int) -> tuple[dict[str, Host], list[Host]]:
        cpus = self.cpus if self._cgroups_ok else None
        packed = pack_cpus([cpus] * len(nodes)) if cpus is not None and self.pack else None
        self.placement = dict(zip(nodes, packed, strict=True)) if packed else {}
        # the clients talk to the first components (their requests) and the last (the replies):
        # they go with the first CPU, which has room left for them (PACK_SHARE)
        client_cpu = packed[0] if packed else None
        node_hosts: dict[str, Host] = {a: self._host(a, cpus, self.placement.get(a)) for a in nodes}
        client_hosts: list[Host] = [self._host(f"clients-{i}", None, client_cpu) for i in range(client_processes)]
        return node_hosts, client_hosts

    def orchestrator_address(self) -> str:
        return self._network.gateway if self._network is not None else "127.0.0.1"

    def pinned_cpus(self) -> list[int] | None:
        return sorted(set(self.placement.values())) or None

    def close(self) -> None:
        for proc in self._processes:
            proc.send_signal(signal.SIGKILL)
        for proc in self._processes:
            proc.wait(5.0)
        for group in self._groups:
            group.remove()
        if self._groups:
            _remove_cgroup(CGROUP_CPU / CGROUP_BASE / self.run_id)
        self._groups = []
        if self._network is not None:
            self._network.remove()
            self._network = None
