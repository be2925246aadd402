"""Partial partitioning of Paxos acceptors (hydrodeploy.rewrites.partial / sealing), driven tick by
tick: a p2a that cannot raise the ballot is processed by its partition at once; one that would is
sent to the coordinator, and once ordered it raises the ballot in every partition but is accepted
and answered by its own partition only; partitioned input waits while a vote is outstanding; and a
phase-1 answer is sent in parts that the proposer sums."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from hydrodeploy.language import ir, load_program
from hydrodeploy.rewrites import partial, sealing
from hydrodeploy.rewrites.base import Partition
from hydrodeploy.rewrites.chain import apply_chain, parse_steps
from hydrodeploy.runtime import NodeEvaluator, NodeState, Topology, compile_program

PAXOS = Path(__file__).resolve().parents[1] / "protocols" / "paxos.ded"
ENTRY = ("client/0", 7, "payload", 3, "value")  # client, id, payload, key, value


@cache
def rewritten() -> tuple[ir.Program, Topology]:
    program, topology, _ = apply_chain(load_program(str(PAXOS)), parse_steps("partition acceptor:s:3 --using sealing"))
    return program, topology


class Node:
    def __init__(self, component: str, address: str, index: int) -> None:
        program, topology = rewritten()
        self.evaluator = NodeEvaluator(compile_program(program)[component], address, index, topology)
        self.state: NodeState = self.evaluator.initial_state()

    def tick(self, *inbox: tuple[str, tuple[Any, ...]]) -> list[tuple[str, str, tuple[Any, ...]]]:
        result = self.evaluator.tick(self.state, list(inbox))
        self.state = result.state
        return result.outbox

    def facts(self, relation: str) -> set[tuple[Any, ...]]:
        return set(self.evaluator.tick(self.state, []).db.get(relation, set()))


def p2a(slot: int, ballot: int) -> tuple[str, tuple[Any, ...]]:
    return ("p2a", ("proposer/0", slot, ballot, *ENTRY))


def relations(outbox: list[tuple[str, str, tuple[Any, ...]]]) -> list[str]:
    return sorted(rel for _, rel, _ in outbox)


def test_the_plan_names_the_parts() -> None:
    program = load_program(str(PAXOS))
    plan = partial.plan(program, Partition("acceptor", "s", 3))
    assert isinstance(plan, partial.Plan)
    assert plan.keyed == {"accepted": 0, "p2a": 1}
    assert plan.replicated == {"ballot_seen", "max_ballot", "acc_ballot", "answering"}
    assert plan.sealed == {"has_log", "log_size"}
    assert plan.ordered_inputs == ("p1a",)
    assert set(plan.shared) == {"p2a"} and plan.shared["p2a"].register == "max_ballot"
    assert set(plan.sealed_outputs) == {"p1b"} and plan.sealed_outputs["p1b"].count_attr == 2
    assert not partial.check(program, Partition("acceptor", "s", 3)).applicable  # p1b needs sealing
    assert sealing.check(program, Partition("acceptor", "s", 3)).applicable


def test_a_p2a_that_does_not_raise_the_ballot_is_processed_by_its_partition() -> None:
    owner = Node("acceptor", "acceptor/0#1", 0)
    out = owner.tick(p2a(1, -1))  # ballot -1: not above the initial ballot
    assert relations(out) == ["p2b"]
    assert out[0][0] == "proposer/0"
    assert ("acceptor/0", 1, -1, -1, *ENTRY) == out[0][2]


def test_a_p2a_that_raises_the_ballot_is_ordered_and_applied_by_its_owner_only() -> None:
    owner, other = Node("acceptor", "acceptor/0#1", 0), Node("acceptor", "acceptor/0#2", 0)
    out = owner.tick(p2a(1, 5))
    assert relations(out) == ["acceptor_order_raise_p2a"]  # no p2b yet
    dst, _, raise_values = out[0]
    assert dst == "acceptor_coordinator/0" and raise_values[0] == 1  # from partition 1
    item = (0, "p2a", 1, "proposer/0", 1, 5, *ENTRY)
    for node in (owner, other):
        votes = node.tick(("acceptor_order_request", item))
        assert relations(votes) == ["acceptor_order_vote"]
    # while the vote is outstanding, partitioned input waits
    assert other.tick(p2a(2, 5)) == []
    # commit: both raise the ballot; only the owner accepts and answers the ordered p2a; the
    # waiting p2a at the other partition is processed the tick after, at the new ballot
    assert relations(owner.tick(("acceptor_order_commit", item))) == ["p2b"]
    assert relations(other.tick(("acceptor_order_commit", item))) == []
    assert relations(other.tick()) == ["p2b"]
    assert owner.facts("max_ballot") == other.facts("max_ballot") == {(5,)}
    assert {f[0] for f in owner.facts("accepted")} == {1} and {f[0] for f in other.facts("accepted")} == {2}


def test_phase_one_answers_come_in_parts_the_proposer_sums() -> None:
    proposer = Node("proposer", "proposer/0", 0)
    program, topology = rewritten()
    # two partitions of acceptor/1 report one entry and no entry: not all parts are in yet
    first = proposer.evaluator.tick(
        proposer.state, [("p1b_part", (0, 0, "acceptor/1", 4, 1)), ("p1b_part", (0, 2, "acceptor/1", 4, 0))]
    )
    assert not first.db.get("p1b")
    # the third part completes it: one p1b whose log size is the sum of the parts, once
    second = proposer.evaluator.tick(first.state, [("p1b_part", (0, 1, "acceptor/1", 4, 1))])
    assert second.db["p1b"] == {("acceptor/1", 4, 2)}
    third = proposer.evaluator.tick(second.state, [])
    assert not third.db.get("p1b")
    assert topology.partition_counts() == {"acceptor": 3}
    assert ir.Fact(ir.Atom("acceptor_partitions", (ir.Const(3),))) in (program.block("proposer").facts)  # type: ignore[union-attr]
