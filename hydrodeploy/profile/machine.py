"""This machine's speed, so that a slower machine is told apart from a slower configuration.

The probe is the CPU time of one fixed piece of evaluator-like work (tuples hashed into a dict and a
set, about 10 ms here). Only CPU time counts (``time.process_time``): waiting for a CPU does not move
it, while caches and memory shared with other virtual machines on the same host do. On this machine
its median moved from 12 to 32 ms within an hour with nothing else running
(``python -m bench.machine_drift``), which is as large as most of what the optimizer measures.

The loop probes before each deployment and after its teardown, never while one runs: a deployment
sharing the CPUs would slow the probe by its own contention, which differs between configurations.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

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


def sample_ms() -> float:
    """CPU milliseconds of the fixed work, done twice."""
    started = time.process_time()
    fixed_work()
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


def machine_note(slower: float, reference: int) -> str:
    """``slower`` (:func:`slowdown` against iteration ``reference``, on which a prediction was
    calibrated) in words."""
    if abs(slower - 1) < 0.05:
        return f"this machine ran at the speed it had around iteration {reference}'s sweep, on which the prediction was calibrated"
    how = f"{slower:.2f}x slower" if slower > 1 else f"{1 / slower:.2f}x faster"
    return f"this machine ran {how} than around iteration {reference}'s sweep, on which the prediction was calibrated"


if __name__ == "__main__":
    print(probe_here(int(sys.argv[1]), float(sys.argv[2])))
