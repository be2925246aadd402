"""What every host backend provides: machines that start processes, and the handles to them.

A :class:`Host` is one machine of a cluster as the orchestrator sees it: the local backend's
emulated machines (a CPU cgroup, optionally a network namespace), later SSH hosts or GCP VMs.
Starting a process is data (:class:`ProcessSpec`) that a host executes; the returned
:class:`ProcessHandle` is how the deployment watches, limits, stops and reads the logs of it.
A host also records its processes with ``perf`` where they run (:meth:`Host.perf_record`): the
text comes back, the parsing and attribution are :mod:`hydrodeploy.profile.perf`'s.
A :class:`Cluster` hands out hosts for the nodes and client processes of one deployment and tears
everything down at the end.
"""

from __future__ import annotations

import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydrodeploy.errors import HydrodeployError


class DeployError(HydrodeployError):
    """A deployment that cannot be set up or stopped as asked."""


@dataclass(frozen=True)
class ProcessSpec:
    """One process to start: its command, what it reads on stdin, and where its output goes."""

    name: str  # the node address ("leader/0") or the client process name ("clients/1")
    argv: tuple[str, ...]
    stdin: bytes
    log_path: Path
    cwd: Path


class ProcessHandle(ABC):
    """A started process."""

    name: str
    pid: int
    log_path: Path

    @abstractmethod
    def returncode(self) -> int | None:
        """The exit status once the process ended (negative: killed by that signal), else None."""

    @abstractmethod
    def send_signal(self, sig: int) -> None:
        """Signal the process and everything it started (its process group)."""

    @abstractmethod
    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the process to end; its status, or None."""

    def apply_limits(self) -> None:  # noqa: B027 - optional: hosts without limits do nothing
        """Put the process under its host's resource limits (called once it finished starting,
        so start-up work is not throttled)."""

    def cpu_stats(self) -> dict[str, float]:
        """Counters of the limit enforcement (for a CPU quota: periods, throttled periods and
        throttled seconds); empty when the host has no limits."""
        return {}

    def log_tail(self, lines: int = 10) -> list[str]:
        """The last lines the process wrote to its log."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 16384))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def describe_exit(self) -> str:
        code = self.returncode()
        if code is None:
            return "is running"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"was killed by {name}"
        return f"exited with status {code}"


@dataclass(frozen=True)
class PerfRecording:
    """What ``perf script`` printed for a recording of one process, or why there is none."""

    script: str = ""
    reason: str | None = None


class Host(ABC):
    """One machine of a cluster."""

    name: str
    address: str  # the IP its processes listen on and are reached at
    cpus: float | None  # CPU quota of each process on it, in cores; None: unthrottled

    @abstractmethod
    def start(self, spec: ProcessSpec) -> ProcessHandle:
        """Start a process; it must not outlive the orchestrator."""

    @abstractmethod
    def perf_problem(self) -> str | None:
        """Why ``perf`` cannot record processes on this host (naming a remote host), or None."""

    @abstractmethod
    def perf_record(self, pid: int, seconds: float, frequency: int) -> PerfRecording:
        """Record the host's process ``pid`` with ``perf record -e cpu-clock -g`` at ``frequency``
        Hz for ``seconds`` (blocking), and bring back its ``perf script``."""


class Cluster(ABC):
    """The hosts of one deployment, and their teardown."""

    name: str
    warnings: list[str]  # what could not be set up as asked (e.g. no writable cgroups)

    @abstractmethod
    def hosts(self, nodes: Sequence[str], client_processes: int) -> tuple[dict[str, Host], list[Host]]:
        """A host for every node address, and one for every client process."""

    @abstractmethod
    def orchestrator_address(self) -> str:
        """The IP the orchestrator's control port listens on, reachable from every host."""

    @abstractmethod
    def close(self) -> None:
        """Kill whatever still runs and release every resource (cgroups, namespaces, ...)."""

    def pinned_cpus(self) -> list[int] | None:
        """The CPUs of this machine the deployment's processes are pinned to (None: not pinned)."""
        return None
