"""The cost model: calibrated on measurements, it predicts every node's load and the maximum
throughput of any configuration.

**Calibration** (:func:`calibrate`), all in seconds of CPU on the cluster:

- the runtime's own costs - per message received, per message sent (and more per reply to a
  client: a frame groups a tick's messages by destination and relation, so a message to a node
  shares its group with the tick's others to that node while each reply is a group of its own,
  one client each), per frame sent, per tick,
  per durable log record, per fsync, and a constant per node - fitted by non-negative least
  squares on every node of every point measured so far, busy nodes weighted most
  (:func:`fit_runtime`), part by part where the nodes timed their parts: the CPU of receiving
  against what the node received, of sending against what it sent, and the rest of its CPU
  outside its evaluator against its ticks, log records and fsyncs;
- the evaluator's CPU in this process as a function of its work (:func:`fit_inprocess`): every
  rule's seconds per run, per fact in the relations of its positive atoms and per fact derived,
  and the work around the rules per tick, per fact received and per rule run, fitted on the runs
  of simulations of the measured configuration at two loads, timed as they ran. Every later simulation charges
  these, not its own timings, so the same calibration predicts the same throughput for the same
  configuration every time (timed runs varied 10-23% from one prediction to the next, the
  closed loop amplifying the timing noise). Rules a rewrite generates are fitted when first
  simulated, on the scale of the fitted ones (:func:`with_fits`);
- the evaluator's CPU on the cluster against the same evaluation in this process
  (:func:`inprocess_scales`): the measured configuration runs in the performance simulation at
  its best point's client count, and each rule's cluster CPU per request at that point over its
  in-process CPU per request gives the rule's scale (drawn towards the scale of all rules
  together when the rule did little); the evaluator's work around the rules gets its own scale.
  The simulation then charges every rule its in-process CPU on the batches it actually gets,
  scaled, so costs that grow with a tick's batch or with carried state carry over to
  configurations that batch differently. Two rounds of two simulations (pooled, as in-process
  timings and closed-loop batching vary from run to run): the second round simulates with the
  first round's scales, so its batches are close to the cluster's;
- every rule's CPU per fact derived (per evaluation for rules that derive nothing), measured on
  the cluster near the current configuration's peak (:func:`rule_costs`), and the evaluator's
  bookkeeping per tick and per fact received (:func:`fit_bookkeeping`): reported, and used to
  split a component's cost into per-request and per-tick work for placement; not charged;
- the fsync time of a durable log write;
- the *efficiency* of the measured configuration: its measured maximum throughput against its
  capacity in the model. It is reported, not applied.

**Prediction** (:func:`predict`): the configuration runs in the performance simulation
(:mod:`.perfsim`) at a few loads around the expected peak, each the median of several seeds'
runs (:data:`PREDICT_SEEDS`; :data:`SIM_SEEDS` when screening candidates); at the load where its
busiest node is most efficient, each node's CPU per request (with the ticks and frames
the simulation batches requests into) gives its capacity: its quota less its fixed cost, over its
CPU per request. The smallest capacity, and on a local cluster this machine's usable cores over
the CPU every node and client process spends per request (:func:`host_capacity`), bound the
throughput: that is the prediction. Each node's predicted load is its CPU per request at the
predicted throughput.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import nnls

from hydrodeploy.bench.measure import STOLEN
from hydrodeploy.language import ir
from hydrodeploy.optimize import perfsim
from hydrodeploy.optimize.config import rule_identity
from hydrodeploy.optimize.perfsim import SimPoint, TickCosts
from hydrodeploy.profile.counters import NodeProfile, WindowProfile
from hydrodeploy.runtime.topology import Topology

HOST_USABLE = 0.95  # share of this machine's cores a deployment can use before saturating it
SIM_SEEDS = 3  # simulations per load screening a candidate
PREDICT_SEEDS = 9  # per load of a prediction that is recorded or planned on, and of the measured configuration
SIM_LOADS = (0.25, 0.5, 1.0, 2.0)  # simulated loads, relative to the measured best point's clients
MORE_LOADS = 3  # doublings of the client count past SIM_LOADS while the capacity still rises (:func:`load_point`)
MAX_SIM_CLIENTS = 8192  # the most clients any prediction simulates (its simulation time grows with them)
PEAK_SHARE = 0.7  # points within this share of the best one measure rules near the peak
SIM_WARMUP_S = 0.3
SIM_MEASURE_S = 0.6
SCALE_ROUNDS = 2  # rounds of simulating the measured configuration that calibrate the in-process scales
SCALE_SEEDS = 2  # simulations per round, pooled


@dataclass(frozen=True)
class RuntimeFit:
    """Seconds of CPU per unit of the runtime's own work, fitted on measured nodes."""

    msg_in: float
    msg_out: float
    frame_out: float
    tick: float
    log_record: float
    fsync: float  # CPU of one fsync (the kernel's work is charged to the node)
    node: float  # cores every node uses regardless of load
    rows: int = 0
    rms_error: float = 0.0  # cores, over the fitted rows
    frame_in: float = 0.0  # per frame received (authenticating, decoding, the event loop's turn)
    reply: float = 0.0  # per message sent to a client, over a message to a node (each its own group in the frame)


def _nnls(rows: Sequence[Sequence[float]], ys: Sequence[float], weights: Sequence[float] | None = None) -> tuple[list[float], float]:
    a = np.array(rows, dtype=float)
    y = np.array(ys, dtype=float)
    w = np.sqrt(np.array(weights, dtype=float)) if weights is not None else np.ones(len(ys))
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(a / scale * w[:, None], y * w)
    coef = coef / scale
    return [float(c) for c in coef], float(np.sqrt(np.mean((a @ coef - y) ** 2)))


def _evaluate(n: NodeProfile) -> float:
    """CPU the node's evaluator spent (its rules when the node does not report tick parts)."""
    return n.parts.get("evaluate", n.rule_cpu) if n.parts else n.rule_cpu


def fit_runtime(profiles: Iterable[WindowProfile]) -> RuntimeFit:
    """Fit the runtime's costs: every node's CPU outside its evaluator against messages in and
    out, frames out and in, ticks, log records and fsyncs, plus a constant per node. Frames in
    apart from messages in: a frame costs its authentication, its decoding's setup and a turn of
    the event loop whatever it carries, so a node receiving large frames pays far less per
    message than one receiving a frame per request. Rows are weighted by the
    square of the node's saturation (the nodes near their quota decide the throughput).

    Where every node timed its receiving and sending apart (:func:`fit_runtime_parts`), each
    part is fitted on its own work; otherwise all of it together on all the work."""
    nodes = [n for profile in profiles for n in profile.nodes if n.cpu > 0]
    if len(nodes) < 2:
        raise ValueError("too few measured nodes to fit the runtime's costs")
    if all("receive" in n.parts and "send" in n.parts for n in nodes):
        return fit_runtime_parts(nodes)
    rows = [
        [n.msgs_in_per_s, n.msgs_out_per_s, n.frames_out_per_s, n.ticks_per_s, n.log_records_per_s, n.fsyncs_per_s, 1.0, n.frames_in_per_s, n.replies_per_s]
        for n in nodes
    ]  # fmt: skip
    ys = [max(0.0, n.cpu - _evaluate(n)) for n in nodes]
    coef, rms = _nnls(rows, ys, _weights(nodes))
    msg_in, msg_out, frame_out, tick, log_record, fsync, node, frame_in, reply = coef
    return RuntimeFit(msg_in, msg_out, frame_out, tick, log_record, fsync, node, len(rows), rms, frame_in, reply)


def _weights(nodes: Sequence[NodeProfile]) -> list[float]:
    return [0.05 + n.saturation**2 for n in nodes]  # busy nodes decide throughput: fit them best


def fit_runtime_parts(nodes: Sequence[NodeProfile]) -> RuntimeFit:
    """The runtime's costs fitted part by part, on nodes that timed their receiving and sending:
    receiving against messages and frames in; sending against messages, replies and frames out;
    the rest (the event loop, the sockets' reads, the durable log) against ticks, log records,
    fsyncs and a constant. Fitted together, the work a node receives, sends and ticks rises and
    falls with its load, and the fit may charge one part's cost to another's work: 130 to 145
    µs per frame received, on 2PC's base program and the calibration program, where a node then
    received at most two frames per tick; the decoupled coordinator received nine per tick and
    spent half of what that charge said outside its evaluator (22 November)."""
    weights = _weights(nodes)
    (msg_in, frame_in), _ = _nnls([[n.msgs_in_per_s, n.frames_in_per_s] for n in nodes], [n.parts["receive"] for n in nodes], weights)
    (msg_out, reply, frame_out), _ = _nnls(
        [[n.msgs_out_per_s, n.replies_per_s, n.frames_out_per_s] for n in nodes], [n.parts["send"] for n in nodes], weights
    )
    rest = [max(0.0, n.cpu - _evaluate(n) - n.parts["receive"] - n.parts["send"]) for n in nodes]
    (tick, log_record, fsync, node), _ = _nnls(
        [[n.ticks_per_s, n.log_records_per_s, n.fsyncs_per_s, 1.0] for n in nodes], rest, weights
    )
    fit = RuntimeFit(msg_in, msg_out, frame_out, tick, log_record, fsync, node, len(nodes), 0.0, frame_in, reply)
    residuals = [outside_evaluator(fit, n) - (n.cpu - _evaluate(n)) for n in nodes]
    return replace(fit, rms_error=math.sqrt(sum(r * r for r in residuals) / len(residuals)))


def outside_evaluator(fit: RuntimeFit, n: NodeProfile) -> float:
    """The node's CPU outside its evaluator by ``fit``, on the work it did (cores)."""
    return (
        fit.msg_in * n.msgs_in_per_s + fit.frame_in * n.frames_in_per_s + fit.msg_out * n.msgs_out_per_s
        + fit.reply * n.replies_per_s + fit.frame_out * n.frames_out_per_s + fit.tick * n.ticks_per_s
        + fit.log_record * n.log_records_per_s + fit.fsync * n.fsyncs_per_s + fit.node
    )  # fmt: skip


@dataclass(frozen=True)
class Calibration:
    """Everything measured that predictions rest on."""

    costs: TickCosts
    runtime: RuntimeFit
    period_s: float  # CFS period of the cluster's quotas
    efficiency: float  # measured maximum throughput / the measured configuration's modelled capacity
    modelled: float  # the measured configuration's capacity in the model
    throughput: float  # measured maximum throughput
    clients: int  # client count of the best measured point
    client_cost: float  # CPU seconds of the client processes per request (nan: not measured)
    host_cores: float | None  # cores of this machine the deployment may use (None: not local)
    base_file: str | None  # the base program (rule identities refer to it)
    measured_from: str = ""
    # the most clients a prediction simulates: as many as the sweeps measure (a configuration
    # whose cluster peaks there is predicted there), at most MAX_SIM_CLIENTS
    max_clients: int = 2048

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["costs"] = self.costs.to_json()
        return out

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Calibration:
        fields = dict(data)
        fields["costs"] = TickCosts.from_json(fields["costs"])
        fields["runtime"] = RuntimeFit(**fields["runtime"])
        return Calibration(**fields)


def effective_quotas(quotas: Mapping[str, float | None], runtime: RuntimeFit) -> dict[str, float | None]:
    """Quotas less what every node spends regardless of load."""
    return {a: None if q is None else max(q * 0.05, q - runtime.node) for a, q in quotas.items()}


def identities(program: ir.Program, base_file: str | None) -> dict[str, list[str]]:
    """The rule identities of every component's block, in order."""
    return {b.component: [rule_identity(b.component, r, base_file) for r in b.rules] for b in program.blocks}


SCALE_PRIOR = 0.02  # a rule's scale is drawn towards the common one as if it had this share of the rules' in-process CPU more


def inprocess_scales(best: WindowProfile, names: Mapping[str, Sequence[str]], point: SimPoint) -> tuple[float, dict[str, float], float]:
    """Cluster CPU per in-process CPU, from ``best`` (a measured point) and ``point`` (the same
    configuration in the performance simulation at ``best``'s clients), both per request:
    (all rules measured in both together, each such rule, the evaluator's work around the rules).
    A rule's own ratio is drawn towards the common one in proportion to how little it ran: its
    ratio is (cluster + scale * prior) / (in-process + prior), prior being :data:`SCALE_PRIOR` of
    all rules' in-process CPU."""
    completed = point.throughput * point.seconds
    if best.throughput <= 0 or completed <= 0:
        return 1.0, {}, 1.0
    cluster: dict[str, float] = {}
    around_rules = 0.0
    for node in best.nodes:
        ids = names.get(node.component, ())
        for rule in node.rules:
            if rule.number < len(ids) and rule.cpu > 0:
                cluster[ids[rule.number]] = cluster.get(ids[rule.number], 0.0) + rule.cpu / best.throughput
        if node.parts:
            around_rules += max(0.0, node.parts.get("evaluate", 0.0) - node.rule_cpu) / best.throughput
    here = {k: cpu / completed for k, (cpu, _) in point.rule_cpu.items() if cpu > 0}
    both = [k for k in cluster if k in here]
    measured = sum(cluster[k] for k in both)
    expected = sum(here[k] for k in both)
    if measured <= 0 or expected <= 0:
        return 1.0, {}, 1.0
    scale = measured / expected
    prior = SCALE_PRIOR * sum(here.values())
    per_rule = {k: (cluster[k] + scale * prior) / (here[k] + prior) for k in both}
    here_around = point.evaluate_cpu / completed - sum(here.values())
    around = around_rules / here_around if around_rules > 0 and here_around > 0 else scale
    return scale, per_rule, around


FIT_MAX_SAMPLES = 4000  # runs of one rule a fit uses (evenly spaced)
FIT_LOADS = (0.25, 1.0)  # loads, relative to the measured best point's clients, whose runs the in-process fits pool
FIT_TRIM = 0.02  # the share of runs furthest above a first fit dropped before the second (a run preempted here)


def _fit_runs(rows: Sequence[Sequence[float]], ys: Sequence[float]) -> list[float]:
    """Non-negative least squares of seconds against ``rows``, fitted twice: the second time
    without the runs the first fit underestimated most (:data:`FIT_TRIM`)."""
    if len(rows) > FIT_MAX_SAMPLES:
        step = len(rows) / FIT_MAX_SAMPLES
        picked = [int(i * step) for i in range(FIT_MAX_SAMPLES)]
        rows, ys = [rows[i] for i in picked], [ys[i] for i in picked]
    if len(rows) < 4:
        return [sum(ys) / len(ys)] + [0.0] * (len(rows[0]) - 1)
    coef, _ = _nnls(rows, ys)
    a = np.array(rows, dtype=float)
    residual = np.array(ys, dtype=float) - a @ np.array(coef)
    keep = residual <= np.quantile(residual, 1 - FIT_TRIM)
    coef, _ = _nnls(a[keep].tolist(), np.array(ys, dtype=float)[keep].tolist())
    return coef


def fit_inprocess(samples: perfsim.Samples, ticks: perfsim.TickSamples) -> tuple[dict[str, list[float]], list[float]]:
    """Each rule's CPU in this process as a function of its work - seconds per run, per fact in
    the relations of its positive atoms, per fact derived - and the evaluator's work around the
    rules per tick, per fact received and per rule run; fitted on timed runs. Simulations charged
    these (:attr:`TickCosts.rule_fit`) rather than each run's own timing give the same result
    for the same configuration every time: timings here vary by 10-20% from one simulation to
    the next, and a closed loop amplifies that into different batches."""
    fits = {
        rule: _fit_runs([[1.0, float(work), float(derived)] for work, derived, _ in runs], [s for _, _, s in runs])
        for rule, runs in samples.items()
        if rule and runs
    }
    book = _fit_runs([[1.0, float(n), float(r)] for n, r, _ in ticks], [s for _, _, s in ticks]) if ticks else [0.0, 0.0, 0.0]
    return fits, book


def with_fits(
    costs: TickCosts,
    program: ir.Program,
    topology: Topology,
    quotas: Mapping[str, float | None],
    period_s: float,
    clients: int,
    base_file: str | None,
    timeout_ms: float | None = None,
) -> TickCosts:
    """``costs`` with an in-process cost function for every rule of ``program`` (:func:`fit_inprocess`).
    Rules without one (a rewrite generated them) are timed in simulations of ``program`` at
    ``clients`` and at a quarter of them (:data:`FIT_LOADS`: at one load the closed loop may
    settle into batches of one size, and then a rule's cost per run and per fact cannot be told
    apart). Their fits are scaled by how much slower the rules already fitted ran in those
    simulations than their fits say (this process's speed drifts), so that every fit is on one scale.
    A rule that never ran there gets the median run's cost."""
    names = {k for ids in identities(program, base_file).values() for k in ids}
    missing = names - costs.rule_fit.keys()
    if not missing and costs.bookkeeping_fit:
        return costs
    samples: perfsim.Samples = {}
    ticks: perfsim.TickSamples = []
    for n in sorted({max(2, round(clients * f)) for f in FIT_LOADS}):
        run = perfsim.simulate_point(
            program, topology, costs, quotas, period_s, n, base_file, SIM_WARMUP_S, SIM_MEASURE_S, timeout_ms, collect=True
        )
        for rule, timed_runs in run.samples.items():
            samples.setdefault(rule, []).extend(timed_runs)
        ticks.extend(run.tick_samples)
    fits, book = fit_inprocess(samples, ticks)
    known = [(costs.rule_fit[k], runs) for k, runs in samples.items() if k in costs.rule_fit]
    expected = sum(perfsim.fitted_cost(fit, w, d) for fit, runs in known for w, d, _ in runs)
    timed = sum(s for _, runs in known for _, _, s in runs)
    speed = expected / timed if expected > 0 and timed > 0 else 1.0
    runs = sorted(s for r in samples.values() for _, _, s in r)
    typical = [speed * runs[len(runs) // 2] if runs else 0.0, 0.0, 0.0]
    merged = dict(costs.rule_fit)
    for name in missing:
        merged[name] = [speed * c for c in fits[name]] if name in fits else typical
    return replace(costs, rule_fit=merged, bookkeeping_fit=costs.bookkeeping_fit or [speed * c for c in book])


def _pooled(points: Sequence[SimPoint]) -> SimPoint:
    """Simulations of one configuration as one: their windows, requests and in-process CPU added up."""
    seconds = sum(p.seconds for p in points)
    completed = sum(p.throughput * p.seconds for p in points)
    rules: dict[str, tuple[float, float]] = {}
    for p in points:
        for k, (cpu, facts) in p.rule_cpu.items():
            c0, f0 = rules.get(k, (0.0, 0.0))
            rules[k] = (c0 + cpu, f0 + facts)
    return SimPoint(
        points[0].clients, completed / seconds if seconds > 0 else 0.0, math.nan, math.nan,
        rule_cpu=rules, evaluate_cpu=sum(p.evaluate_cpu for p in points), seconds=seconds,
    )  # fmt: skip


Names = Mapping[str, Sequence[str]]  # component -> rule identities of its block, in order


def rule_costs(windows: Sequence[tuple[WindowProfile, Names]]) -> tuple[dict[str, float], dict[str, float]]:
    """Measured CPU of each rule: seconds per fact derived (per evaluation for rules that derive
    nothing), over ``windows``."""
    totals: dict[str, list[float]] = {}
    for profile, names in windows:
        for node in profile.nodes:
            ids = names.get(node.component, ())
            for rule in node.rules:
                if rule.number < len(ids) and rule.calls_per_s > 0:
                    t = totals.setdefault(ids[rule.number], [0.0, 0.0, 0.0])
                    t[0] += rule.cpu
                    t[1] += rule.facts_per_s
                    t[2] += rule.calls_per_s
    per_fact = {k: cpu / facts for k, (cpu, facts, _) in totals.items() if facts > 0}
    per_call = {k: cpu / calls for k, (cpu, facts, calls) in totals.items() if facts <= 0 and calls > 0}
    return per_fact, per_call


def fit_bookkeeping(profiles: Iterable[WindowProfile]) -> tuple[float, float]:
    """The evaluator's CPU around the rules: (seconds per tick, per fact received)."""
    rows: list[list[float]] = []
    ys: list[float] = []
    weights: list[float] = []
    for profile in profiles:
        for n in profile.nodes:
            if n.parts and n.ticks_per_s > 0:
                rows.append([n.ticks_per_s, n.facts_in_per_s])
                ys.append(max(0.0, n.parts.get("evaluate", 0.0) - n.rule_cpu))
                weights.append(0.05 + n.saturation**2)
    if len(rows) < 2:
        return 0.0, 0.0
    (tick, fact_in), _ = _nnls(rows, ys, weights)
    return tick, fact_in


def telling(window: WindowProfile) -> bool:
    """Whether a window's counters may calibrate costs: something completed in it, and the
    hypervisor took at most :data:`~hydrodeploy.bench.measure.STOLEN` of this machine's CPU.
    Time the hypervisor takes is charged to whichever process was running, so a node at its quota
    seems busy doing nothing: the calibration program's front, at its quota, ticked less than
    once a second in a window in which 128 requests a second completed, and a voting broadcaster
    spent 45 ms a second outside its evaluator over one tick in a window in which none did (22
    November)."""
    return window.throughput > 0 and not window.host_steal > STOLEN


def calibrate(
    program: ir.Program,
    topology: Topology,
    quotas: Mapping[str, float | None],
    period_s: float,
    best: WindowProfile,
    current: Sequence[WindowProfile],
    history: Sequence[tuple[WindowProfile, Names]],
    base_file: str | None,
    host_cores: float | None,
    timeout_ms: float | None = None,
    measured_from: str = "",
    max_clients: int = 2048,
) -> Calibration:
    """Calibrate on the measured configuration (``program`` on ``topology``): ``best`` is its
    best point's profile, ``current`` all of its points'; the runtime's costs and the rules
    never run in it are fitted on every telling window of ``history`` (:func:`telling`). Predictions simulate at most
    ``max_clients`` clients (the most the sweeps measure; :data:`MAX_SIM_CLIENTS` at most)."""
    history = [(p, n) for p, n in history if telling(p)] or list(history)
    windows = [p for p, _ in history]
    runtime = fit_runtime(windows)
    names = identities(program, base_file)
    near_peak = [(p, names) for p in current if p.throughput >= PEAK_SHARE * best.throughput and telling(p)] or [(best, names)]
    per_fact, per_call = rule_costs(history)
    here_fact, here_call = rule_costs(near_peak)
    per_fact.update(here_fact)
    per_call.update(here_call)
    book_tick, book_fact = fit_bookkeeping(windows)
    fsyncs = [n.fsync_wall_per_s / n.fsyncs_per_s for p in windows for n in p.nodes if n.fsyncs_per_s > 0]
    costs = TickCosts(
        evaluate_scale=1.0,
        bookkeeping_scale=1.0,
        msg_in=runtime.msg_in,
        msg_out=runtime.msg_out,
        reply=runtime.reply,
        frame_out=runtime.frame_out,
        frame_in=runtime.frame_in,
        tick=runtime.tick,
        log_record=runtime.log_record,
        fsync_cpu=runtime.fsync,
        fsync_s=statistics.median(fsyncs) if fsyncs else 0.0,
        rule_fact=per_fact,
        rule_call=per_call,
        bookkeeping_tick=book_tick,
        bookkeeping_fact_in=book_fact,
    )
    eff = effective_quotas(quotas, runtime)
    costs = with_fits(costs, program, topology, eff, period_s, best.clients, base_file, timeout_ms)
    for _ in range(SCALE_ROUNDS):  # the first round's batches come from unscaled costs; the next from its scales
        points = [
            perfsim.simulate_point(
                program, topology, costs, eff, period_s, best.clients, base_file, SIM_WARMUP_S, SIM_MEASURE_S, timeout_ms, seed
            )
            for seed in range(SCALE_SEEDS)
        ]
        scale, per_rule, around = inprocess_scales(best, names, _pooled(points))
        costs = replace(costs, evaluate_scale=scale, rule_scale=per_rule, bookkeeping_scale=around)
    x = max(best.throughput, 1e-9)
    client_cost = best.client_cpu / x if not math.isnan(best.client_cpu) else math.nan
    partial = Calibration(
        costs, runtime, period_s, 1.0, math.nan, best.throughput, best.clients, client_cost, host_cores, base_file,
        measured_from, min(MAX_SIM_CLIENTS, max(best.clients, max_clients)),
    )  # fmt: skip
    loaded = load_point(partial, program, topology, quotas, best.clients, timeout_ms, seeds=PREDICT_SEEDS)
    cap = capacity(partial, loaded, quotas)[0]
    efficiency = best.throughput / cap if cap > 0 else math.nan
    return replace(partial, efficiency=efficiency, modelled=cap)


def background_cores(best: WindowProfile, cores: int) -> float:
    """Cores other programs on this machine used during ``best`` (busy cores minus the
    deployment's own)."""
    own = best.own_cpu if not math.isnan(best.own_cpu) else sum(n.cpu for n in best.nodes)
    return max(0.0, best.host_busy * cores - own)


def host_capacity(best: WindowProfile, cores: int) -> float:
    """Cores of this machine a deployment may use: :data:`HOST_USABLE` of them. What other programs
    use is not subtracted: the scheduler shares the cores fairly among runnable processes, and a
    deployment of tens of node processes gets most of them however busy a few other programs are
    (measured: a 42-node configuration reached 99% of this machine while other programs had used
    a whole core during the base program's measurement)."""
    del best  # the background is reported (:func:`background_cores`), not subtracted
    return cores * HOST_USABLE


# ---- prediction -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    throughput: float  # predicted maximum throughput (corrected, capped by the host)
    bound: str  # the node, or "host CPU", that sets it
    machines: int
    clients: int  # client count of the predicted best point
    p50_ms: float
    p99_ms: float
    loads: dict[str, float] = field(default_factory=dict)  # predicted cores of every node at the maximum
    curve: list[tuple[int, float, float, float]] = field(default_factory=list)  # (clients, throughput, p50, p99)
    modelled: float = math.nan  # the simulation's maximum, before the host's cap
    host_throughput: float | None = None  # what the host's cores allow (None: not a local cluster)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Prediction:
        fields = dict(data)
        fields["curve"] = [tuple(c) for c in fields.get("curve", [])]
        return Prediction(**fields)


def _median_run(points: Sequence[SimPoint], quotas: Mapping[str, float | None]) -> SimPoint:
    """The run whose capacity (:func:`_capacity_of`) is the median of ``points`` (the higher of the
    two middle ones). A closed loop of throttled nodes is chaotic: of one configuration's runs at
    one load, one may collapse into timeouts and an election while the others do not. The mean of
    such runs moved the predicted capacity of one calibration by up to 54% from one seed set to the
    next (Paxos, 22 November); the median of nine moved it by 6%."""
    ranked = sorted(points, key=lambda p: _capacity_of(p, quotas))
    return ranked[len(ranked) // 2]


def _capacity_of(point: SimPoint, quotas: Mapping[str, float | None]) -> float:
    """The throughput at which a simulated point's busiest node (per quota) would saturate (0: a
    point whose nodes ran nothing in its window tells nothing)."""
    if point.throughput <= 0:
        return 0.0
    worst = max((b / (quotas.get(a) or 1.0) for a, b in point.busy.items()), default=0.0)
    return point.throughput / worst if worst > 0 else 0.0


def load_point(
    calibration: Calibration,
    program: ir.Program,
    topology: Topology,
    quotas: Mapping[str, float | None],
    clients: int,
    timeout_ms: float | None = None,
    seeds: int = SIM_SEEDS,
    loads: Sequence[float] = SIM_LOADS,
) -> SimPoint:
    """The configuration in the performance simulation at its best load: ``clients`` times each
    of ``loads`` closed-loop clients, each the median of ``seeds`` runs (:func:`_median_run`:
    batching in a closed loop is chaotic, one run may move requests in large waves, another not);
    the load with the highest capacity (beyond it, requests only queue, or move in convoys).

    ``clients`` is a guess (the measured best point's, scaled by an expected gain). By Little's law
    a configuration peaks near the client count at which its capacity has the latency the measured
    configuration had at its peak (the calibration's clients over its throughput), and a node at
    its quota takes larger batches as requests queue, so its CPU per request falls with more
    clients: while the best load is the highest tried and lies below twice that client count (the
    top of :data:`SIM_LOADS` around it), twice as many clients are tried in turn, at most
    :data:`MORE_LOADS` times. (A Paxos step whose guess was 93 clients was predicted at 3,449
    requests/s by loads up to 186; the cluster measured 4,528 at 256.)"""
    eff = effective_quotas(quotas, calibration.runtime)
    costs = with_fits(calibration.costs, program, topology, eff, calibration.period_s, clients, calibration.base_file, timeout_ms)

    def median_at(n: int) -> SimPoint:
        runs = [
            perfsim.simulate_point(
                program, topology, costs, eff, calibration.period_s, n, calibration.base_file,
                SIM_WARMUP_S, SIM_MEASURE_S, timeout_ms, seed,
            )
            for seed in range(seeds)
        ]
        return _median_run(runs, eff)

    most = calibration.max_clients
    counts = sorted({min(most, max(4, round(clients * factor))) for factor in loads})
    points = [median_at(n) for n in counts]
    best = max(points, key=lambda p: _capacity_of(p, eff))  # the first of equals: the fewest clients
    # the measured configuration's peak latency: the same for the measured configuration's own
    # capacity (:attr:`Calibration.modelled`) and every candidate's, so that both extend alike
    latency = calibration.clients / max(calibration.throughput, 1e-9)
    for _ in range(MORE_LOADS):
        top = counts[-1]
        if best.clients != top or top >= most or top >= 2 * latency * _capacity_of(best, eff):
            break
        counts.append(min(most, 2 * top))
        point = median_at(counts[-1])
        if _capacity_of(point, eff) > _capacity_of(best, eff):
            best = point
    return best


def capacity(
    calibration: Calibration, point: SimPoint, quotas: Mapping[str, float | None]
) -> tuple[float, str, float | None, dict[str, float]]:
    """(maximum throughput, what bounds it, the host's bound, CPU per request of each node) from
    a simulated point: each node saturates at its quota (less its fixed cost) divided by its CPU
    per request; on a local cluster the host's cores left over bound all of them together."""
    if point.throughput <= 0:
        return 0.0, "nothing completed in the simulation", None, {}
    costs = {a: b / point.throughput for a, b in point.busy.items()}
    fixed = calibration.runtime.node
    caps = {a: max(1e-9, (quotas.get(a) or 1.0) - fixed) / c for a, c in costs.items() if c > 0}
    if not caps:
        return 0.0, "no node ran in the simulation's window", None, costs
    bound = min(caps, key=lambda a: caps[a])
    throughput = caps[bound]
    host: float | None = None
    if calibration.host_cores is not None:
        per_request = sum(costs.values()) + (0.0 if math.isnan(calibration.client_cost) else calibration.client_cost)
        spare = calibration.host_cores - fixed * len(costs)
        host = max(0.0, spare) / per_request if per_request > 0 else math.inf
        if host < throughput:
            throughput, bound = host, "host CPU"
    return throughput, bound, host, costs


def predict(
    calibration: Calibration,
    program: ir.Program,
    topology: Topology,
    quotas: Mapping[str, float | None],
    around: int | None = None,
    timeout_ms: float | None = None,
    seeds: int = PREDICT_SEEDS,
) -> Prediction:
    """Predict the configuration's maximum throughput: its capacity (:func:`capacity`) at its
    best load in the performance simulation (``seeds`` runs per load; fewer screen candidates)."""
    point = load_point(calibration, program, topology, quotas, around or calibration.clients, timeout_ms, seeds=seeds)
    cap, bound, host, costs = capacity(calibration, point, quotas)
    throughput = cap
    return Prediction(
        throughput=throughput,
        bound=bound,
        machines=len(topology.addresses()),
        clients=point.clients,
        p50_ms=point.p50_ms,
        p99_ms=point.p99_ms,
        loads={a: c * throughput + calibration.runtime.node for a, c in costs.items()},
        curve=[(point.clients, point.throughput, point.p50_ms, point.p99_ms)],
        modelled=cap,
        host_throughput=host,
    )
