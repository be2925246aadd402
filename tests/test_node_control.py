"""A node answers the orchestrator while one of its ticks runs long (hydrodeploy/runtime/node.py),
and a node stopped in such a tick still hands over its counters (hydrodeploy/deploy/deployment.py).

On a twentieth of a core one tick can last tens of seconds (a Paxos acceptor answering a phase-1a
with its whole log); the orchestrator's ``metrics`` requests must be answered meanwhile.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydrodeploy.bench.experiment import Bench
from hydrodeploy.deploy.local import LocalCluster
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


SPINNING_PROGRAM = """
.component slow
.component calm
.input client_in(client, id) @ calm
.output client_out(id)
.timer go 50ms @ slow
.function spin(seconds) -> (done) = "spinning:spin_once"

slow {
  spun(d) :- go(), spin(30, d).
}

calm {
  client_out@c(id) :~ client_in(c, id).
}
"""

SPINNING_MODULE = '''
import time

_spun = False


def spin_once(seconds):
    """The first call computes for ``seconds`` (holding the interpreter, as a long tick does)."""
    global _spun
    if not _spun:
        _spun = True
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sum(range(1000))
    return 1
'''


def test_a_node_stopped_in_a_long_tick_still_reports_its_counters(tmp_path: Path) -> None:
    (tmp_path / "spinning.ded").write_text(SPINNING_PROGRAM)
    (tmp_path / "spinning.py").write_text(SPINNING_MODULE)

    async def scenario() -> dict[str, dict[str, Any]]:
        bench = Bench(tmp_path / "spinning.ded", LocalCluster(name="long-tick"), tmp_path / "logs", client_processes=1)
        try:
            await bench.start()
            await asyncio.sleep(1.0)  # slow/0 is in its 30-second first tick by now
            metrics = await bench.deployment.metrics()
            assert metrics["slow/0"]["ticks"] == 0
            return await bench.deployment.stop(timeout=2.0)
        finally:
            bench.close()

    final = asyncio.run(scenario())
    # slow/0 never finished its tick: its counters are the snapshot taken when it did not stop
    assert final["slow/0"]["stopped_mid_tick"] is True
    assert final["slow/0"]["address"] == "slow/0" and final["slow/0"]["ticks"] == 0
    assert final["slow/0"]["cpu"] > 0.5
    # calm/0 stopped as asked: its own final report, unmarked
    assert final["calm/0"]["address"] == "calm/0" and "stopped_mid_tick" not in final["calm/0"]
