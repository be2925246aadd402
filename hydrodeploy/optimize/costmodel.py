"""The cost model: calibrated on measurements, it predicts every node's load, the throughput-
latency curve and the maximum throughput of any configuration.

**Calibration** (:func:`calibrate`), all in seconds of CPU on the cluster:

- the runtime's own costs — per message received, per message sent, per frame sent, per tick,
  per durable log record, and a constant per node — fitted by non-negative least squares on every
  node of every point measured so far (:func:`fit_runtime`): each node's CPU minus what its
  evaluator spent, against what the node received, sent and ticked;
- the cost of evaluating the program's rules: the measured evaluator CPU per request against the
  evaluator CPU the same rules take in this process on the same batches (the performance
  simulation of the measured configuration at its best client count) — one scale factor;
- the fsync time of a durable log write, and the message delay;
- finally, the model's own error on the measured configuration: its predicted maximum against
  the measured one (:attr:`Calibration.reproduction`). It is reported, not applied: the model's
  errors differ from one configuration to the next (how messages happen to be batched into ticks
  on the cluster), so a factor fitted on one would not carry over to another.

**Prediction** (:func:`predict`): the configuration runs in the performance simulation
(:mod:`.perfsim`) over a sweep of client counts, like a measured sweep; the best point gives the
maximum throughput, each node's CPU there (its load) and the latency. On a local cluster the
host's cores are shared by every node and client process: the prediction is capped by the cores
other programs leave free divided by the CPU all processes spend per request.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import nnls

from hydrodeploy.language import ir
from hydrodeploy.optimize import perfsim
from hydrodeploy.optimize.config import rule_identity
from hydrodeploy.optimize.perfsim import SimPoint, TickCosts
from hydrodeploy.profile.counters import NodeProfile, WindowProfile
from hydrodeploy.runtime.topology import Topology

HOST_USABLE = 0.95  # share of this machine's cores a deployment can use before saturating it
SIM_WARMUP_S = 0.3
SIM_MEASURE_S = 0.6


@dataclass(frozen=True)
class RuntimeFit:
    """Seconds of CPU per unit of the runtime's own work, fitted on measured nodes."""

    msg_in: float
    msg_out: float
    frame_out: float
    tick: float
    log_record: float
    node: float  # cores every node uses regardless of load
    rows: int = 0
    rms_error: float = 0.0  # cores, over the fitted rows


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
    out, frames out, ticks and log records, plus a constant per node; rows are weighted by the
    square of the node's saturation (the nodes near their quota decide the throughput)."""
    rows: list[list[float]] = []
    ys: list[float] = []
    weights: list[float] = []
    for profile in profiles:
        for n in profile.nodes:
            if n.cpu <= 0:
                continue
            rows.append([n.msgs_in_per_s, n.msgs_out_per_s, n.frames_out_per_s, n.ticks_per_s, n.log_records_per_s, 1.0])
            ys.append(max(0.0, n.cpu - _evaluate(n)))
            weights.append(0.05 + n.saturation**2)  # busy nodes decide throughput: fit them best
    if len(rows) < 2:
        raise ValueError("too few measured nodes to fit the runtime's costs")
    coef, rms = _nnls(rows, ys, weights)
    msg_in, msg_out, frame_out, tick, log_record, node = coef
    return RuntimeFit(msg_in, msg_out, frame_out, tick, log_record, node, rows=len(rows), rms_error=rms)


@dataclass(frozen=True)
class Calibration:
    """Everything measured that predictions rest on."""

    costs: TickCosts
    runtime: RuntimeFit
    period_s: float  # CFS period of the cluster's quotas
    reproduction: float  # measured / modelled maximum throughput of the measured configuration
    modelled: float  # the model's maximum for the measured configuration
    throughput: float  # measured maximum throughput
    clients: int  # client count of the best measured point
    client_cost: float  # CPU seconds of the client processes per request (nan: not measured)
    host_cores: float | None  # cores of this machine the deployment may use (None: not local)
    base_file: str | None  # the base program (rule identities refer to it)
    measured_from: str = ""

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


def sweep_counts(around: int, factor: float = 2.0, high: int = 4096) -> list[int]:
    """Client counts for a simulated sweep: geometric, from a quarter of ``around`` up."""
    out = []
    n = max(1, around // 4)
    while n <= high:
        out.append(n)
        n = max(n + 1, round(n * factor))
    return out


def identities(program: ir.Program, base_file: str | None) -> dict[str, list[str]]:
    """The rule identities of every component's block, in order."""
    return {b.component: [rule_identity(b.component, r, base_file) for r in b.rules] for b in program.blocks}


def evaluate_scale(best: WindowProfile, names: Mapping[str, Sequence[str]], point: SimPoint) -> float:
    """Cluster CPU per in-process CPU of the same evaluation. The in-process CPU per fact of each
    rule (``point``, a simulation of the same configuration) predicts what the rules would cost
    in this process for the facts they derived on the cluster; the simulation's ratio of whole
    ticks to rules adds the evaluator's bookkeeping; the cluster's evaluator CPU (rules and
    bookkeeping) divided by that is the scale."""
    measured = 0.0
    expected = 0.0
    for node in best.nodes:
        ids = names.get(node.component, ())
        evaluate = _evaluate(node)
        counted = 0.0
        for rule in node.rules:
            if rule.number >= len(ids):
                continue
            sim_cpu, sim_facts = point.rule_cpu.get(ids[rule.number], (0.0, 0.0))
            if sim_facts <= 0 or rule.facts_per_s <= 0:
                continue
            counted += rule.cpu
            expected += sim_cpu / sim_facts * rule.facts_per_s
        if node.rule_cpu > 0:
            measured += evaluate * counted / node.rule_cpu
    sim_rules = sum(cpu for cpu, _ in point.rule_cpu.values())
    bookkeeping = point.evaluate_cpu / sim_rules if sim_rules > 0 and point.evaluate_cpu > sim_rules else 1.0
    expected *= bookkeeping
    return measured / expected if expected > 0 else 1.0


def calibrate(
    program: ir.Program,
    topology: Topology,
    quotas: Mapping[str, float | None],
    period_s: float,
    best: WindowProfile,
    history: Sequence[WindowProfile],
    base_file: str | None,
    host_cores: float | None,
    timeout_ms: float | None = None,
    slo_p99_ms: float | None = None,
    measured_from: str = "",
) -> Calibration:
    """Calibrate on the measured configuration (``program`` on ``topology``) whose best point's
    profile is ``best``; the runtime's costs are fitted on every window of ``history``."""
    runtime = fit_runtime(history)
    fsyncs = [n.fsync_wall_per_s / n.fsyncs_per_s for p in history for n in p.nodes if n.fsyncs_per_s > 0]
    costs = TickCosts(
        evaluate_scale=1.0,
        msg_in=runtime.msg_in,
        msg_out=runtime.msg_out,
        frame_out=runtime.frame_out,
        tick=runtime.tick,
        log_record=runtime.log_record,
        fsync_s=statistics.median(fsyncs) if fsyncs else 0.0,
    )
    eff = effective_quotas(quotas, runtime)
    point = perfsim.simulate_point(
        program, topology, costs, eff, period_s, best.clients, base_file, SIM_WARMUP_S, SIM_MEASURE_S, timeout_ms
    )
    costs = replace(costs, evaluate_scale=evaluate_scale(best, identities(program, base_file), point))
    x = max(best.throughput, 1e-9)
    client_cost = best.client_cpu / x if not math.isnan(best.client_cpu) else math.nan
    partial = Calibration(
        costs, runtime, period_s, 1.0, math.nan, best.throughput, best.clients, client_cost, host_cores, base_file,
        measured_from,
    )  # fmt: skip
    modelled = predict(partial, program, topology, quotas, around=best.clients, slo_p99_ms=slo_p99_ms, timeout_ms=timeout_ms)
    raw = modelled.modelled
    return replace(partial, reproduction=best.throughput / raw if raw > 0 else math.nan, modelled=raw)


def host_capacity(best: WindowProfile, cores: int) -> float:
    """Cores of this machine a deployment may use: :data:`HOST_USABLE` of them, less what other
    programs used during ``best`` (busy cores minus the deployment's own)."""
    busy = best.host_busy * cores
    own = best.own_cpu if not math.isnan(best.own_cpu) else sum(n.cpu for n in best.nodes)
    background = max(0.0, busy - own)
    return max(0.1, cores * HOST_USABLE - background)


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


def predict(
    calibration: Calibration,
    program: ir.Program,
    topology: Topology,
    quotas: Mapping[str, float | None],
    around: int | None = None,
    slo_p99_ms: float | None = None,
    timeout_ms: float | None = None,
    counts: Sequence[int] | None = None,
) -> Prediction:
    """Predict the configuration's throughput-latency curve and maximum."""
    eff = effective_quotas(quotas, calibration.runtime)
    counts = list(counts) if counts is not None else sweep_counts(around or calibration.clients)
    points = perfsim.sweep(
        program, topology, calibration.costs, eff, calibration.period_s, counts, calibration.base_file,
        SIM_WARMUP_S, SIM_MEASURE_S, timeout_ms, slo_p99_ms,
    )  # fmt: skip
    within = [p for p in points if slo_p99_ms is None or p.p99_ms <= slo_p99_ms] or points[:1]
    best: SimPoint = max(within, key=lambda p: p.throughput)
    throughput = best.throughput
    loads = dict(best.busy)
    bound = max(loads, key=lambda a: loads[a] / (quotas.get(a) or 1.0)) if loads else ""
    host: float | None = None
    if calibration.host_cores is not None and best.throughput > 0:
        fixed = calibration.runtime.node * len(loads)
        per_request = sum(loads.values()) / best.throughput
        if not math.isnan(calibration.client_cost):
            per_request += calibration.client_cost
        host = max(0.0, calibration.host_cores - fixed) / per_request if per_request > 0 else math.inf
        if host < throughput:
            throughput, bound = host, "host CPU"
    scale = throughput / best.throughput if best.throughput > 0 else 0.0
    return Prediction(
        throughput=throughput,
        bound=bound,
        machines=len(topology.addresses()),
        clients=best.clients,
        p50_ms=best.p50_ms,
        p99_ms=best.p99_ms,
        loads={a: b * scale + calibration.runtime.node for a, b in loads.items()},
        curve=[(p.clients, p.throughput, p.p50_ms, p.p99_ms) for p in points],
        modelled=best.throughput,
        host_throughput=host,
    )
