"""protocols/voting.ded in simulation: every request is answered exactly once, and only after every
participant has voted for it — across many seeds, under reordering, crashes and message loss."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest
from sim_harness import DEFAULT, LOSSY, MANY_SEEDS, REORDERING, SEEDS, Crash, protocol, run

from hydrodeploy.language import ir
from hydrodeploy.simulate import Network, Simulation, Workload

LEADER = "leader/0"
PARTICIPANTS = tuple(f"participant/{i}" for i in range(3))


def program() -> ir.Program:
    return protocol("voting")


def simulate(
    seed: int,
    network: Network = DEFAULT,
    workload: Workload | None = None,
    crash: Crash | None = None,
) -> tuple[Simulation, Any]:
    return run(program(), seed, network, workload, crash)


def reply_times(result: Any) -> dict[int, list[float]]:
    """When the leader sent each reply, per request id (the send time of its `client_out` message
    when the simulator records messages to clients, otherwise the time it reached the client)."""
    sent: dict[int, list[float]] = defaultdict(list)
    for m in result.messages:
        if m.relation == "client_out" and m.src == LEADER:
            sent[m.values[0]].append(m.send_ms)
    if sent:
        return dict(sent)
    for out in result.outputs:
        sent[out.values[0]].append(out.time_ms)
    return dict(sent)


def assert_safe(result: Any) -> None:
    """Every reply answers a real request of its client, echoes its payload, and was sent only
    after a vote from every participant, carrying that participant's own address, had reached the
    leader; each vote answers a ballot that reached that participant."""
    requests_sent = {
        m.values[1]: m.values
        for m in result.messages
        if m.relation == "client_in" and m.dst == LEADER
    }
    ballots: dict[tuple[str, int], Any] = {}  # (participant, id) -> its first delivered ballot
    for m in result.messages:
        if m.relation == "ballot" and m.deliver_ms is not None:
            first = ballots.get((m.dst, m.values[1]))
            if first is None or m.deliver_ms < first.deliver_ms:
                ballots[(m.dst, m.values[1])] = m
    votes: dict[int, dict[str, float]] = defaultdict(dict)
    for m in result.messages:
        if m.relation != "vote" or m.deliver_ms is None:
            continue
        client, rid, payload, voter = m.values
        assert m.src == voter, f"vote from {m.src} carries the address {voter}"
        assert m.dst == LEADER
        ballot = ballots.get((voter, rid))
        assert ballot is not None and ballot.deliver_ms <= m.send_ms, (
            f"{voter} voted for {rid} before its ballot arrived"
        )
        assert ballot.values == (client, rid, payload)
        votes[rid][voter] = min(m.deliver_ms, votes[rid].get(voter, float("inf")))

    assert not result.unexpected_outputs
    times = reply_times(result)
    for out in result.outputs:
        assert out.relation == "client_out"
        rid, payload = out.values
        assert rid in result.requests, f"reply to unknown request {rid}"
        assert out.client == result.requests[rid].client
        if requests_sent:
            assert requests_sent[rid] == (out.client, rid, payload), (
                f"reply to {rid} does not echo its payload"
            )
        first_reply = min(times[rid])
        voted = {p for p, at in votes[rid].items() if at <= first_reply}
        assert voted == set(PARTICIPANTS), (
            f"request {rid} answered at {first_reply} with votes only from {sorted(voted)}"
        )


def assert_exactly_once(result: Any, requests: int) -> None:
    assert result.completed == requests
    assert len(result.requests) == requests
    for rid, record in result.requests.items():
        assert record.done_ms is not None, f"request {rid} never completed"
        assert record.replies == 1, f"request {rid} got {record.replies} replies"
    per_id: dict[int, int] = defaultdict(int)
    for out in result.outputs:
        per_id[out.values[0]] += 1
    assert set(per_id) == set(result.requests)
    assert set(per_id.values()) == {1}


def check_run(seed: int, network: Network = DEFAULT) -> None:
    sim, result = simulate(seed, network)
    assert_exactly_once(result, 200)
    assert_safe(result)
    # Votes are garbage-collected once their request commits: at the end the leader holds at most
    # the votes of the requests still in flight in its last tick (one per client), not all 600.
    assert len(sim.facts(LEADER, "votes")) <= 3 * 4
    # Every participant voted exactly once per request.
    votes = Counter((m.values[1], m.src) for m in result.messages if m.relation == "vote")
    assert set(votes.values()) == {1}
    assert set(votes) == {(rid, p) for rid in result.requests for p in PARTICIPANTS}


@pytest.mark.parametrize("seed", SEEDS)
def test_every_request_answered_once_after_all_votes(seed: int) -> None:
    check_run(seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_reordering(seed: int) -> None:
    check_run(seed, REORDERING)


@pytest.mark.slow
@pytest.mark.parametrize("seed", MANY_SEEDS)
def test_many_seeds(seed: int) -> None:
    check_run(seed, DEFAULT if seed % 2 else REORDERING)


@pytest.mark.parametrize("seed", range(10))
def test_message_loss_gives_no_wrong_answer(seed: int) -> None:
    """Lost ballots or votes stall a request (clients here never retry); nothing is answered
    without all votes, and nothing twice."""
    _, result = simulate(seed, LOSSY, Workload(clients=40, requests=200))
    assert_safe(result)
    assert all(r.replies <= 1 for r in result.requests.values())
    assert result.completed > 0


@pytest.mark.parametrize("seed", range(10))
def test_message_loss_with_retries_gives_no_wrong_answer(seed: int) -> None:
    """Clients re-send after a timeout; a retried request runs another round of voting, and every
    reply is still backed by a vote of every participant."""
    _, result = simulate(seed, LOSSY, Workload(clients=4, requests=100, timeout_ms=50.0))
    assert_safe(result)
    assert result.completed > 0


@pytest.mark.parametrize("seed", range(10))
def test_participant_crash_stops_commits_but_stays_safe(seed: int) -> None:
    _, result = simulate(seed, crash=("participant/1", 30.0, None))
    assert_safe(result)
    assert all(r.replies <= 1 for r in result.requests.values())
    assert 0 < result.completed < 200
    # Nothing commits without participant/1, so nothing is answered long after the crash.
    latest = max(out.time_ms for out in result.outputs)
    assert latest < 30.0 + 2 * DEFAULT.max_delay_ms + 1.0
