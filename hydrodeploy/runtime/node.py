"""The node process: one component instance with the compiled evaluator, on the network.

Started as ``python -m hydrodeploy.runtime.node`` with a JSON :class:`NodeSpec` on stdin (the
deployment secret travels there, never on the command line). The process

1. compiles its component, listens for DATA frames, connects to the orchestrator's control port
   and says ``hello`` with its endpoint;
2. on ``start`` (which carries the :class:`~hydrodeploy.runtime.transport.Directory`) starts its
   timers and ticks: whenever facts are pending, a timer fired or the carried state changed, it
   evaluates one tick over what arrived since the previous one (at most :data:`MAX_TICK_FACTS`
   facts, what other nodes sent before what benchmark clients sent, an equal share from every
   sender: :mod:`~hydrodeploy.runtime.inbox`; the rest wait for the next tick, and above
   :data:`INBOX_LIMIT` waiting facts of either kind the node stops reading each connection that
   brings more of that kind until its ticks catch up), appends the tick's
   ``.log`` facts to its durable log with one write and one fsync, and sends the tick's messages
   as one frame per destination endpoint;
3. answers ``metrics`` with its counters (per-rule CPU and firings, messages and bytes per
   channel, ticks, process CPU, rejected frames), from a thread of its own: one tick can hold the
   event loop for tens of seconds (a Paxos acceptor answering a phase-1a with its whole log, at a
   twentieth of a core), and the orchestrator's requests must not wait for it;
4. on ``stop`` or SIGTERM stops ticking, flushes its sends and its log, reports its final metrics
   and exits 0. When the control connection ends (the orchestrator is gone) it exits at once.

A tick that fails (a Python function raised, ...) is printed with its traceback and the process
exits with status 3, so the orchestrator can report the node and its last log lines.

Control messages (msgpack maps, key ``t``): node -> orchestrator ``hello``, ``started``,
``metrics``, ``stopped``; orchestrator -> node ``start``, ``metrics``, ``stop``.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from hydrodeploy.language import ir, load_program
from hydrodeploy.runtime import eventloop, gcpolicy, tickrecord
from hydrodeploy.runtime.codec import Fact
from hydrodeploy.runtime.evaluator import NodeEvaluator
from hydrodeploy.runtime.inbox import SenderQueues
from hydrodeploy.runtime.plan import compile_component
from hydrodeploy.runtime.topology import Topology, is_client_process
from hydrodeploy.runtime.transport import (
    Directory,
    Groups,
    Message,
    ThreadControlChannel,
    Transport,
)

EXIT_TICK_FAILED = 3
EXIT_ORCHESTRATOR_GONE = 4
# At most this many received facts per tick; the rest wait for the next one. An overloaded node
# on a small CPU quota would otherwise take everything queued into one tick lasting seconds, and
# answer neither its peers' nor the orchestrator's messages meanwhile (nor send its heartbeats:
# a Paxos leader's would come late enough to start elections). 256 facts cost a few ms of CPU,
# against ~0.1 ms of per-tick overhead. (Splitting what arrived
# across ticks is a later delivery, which every program must already tolerate.)
MAX_TICK_FACTS = 256
# Above INBOX_LIMIT waiting facts the node stops reading its DATA connections (TCP then makes the
# senders wait, the kernel's buffers holding the rest) until a tick leaves at most INBOX_RESUME:
# an overloaded node's memory stays bounded (at 4,096 clients a Paxos proposer's inbox grew by
# 10,000 facts a second), and what arrives waits behind this backlog, not behind everything sent.
INBOX_LIMIT = 8 * MAX_TICK_FACTS
INBOX_RESUME = 2 * MAX_TICK_FACTS
# What the deployment's nodes send goes into a tick before what benchmark clients send, and is
# held back apart from it: new requests wait, work in flight does not. Past its capacity, a Paxos
# follower that queued heartbeats behind thousands of requests it was going to drop missed a
# whole failure-detection window and started an election that stalled the deployment (22
# November); requests queued ahead of the votes and commits of earlier ones also keep the state
# of unfinished requests growing. (Any delivery order is one the network could have produced.)


@dataclass(frozen=True)
class NodeSpec:
    """Everything a node process needs, sent on its stdin as JSON."""

    address: str
    component: str
    index: int
    program: str  # path of the .ded file
    instances: dict[str, list[str]]  # the topology: addresses of every component's instances
    secret: str  # hex
    control: tuple[str, int]  # the orchestrator's control endpoint
    listen_host: str = "127.0.0.1"
    durable_log: str | None = None  # file the node appends its .log facts to
    partitions: dict[str, list[str]] = field(default_factory=dict)
    profile: bool = True
    engine: str | None = None  # "module:factory" of another engine (benchmarks); None: evaluator

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @staticmethod
    def from_json(data: bytes) -> NodeSpec:
        obj = json.loads(data)
        obj["control"] = (obj["control"][0], int(obj["control"][1]))
        return NodeSpec(**obj)

    def topology(self) -> Topology:
        return Topology(
            {c: tuple(a) for c, a in self.instances.items()},
            {a: tuple(p) for a, p in self.partitions.items()},
        )


# ---- engines: what computes a tick ----------------------------------------------------------


@dataclass
class Step:
    outbox: list[Message]
    log: list[tuple[str, Fact]]
    changed: bool


class Engine(Protocol):
    """What a node process runs each tick. :class:`EvaluatorEngine` runs the compiled program;
    a benchmark may plug in hand-written logic with the same network I/O."""

    @property
    def accepts(self) -> Mapping[str, int]:
        """relation -> arity of every fact this node may receive"""
        ...

    @property
    def timers(self) -> tuple[tuple[str, float], ...]:
        """(timer name, period in seconds) of every timer"""
        ...

    def step(self, inbox: list[tuple[str, Fact]], timers: list[str]) -> Step: ...

    def rule_metrics(self) -> list[list[Any]]:
        """[number, head relation, kind, calls, facts, ns] per rule. Called on the node's control
        thread, possibly while :meth:`step` runs."""
        ...


def receivable(program: ir.Program, component: str) -> dict[str, int]:
    """Relations that may arrive at ``component``, with their arities: its `.input` relations and
    every channel (a relation some rule sends with ``:~``)."""
    out: dict[str, int] = {}
    for decl in program.inputs:
        if decl.component == component:
            out[decl.relation] = len(decl.attrs)
    for block in program.blocks:
        for rule in block.rules:
            if rule.kind is ir.RuleKind.ASYNC and rule.head.relation not in program.output_relations:
                out[rule.head.relation] = rule.head.arity
    return out


class EvaluatorEngine:
    """The compiled component (:class:`~hydrodeploy.runtime.evaluator.NodeEvaluator`)."""

    def __init__(self, program: ir.Program, spec: NodeSpec) -> None:
        plan = compile_component(program, spec.component)
        self.evaluator = NodeEvaluator(plan, spec.address, spec.index, spec.topology(), profile=spec.profile)
        self.state = self.evaluator.initial_state()
        self.accepts = receivable(program, spec.component)
        self.timers = tuple((t.name, t.period_ms / 1000.0) for t in plan.timers)
        self._kinds = {r.number: r.rule.kind.value for r in plan.rules}
        self._heads = {r.number: r.head for r in plan.rules}

    def step(self, inbox: list[tuple[str, Fact]], timers: list[str]) -> Step:
        result = self.evaluator.tick(self.state, inbox, timers)
        self.state = result.state
        return Step(result.outbox, result.log, result.changed)

    def rule_metrics(self) -> list[list[Any]]:
        return [
            [n, self._heads[n], self._kinds[n], c.calls, c.facts, c.ns]
            for n, c in sorted(self.evaluator.counters.items())
        ]


EngineFactory = Callable[[ir.Program, NodeSpec], Engine]


def load_engine(spec: NodeSpec, program: ir.Program) -> Engine:
    if spec.engine is None:
        return EvaluatorEngine(program, spec)
    module_name, _, attr = spec.engine.partition(":")
    factory: EngineFactory = getattr(importlib.import_module(module_name), attr)
    return factory(program, spec)


# ---- the durable log ------------------------------------------------------------------------


class DurableLog:
    """Appends a tick's `.log` facts as JSON lines with one write and one fsync."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if path else None
        self.records = 0
        self.bytes = 0
        self.fsyncs = 0
        self.fsync_ns = 0

    def append(self, facts: list[tuple[str, Fact]]) -> None:
        if self.fd is None:
            return
        data = "".join(json.dumps([rel, list(values)]) + "\n" for rel, values in facts).encode()
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        start = time.perf_counter_ns()
        os.fsync(self.fd)
        self.fsync_ns += time.perf_counter_ns() - start
        self.fsyncs += 1
        self.records += len(facts)
        self.bytes += len(data)

    def close(self) -> None:
        if self.fd is not None:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None

    def metrics(self) -> dict[str, int]:
        return {"records": self.records, "bytes": self.bytes, "fsyncs": self.fsyncs, "fsync_ns": self.fsync_ns}


# ---- the node ---------------------------------------------------------------------------------


class Node:
    def __init__(self, spec: NodeSpec, engine: Engine) -> None:
        self.spec = spec
        self.engine = engine
        self.secret = bytes.fromhex(spec.secret)
        self.transport = Transport(self.secret, spec.address, self._on_data)
        self.log = DurableLog(spec.durable_log)
        self.recorder = tickrecord.recorder_from_env(spec)
        self.inbox = SenderQueues()  # what nodes sent, waiting
        self.client_inbox = SenderQueues()  # what benchmark client processes sent, waiting
        self.fired: set[str] = set()
        self.changed = False
        self.ticks = 0
        self.wakeups = 0  # times the tick loop waited for something to do
        self.tick_ns = 0
        # CPU time (not wall time: a throttled node is not charged for waiting) of each part of
        # the ticks: evaluating the program, appending the durable log, encoding and sending
        self.cpu_ns = {"evaluate": 0, "log": 0, "send": 0}
        self.facts_in = 0
        self.stopping = False
        self.control: ThreadControlChannel | None = None
        self._closing = False  # the control connection may end without the orchestrator being gone
        self._wake = asyncio.Event()
        self._started = asyncio.Event()
        self._stop = asyncio.Event()
        self._timer_handles: list[asyncio.TimerHandle] = []
        self._t0 = time.monotonic()

    # ---- receiving ----------------------------------------------------------------------------

    def _on_data(self, sender: str, groups: Groups, size: int) -> bool:
        """Queue what arrived; whether to stop reading the connection it came on."""
        accepts = self.engine.accepts
        me = self.spec.address
        received = self.transport.channels.received
        total_rows = sum(len(g[2]) for g in groups) or 1
        clients = is_client_process(sender)
        inbox = self.client_inbox if clients else self.inbox
        for dest, relation, rows in groups:
            arity = accepts.get(relation)
            if dest != me or arity is None:
                self.transport.channels.misrouted += len(rows)
                continue
            good = [row for row in rows if len(row) == arity]
            if len(good) != len(rows):
                self.transport.decode_stats.malformed += 1
            inbox.extend(sender, [(relation, row) for row in good])
            key = (relation, sender)
            share = size * len(rows) // total_rows
            counts = received.get(key)
            if counts is None:
                received[key] = [len(good), share]
            else:
                counts[0] += len(good)
                counts[1] += share
        if inbox:
            self._wake.set()
        return len(inbox) > INBOX_LIMIT

    # ---- timers -------------------------------------------------------------------------------

    def _start_timers(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for name, period in self.engine.timers:
            self._schedule_timer(loop, name, period, start, 1)

    def _schedule_timer(self, loop: asyncio.AbstractEventLoop, name: str, period: float, start: float, k: int) -> None:
        def fire() -> None:
            self.fired.add(name)
            self._wake.set()
            # the k-th firing is due at start + k*period: no drift, and a late tick skips ahead
            nxt = max(k + 1, int((loop.time() - start) / period) + 1)
            self._schedule_timer(loop, name, period, start, nxt)

        self._timer_handles.append(loop.call_at(start + k * period, fire))
        if len(self._timer_handles) > 64:
            self._timer_handles = [h for h in self._timer_handles if not h.cancelled()][-16:]

    # ---- the tick loop ------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        engine = self.engine
        while not self.stopping:
            if not (self.inbox or self.client_inbox or self.fired or self.changed):
                self._wake.clear()
                await self._wake.wait()
                self.wakeups += 1
                continue
            inbox = self._take()
            timers = sorted(self.fired)
            self.fired = set()
            if self.recorder is not None:
                self.recorder.tick(inbox, timers)
            start = time.perf_counter_ns()
            cpu0 = time.thread_time_ns()
            step = engine.step(inbox, timers)
            cpu1 = time.thread_time_ns()
            if step.log:
                self.log.append(step.log)
            cpu2 = time.thread_time_ns()
            if step.outbox:
                self.transport.send(step.outbox)
            cpu3 = time.thread_time_ns()
            self.tick_ns += time.perf_counter_ns() - start
            self.cpu_ns["evaluate"] += cpu1 - cpu0
            self.cpu_ns["log"] += cpu2 - cpu1
            self.cpu_ns["send"] += cpu3 - cpu2
            self.ticks += 1
            self.facts_in += len(inbox)
            self.changed = step.changed
            await self.transport.wait_writable()
            await asyncio.sleep(0)  # let the network callbacks fill the next inbox

    def _take(self) -> list[tuple[str, Fact]]:
        """The next tick's facts: what nodes sent first, then what clients sent, at most
        :data:`MAX_TICK_FACTS`, every sender of a kind in turn; the held connections of a kind
        are read again once its backlog fell to :data:`INBOX_RESUME`."""
        taken = self.inbox.take(MAX_TICK_FACTS)
        if len(taken) < MAX_TICK_FACTS and self.client_inbox:
            taken += self.client_inbox.take(MAX_TICK_FACTS - len(taken))
        if len(self.inbox) <= INBOX_RESUME:
            self.transport.release_reading(False)
        if len(self.client_inbox) <= INBOX_RESUME:
            self.transport.release_reading(True)
        return taken

    # ---- control ------------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        return {
            "address": self.spec.address,
            "pid": os.getpid(),
            "time": time.time(),
            "wall": time.monotonic() - self._t0,
            "cpu": time.process_time(),
            "ticks": self.ticks,
            "wakeups": self.wakeups,
            "tick_ns": self.tick_ns,
            "tick_cpu_ns": {**self.cpu_ns, "receive": self.transport.receive_cpu_ns},
            "facts_in": self.facts_in,
            "rules": self.engine.rule_metrics(),
            "channels": self.transport.channels.snapshot(),
            "frames": self.transport.decode_stats.as_dict(),
            "log": self.log.metrics(),
            "gc_collections": [generation["collections"] for generation in gc.get_stats()],
        }

    def _control_loop(self, control: ThreadControlChannel, loop: asyncio.AbstractEventLoop) -> None:
        """The control thread: answers ``metrics`` itself, hands ``start`` and ``stop`` to the loop."""
        while True:
            msg = control.recv()
            if self._closing:
                return
            if msg is None:
                print(f"{self.spec.address}: control connection closed: the orchestrator is gone", flush=True)
                os._exit(EXIT_ORCHESTRATOR_GONE)
            kind = msg["t"]
            if kind == "start":
                loop.call_soon_threadsafe(self._start, Directory.from_wire(msg["directory"]))
            elif kind == "metrics":
                control.send({"t": "metrics", "seq": msg.get("seq"), "data": self.metrics()})
            elif kind == "stop":
                loop.call_soon_threadsafe(self._stop.set)

    def _start(self, directory: Directory) -> None:
        self.transport.directory = directory
        self._started.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        endpoint = await self.transport.listen(self.spec.listen_host, 0)
        host, port = self.spec.control
        control = await asyncio.to_thread(ThreadControlChannel.connect, host, port, self.secret)
        self.control = control
        control.send({"t": "hello", "address": self.spec.address, "endpoint": list(endpoint), "pid": os.getpid()})
        loop_name = type(loop).__module__.split(".")[0]
        print(f"{self.spec.address}: pid {os.getpid()} listening on {endpoint[0]}:{endpoint[1]} ({loop_name} event loop)", flush=True)
        threading.Thread(target=self._control_loop, args=(control, loop), name="control", daemon=True).start()
        started = loop.create_task(self._started.wait())
        stop = loop.create_task(self._stop.wait())
        await asyncio.wait({started, stop}, return_when=asyncio.FIRST_COMPLETED)
        ticking: asyncio.Task[None] | None = None
        if self._started.is_set() and not self._stop.is_set():
            self._start_timers()
            ticking = loop.create_task(self._tick_loop())
            control.send({"t": "started", "address": self.spec.address})
            print(f"{self.spec.address}: started", flush=True)
            await asyncio.wait({ticking, stop}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if ticking is not None and ticking.done() and ticking.exception() is not None:
            exc = ticking.exception()
            assert exc is not None
            print(f"{self.spec.address}: tick {self.ticks} failed", flush=True)
            traceback.print_exception(exc, file=sys.stdout)
            sys.stdout.flush()
            code = EXIT_TICK_FAILED
        self.stopping = True
        self._wake.set()
        for handle in self._timer_handles:
            handle.cancel()
        if ticking is not None and not ticking.done():
            await ticking
        await self.transport.close()
        self.log.close()
        if self.recorder is not None:
            self.recorder.close()
        self._closing = True
        control.send({"t": "stopped", "address": self.spec.address, "data": self.metrics()})
        print(f"{self.spec.address}: stopped after {self.ticks} ticks", flush=True)
        stop.cancel()
        started.cancel()
        control.close()
        return code


def main() -> int:
    spec = NodeSpec.from_json(sys.stdin.buffer.read())
    program = load_program(spec.program)
    engine = load_engine(spec, program)
    gcpolicy.young_only()
    return eventloop.run(Node(spec, engine).run())


if __name__ == "__main__":
    sys.exit(main())
