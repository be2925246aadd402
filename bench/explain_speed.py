"""Speed of `hydrodeploy explain`: every analysis and every rewrite check on a protocol.

    python -m bench.explain_speed [--program protocols/paxos.ded] [--repeat 5]

Measures, in one process, parsing and checking the program and then running everything
``explain`` computes for every component (decoupling candidates tried with every decoupling
rewrite, partitioning tried with every partitioning rewrite), from a cold analysis cache each
time (a freshly parsed program). Prints the median and worst time of the analysis step and the
number of checks it made. Target: well under one second for paxos.ded.
"""

from __future__ import annotations

import argparse
import statistics
import time

from hydrodeploy.language import load_program
from hydrodeploy.rewrites.explain import explain


def measure(path: str, repeat: int) -> tuple[list[float], list[float], int]:
    load_times: list[float] = []
    explain_times: list[float] = []
    checks = 0
    for _ in range(repeat):
        start = time.perf_counter()
        program = load_program(path)
        loaded = time.perf_counter()
        reports = explain(program)
        done = time.perf_counter()
        load_times.append(loaded - start)
        explain_times.append(done - loaded)
        checks = sum(len(r.decoupling) + len(r.partitioning) for r in reports)
    return load_times, explain_times, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--program", default="protocols/paxos.ded")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    load_times, explain_times, checks = measure(args.program, args.repeat)
    print(f"program          {args.program}")
    print(f"parse + check    median {statistics.median(load_times) * 1000:.0f} ms")
    print(
        f"explain          median {statistics.median(explain_times) * 1000:.0f} ms, "
        f"worst {max(explain_times) * 1000:.0f} ms ({checks} rewrite checks)"
    )


if __name__ == "__main__":
    main()
