"""hydrodeploy.analysis: each analysis on the reference protocols (where the paper says what the
answer is) and on small programs that isolate one rule of the technical report."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from hydrodeploy.analysis import (
    FD,
    PartitionExpr,
    clusters,
    co_partition_dependencies,
    context,
    downstream_closure,
    find_policy,
    functional,
    functional_dependencies,
    independence,
    monotonicity,
    mutual_independence,
    references,
    state_machine,
    upstream_closure,
)
from hydrodeploy.language import ir, load_program, load_source

PROTOCOLS = Path(__file__).resolve().parents[1] / "protocols"


def line_of(path: Path, text: str) -> int:
    """The number of the first line of ``path`` that contains ``text``."""
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@cache
def protocol(name: str) -> ir.Program:
    return load_program(str(PROTOCOLS / f"{name}.ded"))


def rules_for(program: ir.Program, component: str, *heads: str) -> frozenset[int]:
    ctx = context(program, component)
    return frozenset(i for i, r in enumerate(ctx.rules) if r.head.relation in heads)


def others(program: ir.Program, component: str, chosen: frozenset[int]) -> frozenset[int]:
    return frozenset(range(len(context(program, component).rules))) - chosen


VOTING_COLLECT = ("votes", "vote_count", "committed", "client_out")
PAXOS_P2B = ("vote", "votes", "commit_now", "commit", "committed", "pending_vote")


# ---- relation classes and references (TR §2.4) -------------------------------------------------


def test_static_relations_are_edb_and_portable_unless_they_read_self() -> None:
    program = load_source(
        """
        .component a 2
        .input in(client, id) @ a
        .output out(id)
        a {
          quorum(q) :- a_count(n), q = n / 2 + 1.
          mine(i) :- self_index(i).
          base(1).
          out@client(id) :~ in(client, id), quorum(q), mine(i), base(b), id > q + i + b.
        }
        """
    )
    ctx = context(program, "a")
    assert ctx.static == {"quorum", "mine", "base"}
    assert ctx.portable == {"quorum", "base"}
    assert not ctx.is_idb("quorum") and ctx.is_idb("in")


def test_references_inputs_and_outputs_of_the_voting_leader() -> None:
    refs = references(protocol("voting"), "leader")
    assert refs.inputs == {"client_in", "vote"}
    assert refs.outputs == {"ballot", "client_out"}
    assert "votes" in refs.references and "votes" in refs.derived


def test_clusters_split_voting_broadcast_from_collection() -> None:
    program = protocol("voting")
    groups = clusters(program, "leader")
    assert len(groups) == 2
    assert rules_for(program, "leader", "ballot") in groups
    assert rules_for(program, "leader", *VOTING_COLLECT) in groups


def test_closures_follow_dataflow() -> None:
    program = protocol("paxos")
    commit = rules_for(program, "proposer", "commit")
    # everything the commit rule needs, and nothing the election needs
    assert upstream_closure(program, "proposer", commit) == rules_for(program, "proposer", *PAXOS_P2B)
    seed = rules_for(program, "proposer", "commit_now")
    down = downstream_closure(program, "proposer", seed)
    heads = {context(program, "proposer").rules[i].head.relation for i in down}
    assert {"commit", "committed", "pending_vote"} <= heads


# ---- independence (§3.1) -----------------------------------------------------------------------


def test_voting_broadcast_and_collection_are_mutually_independent() -> None:
    program = protocol("voting")
    collect = rules_for(program, "leader", *VOTING_COLLECT)
    assert mutual_independence(program, "leader", others(program, "leader", collect), collect).independent


def test_dependence_names_the_relation_and_points_at_the_read() -> None:
    program = protocol("voting")
    count = rules_for(program, "leader", "vote_count", "committed", "client_out")
    rest = others(program, "leader", count)
    dep = independence(program, "leader", rest, count).dependence
    assert dep is not None and dep.relation == "committed"  # votes' garbage collection reads it
    assert dep.span is not None and dep.span.line == dep.reader.span.line  # type: ignore[union-attr]
    result = mutual_independence(program, "leader", rest, count)
    assert not result.independent and "committed" in (result.reason or "")


# ---- functional (§3.3) -------------------------------------------------------------------------


def test_broadcast_is_functional() -> None:
    program = protocol("voting")
    assert functional(program, "leader", rules_for(program, "leader", "ballot")).functional


def test_a_component_with_aggregation_is_not_functional() -> None:
    program = protocol("voting")
    result = functional(program, "leader", rules_for(program, "leader", "vote_count", "committed", "client_out"))
    assert not result.functional
    assert "'vote_count' aggregates (count)" in (result.reason or "")
    assert result.span is not None and result.span.line == 31


def test_a_join_of_two_idb_relations_is_not_functional() -> None:
    program = protocol("kvs")
    result = functional(program, "leader", rules_for(program, "leader", "certificate"))
    assert not result.functional and "joins 'certs' with 'num_acks'" in (result.reason or "")


# ---- monotonicity (§3.2, A.2.1) ----------------------------------------------------------------


def test_conservative_monotonicity_without_negation_or_aggregation() -> None:
    program = protocol("voting")
    result = monotonicity(program, "participant", range(1))
    assert result.monotonic and result.conservative


def test_paxos_vote_collection_is_monotonic_with_the_relaxations() -> None:
    program = protocol("paxos")
    result = monotonicity(program, "proposer", rules_for(program, "proposer", *PAXOS_P2B), persisted=())
    assert result.monotonic, result.reason
    assert not result.conservative
    assert [t.aggregate for t in result.thresholds] == ["votes"]
    assert [c.relation for c in result.garbage_collected] == ["vote"]
    assert [o.trigger for o in result.once] == ["commit_now"]


def test_forgetting_on_a_non_sealed_condition_is_not_monotonic() -> None:
    program = protocol("voting")
    result = monotonicity(program, "leader", rules_for(program, "leader", *VOTING_COLLECT))
    assert not result.monotonic
    assert "'votes' is forgotten when 'committed' holds" in (result.reason or "")


def test_an_equality_on_a_count_is_not_a_threshold() -> None:
    program = load_source(
        """
        .component l
        .input in(client, id) @ l
        .output out(id)
        .persist seen
        l {
          seen(client, id) :- in(client, id).
          n(client, count(id)) :- seen(client, id).
          out@client(k) :~ n(client, k), k == 3.
        }
        """
    )
    result = monotonicity(program, "l", range(3), persisted={"in"})
    assert not result.monotonic and "not a threshold" in (result.reason or "")


def test_aggregating_a_transient_relation_is_not_monotonic() -> None:
    program = protocol("voting")
    result = monotonicity(program, "leader", rules_for(program, "leader", "vote_count", "committed", "client_out"), persisted=())
    assert not result.monotonic and "not kept across ticks" in (result.reason or "")


# ---- state machines (A.4.1) --------------------------------------------------------------------


def test_paxos_vote_collection_settles_but_is_not_a_strict_state_machine() -> None:
    program = protocol("paxos")
    chosen = rules_for(program, "proposer", *PAXOS_P2B)
    strict = state_machine(program, "proposer", chosen)
    assert not strict.state_machine
    relaxed = state_machine(program, "proposer", chosen, settling=True)
    assert relaxed.state_machine, relaxed.reason
    assert relaxed.inputs == {"p2b"}
    assert "commit_now" in relaxed.existence  # a once-trigger over settled counts
    assert {"committed", "votes"} <= relaxed.no_change


def test_a_functional_relay_is_a_state_machine() -> None:
    program = protocol("voting")
    result = state_machine(program, "participant", range(1))
    assert result.state_machine and result.inputs == {"ballot"}


def test_sending_persisted_facts_is_not_a_state_machine() -> None:
    program = load_source(
        """
        .component l
        .input in(client, id) @ l
        .output out(id)
        .persist seen
        l {
          seen(client, id) :- in(client, id).
          out@client(id) :~ seen(client, id).
        }
        """
    )
    result = state_machine(program, "l", range(2))
    assert not result.state_machine and "'out' is sent from facts that persist" in (result.reason or "")


# ---- dependencies (B.2.1) ----------------------------------------------------------------------


def test_function_annotations_and_inheritance_give_the_hash_fd() -> None:
    fds = functional_dependencies(protocol("kvs"))
    assert FD((0,), 1, "hash") in fds["hash"]
    assert FD((1,), 0, "hash") in fds["hashset"]  # hashset(hashed, val): hashed = hash(val)
    assert FD((0, 4), 1, "sign") in fds["acks"]  # through the from_storage channel


def test_variable_sharing_gives_identity_fds_in_both_directions_and_intersects_rules() -> None:
    program = load_source(
        """
        .component a
        .input in(client, id) @ a
        .output out(id)
        a {
          pair(x, x, y) :- in(x, y).
          pair(x, x, 0) :- in(_, x).
          loop(x, y) :- pair(x, y, _).
          loop(x, y) :- loop(x, y).
          out@c(id) :~ in(c, id), loop(id, id).
        }
        """
    )
    fds = functional_dependencies(program)
    assert FD((0,), 1) in fds["pair"] and FD((1,), 0) in fds["pair"]
    assert FD((0,), 2) not in fds["pair"]  # holds in one rule only
    assert FD((0,), 1) in fds["loop"]  # inherited, through recursion (greatest fixpoint)


def test_co_partition_dependency_through_hash() -> None:
    program = protocol("kvs")
    rule = next(r for r in program.rules_of("storage") if r.head.relation == "bucket_size")
    cds = co_partition_dependencies(program, rule)
    assert any(cd.left == "valid" and cd.right == "hashset" and cd.right_attr == 0 and cd.fn == "hash" for cd in cds)


# ---- distribution policies (§4.1-4.2) ----------------------------------------------------------


def test_voting_participants_co_hash_on_the_request_id() -> None:
    search = find_policy(protocol("voting"), "participant", "id", dependencies=False)
    assert search.policy is not None
    assert search.policy.relations == {"ballot": PartitionExpr(1)}


def test_two_pc_participants_co_hash_on_the_transaction_id() -> None:
    search = find_policy(protocol("two_pc"), "participant", "id", dependencies=False)
    assert search.policy is not None and not search.policy.dependencies
    assert set(search.policy.rule_keys.values()) == {"id"}


def test_storage_needs_the_hash_dependency() -> None:
    program = protocol("kvs")
    cohash = find_policy(program, "storage", "hashed", dependencies=False)
    assert cohash.policy is None and "'valid'" in (cohash.reason or "")
    deps = find_policy(program, "storage", "hashed", dependencies=True)
    assert deps.policy is not None and deps.policy.dependencies
    assert deps.policy.relations["to_storage"] == PartitionExpr(2, "hash")
    assert deps.policy.relations["hashset"] == PartitionExpr(0)


@pytest.mark.parametrize("program_name", ["voting", "two_pc", "kvs", "paxos"])
def test_the_client_facing_component_is_never_partitioned(program_name: str) -> None:
    program = protocol(program_name)
    component = program.inputs[0].component
    search = find_policy(program, component, None)
    assert search.policy is None
    assert "external clients" in (search.reason or "")
    assert search.span == program.inputs[0].span


def test_paxos_acceptors_cannot_be_co_hash_partitioned_because_of_the_ballot() -> None:
    search = find_policy(protocol("paxos"), "acceptor", "s")
    assert search.policy is None
    assert "'max_ballot' is the max of all facts of ballot_seen" in (search.reason or "")
    assert search.span is not None and search.span.line == line_of(PROTOCOLS / "paxos.ded", "max_ballot(max(b))")
