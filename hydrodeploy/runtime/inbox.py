"""The facts a node received and has not yet taken into a tick: one first-in first-out queue per
sender, taken in turn.

A tick takes at most a fixed number of facts (:data:`hydrodeploy.runtime.node.MAX_TICK_FACTS`).
Taken in arrival order, one sender's backlog would decide what every tick holds: when a node
read one peer's connection far ahead of another's (the kernel had buffered hundreds of kilobytes
from one and little from the others), its ticks took only that peer's facts. For a node that
counts one message from each of several peers per request (a 2PC collector's votes or acks), every
request then waits with some of its messages in the node's carried state, which the program goes
over every tick: the ticks slowed, the backlog grew, and a 2PC deployment past its capacity fell
from 16,000 to 113 requests/s and stayed there (22 November). Taking from every sender in turn
keeps the senders' streams level. Each sender's facts still go into ticks in the order it sent
them, as TCP delivered them; how they interleave with other senders' is any order the network
could have produced.
"""

from __future__ import annotations

from collections.abc import Iterable

from hydrodeploy.runtime.codec import Fact

Received = tuple[str, Fact]  # (relation, values)

COMPACT_AT = 4096  # a queue's taken prefix is dropped once it is this long and half the queue


class SenderQueues:
    """Received facts, queued per sender."""

    def __init__(self) -> None:
        self._queues: dict[str, list[Received]] = {}
        self._heads: dict[str, int] = {}  # per sender: how many of its queue's facts were taken
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def extend(self, sender: str, facts: Iterable[Received]) -> None:
        queue = self._queues.get(sender)
        if queue is None:
            queue = self._queues[sender] = []
            self._heads[sender] = 0
        before = len(queue)
        queue.extend(facts)
        self._size += len(queue) - before

    def waiting(self, sender: str) -> int:
        """How many of ``sender``'s facts wait."""
        return len(self._queues.get(sender, ())) - self._heads.get(sender, 0)

    def take(self, limit: int) -> list[Received]:
        """At most ``limit`` facts, an equal share from every sender with facts waiting (what a
        sender with fewer leaves goes to the others), each sender's in the order it sent them."""
        taken: list[Received] = []
        while limit > 0 and self._size:
            waiting = [s for s, queue in self._queues.items() if len(queue) > self._heads[s]]
            share = max(1, limit // len(waiting))
            for sender in waiting:
                queue, head = self._queues[sender], self._heads[sender]
                part = queue[head : head + min(share, limit)]
                taken.extend(part)
                limit -= len(part)
                self._size -= len(part)
                head += len(part)
                if head == len(queue):
                    queue.clear()
                    head = 0
                elif head >= COMPACT_AT and 2 * head >= len(queue):
                    del queue[:head]
                    head = 0
                self._heads[sender] = head
                if limit == 0:
                    break
        return taken
