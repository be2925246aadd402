"""A node's received facts, queued per sender and taken in turn (hydrodeploy/runtime/inbox.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hydrodeploy.runtime.inbox import COMPACT_AT, SenderQueues

# per arrival: (sender, how many facts it brought)
arrivals = st.lists(st.tuples(st.sampled_from(["a/0", "b/0", "c/0"]), st.integers(0, 40)), max_size=30)


def _fill(queues: SenderQueues, plan: list[tuple[str, int]]) -> dict[str, list[tuple[str, tuple[str, int]]]]:
    sent: dict[str, list[tuple[str, tuple[str, int]]]] = {}
    for sender, n in plan:
        facts = [("req", (sender, len(sent.get(sender, [])) + i)) for i in range(n)]
        sent.setdefault(sender, []).extend(facts)
        queues.extend(sender, facts)
    return sent


@given(arrivals, st.integers(1, 50))
def test_every_fact_is_taken_once_and_each_senders_in_the_order_it_sent_them(plan: list[tuple[str, int]], limit: int) -> None:
    queues = SenderQueues()
    sent = _fill(queues, plan)
    taken: list[tuple[str, tuple[str, int]]] = []
    while queues:
        tick = queues.take(limit)
        assert 0 < len(tick) <= limit
        taken.extend(tick)
    assert len(queues) == 0 and queues.take(limit) == []
    for sender, facts in sent.items():
        assert [f for f in taken if f[1][0] == sender] == facts
    assert len(taken) == sum(len(f) for f in sent.values())


@given(arrivals, st.integers(1, 50))
def test_a_tick_takes_an_equal_share_from_every_sender_with_facts_waiting(plan: list[tuple[str, int]], limit: int) -> None:
    queues = SenderQueues()
    _fill(queues, plan)
    waiting = {s: queues.waiting(s) for s in ("a/0", "b/0", "c/0")}
    tick = queues.take(limit)
    got = {s: sum(1 for f in tick if f[1][0] == s) for s in waiting}
    assert len(tick) == min(limit, sum(waiting.values()))
    for sender, n in got.items():
        assert n == waiting[sender] - queues.waiting(sender)
        # a sender gets less than another only when it has nothing more waiting
        if queues.waiting(sender):
            assert all(n >= m - 1 for m in got.values())


def test_a_long_queue_sheds_what_was_taken() -> None:
    queues = SenderQueues()
    queues.extend("a/0", [("req", (i,)) for i in range(3 * COMPACT_AT)])
    taken = []
    while len(queues) > COMPACT_AT // 2:
        taken.extend(queues.take(256))
    assert queues._heads["a/0"] < COMPACT_AT  # the taken prefix was dropped on the way
    assert len(queues._queues["a/0"]) - queues._heads["a/0"] == len(queues)
    taken.extend(queues.take(len(queues)))
    assert [f[1][0] for f in taken] == list(range(3 * COMPACT_AT))
