"""Evaluator speed: facts per second through a join-heavy rule, and per-tick cost of a voting leader
and of a loaded Paxos leader.

    python -m bench.evaluator_speed [--facts N] [--repeat R] [--only join|leader|paxos]

Prints, for a three-way join ``tri(a, b, c) :- r(a, b), s(b, c), t(c, a)`` and a counting
aggregate over it, how many input facts per second one tick consumes and how many derived facts per
second it produces; for a voting leader receiving a batch of votes, ticks and votes per second; and
for the Paxos proposer (protocols/paxos.ded, ~60 rules, profiled as on the cluster) once it leads,
receiving each tick a batch of fresh client requests plus the acceptors' p2b answers to the previous
tick's proposals: ticks per second, microseconds per tick and the share of the tick spent inside
rule bodies (the rest is the evaluator's bookkeeping).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from hydrodeploy.language import parse
from hydrodeploy.runtime import NodeEvaluator, NodeState, Topology, compile_program

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


PAXOS = Path(__file__).resolve().parent.parent / "protocols" / "paxos.ded"


def paxos_leader() -> tuple[NodeEvaluator, NodeState, tuple[str, ...]]:
    """proposer/0 of protocols/paxos.ded, profiled, after winning the election for ballot 0."""
    program = parse(PAXOS.read_text(), str(PAXOS))
    topology = Topology.of(program)
    address = topology.instances["proposer"][0]
    ev = NodeEvaluator(compile_program(program)["proposer"], address, 0, topology, profile=True)
    acceptors = topology.instances["acceptor"]
    # the check_leader timeout starts an election for ballot 0; two acceptors promise it with empty logs
    state = ev.tick(ev.initial_state(), [], ["check_leader"]).state
    state = ev.tick(state, [("p1b", (a, 0, 0)) for a in acceptors[:2]]).state
    assert state.carried.get("elected") == {(0,)}, "the proposer did not become leader"
    return ev, state, acceptors


def bench_paxos(batch: int, seconds: float, profile: bool = True) -> tuple[float, float, float]:
    """Ticks per second, CPU µs per tick (the thread's CPU time inside ``tick``: steadier than
    wall time on a busy machine, and without the benchmark's own work) and the share of that CPU
    time inside rule bodies, for a loaded Paxos leader."""
    ev, state, acceptors = paxos_leader()
    ev.profile = profile
    for c in ev.counters.values():
        c.ns = 0
    next_id = 0
    p2bs: list[tuple[str, tuple[object, ...]]] = []
    ticks = 0
    cpu = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        inbox = [("client_in", ("client/0", next_id + i, "put", f"k{(next_id + i) % 100}", next_id + i)) for i in range(batch)]
        inbox += p2bs
        next_id += batch
        cpu_start = time.thread_time_ns()
        result = ev.tick(state, inbox)
        cpu += time.thread_time_ns() - cpu_start
        state = result.state
        # each acceptor accepts each proposal at the leader's ballot and answers with a p2b
        proposals = dict.fromkeys(values for _, rel, values in result.outbox if rel == "p2a")
        assert len(proposals) == batch, "the leader did not propose every request"
        p2bs = [("p2b", (a, s, b, b, c, i, p, k, v)) for (_, s, b, c, i, p, k, v) in proposals for a in acceptors]
        ticks += 1
        if ticks % 16 == 0 and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    rules = sum(c.ns for c in ev.counters.values())
    return ticks / elapsed, cpu / ticks / 1e3, rules / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, default=20_000, help="facts per input relation of the join")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per Paxos measurement (best of 3)")
    parser.add_argument("--only", choices=("join", "leader", "paxos"), help="run only this case")
    args = parser.parse_args()
    if args.only in (None, "join"):
        ins, outs, derived = bench_join(args.facts, args.repeat)
        print(f"three-way join, {3 * args.facts} input facts, {derived} derived (best of {args.repeat}):")
        print(f"  {ins:,.0f} input facts/s   {outs:,.0f} derived facts/s")
    if args.only in (None, "leader"):
        for batch in (1, 10, 100):
            rates = [bench_leader(batch, max(200, 20_000 // batch)) for _ in range(3)]
            tps = statistics.median(r[0] for r in rates)
            vps = statistics.median(r[1] for r in rates)
            print(f"voting leader, {batch:>3} requests x 3 votes per tick: {tps:,.0f} ticks/s   {vps:,.0f} votes/s")
    if args.only in (None, "paxos"):
        for batch in (1, 8, 32):
            tps, us, share = min((bench_paxos(batch, args.seconds) for _ in range(3)), key=lambda r: r[1])
            print(
                f"paxos leader (profiled), {batch:>2} requests + {3 * batch:>2} p2b per tick: "
                f"{tps:,.0f} ticks/s   {us:,.1f} CPU µs/tick   {share:.0%} in rule bodies"
            )


if __name__ == "__main__":
    main()
