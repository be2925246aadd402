"""Simulator speed: simulated requests completed per wall-clock second, per protocol.

    python -m bench.simulator_speed [--requests M] [--clients N] [PROTOCOL.ded ...]

Each protocol runs in one process with closed-loop clients on the default seeded network
(0.5-5 ms delays, no loss); the best of three seeds is reported with the events handled per second.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hydrodeploy.language import load_program
from hydrodeploy.simulate import Simulation, Workload

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["protocols/voting.ded", "protocols/two_pc.ded", "protocols/paxos.ded", "protocols/kvs.ded"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", default=DEFAULT)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    print(f"{'protocol':<26}{'completed':>10}{'req/s (wall)':>14}{'events/s':>12}{'sim p50 ms':>12}")
    for name in args.files:
        program = load_program(str(ROOT / name) if not Path(name).is_absolute() else name)
        best = None
        for seed in range(3):
            workload = Workload(clients=args.clients, requests=args.requests, timeout_ms=1_000.0)
            sim = Simulation(program, seed=seed, workload=workload)
            start = time.perf_counter()
            result = sim.run(max_time_ms=600_000.0)
            wall = time.perf_counter() - start
            row = (result.completed / wall, result.events / wall, result.completed, result.latency_percentiles((50,))[50])
            if best is None or row[0] > best[0]:
                best = row
        assert best is not None
        print(f"{Path(name).name:<26}{best[2]:>10}{best[0]:>14,.0f}{best[1]:>12,.0f}{best[3]:>12.2f}")


if __name__ == "__main__":
    main()
