"""How a node process batches what it received into ticks (hydrodeploy/runtime/node.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from hydrodeploy.runtime.codec import Fact
from hydrodeploy.runtime.node import INBOX_LIMIT, MAX_TICK_FACTS, Node, NodeSpec, Step


class RecordingEngine:
    """A node's engine that answers nothing and remembers each tick's inbox; with a timer (one
    that never fires during the test) or without."""

    def __init__(self, timer: bool = True) -> None:
        self.inboxes: list[list[tuple[str, Fact]]] = []
        self.timer = timer

    @property
    def accepts(self) -> Mapping[str, int]:
        return {"req": 2}

    @property
    def timers(self) -> tuple[tuple[str, float], ...]:
        return (("heartbeat", 3600.0),) if self.timer else ()

    def step(self, inbox: list[tuple[str, Fact]], timers: list[str]) -> Step:
        self.inboxes.append(inbox)
        return Step([], [], False)

    def rule_metrics(self) -> list[list[Any]]:
        return []


def spec() -> NodeSpec:
    return NodeSpec(
        address="n/0", component="n", index=0, program="unused.ded", instances={"n": ["n/0"]},
        secret="00" * 32, control=("127.0.0.1", 1),
    )  # fmt: skip


def take(engine: RecordingEngine, burst: int) -> list[int]:
    """Hand the node ``burst`` facts at once; the sizes of the ticks that took them."""

    async def scenario() -> None:
        node = Node(spec(), engine)
        node._on_data("m/0", [("n/0", "req", tuple((i, "x") for i in range(burst)))], 10_000)
        ticking = asyncio.get_running_loop().create_task(node._tick_loop())
        while sum(len(i) for i in engine.inboxes) < burst:
            await asyncio.sleep(0.001)
        node.stopping = True
        node._wake.set()
        await ticking

    asyncio.run(scenario())
    assert [row[0] for inbox in engine.inboxes for _, row in inbox] == list(range(burst))  # in order
    return [len(i) for i in engine.inboxes]


def test_a_node_with_timers_takes_a_burst_over_several_ticks() -> None:
    # its timers' work (a leader's heartbeats) must not wait behind one long tick
    assert take(RecordingEngine(timer=True), 2 * MAX_TICK_FACTS + 17) == [MAX_TICK_FACTS, MAX_TICK_FACTS, 17]


def test_a_node_without_timers_takes_its_backlog_in_one_tick_up_to_the_inbox_limit() -> None:
    # work a tick does once (going over carried state) is done once for the whole backlog
    assert take(RecordingEngine(timer=False), 2 * MAX_TICK_FACTS + 17) == [2 * MAX_TICK_FACTS + 17]
    assert take(RecordingEngine(timer=False), INBOX_LIMIT + 5) == [INBOX_LIMIT, 5]
