"""The equivalence checker (hydrodeploy.simulate.equivalence) catches wrong rewrites: deliberately
broken variants of real rewrites — partitioning on the wrong key, decoupling a rule that depends on
facts arriving together — are reported as differences, while the correct rewrites are not."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from hydrodeploy.analysis import PartitionExpr, Policy
from hydrodeploy.language import ir, load_program
from hydrodeploy.rewrites import functional, mutually_independent, state_machine
from hydrodeploy.rewrites.base import Decouple, Partition, rule_positions
from hydrodeploy.rewrites.partitioning import partition
from hydrodeploy.runtime.topology import Topology
from hydrodeploy.simulate import Network, Workload
from hydrodeploy.simulate.equivalence import Observation, check_equivalence, compare

PROTOCOLS = Path(__file__).resolve().parents[1] / "protocols"
NETWORK = Network(min_delay_ms=0.05, max_delay_ms=10.0)
WORKLOAD = Workload(clients=4, requests=30)


@cache
def protocol(name: str) -> ir.Program:
    return load_program(str(PROTOCOLS / f"{name}.ded"))


def voting_with_collectors() -> tuple[ir.Program, Topology]:
    program = protocol("voting")
    target = Decouple("leader", rule_positions(program, "leader", ["votes", "vote_count", "committed", "client_out"]), "leader_collector")
    return mutually_independent.apply(program, None, target)


def test_identical_programs_are_equivalent() -> None:
    report = check_equivalence(protocol("voting"), protocol("voting"), seeds=range(3), network=NETWORK, workload=WORKLOAD)
    assert report.equivalent and report.completed == 3 * WORKLOAD.requests


def test_partitioning_collectors_on_the_request_id_is_equivalent() -> None:
    program, topology = voting_with_collectors()
    correct = Policy(
        "leader_collector",
        {"vote": PartitionExpr(1), "votes": PartitionExpr(1), "vote_count": PartitionExpr(1), "committed": PartitionExpr(1)},
        {},
        False,
    )
    out, topo = partition(program, topology, Partition("leader_collector", "id", 3), policy=correct)
    report = check_equivalence(protocol("voting"), out, rewritten_topology=topo, seeds=range(3), network=NETWORK, workload=WORKLOAD)
    assert report.equivalent, report.differences


def test_partitioning_on_the_wrong_key_is_caught() -> None:
    """Collectors partitioned on the voter instead of the request: a request's votes land on
    different partitions, its count never reaches the number of participants."""
    program, topology = voting_with_collectors()
    wrong = Policy(
        "leader_collector",
        {"vote": PartitionExpr(3), "votes": PartitionExpr(3), "vote_count": PartitionExpr(1), "committed": PartitionExpr(1)},
        {},
        False,
    )
    out, topo = partition(program, topology, Partition("leader_collector", "from", 3), policy=wrong)
    report = check_equivalence(
        protocol("voting"), out, rewritten_topology=topo, seeds=range(3), network=NETWORK, workload=WORKLOAD, max_time_ms=2_000.0
    )
    assert not report.equivalent
    assert "completed requests differ" in str(report.differences[0])


def test_decoupling_a_rule_that_joins_two_relations_is_caught() -> None:
    """The certificate rule joins two relations the leader derives in the same tick; moved out
    without the persistence monotonic decoupling would add, the two facts arrive separately and
    never meet. The functional precondition rejects it; forced, the checker notices."""
    program = protocol("kvs")
    target = Decouple("leader", rule_positions(program, "leader", ["certificate"]), "leader_certifier")
    assert not functional.check(program, target).applicable
    out, topo = functional.apply(program, None, target, force=True)
    report = check_equivalence(program, out, rewritten_topology=topo, seeds=range(3), network=NETWORK, workload=WORKLOAD, max_time_ms=2_000.0)
    assert not report.equivalent


def test_decoupling_a_state_machine_without_batches_is_caught() -> None:
    """Replies that negate a relation derived in the same tick as the request: moved without
    batching (forcing functional decoupling), the classification can arrive after the request."""
    program = load_program(str(Path(__file__).parent / "rewrites" / "golden" / "state_machine" / "input.ded"))
    target = Decouple("leader", rule_positions(program, "leader", ["client_out"]), "leader_answerer")
    assert not functional.check(program, target).applicable
    assert state_machine.check(program, target).applicable
    out, topo = functional.apply(program, None, target, force=True)
    report = check_equivalence(program, out, rewritten_topology=topo, seeds=range(3), network=NETWORK, workload=WORKLOAD)
    assert not report.equivalent
    assert any("'even'" in str(d) and "'odd'" in str(d) for d in report.differences)


def test_log_mode_compares_executed_requests_and_flags_conflicting_slots() -> None:
    a = Observation(frozenset({0, 1}), {}, (0, 1))
    b = Observation(frozenset({0, 1}), {}, (1, 0))
    assert compare(0, a, b, "log", single_client=False) == []
    assert compare(0, a, b, "log", single_client=True)  # one client: the order is fixed
    c = Observation(frozenset({0, 1}), {}, (0,), ("slot 0 answered for requests [0, 1]",))
    found = compare(0, a, c, "log", single_client=False)
    assert any("slot 0" in str(d) for d in found) and any("executed requests differ" in str(d) for d in found)
