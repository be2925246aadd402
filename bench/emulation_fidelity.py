"""Emulated-machine fidelity: does a node limited to ``cpus: q`` behave like a machine with q of a
core? For each q, voting runs with every node limited to q (its own CPU cgroup, 10 ms CFS
period); the leader is the bottleneck. Reported per q: the leader's measured CPU (process CPU
seconds per wall second over the measurement window) against q, and the maximum throughput over a
sweep of client counts; then a least-squares line throughput = a*q + b and its R^2.

    python -m bench.emulation_fidelity [--q 0.05 0.1 0.2 0.3 0.5] [--period-us 10000] [--verbose]
"""

from __future__ import annotations

import argparse
import statistics

from bench.netbench import max_throughput

COUNTS = (16, 32, 64, 128, 256, 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--q", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    print(f"{'q':>6}{'leader cpu':>12}{'error':>8}{'req/s':>10}{'req/s per q':>13}{'clients':>9}{'p50 ms':>9}{'throttled':>11}")
    xs: list[float] = []
    ys: list[float] = []
    for q in args.q:
        m = max_throughput("protocols/voting.ded", cpus=q, counts=COUNTS, verbose=args.verbose)
        if m.warnings:
            print("  warning:", "; ".join(m.warnings))
        p = m.best
        leader = next(n for n in p.nodes if n.address == "leader/0")
        error = (leader.cpu - q) / q
        xs.append(q)
        ys.append(p.throughput)
        print(
            f"{q:>6.2f}{leader.cpu:>12.3f}{error:>+8.1%}{p.throughput:>10,.0f}{p.throughput / q:>13,.0f}"
            f"{p.clients:>9}{p.p50_ms:>9.2f}{leader.throttled_s:>10.2f}s",
            flush=True,
        )
    if len(xs) >= 2:
        slope, intercept = statistics.linear_regression(xs, ys)
        mean = statistics.fmean(ys)
        ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
        ss_tot = sum((y - mean) ** 2 for y in ys) or 1.0
        print(f"fit: throughput = {slope:,.0f} * q {intercept:+,.0f}   R^2 = {1 - ss_res / ss_tot:.3f}")


if __name__ == "__main__":
    main()
