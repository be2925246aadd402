"""The machine-speed probe the loop runs around every deployment, and how its comparison reads."""

from __future__ import annotations

from pathlib import Path

from hydrodeploy.profile.machine import machine_note, probe, slowdown
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
