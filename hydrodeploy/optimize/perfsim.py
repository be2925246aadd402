"""Performance simulation: a configuration run on a model of the cluster, driven by measured costs.

The deterministic simulator (:mod:`hydrodeploy.simulate`) runs the real compiled program; here
each tick also *takes time*, as it does on the cluster:

- its CPU is the cluster's CPU for the same work: every rule's CPU in this process on the tick's
  actual facts (as fitted to its work, :attr:`TickCosts.rule_fit`, else as timed while it ran),
  times that rule's ratio of cluster CPU to in-process CPU measured at calibration
  (the ratio of all measured rules together for a rule that never ran on the cluster, one a
  rewrite generated); the evaluator's own work around the rules, in this process, times its
  ratio; the runtime's cost per message received and sent, per frame, per tick, per durable log
  record and per fsync (:class:`TickCosts`). Work that grows with a tick's batch or with the
  state a rule scans costs what it costs here, scaled: a cost per fact derived or per evaluation
  measured in one configuration would not carry over to another whose ticks batch differently.
  Each tick's CPU varies around that (log-normal, as ticks do on a shared machine);
- that CPU runs under the node's CPU quota as CFS bandwidth control enforces it: at full speed
  while the period's budget lasts, then nothing until the next period;
- a tick that writes the durable log also waits for the measured fsync;
- the tick's messages leave when it ends, one frame per destination, and arrive whole after the
  message delay (varying from frame to frame).

A node ticks when it is free and something is pending, over what arrived meanwhile (at most
:data:`~hydrodeploy.runtime.node.MAX_TICK_FACTS` facts, what nodes sent before the clients'
inputs, as node processes do),
so batch sizes, ticks per second and queueing come out of the model as they do on the cluster.
Closed-loop clients number their requests like the benchmark clients do and answer a reply
after a short turnaround; :func:`simulate_point` gives the throughput, latency and every node's
CPU and ticks under a number of clients.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from hydrodeploy.language import ir
from hydrodeploy.optimize.config import rule_identity
from hydrodeploy.runtime.node import MAX_TICK_FACTS
from hydrodeploy.runtime.topology import Topology, client_process_name, is_client
from hydrodeploy.simulate import Network, Simulation, Workload
from hydrodeploy.simulate.results import RequestRecord, percentile
from hydrodeploy.simulate.simulation import _Kind

JITTER = 0.5  # relative spread of message delays
WARMUP_ROUNDS = 3  # a point's warm-up may end once every client completed this many requests
MAX_MEASURED = 4000  # a point's measurement may end once this many requests completed
MIN_MEASURE_S = 0.1  # but not before it spans this long (many CFS periods; waves of replies are not a window)
CPU_NOISE = 0.3  # spread (log-normal sigma) of a tick's CPU around its cost
START_SPREAD_MS = 20.0  # client processes send their first requests within this long
CPU_CLOCK = time.thread_time_ns
STARTUP_MS = 5000.0  # simulated time a configuration may take to start serving (leader election)


@dataclass(frozen=True)
class TickCosts:
    """What ticks cost on the cluster (seconds of CPU, and of waiting for fsync and the network)."""

    evaluate_scale: float  # cluster CPU per in-process CPU of all measured rules: rules never measured
    msg_in: float
    msg_out: float
    frame_out: float
    tick: float  # the runtime's own work per tick (event loop, syscalls)
    log_record: float
    fsync_s: float = 0.0  # wall time of one fsync
    fsync_cpu: float = 0.0  # CPU of one fsync
    delay_s: float = 0.0002  # one-way message delay, with the receiver's wake-up
    frame_in: float = 0.0  # per frame received
    reply: float = 0.0  # per message sent to a client, on top of msg_out
    client_delay_s: float = 0.0002  # a client's turnaround from a reply to its next request
    rule_scale: dict[str, float] = field(default_factory=dict)  # rule identity -> cluster CPU per in-process CPU
    bookkeeping_scale: float = 1.0  # cluster CPU per in-process CPU of the evaluator's work around the rules
    # measured on the cluster near the calibration's peak, for reports and the partition split
    # (:mod:`.evaluate`); the simulation charges in-process CPU scaled, not these
    rule_fact: dict[str, float] = field(default_factory=dict)  # rule identity -> seconds per fact derived
    rule_call: dict[str, float] = field(default_factory=dict)  # rule identity -> seconds per evaluation
    bookkeeping_tick: float = 0.0  # the evaluator's work around the rules, per tick (fitted)
    bookkeeping_fact_in: float = 0.0  # and per fact received
    # in-process CPU as a function of the work (:func:`fit_inprocess`); empty: timed as the ticks run
    rule_fit: dict[str, list[float]] = field(default_factory=dict)  # identity -> seconds per run, per input fact, per fact derived
    bookkeeping_fit: list[float] = field(default_factory=list)  # seconds per tick, per fact received, per rule run

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> TickCosts:
        known = {f.name for f in fields(TickCosts)}
        return TickCosts(**{k: v for k, v in data.items() if k in known})


Samples = dict[str, list[tuple[int, int, float]]]
TickSamples = list[tuple[int, int, float]]


def fitted_cost(fit: Sequence[float], first: int, second: int) -> float:
    """Seconds by a fit of :func:`~.costmodel.fit_inprocess`: per run (or tick), plus per unit of
    its two measures of work (a rule's facts in and derived; a tick's facts received and rules run)."""
    return fit[0] + fit[1] * first + fit[2] * second


@dataclass(frozen=True)
class SimPoint:
    clients: int
    throughput: float
    p50_ms: float
    p99_ms: float
    busy: dict[str, float] = field(default_factory=dict)  # cores each node used
    ticks: dict[str, float] = field(default_factory=dict)  # ticks per second of each node
    rule_cpu: dict[str, tuple[float, float]] = field(default_factory=dict)  # identity -> (CPU s, facts) in this process
    evaluate_cpu: float = 0.0  # CPU s of every tick's evaluation in this process, unscaled
    seconds: float = 0.0  # simulated length of the measured window
    samples: Samples = field(default_factory=dict)  # collected: rule identity -> (facts in, facts derived, seconds) per run
    tick_samples: TickSamples = field(default_factory=list)  # collected: per tick (facts received, rules run, seconds around the rules)


class _Budget:
    """CFS bandwidth control of one node: ``quota`` cores per ``period`` seconds."""

    def __init__(self, quota: float | None, period: float) -> None:
        self.quota = quota
        self.period = period
        self.current = -1
        self.left = 0.0
        self.used = 0.0

    def run(self, start: float, cpu: float) -> float:
        """When ``cpu`` seconds of CPU started at ``start`` finish."""
        self.used += cpu
        if self.quota is None:
            return start + cpu
        t = start
        index = max(self.current, math.floor(t / self.period + 1e-9))
        while True:
            if index != self.current:
                self.current = index
                self.left = self.quota * self.period
            boundary = (index + 1) * self.period
            can = min(self.left, max(0.0, boundary - t))
            if cpu <= can:
                self.left -= cpu
                return t + cpu
            cpu -= can
            self.left -= can
            index += 1
            t = max(t, index * self.period)


class PerfSimulation(Simulation):
    """The simulator with ticks that take the time they take on the cluster."""

    def __init__(
        self,
        program: ir.Program,
        topology: Topology,
        costs: TickCosts,
        quotas: Mapping[str, float | None],
        period_s: float,
        clients: int,
        base_file: str | None,
        timeout_ms: float | None = None,
        seed: int = 0,
        client_processes: int = 2,
        collect: bool = False,
    ) -> None:
        delay_ms = costs.delay_s * 1000
        self.client_processes = client_processes
        super().__init__(
            program,
            seed=seed,
            network=Network(min_delay_ms=delay_ms, max_delay_ms=delay_ms, tick_ms=1e-6),
            workload=Workload(clients=clients, requests=1 << 40, timeout_ms=timeout_ms),
            topology=topology,
        )
        for node in self.nodes.values():
            node.evaluator.profile = True
        self.identities = {
            b.component: [rule_identity(b.component, r, base_file) for r in b.rules] for b in program.blocks
        }
        self.evaluate_s = 0.0
        self.rule_totals: dict[str, list[float]] = {}  # identity -> [in-process CPU s, facts derived]
        # with ``collect``: every rule run's (facts in, facts derived, elapsed s), and every tick's
        # (facts received, rules run, elapsed s around the rules), for :func:`fit_inprocess`
        self.samples: Samples | None = {} if collect else None
        self.tick_samples: TickSamples = []
        # frames arrived at each node since its last tick: a frame's messages arrive together
        self.frames_waiting: dict[str, int] = dict.fromkeys(self.nodes, 0)
        self._last_arrival: dict[str, float] = {}
        self.costs = costs
        self.budgets = {a: _Budget(quotas.get(a), period_s) for a in self.nodes}
        self.free_at: dict[str, float] = dict.fromkeys(self.nodes, 0.0)  # ms
        self.tick_counts: dict[str, int] = dict.fromkeys(self.nodes, 0)
        self._sequence: dict[str, int] = {}
        self._start_ms: dict[str, float] = {}  # client process -> when its clients send their first requests
        self._inputs = frozenset(d.relation for d in program.inputs)

    def _schedule_tick(self, node: Any) -> None:  # when the node can tick: once it is free
        if not node.tick_scheduled and node.up:
            node.tick_scheduled = True
            self._push(max(self.now_ms, self.free_at[node.address]), _Kind.TICK, (node.address, node.epoch))

    def _issue(self, client: Any) -> None:
        """Request ids as the benchmark clients make them: ``1 << 44 | n << 24 | sequence``
        (partitioning by id then sees the same patterns)."""
        n = int(client.address.rsplit("/", 1)[1])
        seq = self._sequence.get(client.address, 0)
        self._sequence[client.address] = seq + 1
        request_id = (1 << 44) | (n << 24) | seq
        self._issued += 1
        client.current = request_id
        saved = self.now_ms
        if seq == 0:
            # a client process sends all its clients' first requests in one frame per node, as the
            # benchmark client does; a frame per client would cost thousands of clients' worth of
            # frames in one tick (seconds at a twentieth of a core) and time every client out
            process = self._endpoint(client.address)
            start = self._start_ms.get(process)
            if start is None:
                start = self._start_ms[process] = self.rng.uniform(0.0, START_SPREAD_MS)
            self.now_ms += start
        try:
            self.requests[request_id] = RequestRecord(client.address, request_id, self.now_ms)
            self._transmit(client, request_id)
        finally:
            self.now_ms = saved

    def _client_receive(self, client_addr: str, relation: str, values: tuple[Any, ...]) -> None:
        saved = self.now_ms
        self.now_ms += self.costs.client_delay_s * 1000
        try:
            super()._client_receive(client_addr, relation, values)
        finally:
            self.now_ms = saved

    def _tick(self, node: Any) -> None:
        node.tick_scheduled = False
        inbox = self._take(node)
        timers, node.fired = node.fired, set()
        trace: list[tuple[int, int, int, int]] = []
        node.evaluator.trace = trace
        c0 = CPU_CLOCK()
        result = node.evaluator.tick(node.state, inbox, sorted(timers))
        evaluate = (CPU_CLOCK() - c0) / 1e9
        node.state = result.state
        node.last_db = result.db
        node.ticks += 1
        costs = self.costs
        names = self.identities.get(node.component, [])
        fits = costs.rule_fit
        cpu = 0.0
        timed = 0.0  # elapsed in the rules, as they ran here
        here = 0.0  # in-process CPU of the rules: as fitted, else as they ran
        for number, work, derived, ns in trace:
            name = names[number] if number < len(names) else ""
            elapsed = ns / 1e9
            timed += elapsed
            fit = fits.get(name)
            rule_s = elapsed if fit is None else fitted_cost(fit, work, derived)
            here += rule_s
            totals = self.rule_totals.get(name)
            if totals is None:
                self.rule_totals[name] = [rule_s, float(derived)]
            else:
                totals[0] += rule_s
                totals[1] += derived
            if self.samples is not None:
                self.samples.setdefault(name, []).append((work, derived, elapsed))
            cpu += rule_s * costs.rule_scale.get(name, costs.evaluate_scale)
        around = max(0.0, evaluate - timed)
        if self.samples is not None:
            self.tick_samples.append((len(inbox), len(trace), around))
        book = costs.bookkeeping_fit
        if book:
            around = fitted_cost(book, len(inbox), len(trace))
        cpu += around * costs.bookkeeping_scale
        self.evaluate_s += here + around
        frames = {self._endpoint(dst) for dst, _, _ in result.outbox}
        cpu += (
            costs.tick
            + costs.msg_in * len(inbox)
            + costs.frame_in * self.frames_waiting[node.address]
            + costs.msg_out * len(result.outbox)
            + (costs.reply * sum(1 for dst, _, _ in result.outbox if is_client(dst)) if costs.reply else 0.0)
            + costs.frame_out * len(frames)
            + costs.log_record * len(result.log)
            + (costs.fsync_cpu if result.log else 0.0)
        )
        self.frames_waiting[node.address] = 0
        cpu *= self.rng.lognormvariate(-CPU_NOISE**2 / 2, CPU_NOISE)  # ticks vary (caches, interrupts); mean 1
        finish_s = self.budgets[node.address].run(self.now_ms / 1000, cpu)
        if result.log:
            finish_s += costs.fsync_s
        finish_ms = finish_s * 1000
        self.free_at[node.address] = finish_ms
        self.tick_counts[node.address] += 1
        self.sent_by_component[node.component] += len(result.outbox)
        # one frame per destination: its messages arrive together, after a delay of its own
        arrive = {ep: finish_ms + costs.delay_s * 1000 * self.rng.uniform(1 - JITTER, 1 + JITTER) for ep in frames}
        for dst, relation, values in result.outbox:
            at = arrive[self._endpoint(dst)]
            if is_client(dst):
                self._push(at, _Kind.CLIENT_RECEIVE, (dst, relation, values))
            else:
                self._push(at, _Kind.DELIVER, (dst, relation, values))
        if result.changed or node.pending:
            self._schedule_tick(node)

    def _handle(self, kind: int, data: Any) -> None:
        if kind == _Kind.DELIVER:
            dst = data[0]
            if self._last_arrival.get(dst) != self.now_ms:  # the first message of a frame
                self._last_arrival[dst] = self.now_ms
                if dst in self.frames_waiting:
                    self.frames_waiting[dst] += 1
        super()._handle(kind, data)

    def _take(self, node: Any) -> list[tuple[str, tuple[Any, ...]]]:
        """A tick's facts as a node process takes them: at most :data:`MAX_TICK_FACTS`, what nodes
        sent first (here: every relation but the program's inputs, which only clients send)."""
        pending = node.pending
        if len(pending) <= MAX_TICK_FACTS:
            node.pending = []
            return pending  # type: ignore[no-any-return]
        inputs = self._inputs
        ordered = [f for f in pending if f[0] not in inputs]
        ordered.extend(f for f in pending if f[0] in inputs)
        node.pending = ordered[MAX_TICK_FACTS:]
        return ordered[:MAX_TICK_FACTS]

    def _endpoint(self, address: str) -> str:
        """Where a message goes on the network: a node, or the client process a client lives in
        (client ``n`` in process ``n mod P``, as the benchmark clients are spread)."""
        if is_client(address):
            return client_process_name(int(address.rsplit("/", 1)[1]) % self.client_processes)
        return address

    def completed_count(self) -> int:
        return self._completed

    def rule_cpu(self) -> dict[str, tuple[float, float]]:
        """Per rule identity, CPU seconds (as fitted, else as timed) and facts derived so far, all
        nodes, in this process."""
        return {name: (cpu, facts) for name, (cpu, facts) in self.rule_totals.items() if name}


def simulate_point(
    program: ir.Program,
    topology: Topology,
    costs: TickCosts,
    quotas: Mapping[str, float | None],
    period_s: float,
    clients: int,
    base_file: str | None,
    warmup_s: float,
    measure_s: float,
    timeout_ms: float | None = None,
    seed: int = 0,
    collect: bool = False,
) -> SimPoint:
    """One closed-loop point: ``clients`` clients, measured over ``measure_s`` after ``warmup_s``
    of simulated time. With ``collect``, the point also holds every rule run and tick of the
    simulation (warm-up included) timed as it ran here, for :func:`~.costmodel.fit_inprocess`."""
    sim = PerfSimulation(program, topology, costs, quotas, period_s, clients, base_file, timeout_ms, seed, collect=collect)
    collecting = gc.isenabled()
    gc.disable()  # a collection inside a tick would be charged to that tick, many times over
    try:
        point = _run_point(sim, clients, warmup_s * 1000, (warmup_s + measure_s) * 1000, measure_s)
    finally:
        if collecting:
            gc.enable()
    return point if sim.samples is None else replace(point, samples=sim.samples, tick_samples=sim.tick_samples)


def _run_point(sim: PerfSimulation, clients: int, start_ms: float, end_ms: float, measure_s: float) -> SimPoint:
    """Warm up until ``start_ms`` once every client had a request answered (a configuration's
    start-up, an election say, may take up to :data:`STARTUP_MS`), or until every client completed
    :data:`WARMUP_ROUNDS` requests,
    then measure until ``end_ms`` (or until :data:`MAX_MEASURED` requests completed, once the window
    spans :data:`MIN_MEASURE_S`: fast configurations need less simulated time for the same
    precision)."""
    used_before: dict[str, float] = {}
    ticks_before: dict[str, int] = {}
    rules_before: dict[str, tuple[float, float]] = {}
    window: list[float] = []  # [start, completed at start]
    warm = WARMUP_ROUNDS * clients

    def watch(s: Simulation) -> bool:
        done = sim.completed_count()
        if not window:
            # past start-up (an election, say): every client has had a request answered
            if (s.now_ms >= start_ms and done >= clients) or done >= warm:
                used_before.update({a: b.used for a, b in sim.budgets.items()})
                ticks_before.update(sim.tick_counts)
                rules_before.update(sim.rule_cpu())
                window.extend([s.now_ms, float(done), sim.evaluate_s])
            return False
        elapsed = s.now_ms - window[0]
        return elapsed >= measure_s * 1000 or (done - window[1] >= MAX_MEASURED and elapsed >= MIN_MEASURE_S * 1000)

    result = sim.run(max_time_ms=end_ms + (end_ms - start_ms) + STARTUP_MS, drain_ms=0.0, stop_when=watch)
    if not window:
        return SimPoint(clients, 0.0, math.nan, math.nan)
    begin, end = window[0], sim.now_ms
    seconds = max(1e-6, (end - begin) / 1000)
    latencies = sorted(
        r.latency_ms
        for r in result.requests.values()
        if r.done_ms is not None and begin <= r.done_ms <= end and r.latency_ms is not None
    )
    busy = {a: (b.used - used_before.get(a, 0.0)) / seconds for a, b in sim.budgets.items()}
    ticks = {a: (n - ticks_before.get(a, 0)) / seconds for a, n in sim.tick_counts.items()}
    rules = {
        k: (cpu - rules_before.get(k, (0.0, 0.0))[0], facts - rules_before.get(k, (0.0, 0.0))[1])
        for k, (cpu, facts) in sim.rule_cpu().items()
    }
    evaluate = sim.evaluate_s - window[2]
    return SimPoint(
        clients, len(latencies) / seconds, percentile(latencies, 50), percentile(latencies, 99), busy, ticks, rules, evaluate,
        seconds,
    )
