"""Process CPU sampled from outside with psutil: every node and client process of a deployment
(the per-node CPU a report plots against each quota), the orchestrator itself, and this machine's
busy CPUs, so that the CPU other programs on the machine use is known too.

Processes on other machines (SSH, GCP hosts) are not visible here; their entries are missing and
the node's own counters stand in.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class CpuSnapshot:
    at: float  # time.monotonic()
    processes: dict[str, float]  # name -> CPU seconds (user + system) so far
    host_busy_s: float  # busy CPU seconds of the machine, all cores
    host_total_s: float


def _host() -> tuple[float, float]:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    counted = [f for f in times._fields if f not in ("guest", "guest_nice")]  # guest is inside user
    total = sum(getattr(times, f) for f in counted)
    return total - idle, total


def snapshot(pids: Mapping[str, int]) -> CpuSnapshot:
    """CPU seconds of each process in ``pids`` (name -> pid) now; a process that cannot be read
    (ended, or not on this machine) is left out."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
        except (psutil.Error, OSError):
            continue
        out[name] = t.user + t.system
    busy, total = _host()
    return CpuSnapshot(time.monotonic(), out, busy, total)


def usage(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Cores each process used between two snapshots."""
    wall = max(1e-9, after.at - before.at)
    return {n: (after.processes[n] - s) / wall for n, s in before.processes.items() if n in after.processes}


def host_cores_busy(before: CpuSnapshot, after: CpuSnapshot) -> float:
    """Busy cores of the whole machine between two snapshots."""
    total = after.host_total_s - before.host_total_s
    if total <= 0:
        return math.nan
    cores = psutil.cpu_count() or 1
    return (after.host_busy_s - before.host_busy_s) / total * cores


class WindowSampler:
    """Snapshots at the start and end of each measurement window (a ``Bench.window_hooks``
    hook); :meth:`result` gives the cores of each process over the last window."""

    ORCHESTRATOR = "orchestrator"

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.pids.setdefault(self.ORCHESTRATOR, os.getpid())
        self.start: CpuSnapshot | None = None
        self.end: CpuSnapshot | None = None

    def __call__(self, event: str) -> None:
        if event == "start":
            self.start, self.end = snapshot(self.pids), None
        elif event == "end":
            self.end = snapshot(self.pids)

    def result(self) -> tuple[dict[str, float], float]:
        """(cores per process, busy cores of the machine) over the last window."""
        if self.start is None or self.end is None:
            return {}, math.nan
        return usage(self.start, self.end), host_cores_busy(self.start, self.end)
