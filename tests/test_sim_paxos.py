"""protocols/paxos.ded in simulation: every request completes, the replicas execute one and the
same gap-free sequence of commands, no answered command is lost, and progress continues after an
acceptor crashes or the leading proposer crashes (a new leader is elected and clients retry) —
across many seeds and under heavy reordering."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from hydrodeploy.language import ir, load_program
from hydrodeploy.runtime import NodeEvaluator, NodeState, TickResult, Topology, compile_program
from hydrodeploy.simulate import Network, Simulation, Workload

PROGRAM = Path(__file__).resolve().parents[1] / "protocols" / "paxos.ded"
PROPOSERS = ("proposer/0", "proposer/1")
ACCEPTORS = ("acceptor/0", "acceptor/1", "acceptor/2")
REPLICAS = ("replica/0", "replica/1", "replica/2")

SEEDS = range(20)
CRASH_SEEDS = range(12)
MANY_SEEDS = range(100, 300)

DEFAULT = Network(min_delay_ms=0.5, max_delay_ms=5.0, loss=0.0)
REORDERING = Network(min_delay_ms=0.05, max_delay_ms=40.0, loss=0.0)
WORKLOAD = Workload(clients=4, requests=200, timeout_ms=500.0)

# Entries of executed(slot, client, id, payload, key, value); a no-op has id -1.
SLOT, CLIENT, ID, PAYLOAD, KEY, VALUE = range(6)


@cache
def program() -> ir.Program:
    return load_program(str(PROGRAM))


LEADER = "leader"  # in a crash plan: whichever proposer leads at that point


@dataclass
class Crash:
    """A node that crashed for good while the workload ran."""

    node: str
    at_ms: float
    done_before: int  # requests completed before the crash
    ballot: int | None = None  # for a crashed leader, its ballot


@dataclass
class Run:
    sim: Simulation
    result: Any
    crashes: list[Crash] = field(default_factory=list)
    logs: dict[str, dict[int, tuple[Any, ...]]] = field(default_factory=dict)


def leader_of(sim: Simulation) -> tuple[str, int] | None:
    """The live proposer that believes it leads with the highest ballot, if any."""
    leaders = [(b, p) for p in PROPOSERS for (b,) in sim.facts(p, "leader")]
    if not leaders:
        return None
    ballot, proposer = max(leaders)
    return proposer, ballot


def simulate(
    seed: int,
    network: Network = DEFAULT,
    workload: Workload = WORKLOAD,
    crashes: tuple[tuple[str, int], ...] = (),
) -> Run:
    """One run. ``crashes`` lists (node, n): crash ``node`` (an address, or LEADER for the
    proposer leading at that time) for good once ``n`` requests completed, so that crashes
    land mid-workload whatever the timing of the seed."""
    sim = Simulation(program(), seed=seed, network=network, workload=workload)
    run = Run(sim, None)
    plan = sorted(crashes, key=lambda c: c[1])
    progress = {"outputs": 0, "done": 0}

    def stop_when(s: Simulation) -> bool:
        if len(s.outputs) != progress["outputs"]:  # count completions only when a reply came in
            progress["outputs"] = len(s.outputs)
            progress["done"] = sum(r.done_ms is not None for r in s.requests.values())
        while len(run.crashes) < len(plan) and progress["done"] >= plan[len(run.crashes)][1]:
            node, ballot = plan[len(run.crashes)][0], None
            if node == LEADER:
                leader = leader_of(s)
                if leader is None:
                    return False  # wait for a leader
                node, ballot = leader
            run.crashes.append(Crash(node, s.now_ms, progress["done"], ballot))
            s.crash(node, at_ms=s.now_ms)
        return False

    # drain long enough for every replica to catch up on the last commits
    run.result = sim.run(
        max_time_ms=60_000.0, drain_ms=250.0, stop_when=stop_when if plan else None
    )
    assert len(run.crashes) == len(plan), "a planned crash did not happen"
    run.logs = {r: {e[SLOT]: e for e in sim.facts(r, "executed")} for r in REPLICAS}
    return run


def assert_consistent(run: Run) -> None:
    """The safety properties, checked on the replicas' executed logs and the client replies."""
    result = run.result
    assert not result.unexpected_outputs
    # Each replica executed a gap-free prefix 0..k of the log ...
    for replica, log in run.logs.items():
        assert sorted(log) == list(range(len(log))), f"{replica} executed slots with holes"
    # ... and replicas agree on every slot more than one of them executed.
    merged: dict[int, tuple[Any, ...]] = {}
    for replica, log in run.logs.items():
        for slot, entry in log.items():
            assert merged.setdefault(slot, entry) == entry, (
                f"slot {slot}: {replica} executed {entry}, another replica {merged[slot]}"
            )
    # Each reply names the slot its request was executed at.
    for out in result.outputs:
        request_id, slot = out.values
        assert slot in merged and merged[slot][ID] == request_id, (
            f"reply {out.values} does not match the log"
        )
        assert merged[slot][CLIENT] == out.client
    # No answered command is lost: every completed request is in the log, with what the client sent.
    by_id: dict[int, list[tuple[Any, ...]]] = {}
    for entry in merged.values():
        by_id.setdefault(entry[ID], []).append(entry)
    for request in result.requests.values():
        if request.done_ms is not None:
            assert request.id in by_id, f"request {request.id} was answered but is not in the log"
            assert {e[CLIENT] for e in by_id[request.id]} == {request.client}
            assert len({(e[PAYLOAD], e[KEY], e[VALUE]) for e in by_id[request.id]}) == 1
    # Every replica's store holds, for each key, the value of the last put of that key it executed.
    for replica, log in run.logs.items():
        expected: dict[int, str] = {}
        seen_ids: set[int] = set()
        for slot in sorted(log):
            entry = log[slot]
            # no-ops and repeats of a retried request are not applied
            if entry[ID] >= 0 and entry[ID] not in seen_ids:
                seen_ids.add(entry[ID])
                expected[entry[KEY]] = entry[VALUE]
        versions: dict[int, tuple[int, str]] = {}
        for key, slot, value in run.sim.facts(replica, "store"):
            if key not in versions or slot > versions[key][0]:
                versions[key] = (slot, value)
        assert {k: v for k, (_, v) in versions.items()} == expected, (
            f"{replica}: store differs from its log"
        )


def assert_live(run: Run, all_replicas: bool = True) -> None:
    """Every request completed, and (after the drain) every live replica executed all of them."""
    requests = run.result.requests
    missing = sorted(r.id for r in requests.values() if r.done_ms is None)
    assert not missing, f"{len(missing)} requests never completed, e.g. {missing[:5]}"
    if all_replicas:
        for replica, log in run.logs.items():
            ids = {e[ID] for e in log.values()}
            assert set(requests) <= ids, f"{replica} did not execute every request"


def check(run: Run) -> None:
    assert_consistent(run)
    assert_live(run)


# ---- each role, tick by tick ----------------------------------------------------------------


class Node:
    """One instance driven by hand: feed messages and timers, look at what it sends."""

    def __init__(self, address: str) -> None:
        topology = Topology.of(program())
        component = topology.component_of(address)
        plan = compile_program(program())[component]
        self.ev = NodeEvaluator(
            plan, address, topology.instances[component].index(address), topology
        )
        self.state: NodeState = self.ev.initial_state()
        self.last: TickResult | None = None

    def tick(
        self, *messages: tuple[Any, ...], timers: tuple[str, ...] = ()
    ) -> list[tuple[str, str, tuple[Any, ...]]]:
        """One tick with ``messages`` given as (relation, *values); returns the sent messages."""
        inbox = [(m[0], tuple(m[1:])) for m in messages]
        self.last = self.ev.tick(self.state, inbox, timers)
        self.state = self.last.state
        return sorted(self.last.outbox)

    def facts(self, relation: str) -> set[tuple[Any, ...]]:
        assert self.last is not None
        return set(self.last.db.get(relation, ()))


NOOP = ("", -1, "", 0, "")


def entry(name: str) -> tuple[Any, ...]:
    """A client command (client, id, payload, key, value) named ``name``."""
    return ("client/0", ord(name), name, ord(name), "v" + name)


def sent(
    out: list[tuple[str, str, tuple[Any, ...]]], relation: str
) -> list[tuple[str, tuple[Any, ...]]]:
    return [(dst, values) for dst, rel, values in out if rel == relation]


def test_proposer_election_and_reconciliation() -> None:
    """Timeout -> phase 1a with the next ballot; promises count only with the whole log; the
    reconciled log takes the highest-ballot entry per slot, fills holes with no-ops and re-proposes
    everything at the new ballot; new requests continue after it; p2b quorum commits; a higher
    ballot preempts."""
    p = Node("proposer/0")
    p.tick(("heartbeat", 5))  # proposer/1 leads with ballot 5 (number 2, index 1)
    assert p.facts("max_seen") == {(5,)}
    p.tick(("client_in", *entry("f")))
    assert not p.facts("buffered"), "a follower of a live leader drops requests"
    assert not p.tick(timers=("check_leader",)), "heard the leader in this window: no election"
    out = p.tick(timers=("check_leader",))  # a whole window without heartbeats
    assert sent(out, "p1a") == [(a, ("proposer/0", 6)) for a in ACCEPTORS]  # number 3, index 0

    # acceptor/0 has accepted x at slot 0 (ballot 3) and c at slot 2 (ballot 5);
    # acceptor/1 has a at slot 0 (ballot 5) and d at slot 3 (ballot 1). Slot 1 is a hole.
    a0_log = [(0, 3, *entry("x")), (2, 5, *entry("c"))]
    a1_log = [(0, 5, *entry("a")), (3, 1, *entry("d"))]
    out = p.tick(
        ("p1b", "acceptor/0", 6, 2),
        ("p1b_log", "acceptor/0", 6, *a0_log[0]),  # the second entry is still in flight
        ("p1b", "acceptor/1", 6, 2),
        *[("p1b_log", "acceptor/1", 6, *e) for e in a1_log],
        ("client_in", *entry("m")),  # no leader is known: kept until we lead
    )
    assert not p.facts("leader") and not sent(out, "p2a"), "acceptor/0's reply is incomplete"
    out = p.tick(("p1b_log", "acceptor/0", 6, *a0_log[1]), ("client_in", *entry("n")))
    assert p.facts("leader") == {(6,)}
    expected = {(0, entry("a")), (1, NOOP), (2, entry("c")), (3, entry("d"))}
    expected |= {(4, entry("m")), (5, entry("n"))}
    p2a = sent(out, "p2a")
    assert {(v[1], tuple(v[3:])) for _, v in p2a} == expected
    assert {v[2] for _, v in p2a} == {6} and {v[0] for _, v in p2a} == {"proposer/0"}
    assert sorted(dst for dst, _ in p2a) == sorted(ACCEPTORS * len(expected))

    # The next tick's requests get the following slots, numbered in order.
    out = p.tick(("client_in", *entry("q")), ("client_in", *entry("p")), timers=("send_heartbeat",))
    assert {(v[1], v[3:]) for _, v in sent(out, "p2a")} == {(6, entry("p")), (7, entry("q"))}
    assert sent(out, "heartbeat") == [("proposer/1", (6,))]

    # Two matching p2bs commit a slot, once.
    vote = (6, 6, 6, *entry("p"))
    out = p.tick(("p2b", "acceptor/0", *vote))
    assert not sent(out, "commit")
    out = p.tick(("p2b", "acceptor/1", *vote))
    assert sent(out, "commit") == [(r, (6, *entry("p"))) for r in REPLICAS]
    assert not sent(p.tick(("p2b", "acceptor/2", *vote)), "commit")

    # A rejection (the acceptor holds ballot 9) is no vote, and it preempts the leader, which
    # then stops proposing and heartbeating.
    out = p.tick(
        ("p2b", "acceptor/0", 7, 6, 6, *entry("q")), ("p2b", "acceptor/2", 7, 6, 9, *entry("q"))
    )
    assert not sent(out, "commit")
    assert not p.facts("leader") and p.facts("max_seen") == {(9,)}
    assert not p.tick(("client_in", *entry("r")), timers=("send_heartbeat",))


def test_acceptor() -> None:
    a = Node("acceptor/1")
    out = a.tick(("p1a", "proposer/0", 2))
    assert out == [("proposer/0", "p1b", ("acceptor/1", 2, 0))]
    out = a.tick(("p2a", "proposer/0", 0, 2, *entry("a")), ("p2a", "proposer/0", 1, 2, *entry("b")))
    assert sent(out, "p2b") == [
        ("proposer/0", ("acceptor/1", 0, 2, 2, *entry("a"))),
        ("proposer/0", ("acceptor/1", 1, 2, 2, *entry("b"))),
    ]
    # A higher p1a: answered with the ballot and the whole log; lower p2as are then rejected.
    out = a.tick(("p1a", "proposer/1", 5), ("p2a", "proposer/0", 2, 2, *entry("c")))
    assert sent(out, "p1b") == [("proposer/1", ("acceptor/1", 5, 2))]
    assert sorted(sent(out, "p1b_log")) == [
        ("proposer/1", ("acceptor/1", 5, 0, 2, *entry("a"))),
        ("proposer/1", ("acceptor/1", 5, 1, 2, *entry("b"))),
    ]
    assert sent(out, "p2b") == [("proposer/0", ("acceptor/1", 2, 2, 5, *entry("c")))]
    # A p2a with a ballot at least ours is accepted, a lower one is not.
    a.tick(("p2a", "proposer/1", 2, 5, *entry("d")))
    out = a.tick(("p2a", "proposer/0", 3, 2, *entry("e")))
    assert a.facts("accepted") == {(0, 2, *entry("a")), (1, 2, *entry("b")), (2, 5, *entry("d"))}
    assert sent(out, "p2b") == [("proposer/0", ("acceptor/1", 3, 2, 5, *entry("e")))]


def test_replica_executes_in_slot_order() -> None:
    r = Node("replica/0")
    client = entry("a")[0]
    assert not r.tick(("commit", 1, *entry("b")), ("commit", 3, *entry("d")))  # slot 0 missing
    out = r.tick(("commit", 0, *entry("a")), ("commit", 2, *NOOP))  # 0..3 now run in one tick
    # replica 0 of 3 answers slots 0 and 3 (slot mod 3); b, at slot 1, is replica 1's to answer
    assert out == [(client, "client_out", (ord("a"), 0)), (client, "client_out", (ord("d"), 3))]
    # slot 6 holds a retried request a (proposed twice), and slot 1 is committed again
    out = r.tick(("commit", 4, *NOOP), ("commit", 5, *NOOP), ("commit", 6, *entry("a")), ("commit", 1, *entry("b")))
    assert out == [(client, "client_out", (ord("a"), 6))], "answered again"
    assert sorted(r.facts("executed")) == [
        (0, *entry("a")),
        (1, *entry("b")),
        (2, *NOOP),
        (3, *entry("d")),
        (4, *NOOP),
        (5, *NOOP),
        (6, *entry("a")),
    ]
    assert r.facts("store") == {(ord(n), s, "v" + n) for n, s in (("a", 0), ("b", 1), ("d", 3))}, (
        "applied once"
    )
    assert not r.tick(("commit", 2, *NOOP))


# ---- failure-free runs ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_failure_free(seed: int) -> None:
    run = simulate(seed)
    check(run)
    # A stable leader: one proposer leads at the end, the other follows its ballot.
    leader = leader_of(run.sim)
    assert leader is not None
    proposer, ballot = leader
    assert ballot % len(PROPOSERS) == PROPOSERS.index(proposer), "ballots are unique per proposer"
    for p in PROPOSERS:
        assert run.sim.facts(p, "max_seen") == {(ballot,)}
    # No election after the start: the first elections use ballot numbers 0 (and maybe 1).
    assert ballot < 2 * len(PROPOSERS)


@pytest.mark.parametrize("seed", range(3))
def test_no_client_retries_needed_without_crashes(seed: int) -> None:
    """Requests sent before the first election are kept by the proposers and proposed by the
    winner, so clients that never retry still get every answer."""
    net = REORDERING if seed % 2 else DEFAULT
    check(simulate(seed, network=net, workload=Workload(clients=4, requests=100, timeout_ms=None)))


@pytest.mark.parametrize("seed", range(4))
def test_heavy_reordering(seed: int) -> None:
    check(simulate(seed, network=REORDERING))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("one_way_ms", [(300.0, 400.0), (700.0, 900.0)])
def test_an_election_slower_than_the_failure_detection_window_completes(seed: int, one_way_ms: tuple[float, float]) -> None:
    """Phase-1 round trips of 600-800 ms and of 1.4-1.8 s, longer than the 500 ms check_leader
    window (a deployment's elections are this slow when acceptors send long logs to proposers on
    small CPU quotas): a candidate waits longer at every attempt and holds off while replies for
    its ballot arrive. Restarting at every window instead, with both proposers timing out
    together, neither was ever elected; waiting a fixed two windows, the slower network never
    elected one either."""
    slow = Network(min_delay_ms=one_way_ms[0], max_delay_ms=one_way_ms[1], loss=0.0)
    run = simulate(seed, network=slow, workload=Workload(clients=4, requests=40, timeout_ms=10_000.0))
    check(run)
    leader = leader_of(run.sim)
    assert leader is not None
    assert leader[1] < 4 * len(PROPOSERS), "elected within the first few ballots"


def test_requests_are_executed_once_despite_retries() -> None:
    """A short client timeout makes clients retry requests that are still in flight, so the
    leader proposes some of them twice; replicas apply each request once and answer again."""
    run = simulate(5, workload=Workload(clients=4, requests=200, timeout_ms=3.0))
    check(run)
    log = run.logs[REPLICAS[0]]
    ids = [e[ID] for e in log.values() if e[ID] >= 0]
    assert len(ids) > len(set(ids)), "expected some retried requests to be proposed twice"


# ---- crashes -------------------------------------------------------------------------------


def assert_progress_after(run: Run, crash: Crash) -> None:
    done_after = [
        r for r in run.result.requests.values() if r.done_ms is not None and r.done_ms > crash.at_ms
    ]
    assert crash.done_before < WORKLOAD.requests and done_after, "no progress after the crash"


@pytest.mark.parametrize("seed", CRASH_SEEDS)
def test_acceptor_crash(seed: int) -> None:
    acceptor = ACCEPTORS[seed % len(ACCEPTORS)]
    run = simulate(seed, crashes=((acceptor, 10 + 13 * seed % 170),))
    check(run)
    assert_progress_after(run, run.crashes[0])


def assert_new_leader(run: Run, crash: Crash) -> None:
    """The other proposer took over with a higher ballot and leads at the end."""
    assert crash.ballot is not None
    new_leader = leader_of(run.sim)
    assert new_leader is not None
    proposer, ballot = new_leader
    assert proposer != crash.node
    assert ballot > crash.ballot


@pytest.mark.parametrize("seed", CRASH_SEEDS)
def test_leader_crash(seed: int) -> None:
    run = simulate(seed, crashes=((LEADER, 10 + 17 * seed % 170),))
    check(run)
    assert_progress_after(run, run.crashes[0])
    assert_new_leader(run, run.crashes[0])


def test_leader_crash_under_reordering() -> None:
    run = simulate(3, network=REORDERING, crashes=((LEADER, 70),))
    check(run)
    assert_new_leader(run, run.crashes[0])


def test_leader_and_acceptor_crash() -> None:
    """f = 1 of each: a leader and an acceptor crash, the rest carries on."""
    run = simulate(11, crashes=(("acceptor/2", 40), (LEADER, 90)))
    check(run)
    assert_progress_after(run, run.crashes[1])
    assert_new_leader(run, run.crashes[1])


def test_minority_of_acceptors_left_blocks() -> None:
    """With two acceptors down there is no quorum: nothing commits after the crash (safety over
    liveness), and what was executed is still consistent."""
    sim = Simulation(program(), seed=2, network=DEFAULT, workload=WORKLOAD)
    sim.crash("acceptor/0", at_ms=400.0)
    sim.crash("acceptor/1", at_ms=400.0)
    result = sim.run(max_time_ms=2_500.0)
    run = Run(
        sim, result, logs={r: {e[SLOT]: e for e in sim.facts(r, "executed")} for r in REPLICAS}
    )
    assert_consistent(run)
    assert any(r.done_ms is None for r in result.requests.values())
    # what completes after the crash was accepted before it: a p2b in flight reaches the leader,
    # the commit a replica, the reply the client (three message delays)
    assert all(
        r.done_ms is None or r.done_ms < 400.0 + 3 * DEFAULT.max_delay_ms + 1
        for r in result.requests.values()
    )


def test_safe_under_loss() -> None:
    """paxos.ded assumes reliable delivery between live nodes (no p2a or commit retransmission),
    so with message loss it may stall; it must stay safe. Loss also makes elections fail (a lost
    p1b_log entry leaves a reply incomplete), so this runs many elections over non-empty logs."""
    lossy = Network(min_delay_ms=0.5, max_delay_ms=5.0, loss=0.05)
    elections = 0
    for seed in range(8):
        sim = Simulation(
            program(), seed=seed, network=lossy, workload=Workload(4, 200, timeout_ms=100.0)
        )
        if seed % 2:
            sim.crash("proposer/1", at_ms=300.0)
        result = sim.run(max_time_ms=3_000.0)
        logs = {r: {e[SLOT]: e for e in sim.facts(r, "executed")} for r in REPLICAS}
        assert_consistent(Run(sim, result, logs=logs))
        assert any(logs.values()), "something was executed"
        elections += max(b for p in PROPOSERS for (b,) in sim.facts(p, "max_seen")) // 2
    assert elections > 4


# ---- many seeds ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("seed", MANY_SEEDS)
def test_many_seeds(seed: int) -> None:
    check(simulate(seed))
    run = simulate(seed, crashes=((ACCEPTORS[seed % len(ACCEPTORS)], 3 + 7 * seed % 190),))
    check(run)
    assert_progress_after(run, run.crashes[0])
    run = simulate(seed, crashes=((LEADER, 3 + 11 * seed % 190),))
    check(run)
    assert_progress_after(run, run.crashes[0])
    assert_new_leader(run, run.crashes[0])


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(40))
def test_many_seeds_reordering(seed: int) -> None:
    check(simulate(seed, network=REORDERING))
    run = simulate(seed, network=REORDERING, crashes=((LEADER, 5 + 13 * seed % 180),))
    check(run)
    assert_new_leader(run, run.crashes[0])
