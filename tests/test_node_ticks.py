"""How a node process batches what it received into ticks (hydrodeploy/runtime/node.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from hydrodeploy.runtime.codec import Fact
from hydrodeploy.runtime.node import MAX_TICK_FACTS, Node, NodeSpec, Step


class RecordingEngine:
    """A node's engine that answers nothing and remembers each tick's inbox."""

    def __init__(self) -> None:
        self.inboxes: list[list[tuple[str, Fact]]] = []

    @property
    def accepts(self) -> Mapping[str, int]:
        return {"req": 2}

    @property
    def timers(self) -> tuple[tuple[str, float], ...]:
        return ()

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


def test_a_burst_larger_than_a_tick_is_taken_in_order_over_several_ticks() -> None:
    engine = RecordingEngine()
    burst = 2 * MAX_TICK_FACTS + 17

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
    assert [len(i) for i in engine.inboxes] == [MAX_TICK_FACTS, MAX_TICK_FACTS, 17]
    assert [row[0] for inbox in engine.inboxes for _, row in inbox] == list(range(burst))
