"""Decoupling every rule of a component (:func:`hydrodeploy.rewrites.decoupling.fans_out`).

The optimizer loop met the case on 2PC: once the collectors are decoupled, the coordinator keeps
one rule, the vote request it sends to every participant. Moving that rule to a broadcaster leaves
the coordinator forwarding each request once — the broadcaster, which can be partitioned, sends
the participants' copies — where it sent one per participant before. A component left with
forwarding rules only gains nothing by being decoupled again, and is refused."""

from __future__ import annotations

from pathlib import Path

from hydrodeploy.language import ir, load_program
from hydrodeploy.rewrites import functional
from hydrodeploy.rewrites.base import Decouple, NotApplicable
from hydrodeploy.rewrites.chain import apply_chain, parse_steps
from hydrodeploy.rewrites.decoupling import fans_out
from hydrodeploy.rewrites.explain import candidate_sets
from hydrodeploy.simulate import Network, Workload
from hydrodeploy.simulate.equivalence import check_equivalence

ROOT = Path(__file__).resolve().parents[2]
TWO_PC = ROOT / "protocols" / "two_pc.ded"

COLLECTORS = """
decouple coordinator:votes#1,votes#2,yes_count#1,all_yes#1,coord_commit_log#1,commit#1:coordinator_collector --using mutually-independent
decouple coordinator:acks#1,acks#2,ack_count#1,all_acked#1,coord_end_log#1,client_out#1:coordinator_collector2 --using mutually-independent
"""
BROADCASTER = "decouple coordinator:vote_req#1:coordinator_broadcaster --using functional\n"


def _only_rule(program: ir.Program, component: str) -> ir.Rule:
    (rule,) = program.rules_of(component)
    return rule


def test_a_component_whose_one_rule_broadcasts_moves_it_whole_and_forwards_each_input_once() -> None:
    base = load_program(str(TWO_PC))
    collected, _, _ = apply_chain(base, parse_steps(COLLECTORS))
    assert _only_rule(collected, "coordinator").head.relation == "vote_req"
    assert frozenset({0}) in candidate_sets(collected, "coordinator")

    steps = COLLECTORS + BROADCASTER + "partition coordinator_broadcaster:id:2 --using cohashing\n"
    out, topology, _ = apply_chain(base, parse_steps(steps))
    relay = _only_rule(out, "coordinator")
    assert relay.head.relation == "client_in_to_coordinator_broadcaster"
    assert "client_in" in {a.relation for a in relay.atoms()} and not fans_out(out, relay)
    report = check_equivalence(
        base,
        out,
        rewritten_topology=topology,
        seeds=range(4),
        network=Network(min_delay_ms=0.05, max_delay_ms=10.0),
        workload=Workload(clients=4, requests=30),
        max_time_ms=20_000.0,
    )
    assert report.equivalent, "\n".join(str(d) for d in report.differences)
    assert report.completed == len(report.seeds) * 30


def test_a_component_left_forwarding_only_is_not_decoupled_again() -> None:
    base = load_program(str(TWO_PC))
    out, _, _ = apply_chain(base, parse_steps(COLLECTORS + BROADCASTER))
    assert candidate_sets(out, "coordinator") == []
    refused = functional.check(out, Decouple("coordinator", frozenset({0}), "coordinator_relay"))
    assert isinstance(refused, NotApplicable)
    assert "none of them sends an input to several nodes" in refused.reason
