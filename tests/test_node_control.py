"""A node answers the orchestrator while one of its ticks runs long (hydrodeploy/runtime/node.py).

On a twentieth of a core one tick can last tens of seconds (a Paxos acceptor answering a phase-1a
with its whole log); the orchestrator's ``metrics`` requests must be answered meanwhile.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Mapping
from typing import Any

from hydrodeploy.runtime.codec import Fact
from hydrodeploy.runtime.node import Node, NodeSpec, Step
from hydrodeploy.runtime.transport import ThreadControlChannel

SECRET = bytes(32)
PATIENCE_S = 10.0  # how long the orchestrator waits for an answer that takes milliseconds


class LongTickEngine:
    """Ticks on a timer; its first tick computes (Python code, holding the interpreter like the
    evaluator does) until released."""

    def __init__(self) -> None:
        self.ticking = threading.Event()
        self.release = threading.Event()
        self.first_done = threading.Event()

    @property
    def accepts(self) -> Mapping[str, int]:
        return {}

    @property
    def timers(self) -> tuple[tuple[str, float], ...]:
        return (("t", 0.01),)

    def step(self, inbox: list[tuple[str, Fact]], timers: list[str]) -> Step:
        if not self.first_done.is_set():
            self.ticking.set()
            total = 0
            while not self.release.is_set():
                total += sum(range(1000))
            self.first_done.set()
        return Step([], [], False)

    def rule_metrics(self) -> list[list[Any]]:
        return [[0, "r", ":-", 0, 0, 0]]


def orchestrate(server: socket.socket, engine: LongTickEngine, seen: dict[str, Any]) -> None:
    """The orchestrator's side: start the node, ask for metrics during the long tick, stop it."""
    try:
        sock, _ = server.accept()
        sock.settimeout(PATIENCE_S)
        control = ThreadControlChannel(SECRET, sock)
        hello = control.recv()
        assert hello is not None and hello["t"] == "hello"
        directory = {"nodes": {"n/0": hello["endpoint"]}, "clients": []}
        control.send({"t": "start", "directory": directory})
        started = control.recv()
        assert started is not None and started["t"] == "started"
        assert engine.ticking.wait(PATIENCE_S)
        control.send({"t": "metrics", "seq": 1})
        reply = control.recv()
        seen["metrics"] = reply
        seen["during_tick"] = not engine.first_done.is_set()
        engine.release.set()
        if reply is None:  # timed out: the answer may still come after the tick
            sock.settimeout(PATIENCE_S)
            seen["late"] = control.recv()
        control.send({"t": "stop"})
        seen["stopped"] = control.recv()
        control.close()
    except BaseException as exc:
        seen["error"] = exc
        engine.release.set()


def test_metrics_are_answered_while_a_tick_runs_long() -> None:
    engine = LongTickEngine()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    spec = NodeSpec(
        address="n/0", component="n", index=0, program="unused.ded", instances={"n": ["n/0"]},
        secret=SECRET.hex(), control=("127.0.0.1", port),
    )  # fmt: skip
    seen: dict[str, Any] = {}
    orchestrator = threading.Thread(target=orchestrate, args=(server, engine, seen), daemon=True)
    orchestrator.start()
    try:
        code = asyncio.run(Node(spec, engine).run())
    finally:
        engine.release.set()
        server.close()
    orchestrator.join(PATIENCE_S)
    if "error" in seen:
        raise seen["error"]
    reply = seen["metrics"]
    assert reply is not None, "no answer to 'metrics' while a tick ran"
    assert seen["during_tick"]
    assert reply["t"] == "metrics" and reply["seq"] == 1
    assert reply["data"]["address"] == "n/0"
    assert reply["data"]["ticks"] == 0  # the long tick had not ended
    assert [list(rule) for rule in reply["data"]["rules"]] == [[0, "r", ":-", 0, 0, 0]]
    assert seen["stopped"]["t"] == "stopped" and seen["stopped"]["data"]["ticks"] >= 1
    assert code == 0
