"""protocols/two_pc.ded in simulation: every transaction is answered exactly once, and only after
every participant durably logged its vote and the commit, with the coordinator's commit record
flushed before any commit is sent — across many seeds, under reordering, crashes and loss."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest
from sim_harness import DEFAULT, LOSSY, MANY_SEEDS, REORDERING, SEEDS, Crash, protocol, run

from hydrodeploy.language import ir
from hydrodeploy.simulate import Network, Simulation, Workload

COORDINATOR = "coordinator/0"
PARTICIPANTS = tuple(f"participant/{i}" for i in range(3))


def program() -> ir.Program:
    return protocol("two_pc")


def simulate(
    seed: int,
    network: Network = DEFAULT,
    workload: Workload | None = None,
    crash: Crash | None = None,
) -> tuple[Simulation, Any]:
    return run(program(), seed, network, workload, crash)


def first_logged(sim: Simulation, node: str, relation: str) -> dict[int, float]:
    """Request id -> when ``node`` first flushed a ``relation`` record for it. Every log record of
    two_pc.ded starts with (client, id)."""
    out: dict[int, float] = {}
    for entry in sim.log(node):
        if entry.relation == relation:
            rid = entry.values[1]
            out[rid] = min(entry.time_ms, out.get(rid, float("inf")))
    return out


def assert_safe(sim: Simulation, result: Any) -> None:
    """Write-ahead discipline, checked against the durable logs and the message trace. A record is
    flushed at the end of the tick that wrote it (its time is that tick's); acting on it must wait
    for a later tick, hence the strict comparisons."""
    assert not result.unexpected_outputs
    vote_logged = {p: first_logged(sim, p, "part_vote_log") for p in PARTICIPANTS}
    commit_logged = {p: first_logged(sim, p, "part_commit_log") for p in PARTICIPANTS}
    coord_commit = first_logged(sim, COORDINATOR, "coord_commit_log")
    coord_end = first_logged(sim, COORDINATOR, "coord_end_log")

    # A participant votes only after its vote request is on disk, and acks only after the commit is.
    for m in result.messages:
        if m.relation == "vote":
            _, rid, voter = m.values
            assert voter == m.src
            assert vote_logged[m.src].get(rid, float("inf")) < m.send_ms, (
                f"{m.src} voted for {rid} before logging it"
            )
        elif m.relation == "ack":
            _, rid, acker = m.values
            assert acker == m.src
            assert commit_logged[m.src].get(rid, float("inf")) < m.send_ms, (
                f"{m.src} acked {rid} before logging the commit"
            )
        elif m.relation == "commit":
            rid = m.values[1]
            assert m.src == COORDINATOR
            assert coord_commit.get(rid, float("inf")) < m.send_ms, (
                f"commit of {rid} sent before its commit record was flushed"
            )

    # The coordinator logs commit only once every participant has voted (and so logged the request).
    votes_in: dict[int, dict[str, float]] = defaultdict(dict)
    for m in result.messages:
        if m.relation == "vote" and m.deliver_ms is not None:
            rid = m.values[1]
            votes_in[rid][m.src] = min(m.deliver_ms, votes_in[rid].get(m.src, float("inf")))
    for rid, at in coord_commit.items():
        assert {p for p, t in votes_in[rid].items() if t <= at} == set(PARTICIPANTS)

    # A reply leaves the coordinator only once every participant logged the vote request and the
    # commit, and the coordinator logged commit and end.
    replies: dict[int, float] = {}
    for m in result.messages:
        if m.relation == "client_out":
            assert m.src == COORDINATOR
            (rid,) = m.values
            replies[rid] = min(m.send_ms, replies.get(rid, float("inf")))
    assert {out.values[0] for out in result.outputs} <= set(replies)
    for rid, at in replies.items():
        assert rid in result.requests
        for p in PARTICIPANTS:
            assert vote_logged[p].get(rid, float("inf")) < at, (
                f"{rid} answered before {p} logged its vote"
            )
            assert commit_logged[p].get(rid, float("inf")) < at, (
                f"{rid} answered before {p} logged the commit"
            )
        assert coord_commit[rid] < at
        assert coord_end.get(rid, float("inf")) < at


def assert_exactly_once(sim: Simulation, result: Any, requests: int) -> None:
    assert result.completed == requests
    for rid, record in result.requests.items():
        assert record.done_ms is not None, f"transaction {rid} never completed"
        assert record.replies == 1, f"transaction {rid} got {record.replies} replies"
    assert Counter(out.values[0] for out in result.outputs) == Counter(
        dict.fromkeys(result.requests, 1)
    )
    # Each record is written once per transaction on each node: nothing is re-logged or re-sent.
    for node, relations in [
        (COORDINATOR, ("coord_commit_log", "coord_end_log")),
        *[(p, ("part_vote_log", "part_commit_log")) for p in PARTICIPANTS],
    ]:
        for relation in relations:
            ids = Counter(e.values[1] for e in sim.log(node) if e.relation == relation)
            assert ids == Counter(dict.fromkeys(result.requests, 1)), f"{node} {relation}"
    for relation in ("vote_req", "vote", "commit", "ack"):
        sent = Counter(
            (m.src, m.dst, m.values[1]) for m in result.messages if m.relation == relation
        )
        assert len(sent) == 3 * requests and set(sent.values()) == {1}, relation


def check_run(seed: int, network: Network = DEFAULT) -> None:
    sim, result = simulate(seed, network)
    assert_exactly_once(sim, result, 200)
    assert_safe(sim, result)
    # Votes and acks are garbage-collected once counted: at most those of in-flight transactions.
    assert len(sim.facts(COORDINATOR, "votes")) <= 3 * 4
    assert len(sim.facts(COORDINATOR, "acks")) <= 3 * 4


@pytest.mark.parametrize("seed", SEEDS)
def test_every_transaction_answered_once_after_logging(seed: int) -> None:
    check_run(seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_reordering(seed: int) -> None:
    check_run(seed, REORDERING)


@pytest.mark.slow
@pytest.mark.parametrize("seed", MANY_SEEDS)
def test_many_seeds(seed: int) -> None:
    check_run(seed, DEFAULT if seed % 2 else REORDERING)


def test_log_then_act_takes_one_tick() -> None:
    """The action that follows a flush happens in the next tick, not the one that wrote the record."""
    sim, result = simulate(3, workload=Workload(clients=1, requests=5))
    assert result.completed == 5
    coord_commit = first_logged(sim, COORDINATOR, "coord_commit_log")
    for m in result.messages:
        if m.relation == "commit":
            assert m.send_ms > coord_commit[m.values[1]]


@pytest.mark.parametrize("seed", range(10))
def test_message_loss_gives_no_wrong_answer(seed: int) -> None:
    _, result = simulate(seed, LOSSY, Workload(clients=40, requests=200))
    assert all(r.replies <= 1 for r in result.requests.values())
    assert result.completed > 0


@pytest.mark.parametrize("seed", range(10))
def test_message_loss_logging_discipline(seed: int) -> None:
    sim, result = simulate(seed, LOSSY, Workload(clients=40, requests=200))
    assert_safe(sim, result)


@pytest.mark.parametrize("seed", range(10))
def test_message_loss_with_retries_gives_no_wrong_answer(seed: int) -> None:
    """A retried transaction runs again (records may be logged twice); every reply is still
    preceded by every participant's records."""
    sim, result = simulate(seed, LOSSY, Workload(clients=4, requests=100, timeout_ms=80.0))
    assert_safe(sim, result)
    assert result.completed > 0


@pytest.mark.parametrize("seed", range(10))
def test_participant_crash_and_restart_stays_safe(seed: int) -> None:
    """participant/1 loses its volatile state at 30 ms and comes back empty at 60 ms; its durable
    log survives. Transactions it missed stall (no retries), none is answered without its records."""
    sim, result = simulate(seed, crash=("participant/1", 30.0, 60.0))
    assert_safe(sim, result)
    assert all(r.replies <= 1 for r in result.requests.values())
    assert 0 < result.completed < 200
    early = [e for e in sim.log("participant/1") if e.time_ms < 30.0]
    assert early, "the log written before the crash is kept"


@pytest.mark.parametrize("seed", range(10))
def test_coordinator_crash_stays_safe(seed: int) -> None:
    sim, result = simulate(seed, crash=(COORDINATOR, 25.0, 40.0))
    assert_safe(sim, result)
    assert all(r.replies <= 1 for r in result.requests.values())
