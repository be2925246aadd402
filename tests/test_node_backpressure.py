"""A node that cannot keep up stops reading instead of queueing without bound
(hydrodeploy/runtime/node.py, hydrodeploy/runtime/transport.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any

import pytest

from hydrodeploy.runtime import transport as transport_module
from hydrodeploy.runtime.codec import Fact
from hydrodeploy.runtime.node import INBOX_LIMIT, Node, NodeSpec, Step
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
        self.peak = max(self.peak, len(inbox) + len(self.node.inbox))
        self.ids.extend(row[0] for _, row in inbox)
        return Step([], [], False)

    def rule_metrics(self) -> list[list[Any]]:
        return []


def test_a_flooded_node_keeps_its_inbox_bounded_and_loses_nothing() -> None:
    total = 60 * FRAME_FACTS
    engine = Sink()

    async def scenario() -> None:
        node = Node(spec("n/0"), engine)
        engine.node = node
        endpoint = await node.transport.listen("127.0.0.1", 0)
        ticking = asyncio.get_running_loop().create_task(node._tick_loop())
        sender = Transport(SECRET, "s/0", lambda *_: None, Directory({"n/0": endpoint}))
        for first in range(0, total, FRAME_FACTS):
            sender.send([("n/0", "req", (i, PAYLOAD)) for i in range(first, first + FRAME_FACTS)])
            await sender.wait_writable()
            await asyncio.sleep(0)
        async with asyncio.timeout(60):
            while len(engine.ids) < total:
                await asyncio.sleep(0.01)
        node.stopping = True
        node._wake.set()
        await ticking
        await sender.close()
        await node.transport.close()

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
    hold_reading = Transport.hold_reading

    def spy(self: Transport, hold: bool) -> None:
        if hold:
            held.add(self.sender)
        hold_reading(self, hold)

    monkeypatch.setattr(Transport, "hold_reading", spy)

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
            node.inbox.extend(("ping", (i, 1, payload)) for i in range(backlog))
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
