"""Evaluator speed: facts per second through a join-heavy rule, and per-tick cost of a voting leader.

    python -m bench.evaluator_speed [--facts N] [--repeat R]

Prints, for a three-way join ``tri(a, b, c) :- r(a, b), s(b, c), t(c, a)`` and a counting
aggregate over it, how many input facts per second one tick consumes and how many derived facts per
second it produces; and, for a voting leader receiving a batch of votes, ticks and votes per second.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from hydrodeploy.language import parse
from hydrodeploy.runtime import NodeEvaluator, Topology, compile_program

JOIN = """
.component a
a {
  tri(x, y, z) :- r(x, y), s(y, z), t(z, x).
  fanout(x, count(z)) :- tri(x, _, z).
}
"""

LEADER = """
.component leader
.component participant 3
.persist committed
leader {
  votes(id, from) :- vote(id, from).
  votes(id, from) :+ votes(id, from), !committed(id).
  n(id, count(from)) :- votes(id, from).
  commit(id) :- n(id, k), participant_count(k), !committed(id).
  committed(id) :+ commit(id).
  reply@p(id) :~ commit(id), participant(p).
}
"""


def evaluator(source: str, component: str) -> NodeEvaluator:
    program = parse(source, "bench.ded")
    plans = compile_program(program)
    topology = Topology.of(program)
    return NodeEvaluator(plans[component], topology.instances[component][0], 0, topology)


def bench_join(n: int, repeat: int) -> tuple[float, float, int]:
    rng = random.Random(1)
    domain = max(8, int(n**0.5))
    facts = [(rel, (rng.randrange(domain), rng.randrange(domain))) for rel in ("r", "s", "t") for _ in range(n)]
    ev = evaluator(JOIN, "a")
    times = []
    derived = 0
    for _ in range(repeat):
        start = time.perf_counter()
        result = ev.tick(ev.initial_state(), facts)
        times.append(time.perf_counter() - start)
        derived = len(result.db.get("tri", ())) + len(result.db.get("fanout", ()))
    best = min(times)
    return len(facts) / best, derived / best, derived


def bench_leader(batch: int, ticks: int) -> tuple[float, float]:
    ev = evaluator(LEADER, "leader")
    state = ev.initial_state()
    next_id = 0
    start = time.perf_counter()
    for _ in range(ticks):
        inbox = [("vote", (next_id + i, f"participant/{p}")) for i in range(batch) for p in range(3)]
        next_id += batch
        state = ev.tick(state, inbox).state
    elapsed = time.perf_counter() - start
    return ticks / elapsed, ticks * batch * 3 / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, default=20_000, help="facts per input relation of the join")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ins, outs, derived = bench_join(args.facts, args.repeat)
    print(f"three-way join, {3 * args.facts} input facts, {derived} derived (best of {args.repeat}):")
    print(f"  {ins:,.0f} input facts/s   {outs:,.0f} derived facts/s")
    for batch in (1, 10, 100):
        rates = [bench_leader(batch, max(200, 20_000 // batch)) for _ in range(3)]
        tps = statistics.median(r[0] for r in rates)
        vps = statistics.median(r[1] for r in rates)
        print(f"voting leader, {batch:>3} requests x 3 votes per tick: {tps:,.0f} ticks/s   {vps:,.0f} votes/s")


if __name__ == "__main__":
    main()
