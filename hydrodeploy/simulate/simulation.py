"""A whole program (components x instances) in one process on a seeded, simulated network.

Discrete-event simulation: messages get random delays (so they are reordered) and may be lost;
nodes can crash (losing everything but their durable log) and restart empty; closed-loop virtual
clients write the program's `.input` and wait for its `.output`. The same seed gives the same
history, in any process.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from hydrodeploy.language import ir
from hydrodeploy.runtime import NodeEvaluator, NodeState, Topology, compile_program
from hydrodeploy.runtime.topology import client_address, is_client
from hydrodeploy.runtime.values import tuple_order_key
from hydrodeploy.simulate.clients import ClientProtocol
from hydrodeploy.simulate.config import Network, SimulationError, Workload
from hydrodeploy.simulate.results import LogEntry, Message, Output, RequestRecord, SimResult


class _Kind(IntEnum):
    DELIVER = 0
    TIMER = 1
    TICK = 2
    CLIENT_RECEIVE = 3
    CLIENT_TIMEOUT = 4
    CRASH = 5
    RESTART = 6
    CLIENT_START = 7


@dataclass
class _Node:
    address: str
    component: str
    evaluator: NodeEvaluator
    state: NodeState
    up: bool = True
    epoch: int = 0
    pending: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    fired: set[str] = field(default_factory=set)
    tick_scheduled: bool = False
    last_db: dict[str, set[tuple[Any, ...]]] = field(default_factory=dict)
    log: list[LogEntry] = field(default_factory=list)
    ticks: int = 0


@dataclass
class _Client:
    address: str
    current: int | None = None


class Simulation:
    """Build, optionally schedule crashes, then :meth:`run` once."""

    def __init__(
        self,
        program: ir.Program,
        seed: int = 0,
        network: Network | None = None,
        workload: Workload | None = None,
        record_messages: bool = False,
        topology: Topology | None = None,
    ) -> None:
        self.program = program
        self.seed = seed
        self.network = network or Network()
        self.workload = workload or Workload()
        self.record_messages = record_messages
        self.rng = random.Random(seed)
        self.topology = topology or Topology.of(program)
        self.clients_protocol = ClientProtocol.of(program)
        self.plans = compile_program(program)
        self.now_ms = 0.0
        self._events: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self.nodes: dict[str, _Node] = {}
        for component, address, index in self.topology.addresses():
            evaluator = NodeEvaluator(self.plans[component], address, index, self.topology)
            self.nodes[address] = _Node(address, component, evaluator, evaluator.initial_state())
        self.clients = [_Client(client_address(i)) for i in range(self.workload.clients)]
        self._client_by_address = {c.address: c for c in self.clients}
        self.requests: dict[int, RequestRecord] = {}
        self.outputs: list[Output] = []
        self.unexpected: list[Output] = []
        self.messages: list[Message] = []
        self.sent_by_component: dict[str, int] = {c.name: 0 for c in program.components}
        self._issued = 0
        self._completed = 0
        self._events_run = 0
        self._ran = False
        self._input_targets = list(self.topology.instances[self.clients_protocol.input.component])

    # ---- scheduling --------------------------------------------------------------------------

    def _push(self, time_ms: float, kind: _Kind, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (time_ms, self._seq, int(kind), data))

    def crash(self, address: str, at_ms: float, restart_at_ms: float | None = None) -> None:
        """Crash ``address`` at ``at_ms`` (it loses all state but its durable log) and, if given,
        restart it empty at ``restart_at_ms``."""
        if address not in self.nodes:
            raise SimulationError(f"no node {address!r} (nodes: {', '.join(self.nodes)})")
        if restart_at_ms is not None and restart_at_ms <= at_ms:
            raise SimulationError("a node must restart after it crashes")
        self._push(at_ms, _Kind.CRASH, address)
        if restart_at_ms is not None:
            self._push(restart_at_ms, _Kind.RESTART, address)

    def _delay(self) -> float:
        net = self.network
        return self.rng.uniform(net.min_delay_ms, net.max_delay_ms)

    def _send(self, src: str, dst: str, relation: str, values: tuple[Any, ...]) -> None:
        lost = self.network.loss > 0 and self.rng.random() < self.network.loss
        deliver = None if lost else self.now_ms + self._delay()
        if self.record_messages:
            self.messages.append(Message(self.now_ms, deliver, src, dst, relation, values))
        if deliver is None:
            return
        if is_client(dst):
            self._push(deliver, _Kind.CLIENT_RECEIVE, (dst, relation, values))
        else:
            self._push(deliver, _Kind.DELIVER, (dst, relation, values))

    def _schedule_tick(self, node: _Node) -> None:
        if not node.tick_scheduled and node.up:
            node.tick_scheduled = True
            self._push(self.now_ms + self.network.tick_ms, _Kind.TICK, (node.address, node.epoch))

    def _start_timers(self, node: _Node) -> None:
        for timer in node.evaluator.plan.timers:
            first = self.now_ms + self.rng.uniform(0, timer.period_ms)
            self._push(first, _Kind.TIMER, (node.address, node.epoch, timer.name, timer.period_ms))

    # ---- clients -----------------------------------------------------------------------------

    def _issue(self, client: _Client) -> None:
        if self._issued >= self.workload.requests:
            client.current = None
            return
        request_id = self._issued
        self._issued += 1
        client.current = request_id
        self.requests[request_id] = RequestRecord(client.address, request_id, self.now_ms)
        self._transmit(client, request_id)

    def _transmit(self, client: _Client, request_id: int) -> None:
        values = self.clients_protocol.request(
            client.address, request_id, random.Random(self.seed * 1_000_003 + request_id),
            self.workload.payload_bytes, self.workload.keys,
        )
        relation = self.clients_protocol.input.relation
        for target in self._input_targets:
            self._send(client.address, target, relation, values)
        if self.workload.timeout_ms is not None:
            self._push(self.now_ms + self.workload.timeout_ms, _Kind.CLIENT_TIMEOUT, (client.address, request_id))

    def _client_receive(self, client_addr: str, relation: str, values: tuple[Any, ...]) -> None:
        out = Output(self.now_ms, client_addr, relation, values)
        self.outputs.append(out)
        request_id = self.clients_protocol.request_id(relation, values)
        record = self.requests.get(request_id) if isinstance(request_id, int) else None
        if record is None or record.client != client_addr:
            self.unexpected.append(out)
            return
        record.replies += 1
        if record.done_ms is None:
            record.done_ms = self.now_ms
            self._completed += 1
            client = self._client_by_address[client_addr]
            if client.current == request_id:
                self._issue(client)

    # ---- nodes -------------------------------------------------------------------------------

    def _tick(self, node: _Node) -> None:
        node.tick_scheduled = False
        inbox, node.pending = node.pending, []
        timers, node.fired = node.fired, set()
        result = node.evaluator.tick(node.state, inbox, sorted(timers))
        node.state = result.state
        node.last_db = result.db
        node.ticks += 1
        for relation, values in result.log:
            node.log.append(LogEntry(self.now_ms, relation, values))
        outbox = sorted(result.outbox, key=lambda m: (m[0], m[1], tuple_order_key(m[2])))
        self.sent_by_component[node.component] += len(outbox)
        for dst, relation, values in outbox:
            self._send(node.address, dst, relation, values)
        if result.changed or node.pending:
            self._schedule_tick(node)

    def _handle(self, kind: int, data: Any) -> None:
        if kind == _Kind.DELIVER:
            dst, relation, values = data
            node = self.nodes.get(dst)
            if node is None:
                raise SimulationError(f"a message for '{relation}' was sent to unknown address {dst!r}")
            if node.up:
                node.pending.append((relation, values))
                self._schedule_tick(node)
        elif kind == _Kind.TICK:
            address, epoch = data
            node = self.nodes[address]
            if node.up and node.epoch == epoch:
                self._tick(node)
        elif kind == _Kind.TIMER:
            address, epoch, name, period = data
            node = self.nodes[address]
            if node.up and node.epoch == epoch:
                node.fired.add(name)
                self._schedule_tick(node)
                self._push(self.now_ms + period, _Kind.TIMER, data)
        elif kind == _Kind.CLIENT_RECEIVE:
            self._client_receive(*data)
        elif kind == _Kind.CLIENT_TIMEOUT:
            client_addr, request_id = data
            record = self.requests[request_id]
            if record.done_ms is None:
                record.attempts += 1
                self._transmit(self._client_by_address[client_addr], request_id)
        elif kind == _Kind.CRASH:
            node = self.nodes[data]
            node.up = False
            node.epoch += 1
            node.pending = []
            node.fired = set()
            node.tick_scheduled = False
            node.state = node.evaluator.initial_state()
            node.last_db = {}
        elif kind == _Kind.RESTART:
            node = self.nodes[data]
            node.up = True
            node.epoch += 1
            self._start_timers(node)
        elif kind == _Kind.CLIENT_START:
            self._issue(self._client_by_address[data])

    # ---- running -----------------------------------------------------------------------------

    def run(
        self,
        max_time_ms: float = 60_000.0,
        drain_ms: float | None = None,
        max_events: int = 50_000_000,
        stop_when: Callable[[Simulation], bool] | None = None,
    ) -> SimResult:
        """Run until every request completed (then ``drain_ms`` more, by default twice the maximum
        delay, so in-flight messages land), until ``max_time_ms``, or until ``stop_when``."""
        if self._ran:
            raise SimulationError("a Simulation runs once; build a new one")
        self._ran = True
        drain = 2 * self.network.max_delay_ms + 10 * self.network.tick_ms if drain_ms is None else drain_ms
        for node in self.nodes.values():
            self._start_timers(node)
        for client in self.clients:
            self._push(0.0, _Kind.CLIENT_START, client.address)
        deadline = max_time_ms
        draining = False
        while self._events and self._events_run < max_events:
            time_ms, _, kind, data = self._events[0]
            if time_ms > deadline:
                break
            heapq.heappop(self._events)
            self.now_ms = time_ms
            self._events_run += 1
            self._handle(kind, data)
            if not draining and self._all_done():
                draining = True
                deadline = min(deadline, self.now_ms + drain)
            if stop_when is not None and stop_when(self):
                break
        return SimResult(
            requests=self.requests,
            outputs=self.outputs,
            messages=self.messages,
            messages_by_component=dict(self.sent_by_component),
            ticks_by_node={a: n.ticks for a, n in self.nodes.items()},
            end_ms=self.now_ms,
            events=self._events_run,
            unexpected_outputs=self.unexpected,
        )

    def _all_done(self) -> bool:
        return self._issued >= self.workload.requests and self._completed == self._issued

    # ---- inspection --------------------------------------------------------------------------

    def facts(self, address: str, relation: str) -> set[tuple[Any, ...]]:
        """Facts of ``relation`` in the node's last completed tick."""
        if address not in self.nodes:
            raise SimulationError(f"no node {address!r}")
        return set(self.nodes[address].last_db.get(relation, ()))

    def log(self, address: str) -> list[LogEntry]:
        """The node's durable log appends, with the time each was flushed."""
        if address not in self.nodes:
            raise SimulationError(f"no node {address!r}")
        return list(self.nodes[address].log)
