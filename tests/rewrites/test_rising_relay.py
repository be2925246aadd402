"""An asymmetric proxy relays a fact its receiver only folds into a carried maximum
(:func:`hydrodeploy.rewrites.asymmetric.absorbed`) only when it is above everything relayed
before (:func:`hydrodeploy.rewrites.batching.rising`).

The Paxos p2b collector relays the ballots of the p2bs it receives, which the proposer reads only
through ``max_seen`` (carried as ``highest``). In steady state every p2b carries the leader's own
ballot: relaying it once is enough, so the collector stops sending a batch (and the proposer an
acknowledgement) every tick, and commits stop waiting for one."""

from __future__ import annotations

from pathlib import Path

from hydrodeploy.language import check, ir, load_program, parse, print_program
from hydrodeploy.rewrites.asymmetric import absorbed
from hydrodeploy.rewrites.chain import apply_chain, parse_steps
from hydrodeploy.runtime.topology import Topology
from hydrodeploy.simulate import Network, Simulation, Workload
from hydrodeploy.simulate.equivalence import check_equivalence

ROOT = Path(__file__).resolve().parents[2]
PAXOS = ROOT / "protocols" / "paxos.ded"
COLLECTOR = "decouple proposer:vote,votes,commit_now,commit,committed,pending_vote:proposer_collector --using asymmetric"
SEEN = "proposer_collector_batch_seen_p2b"


def _collector() -> tuple[ir.Program, ir.Program, Topology]:
    program = load_program(str(PAXOS))
    out, topology, _ = apply_chain(program, parse_steps(COLLECTOR))
    check(parse(print_program(out), "rewritten.ded"))
    return program, out, topology


def test_the_collector_relays_only_rising_ballots() -> None:
    _, out, _ = _collector()
    assert absorbed(out, "proposer", SEEN)
    counted = next(r for r in out.rules_of("proposer_collector") if r.head.relation == "proposer_collector_batch_count_seen_p2b")
    assert [a.relation for a in counted.atoms()] == ["proposer_collector_batch_fresh_seen_p2b"]


def test_a_receiver_that_reads_the_relayed_facts_otherwise_gets_them_all() -> None:
    _, out, _ = _collector()
    # the proposer also counting the ballots it sees: a repeated ballot is no longer redundant
    block = out.block("proposer")
    assert block is not None
    counting = ir.Rule(
        ir.Head("ballots_seen", (ir.Aggregate("count", None),)), ir.RuleKind.SYNC, (ir.Atom("seen", (ir.Var("b"),)),)
    )
    assert not absorbed(_with_rule(out, "proposer", counting), "proposer", SEEN)
    # a maximum that is not carried to the next tick: an old ballot could matter again
    uncarried = _without(out, "proposer", lambda r: r.head.relation == "seen" and r.atoms()[0].relation == "highest")
    assert not absorbed(uncarried, "proposer", SEEN)
    # the relayed relation read by something other than a copy
    guarded = ir.Rule(
        ir.Head("odd_ballot", (ir.Var("b"),)),
        ir.RuleKind.SYNC,
        (ir.Atom(SEEN, (ir.Var("b"),)), ir.Compare("==", ir.BinOp("%", ir.Var("b"), ir.Const(2)), ir.Const(1))),
    )
    assert not absorbed(_with_rule(out, "proposer", guarded), "proposer", SEEN)


def test_rising_relays_behave_like_paxos_under_reordering() -> None:
    # (Not under loss: base Paxos retransmits nothing and may stall there, so the two programs
    # stall at different points.)
    program, out, topology = _collector()
    report = check_equivalence(
        program,
        out,
        rewritten_topology=topology,  # type: ignore[arg-type]
        seeds=range(8),
        network=Network(min_delay_ms=0.05, max_delay_ms=10.0),
        workload=Workload(clients=4, requests=30, timeout_ms=500.0),
        mode="log",
        max_time_ms=30_000.0,
    )
    assert report.equivalent, "\n".join(str(d) for d in report.differences)
    assert report.completed == len(report.seeds) * 30


def test_a_steady_leader_hears_of_its_ballot_once_per_collector() -> None:
    _, out, topology = _collector()
    network = Network(min_delay_ms=0.05, max_delay_ms=10.0)
    sim = Simulation(out, seed=1, network=network, workload=Workload(clients=4, requests=240), record_messages=True, topology=topology)
    result = sim.run(max_time_ms=30_000.0)
    assert sum(1 for r in result.requests.values() if r.done_ms is not None) == 240
    p2bs = sum(1 for m in result.messages if m.relation == "p2b")
    relays = sum(1 for m in result.messages if m.relation == "proposer_collector_batch_relay_seen_p2b")
    acks = sum(1 for m in result.messages if m.relation == "proposer_collector_batch_ack")
    assert p2bs >= 3 * 240
    # one ballot per collector instance for the whole run (-1 before the first election counts too)
    assert relays <= 2 * 2 and acks == relays


def _with_rule(program: ir.Program, component: str, rule: ir.Rule) -> ir.Program:
    from hydrodeploy.rewrites import mechanics as m

    return m.add_rules(program, component, [rule])


def _without(program: ir.Program, component: str, drop: object) -> ir.Program:
    from hydrodeploy.rewrites import mechanics as m

    return m.replace_block(program, component, [r for r in program.rules_of(component) if not drop(r)])  # type: ignore[operator]
