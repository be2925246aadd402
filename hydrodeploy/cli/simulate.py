"""`hydrodeploy simulate FILE.ded`: run a whole program in one process on a seeded network.

Prints the requests completed, simulated latency percentiles and the messages sent per
component. The same seed gives the same history.
"""

from __future__ import annotations

import argparse
import time
from typing import Any


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "simulate",
        help="simulate a program with closed-loop clients on a seeded network",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE.ded")
    p.add_argument("--clients", type=int, default=4, help="closed-loop virtual clients (default 4)")
    p.add_argument("--requests", type=int, default=100, help="requests in total (default 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--loss", type=float, default=0.0, help="probability that a message is lost (default 0)")
    p.add_argument("--min-delay", type=float, default=0.5, metavar="MS", help="minimum message delay (default 0.5 ms)")
    p.add_argument("--max-delay", type=float, default=5.0, metavar="MS", help="maximum message delay (default 5 ms)")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="MS",
        help="clients re-send a request unanswered after MS (default: never; 100 ms with --loss)",
    )
    p.add_argument("--max-time", type=float, default=60_000.0, metavar="MS", help="stop after this much simulated time")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from hydrodeploy.language import load_program
    from hydrodeploy.rewrites.chain import load_topology
    from hydrodeploy.simulate import Network, Simulation, Workload

    program = load_program(args.file)
    topology = load_topology(program, args.file)  # partitions of a rewritten program, if recorded
    timeout = args.timeout
    if timeout is None and args.loss > 0:
        timeout = 100.0
    network = Network(min_delay_ms=args.min_delay, max_delay_ms=args.max_delay, loss=args.loss)
    workload = Workload(clients=args.clients, requests=args.requests, timeout_ms=timeout)
    sim = Simulation(program, seed=args.seed, network=network, workload=workload, topology=topology)
    started = time.perf_counter()
    result = sim.run(max_time_ms=args.max_time)
    wall = time.perf_counter() - started
    pct = result.latency_percentiles((50, 90, 99))
    print(f"program       {args.file}")
    print(f"seed          {args.seed}   clients {args.clients}   loss {args.loss:g}")
    print(f"completed     {result.completed} / {args.requests} requests")
    if result.completed:
        print(
            "latency (sim) "
            f"p50 {pct[50]:.2f} ms   p90 {pct[90]:.2f} ms   p99 {pct[99]:.2f} ms"
        )
    duplicates = sum(max(0, r.replies - 1) for r in result.requests.values())
    print(f"replies       {len(result.outputs)} ({duplicates} duplicates, {len(result.unexpected_outputs)} unmatched)")
    print(f"time          {result.end_ms:.1f} ms simulated, {wall:.2f} s wall, {result.events} events")
    print("messages sent per component")
    width = max((len(c) for c in result.messages_by_component), default=0)
    for component, count in result.messages_by_component.items():
        print(f"  {component:<{width}}  {count}")
    return 0 if result.completed == args.requests else 1
