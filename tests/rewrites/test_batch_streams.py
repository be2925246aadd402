"""A component that relays sequenced batches to two components (:mod:`hydrodeploy.rewrites.batching`)
keeps the two streams apart: each has its own batch numbers, sizes and acknowledgements.

The optimizer loop found the case on Paxos: the proxy that collects p2b votes (asymmetric
decoupling of the proposer) relays batches to the proposer and holds each commit until the batch
before it is acknowledged; decoupling the proxy's own sending of commits (state machine
decoupling) makes the proxy relay the held commits in batches too. With one set of ``_batch_``
relations for both streams, the second stream's size counted the held commits, which wait on the
first stream's latest batch, which reads that size: a cycle through negation, and a program that
does not check."""

from __future__ import annotations

from pathlib import Path

from hydrodeploy.language import check, ir, load_program, parse, print_program
from hydrodeploy.rewrites import cohashing
from hydrodeploy.rewrites.base import NotApplicable, Partition
from hydrodeploy.rewrites.chain import apply_chain, parse_steps
from hydrodeploy.simulate import Network, Workload
from hydrodeploy.simulate.equivalence import check_equivalence

ROOT = Path(__file__).resolve().parents[2]
PAXOS = ROOT / "protocols" / "paxos.ded"
STATE_MACHINE = Path(__file__).parent / "golden" / "state_machine" / "input.ded"
REORDERING = Network(min_delay_ms=0.05, max_delay_ms=10.0)

COLLECTOR_RELAYS_AGAIN = """
decouple proposer:vote#1,vote#2,votes#1,commit_now#1,commit#1,committed#1,pending_vote#1:proposer_collector --using asymmetric
decouple proposer_collector:commit#1:proposer_collector_commit --using state-machine
"""

TWO_STATE_MACHINES = """
decouple leader:client_out:leader_answerer --using state-machine
decouple leader:seen:leader_logger --using state-machine
"""


def _checked(text: str) -> None:
    again = parse(text, "rewritten.ded")
    check(again)


def _headers(program: ir.Program, sender: str) -> list[str]:
    """The batch headers ``sender`` sends: one per stream."""
    return sorted(
        {r.head.relation for r in program.rules_of(sender) if r.kind is ir.RuleKind.ASYNC and r.head.relation.endswith("_header")}
    )


def test_an_asymmetric_proxy_that_relays_again_checks_and_behaves_like_paxos() -> None:
    program = load_program(str(PAXOS))
    out, topology, _ = apply_chain(program, parse_steps(COLLECTOR_RELAYS_AGAIN))
    text = print_program(out)
    _checked(text)
    assert _headers(out, "proposer_collector") == ["proposer_collector_batch_2_header", "proposer_collector_batch_header"]
    report = check_equivalence(
        program,
        out,
        rewritten_topology=topology,
        seeds=range(4),
        network=REORDERING,
        workload=Workload(clients=4, requests=30, timeout_ms=500.0),
        mode="log",
        max_time_ms=20_000.0,
    )
    assert report.equivalent, "\n".join(str(d) for d in report.differences)
    assert report.completed == len(report.seeds) * 30


def test_two_state_machine_decouplings_of_one_component_relay_on_separate_streams() -> None:
    # Before the streams were kept apart, both counted into one batch size: every header announced
    # more facts than its receiver was sent, and the answerer stalled on the first batch.
    program = load_program(str(STATE_MACHINE))
    out, topology, _ = apply_chain(program, parse_steps(TWO_STATE_MACHINES))
    text = print_program(out)
    _checked(text)
    assert _headers(out, "leader") == ["leader_batch_2_header", "leader_batch_header"]
    report = check_equivalence(
        program,
        out,
        rewritten_topology=topology,
        seeds=range(8),
        network=REORDERING,
        workload=Workload(clients=4, requests=30),
        max_time_ms=20_000.0,
    )
    assert report.equivalent, "\n".join(str(d) for d in report.differences)
    assert report.completed == len(report.seeds) * 30


def test_the_ends_of_a_state_machine_stream_are_not_co_hashed() -> None:
    program = load_program(str(PAXOS))
    out, _, _ = apply_chain(program, parse_steps(COLLECTOR_RELAYS_AGAIN))
    # The receiver processes each batch whole: its partitions would each see part of it.
    rejected = cohashing.check(out, Partition("proposer_collector_commit", "id", 2))
    assert isinstance(rejected, NotApplicable)
    assert "'proposer_collector_commit' processes the batches 'proposer_collector' relays to it" in rejected.reason
    assert "proposer_collector_batch_2_header" in rejected.reason
    # The sender: the receiver would run the held commits of one partition against the
    # acknowledgements of another.
    rejected = cohashing.check(out, Partition("proposer_collector", "id", 2))
    assert isinstance(rejected, NotApplicable)
    assert "would process the batches of several partitions together" in rejected.reason
    # An asymmetric proxy's stream is acknowledged: each partition waits for its own (the
    # ScalablePaxos p2b proxies).
    asymmetric = parse_steps(COLLECTOR_RELAYS_AGAIN)[:1]
    collector, _, _ = apply_chain(program, asymmetric)
    assert cohashing.check(collector, Partition("proposer_collector", "id", 2)).applicable
