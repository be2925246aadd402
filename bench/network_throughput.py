"""Maximum throughput of real node processes: (a) the base voting, 2PC and Paxos programs with no
CPU quota (each node may use a whole core); (b) voting as compiled `.ded` against the same protocol
written by hand (bench/handwritten_voting.py) with the same node process and network I/O.

    python -m bench.network_throughput [--part a|b|both] [--verbose]

Each number is the best point of a sweep of closed-loop client counts (1, 2, 4, ... until two
steps gain under 5%), 16-byte payloads, 2 client processes, 2 s warm-up and 4 s measurement
windows, on this machine. (b) is measured unthrottled and with every node limited to a quarter of
a core, where throughput is set by the leader's CPU cost per request rather than by how the
machine's cores are shared.
"""

from __future__ import annotations

import argparse
import os

from bench.netbench import Measured, max_throughput


def line(name: str, m: Measured) -> str:
    p = m.best
    neck = p.bottleneck
    where = f"{neck.address} {neck.cpu:.2f}" if neck else "-"
    return (
        f"{name:<28}{p.throughput:>10,.0f}{p.clients:>9}{p.p50_ms:>9.2f}{p.p99_ms:>9.2f}   {where}"
    )


HEADER = f"{'program':<28}{'req/s':>10}{'clients':>9}{'p50 ms':>9}{'p99 ms':>9}   bottleneck (cores)"


def part_a(verbose: bool) -> None:
    print(f"(a) base programs, unthrottled nodes, {os.cpu_count()} cores")
    print(HEADER)
    for name, timeout in (("voting", None), ("two_pc", None), ("paxos", 500.0)):
        m = max_throughput(f"protocols/{name}.ded", timeout_ms=timeout, verbose=verbose)
        print(line(name, m), flush=True)


def part_b(verbose: bool) -> None:
    print("(b) voting: compiled .ded vs hand-written Python, same node process and network I/O")
    print(HEADER)
    for cpus in (None, 0.25):
        label = "unthrottled" if cpus is None else f"cpus {cpus:g}"
        ded = max_throughput("protocols/voting.ded", cpus=cpus, verbose=verbose)
        hand = max_throughput("protocols/voting.ded", cpus=cpus, engine="bench.handwritten_voting:engine", verbose=verbose)
        print(line(f"hydrodeploy ({label})", ded))
        print(line(f"hand-written ({label})", hand))
        print(f"  ratio hydrodeploy / hand-written ({label}): {ded.best.throughput / hand.best.throughput:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    parser.add_argument("--verbose", action="store_true", help="print every point")
    args = parser.parse_args()
    if args.part in ("a", "both"):
        part_a(args.verbose)
    if args.part in ("b", "both"):
        part_b(args.verbose)


if __name__ == "__main__":
    main()
