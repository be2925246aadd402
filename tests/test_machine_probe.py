"""The machine-speed probe the loop runs around every deployment, the speed meter that runs
while a local deployment is measured, and how their comparisons read."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from hydrodeploy.profile.machine import SpeedMeter, machine_note, probe, slowdown, window_slowdown
from hydrodeploy.report.analysis import _chain_blocks


def test_a_probe_is_the_cpu_time_of_the_fixed_work_in_a_fresh_process() -> None:
    ms = probe(samples=3, gap_s=0.01)
    assert ms is not None and ms > 0


def test_slowdown_compares_the_probes_around_two_sweeps() -> None:
    assert slowdown([20.0, 24.0], [10.0, 12.0]) == 2.0
    assert slowdown([11.0], [22.0]) == 0.5
    assert slowdown([], [10.0]) is None
    assert slowdown([10.0], []) is None


def test_the_comparison_in_words() -> None:
    assert machine_note(1.5, 0) == (
        "this machine ran 1.50x slower than around iteration 0's sweep, on which the prediction was calibrated"
    )
    assert "ran 2.00x faster than around iteration 2's sweep" in machine_note(0.5, 2)
    assert "ran at the speed it had around iteration 0's sweep" in machine_note(1.03, 0)


def test_the_report_says_how_fast_the_machine_ran_against_the_calibration(tmp_path: Path) -> None:
    base = {"index": 0, "machines": 4, "kept": True, "status": "measured", "machine_ms": [11.0, 11.5],
            "measured": {"max_throughput": 2000.0, "clients": 256}}
    scaled = {"index": 1, "machines": 12, "kept": True, "status": "measured", "parent": 0, "description": "a rewrite",
              "predicted_throughput": 4000.0, "machine_ms": [16.0, 17.0],
              "measured": {"max_throughput": 2900.0, "clients": 512, "prediction_error": 4000 / 2900 - 1,
                           "machine_slowdown": 16.5 / 11.25}}  # fmt: skip
    blocks = [b for b in _chain_blocks(tmp_path, [base, scaled]) if isinstance(b, str)]
    assert any(
        "Probed before and after the sweep, this machine ran 1.47x slower than around iteration 0's sweep, on which "
        "the prediction was calibrated." in b
        for b in blocks
    )


def test_the_speed_meter_reads_a_window_and_leaves_no_process() -> None:
    meter = SpeedMeter(gap_s=0.1)
    started = time.monotonic()
    meter.start()
    try:
        time.sleep(1.5)
        window = meter.median(started, time.monotonic())
        assert math.isfinite(window) and window > 0
        assert math.isnan(meter.median(started - 10, started - 5))  # no sample before it started
        pid = meter.pid
        assert pid is not None and psutil.pid_exists(pid)
    finally:
        meter.stop()
    assert meter.pid is None and not psutil.pid_exists(pid)


def test_the_speed_meter_ends_when_the_process_that_started_it_dies() -> None:
    # a parent that starts a meter, prints its pid and exits at once, never stopping it
    script = textwrap.dedent(
        """
        import os, time
        from hydrodeploy.profile.machine import SpeedMeter
        meter = SpeedMeter(gap_s=0.05)
        meter.start()
        print(meter.pid, flush=True)
        time.sleep(0.3)
        os._exit(0)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_window_slowdown_compares_the_meter_in_two_peaks() -> None:
    assert window_slowdown({"machine_ms": 6.0}, {"machine_ms": 4.0}) == 1.5
    assert window_slowdown({"machine_ms": math.nan}, {"machine_ms": 4.0}) is None
    assert window_slowdown({"machine_ms": 6.0}, {}) is None  # a peak measured before the meter was
    assert window_slowdown({"machine_ms": 6.0}, None) is None
