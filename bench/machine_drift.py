"""How steady this machine's speed is: the CPU time of one fixed piece of work, once a second.

    python -m bench.machine_drift [--seconds 180] [--every 1.0]

The work is what an evaluator does most (building tuples, hashing them into a dict and a set), sized
to take about 10 ms of CPU here, so that sampling once a second costs about 1% of one core; it is
the probe :mod:`hydrodeploy.profile.machine` runs before and after every deployment of the loop. Only CPU
time is counted (``time.process_time``), so waiting for a CPU does not count; what moves it is how
fast the CPU runs this process's instructions: caches and memory shared with other virtual machines
on the same host, or the host's clock. It prints every sample as it goes, then the spread
(minimum, 10th percentile, median, 90th percentile, maximum) and the longest run of consecutive
samples 30% or more above the median. Run it on an otherwise idle machine: a slow stretch that lasts
tens of seconds moves any measurement made during it, and any ratio of two measurements made on
either side of it (what :mod:`hydrodeploy.optimize.confirm` guards the optimizer's speed-up against).
"""

from __future__ import annotations

import argparse
import statistics
import time

from hydrodeploy.profile.machine import sample_ms

SLOW = 1.3  # a sample this far above the median is slow


def longest_slow_run(samples: list[float]) -> int:
    median = statistics.median(samples)
    longest = run = 0
    for ms in samples:
        run = run + 1 if ms >= SLOW * median else 0
        longest = max(longest, run)
    return longest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between samples")
    args = parser.parse_args()
    samples: list[float] = []
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        ms = sample_ms()
        samples.append(ms)
        print(f"{time.strftime('%H:%M:%S')} {ms:6.2f} ms", flush=True)
        time.sleep(max(0.0, args.every - ms / 1e3))
    if len(samples) < 2:
        return
    q = statistics.quantiles(samples, n=10)
    print(
        f"{len(samples)} samples: min {min(samples):.2f} ms, p10 {q[0]:.2f}, median {statistics.median(samples):.2f}, "
        f"p90 {q[-1]:.2f}, max {max(samples):.2f}; longest run of samples {SLOW:.0%} or more of the median: "
        f"{longest_slow_run(samples)} ({longest_slow_run(samples) * args.every:.0f} s)"
    )


if __name__ == "__main__":
    main()
