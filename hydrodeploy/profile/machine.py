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
import time

PROBE_SAMPLES = 15  # samples of one probe, back to back (about 0.3 s on this machine)


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


def probe(samples: int = PROBE_SAMPLES) -> float:
    """The median of ``samples`` samples: this machine's speed now, in CPU ms of the fixed work
    (higher: slower)."""
    return statistics.median(sample_ms() for _ in range(max(1, samples)))


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
