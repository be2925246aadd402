"""This machine's speed, so that a slower machine is told apart from a slower configuration.

The probe is the CPU time of one fixed piece of evaluator-like work (tuples hashed into a dict and a
set, about 10 ms here). Only CPU time counts (``time.process_time``): waiting for a CPU does not move
it, while caches and memory shared with other virtual machines on the same host do. On this machine
its median moved from 12 to 32 ms within an hour with nothing else running
(``python -m bench.machine_drift``), which is as large as most of what the optimizer measures.

The loop probes before each deployment and after its teardown: a deployment sharing the CPUs slows
the probe by its own contention, which differs between configurations. Those probes miss swings
within a deployment, so a local deployment also runs a :class:`SpeedMeter` that samples the same work
twice a second while it is measured, and every window records the median of its samples
(``machine_ms`` in ``results.csv``). Within one voting deployment at 128 clients, nothing else
running and the hypervisor taking nothing, windows measured 10,258-16,602 requests/s at the same
batch sizes while the leader spent 15.1-24.3 µs of CPU per request; the meter read 3.5-6.9 ms, and
the leader's CPU per request over the meter's reading varied half as much (3.4-4.5).
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

PROBE_SAMPLES = 8  # samples of one probe
PROBE_GAP_S = 0.25  # between samples: the work runs on caches others have had time to use, as a
# node's does between its CFS slices (back to back it ran 6.3 ms here while samples 1 s apart ran
# 9.2-10.4 ms; the drift above was measured on samples a second apart)


def fixed_work(rows: int = 20_000) -> int:
    table: dict[tuple[int, int, str], int] = {}
    seen: set[int] = set()
    for i in range(rows):
        row = (i, i % 97, "x")
        table[row] = i
        seen.add(row[1])
    return len(table) + len(seen)


def sample_ms(times: int = 2) -> float:
    """CPU milliseconds of the fixed work, done ``times`` times."""
    started = time.process_time()
    for _ in range(times):
        fixed_work()
    return (time.process_time() - started) * 1e3


def probe_here(samples: int = PROBE_SAMPLES, gap_s: float = PROBE_GAP_S) -> float:
    """The median of ``samples`` samples ``gap_s`` apart, in this process: this machine's speed now,
    in CPU ms of the fixed work (higher: slower)."""
    taken = []
    for k in range(max(1, samples)):
        if k:
            time.sleep(gap_s)
        taken.append(sample_ms())
    return statistics.median(taken)


def probe(samples: int = PROBE_SAMPLES, gap_s: float = PROBE_GAP_S) -> float | None:
    """:func:`probe_here` in a fresh Python process, so that the caller's own state does not count
    (in the loop's process, a probe right after its simulations ran 1.5x slower than the one after
    the sweep that followed). None when the process could not run."""
    command = [sys.executable, "-m", "hydrodeploy.profile.machine", str(samples), str(gap_s)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60 + samples * (gap_s + 1), check=True)
        return float(done.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def slowdown(during: list[float], reference: list[float]) -> float | None:
    """How many times slower the machine ran around one measurement (``during``: its probes) than
    around another (``reference``); None without probes of both."""
    if not during or not reference or statistics.fmean(reference) <= 0:
        return None
    return statistics.fmean(during) / statistics.fmean(reference)


def window_slowdown(measured: Mapping[str, Any] | None, reference: Mapping[str, Any] | None) -> float | None:
    """How many times slower the machine ran in one peak's window (``measured``, an iteration's
    measured peak with its ``machine_ms``) than in another's (``reference``: the peak a prediction
    was calibrated on), by the :class:`SpeedMeter`; None without a reading of both."""
    now = float((measured or {}).get("machine_ms", math.nan))
    then = float((reference or {}).get("machine_ms", math.nan))
    if not (math.isfinite(now) and math.isfinite(then)) or then <= 0:
        return None
    return now / then


def machine_note(slower: float, reference: int) -> str:
    """``slower`` (:func:`slowdown` against iteration ``reference``, on which a prediction was
    calibrated) in words."""
    if abs(slower - 1) < 0.05:
        return f"this machine ran at the speed it had around iteration {reference}'s sweep, on which the prediction was calibrated"
    how = f"{slower:.2f}x slower" if slower > 1 else f"{1 / slower:.2f}x faster"
    return f"this machine ran {how} than around iteration {reference}'s sweep, on which the prediction was calibrated"


METER_GAP_S = 0.5  # between a meter's samples: each is the fixed work once (about 5 ms), 1% of a core


class SpeedMeter:
    """A process sampling this machine's speed (the fixed work once, in CPU ms) every
    :data:`METER_GAP_S` while a deployment runs; :meth:`median` gives a window's reading. The
    process ends with :meth:`stop`, or by itself when its parent is gone."""

    def __init__(self, gap_s: float = METER_GAP_S) -> None:
        self.gap_s = gap_s
        self._samples: list[tuple[float, float]] = []  # (time.monotonic() at the sample's end, CPU ms)
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "hydrodeploy.profile.machine", "meter", str(self.gap_s), str(os.getpid())]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read, args=(self._process,), name="speed-meter", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int | None:
        """The meter process's pid while it runs."""
        return None if self._process is None else self._process.pid

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                at, ms = (float(x) for x in line.split())
            except ValueError:
                continue
            with self._lock:
                self._samples.append((at, ms))

    def median(self, start: float, end: float) -> float:
        """The median sample taken between ``start`` and ``end`` (``time.monotonic()``); nan
        without one."""
        with self._lock:
            taken = [ms for at, ms in self._samples if start <= at <= end]
        return statistics.median(taken) if taken else float("nan")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)


def _meter(gap_s: float, parent: int) -> None:
    """The meter's process: a sample every ``gap_s`` while ``parent`` lives."""
    while os.getppid() == parent:
        ms = sample_ms(1)
        try:
            print(f"{time.monotonic():.4f} {ms:.4f}", flush=True)
        except BrokenPipeError:
            return
        time.sleep(gap_s)


if __name__ == "__main__":
    if sys.argv[1] == "meter":
        _meter(float(sys.argv[2]), int(sys.argv[3]))
    else:
        print(probe_here(int(sys.argv[1]), float(sys.argv[2])))
