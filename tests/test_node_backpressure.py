"""A node that cannot keep up stops reading instead of queueing without bound
(hydrodeploy/runtime/node.py, hydrodeploy/runtime/transport.py)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping
from typing import Any

import pytest

from hydrodeploy.runtime import transport as transport_module
from hydrodeploy.runtime.codec import Fact
from hydrodeploy.runtime.node import INBOX_LIMIT, MAX_TICK_FACTS, Node, NodeSpec, Step
from hydrodeploy.runtime.transport import Directory, Message, Transport

SECRET = bytes(32)
PAYLOAD = "x" * 100
FRAME_FACTS = 1000  # facts per frame the flooding sender writes


def spec(address: str) -> NodeSpec:
    return NodeSpec(
        address=address, component=address.split("/")[0], index=0, program="unused.ded",
        instances={}, secret=SECRET.hex(), control=("127.0.0.1", 1),
    )  # fmt: skip


class Sink:
    """Takes every fact and answers nothing; remembers the largest backlog a tick saw."""

    def __init__(self) -> None:
        self.node: Node | None = None
        self.ids: list[int] = []
        self.peak = 0

    @property
    def accepts(self) -> Mapping[str, int]:
        return {"req": 2}

    @property
    def timers(self) -> tuple[tuple[str, float], ...]:
        return ()

    def step(self, inbox: list[tuple[str, Fact]], timers: list[str]) -> Step:
        assert self.node is not None
        self.peak = max(self.peak, len(inbox) + len(self.node.inbox) + len(self.node.client_inbox))
        self.ids.extend(row[0] for _, row in inbox)
        return Step([], [], False)

    def rule_metrics(self) -> list[list[Any]]:
        return []


async def _start(engine: Sink) -> tuple[Node, Directory, asyncio.Task[None]]:
    """A node ``n/0`` around ``engine``, listening and ticking; a directory that finds it."""
    node = Node(spec("n/0"), engine)
    engine.node = node
    endpoint = await node.transport.listen("127.0.0.1", 0)
    return node, Directory({"n/0": endpoint}), asyncio.get_running_loop().create_task(node._tick_loop())


def _frame(sender: Transport, first: int) -> None:
    """Send ``n/0`` one frame of :data:`FRAME_FACTS` requests numbered from ``first``."""
    sender.send([("n/0", "req", (i, PAYLOAD)) for i in range(first, first + FRAME_FACTS)])


async def _finish(node: Node, ticking: asyncio.Task[None], engine: Sink, total: int, *senders: Transport) -> None:
    """Wait until the node took all ``total`` facts, then stop it and close every transport."""
    async with asyncio.timeout(60):
        while len(engine.ids) < total:
            await asyncio.sleep(0.01)
    node.stopping = True
    node._wake.set()
    await ticking
    for sender in senders:
        await sender.close()
    await node.transport.close()


@pytest.mark.parametrize("sender_name", ["s/0", "clients/0"])  # a node; a benchmark client process
def test_a_flooded_node_keeps_its_inbox_bounded_and_loses_nothing(sender_name: str) -> None:
    total = 60 * FRAME_FACTS
    engine = Sink()

    async def scenario() -> None:
        node, directory, ticking = await _start(engine)
        sender = Transport(SECRET, sender_name, lambda *_: None, directory)
        for first in range(0, total, FRAME_FACTS):
            _frame(sender, first)
            await sender.wait_writable()
            await asyncio.sleep(0)
        await _finish(node, ticking, engine, total, sender)

    asyncio.run(scenario())
    assert engine.ids == list(range(total))
    # the backlog passes the limit by at most what one read of the socket held (256 KiB)
    assert engine.peak <= INBOX_LIMIT + 4 * FRAME_FACTS


class Echo:
    """Sends every ping with hops left to the other node, one hop fewer; counts the last hops."""

    def __init__(self, other: str) -> None:
        self.other = other
        self.done = 0

    @property
    def accepts(self) -> Mapping[str, int]:
        return {"ping": 3}

    @property
    def timers(self) -> tuple[tuple[str, float], ...]:
        return ()

    def step(self, inbox: list[tuple[str, Fact]], timers: list[str]) -> Step:
        out: list[Message] = []
        for _, (i, hops, payload) in inbox:
            if hops:
                out.append((self.other, "ping", (i, hops - 1, payload)))
            else:
                self.done += 1
        return Step(out, [], False)

    def rule_metrics(self) -> list[list[Any]]:
        return []


def test_two_overloaded_nodes_sending_to_each_other_keep_moving(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both hold their reads and both fill the other's buffers: each must read while its own
    sends wait, or neither ticks again."""
    monkeypatch.setattr(transport_module, "HIGH_WATER", 16 * 1024)
    backlog = 10_000  # facts of 1 KiB each way: more than the kernel's buffers hold
    payload = "y" * 1024
    engines = {"a/0": Echo("b/0"), "b/0": Echo("a/0")}
    held: set[str] = set()
    hold = Transport._hold

    def spy(self: Transport, connection: Any) -> None:
        held.add(self.sender)
        hold(self, connection)

    monkeypatch.setattr(Transport, "_hold", spy)

    async def scenario() -> None:
        nodes = {address: Node(spec(address), engine) for address, engine in engines.items()}
        endpoints = {}
        for address, node in nodes.items():
            endpoints[address] = await node.transport.listen("127.0.0.1", 0)
            listener = node.transport._server.sockets[0] if node.transport._server else None
            assert listener is not None
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        loop = asyncio.get_running_loop()
        ticking = []
        for node in nodes.values():
            node.transport.directory = Directory(endpoints)
            node.inbox.extend(engines[address].other, [("ping", (i, 1, payload)) for i in range(backlog)])
            ticking.append(loop.create_task(node._tick_loop()))
        try:
            async with asyncio.timeout(60):
                while sum(e.done for e in engines.values()) < 2 * backlog:
                    await asyncio.sleep(0.01)
        finally:
            for node in nodes.values():
                node.stopping = True
                node._wake.set()
            for task in ticking:
                task.cancel()
            await asyncio.gather(*ticking, return_exceptions=True)
            for node in nodes.values():
                await node.transport.close(flush_timeout=0)

    asyncio.run(scenario())
    assert [e.done for e in engines.values()] == [backlog, backlog]
    assert held == {"a/0", "b/0"}


class SlowSink(Sink):
    """A sink that takes a few milliseconds a tick (a node at its CPU quota), and remembers how
    many client facts it had taken before the tick that took a peer's heartbeat."""

    def __init__(self) -> None:
        super().__init__()
        self.taken_before: int | None = None

    @property
    def accepts(self) -> Mapping[str, int]:
        return {"req": 2, "heartbeat": 1}

    def step(self, inbox: list[tuple[str, Fact]], timers: list[str]) -> Step:
        assert self.node is not None
        time.sleep(0.004)
        if any(relation == "heartbeat" for relation, _ in inbox):
            self.taken_before = len(self.ids)
        self.ids.extend(row[0] for relation, row in inbox if relation == "req")
        return Step([], [], False)


def test_a_node_behind_on_its_clients_still_hears_its_peers_at_once() -> None:
    """A Paxos follower flooded with requests it drops must not queue the leader's heartbeats
    behind them (it would miss a failure-detection window and start an election)."""
    total = 60 * FRAME_FACTS
    engine = SlowSink()
    arrived_before: list[int] = []  # client facts received before the second heartbeat was sent

    async def scenario() -> None:
        node, directory, ticking = await _start(engine)
        clients = Transport(SECRET, "clients/0", lambda *_: None, directory)
        peer = Transport(SECRET, "leader/0", lambda *_: None, directory)
        peer.send([("n/0", "heartbeat", (0,))])  # connected and classified before the flood
        async with asyncio.timeout(30):
            while engine.taken_before is None:
                await asyncio.sleep(0.001)
        engine.taken_before = None
        for first in range(0, total, FRAME_FACTS):
            _frame(clients, first)
            await asyncio.sleep(0)
        async with asyncio.timeout(30):
            while len(node.client_inbox) < INBOX_LIMIT:  # the node is far behind its client
                await asyncio.sleep(0.001)
        assert (node.transport.held(clients=True), node.transport.held(clients=False)) == (1, 0)
        arrived_before.append(len(engine.ids) + len(node.client_inbox))
        peer.send([("n/0", "heartbeat", (1,))])
        await _finish(node, ticking, engine, total, clients, peer)

    asyncio.run(scenario())
    assert engine.ids == list(range(total))  # the clients' facts in order, none lost
    # the heartbeat went into a tick ahead of thousands of client facts that arrived before it
    assert engine.taken_before is not None and arrived_before[0] > INBOX_LIMIT
    assert engine.taken_before < arrived_before[0] - 4 * MAX_TICK_FACTS


def test_a_tick_takes_what_nodes_sent_before_what_clients_sent() -> None:
    node = Node(spec("n/0"), Sink())
    node.client_inbox.extend("clients/0", [("req", (i, "")) for i in range(MAX_TICK_FACTS + 10)])
    node.inbox.extend("s/0", [("req", (-1, "")), ("req", (-2, ""))])
    first = node._take()
    assert [row[0] for _, row in first[:3]] == [-1, -2, 0] and len(first) == MAX_TICK_FACTS
    assert len(node.client_inbox) == 12 and len(node.inbox) == 0
    node.inbox.extend("s/0", [("req", (-3 - i, "")) for i in range(MAX_TICK_FACTS + 1)])
    second = node._take()
    assert all(row[0] < 0 for _, row in second) and len(second) == MAX_TICK_FACTS
    assert len(node.inbox) == 1 and len(node.client_inbox) == 12
    assert [row[0] for _, row in node._take()] == [-3 - MAX_TICK_FACTS, *range(MAX_TICK_FACTS - 2, MAX_TICK_FACTS + 10)]


def test_a_tick_takes_from_every_peer_in_turn() -> None:
    """A peer far ahead of the others does not fill the ticks: a 2PC collector counts one ack from
    each participant per request, and takes the lagging participants' acks as they come."""
    node = Node(spec("n/0"), Sink())
    node.inbox.extend("p/0", [("req", (i, "")) for i in range(10 * MAX_TICK_FACTS)])
    node.inbox.extend("p/1", [("req", (-1 - i, "")) for i in range(10)])
    node.inbox.extend("p/2", [("req", (-100 - i, "")) for i in range(MAX_TICK_FACTS)])
    first = [row[0] for _, row in node._take()]
    assert len(first) == MAX_TICK_FACTS
    assert [i for i in first if -100 < i < 0] == [-1 - i for i in range(10)]  # all of p/1's
    ahead, behind = [i for i in first if i >= 0], [i for i in first if i <= -100]
    assert ahead == list(range(len(ahead))) and behind == [-100 - i for i in range(len(behind))]
    assert abs(len(ahead) - len(behind)) <= 1  # what p/1 left, shared between the other two


class CountingSink(Sink):
    """A sink at a small CPU quota that records, per sender, how many facts it had taken."""

    def __init__(self) -> None:
        super().__init__()
        self.progress: list[tuple[int, int]] = []  # after each tick: (facts from "a", from "b")

    def step(self, inbox: list[tuple[str, Fact]], timers: list[str]) -> Step:
        time.sleep(0.002)
        self.ids.extend(row[0] for _, row in inbox)
        last = self.progress[-1] if self.progress else (0, 0)
        a = sum(1 for _, row in inbox if row[0] < B_FIRST)
        self.progress.append((last[0] + a, last[1] + len(inbox) - a))
        return Step([], [], False)


B_FIRST = 1_000_000  # ids of the second sender's facts start here


def test_a_peer_that_started_late_is_not_starved_by_one_far_ahead() -> None:
    """One peer's backlog fills the node's inbox and the kernel's buffers before another peer
    sends anything: the node reads both connections in turn and takes their facts in turn."""
    total = 40 * FRAME_FACTS
    late = 8 * FRAME_FACTS
    engine = CountingSink()

    async def scenario() -> None:
        node, directory, ticking = await _start(engine)
        ahead = Transport(SECRET, "a/0", lambda *_: None, directory)
        behind = Transport(SECRET, "b/0", lambda *_: None, directory)
        for first in range(0, total, FRAME_FACTS):
            _frame(ahead, first)
        async with asyncio.timeout(30):
            while node.transport.held() == 0:  # the first peer's backlog is being held back
                await asyncio.sleep(0.001)
        for first in range(B_FIRST, B_FIRST + late, FRAME_FACTS):
            _frame(behind, first)
        await _finish(node, ticking, engine, total + late, ahead, behind)

    asyncio.run(scenario())
    a_ids = [i for i in engine.ids if i < B_FIRST]
    b_ids = [i for i in engine.ids if i >= B_FIRST]
    assert a_ids == list(range(total)) and b_ids == list(range(B_FIRST, B_FIRST + late))
    # by the tick that took the late peer's last fact, the first peer still had most of its
    # backlog waiting: the two streams went into ticks side by side
    a_done = next(a for a, b in engine.progress if b == late)
    assert a_done < total - late


def test_a_receiver_with_enough_still_reads_every_other_connection_once() -> None:
    """Holding is per connection: the connection that brought more than the receiver wants is
    held, the others are still read (a hold of every connection left the ones read last unread
    round after round), and releasing reads them all again."""
    delivered: list[str] = []

    def enough(sender: str, groups: Any, size: int) -> bool:
        delivered.append(sender)
        return True

    async def scenario() -> None:
        receiver = Transport(SECRET, "n/0", enough)
        directory = Directory({"n/0": await receiver.listen("127.0.0.1", 0)})
        senders = [Transport(SECRET, f"p/{i}", lambda *_: None, directory) for i in range(3)]
        try:
            for sender in senders:
                sender.send([("n/0", "req", (0, ""))])
            async with asyncio.timeout(10):
                while len(delivered) < 3:
                    await asyncio.sleep(0.001)
            assert sorted(delivered) == ["p/0", "p/1", "p/2"] and receiver.held() == 3
            for sender in senders:
                sender.send([("n/0", "req", (1, ""))])
            await asyncio.sleep(0.2)
            assert len(delivered) == 3  # held: the second frames wait in the kernel
            receiver.release_reading()
            async with asyncio.timeout(10):
                while len(delivered) < 6:
                    await asyncio.sleep(0.001)
            assert sorted(delivered[3:]) == ["p/0", "p/1", "p/2"]
        finally:
            for transport in (*senders, receiver):
                await transport.close(flush_timeout=0)

    asyncio.run(scenario())
