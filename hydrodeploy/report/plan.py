"""Capacity plans: the cheapest configuration predicted to sustain a throughput.

From an analyze run's files alone: the cost model is calibrated on the last kept iteration (as
the loop calibrates it), every structure the run kept (its decouplings) is placed with the fewest
machines that sustain the target throughput (MILP), each placement is predicted with the
performance simulation, and the cheapest that meets the target (and the p99 bound, in
simulation) wins. Machines are the run's own cluster machine by default, or a profile of
``clusters/machines.yaml``; a node uses at most one core of any machine.

The plan is written as a runnable experiment: ``program.ded`` with ``program.topology.json``, the
chain of rewrites, a cluster file and ``workload.yaml`` (the run's workload, this program), so that
``hydrodeploy run PLAN/workload.yaml`` measures it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hydrodeploy.bench.measure import drift_flagged, drift_moved
from hydrodeploy.bench.workload import WorkloadSpec
from hydrodeploy.deploy.local import cfs_period_s, pack_cpus
from hydrodeploy.errors import HydrodeployError
from hydrodeploy.language import ir, load_program, print_program
from hydrodeploy.optimize.choose import cheapest
from hydrodeploy.optimize.config import Configuration, derive
from hydrodeploy.optimize.costmodel import (
    Calibration,
    calibrate,
    host_capacity,
    identities,
    predict,
)
from hydrodeploy.optimize.evaluate import EvaluationError, structure_costs
from hydrodeploy.optimize.loop import CALIBRATION_PROGRAM, load_profiles
from hydrodeploy.profile.counters import WindowProfile
from hydrodeploy.specfile import load_model

CATALOG = Path(__file__).resolve().parents[2] / "clusters" / "machines.yaml"
MAX_ROUNDS = 4  # placements tried when the full prediction finds one short of the target
MAX_RAISES, RAISE = 8, 1.05  # a placement for 5% more, up to eight times, when the same one is found


class PlanError(HydrodeployError):
    """A capacity plan that cannot be made as asked."""


class MachineProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    vcpus: float = Field(gt=0)
    price_per_hour: float | None = Field(default=None, ge=0)
    speed: float = Field(default=1.0, gt=0)


class MachineCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    machines: dict[str, MachineProfile]


@dataclass(frozen=True)
class Machine:
    name: str
    cores: float  # cores one node may use (of this machine's speed, in the run's machine's cores)
    price_per_hour: float | None
    note: str


@dataclass
class Plan:
    throughput: float  # the target
    p99_ms: float | None
    machine: Machine
    config: Configuration
    components: list[dict[str, Any]]  # component, instances, partitions, machines
    machines: int
    cost_per_hour: float | None
    predicted_throughput: float
    predicted_p99_ms: float
    bound: str
    rests_on: list[str] = field(default_factory=list)
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    measured_in: int | None = None  # the iteration of the run that measured it (None: predicted by the model)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"] = self.config.to_json()
        out["steps"] = [str(s) for s in self.config.steps()]
        return out

    def render(self) -> str:
        how = "predicted" if self.measured_in is None else "measured"
        lines = [
            f"cheapest configuration {how} to sustain {self.throughput:,.0f} requests/s"
            + (f" with p99 <= {self.p99_ms:g} ms" if self.p99_ms is not None else "")
            + f" on {self.machine.name} machines:",
            "",
            f"  {'component':<34}{'instances':>10}{'partitions':>11}{'machines':>10}",
        ]
        for c in self.components:
            lines.append(f"  {c['component']:<34}{c['instances']:>10}{c['partitions']:>11}{c['machines']:>10}")
        cost = "unknown (no price for this machine)" if self.cost_per_hour is None else f"${self.cost_per_hour:,.2f} per hour"
        lines += [
            f"  {'total':<34}{'':>10}{'':>11}{self.machines:>10}",
            "",
            f"cost: {cost}",
            (
                f"predicted maximum throughput of this configuration: {self.predicted_throughput:,.0f} requests/s "
                f"(bound by {self.bound}); simulated p99 near it: {self.predicted_p99_ms:.1f} ms"
                if self.measured_in is None
                else f"measured maximum throughput of this configuration: {self.predicted_throughput:,.0f} requests/s "
                f"(iteration {self.measured_in} of the run, p99 {self.predicted_p99_ms:.1f} ms there); no configuration "
                "the model predicts to sustain the target takes fewer machines"
            ),
            f"rewrites: {self.config.describe()}",
            "",
            "this rests on:",
        ]
        lines += [f"  - {r}" for r in self.rests_on]
        return "\n".join(lines)


def machine_for(run_cluster: Mapping[str, Any], name: str | None, catalog: Path = CATALOG) -> Machine:
    """The run's own cluster machine (``name`` None), or a profile of the catalog."""
    if name is None:
        kind = run_cluster.get("kind", "local")
        spec_machine = run_cluster.get("machine") or {}
        if kind == "local":
            cores = spec_machine.get("cpus")
            price = spec_machine.get("price_per_hour")
            label = f"{run_cluster.get('name', 'local')} ({cores:g} cores each)" if cores else run_cluster.get("name", "local")
            return Machine(label, float(cores) if cores else 1.0, price, "the run's own emulated machines")
        price = run_cluster.get("price_per_hour") or spec_machine.get("price_per_hour")
        return Machine(str(run_cluster.get("machine_type", run_cluster.get("name", kind))), 1.0, price, "the run's own machines")
    try:
        entries = load_model(catalog, MachineCatalog).machines
    except (OSError, ValidationError) as exc:
        raise PlanError(f"{catalog}: cannot read machine profiles: {exc}") from None
    profile = entries.get(name)
    if profile is None:
        raise PlanError(f"no machine profile '{name}' in {catalog} (known: {', '.join(sorted(entries))})")
    note = "one node per machine uses one core"
    if profile.speed == 1.0:
        note += "; its core is assumed as fast as a core of the machine the costs were measured on"
    return Machine(name, min(1.0, profile.vcpus) * profile.speed, profile.price_per_hour, note)


@dataclass
class _Run:
    path: Path
    workload: WorkloadSpec
    cluster: dict[str, Any]
    base: ir.Program
    iterations: list[dict[str, Any]]

    @property
    def kept(self) -> list[dict[str, Any]]:
        """The kept, measured iterations, in order (the last: what the plan is calibrated on)."""
        return [i for i in self.iterations if i.get("kept") and i.get("status") == "measured"]


def _load_run(path: Path) -> _Run:
    spec_file = path / "spec.yaml"
    base_file = path / "iterations" / "00" / "program.ded"
    if not spec_file.exists() or not base_file.exists():
        raise PlanError(f"{path}: not a run directory of hydrodeploy analyze (no spec.yaml or iterations/00/program.ded)")
    spec = yaml.safe_load(spec_file.read_text())
    try:
        workload = WorkloadSpec.model_validate(spec["workload"])
    except (KeyError, ValidationError) as exc:
        raise PlanError(f"{spec_file}: cannot read the workload: {exc}") from None
    its = [json.loads(p.read_text()) for p in sorted((path / "iterations").glob("*/iteration.json"))]
    run = _Run(path, workload, dict(spec.get("cluster") or {}), load_program(str(base_file)), its)
    if not run.kept:
        raise PlanError(f"{path}: no measured iteration to plan from (run or resume the analysis first)")
    return run


def _calibrated_packed(run: _Run) -> bool:
    """Whether the deployment the plan's costs were measured on was packed onto CPUs."""
    machine = run.cluster.get("machine") or {}
    quota = machine.get("cpus")
    if run.cluster.get("kind", "local") != "local" or quota is None or not machine.get("pack", True):
        return False
    final = run.kept[-1]
    return pack_cpus([float(quota)] * int(final.get("machines", 0))) is not None


def _calibration(run: _Run) -> tuple[Calibration, dict[str, Any], WindowProfile]:
    final = run.kept[-1]
    program, topology = derive(run.base, Configuration.from_json(final["config"]))
    folder = run.path / "iterations" / f"{final['index']:02d}" / "profiles"
    profiles = load_profiles(folder)
    best = next((p for p in profiles if p.point == final["measured"]["point"]), None)
    if best is None:
        raise PlanError(f"{folder}: the best point's profile is missing")
    names = identities(load_program(str(CALIBRATION_PROGRAM)), None)
    history: list[tuple[WindowProfile, Mapping[str, Any]]] = [
        (p, names) for p in load_profiles(run.path / "calibration" / "profiles")
    ]
    for it in run.iterations:
        if it.get("status") == "measured":
            prog, _ = derive(run.base, Configuration.from_json(it["config"]))
            ids = identities(prog, run.base.path)
            history += [(p, ids) for p in load_profiles(run.path / "iterations" / f"{it['index']:02d}" / "profiles")]
    local = run.cluster.get("kind", "local") == "local"
    quota = (run.cluster.get("machine") or {}).get("cpus") if local else None
    period = cfs_period_s(quota, (run.cluster.get("machine") or {}).get("cfs_period_us") or 10_000)
    host = host_capacity(best, os.cpu_count() or 1) if local else None
    quotas = {a: quota for _, a, _ in topology.addresses()}
    calibration = calibrate(
        program, topology, quotas, period, best, profiles, history, run.base.path, host,
        run.workload.clients.timeout_ms, measured_from=f"iteration {final['index']}, point {best.point}",
        max_clients=max(run.workload.analyze_sweep().counts()),
    )  # fmt: skip
    return calibration, final, best


def make_plan(path: Path, throughput: float, p99_ms: float | None = None, machine_name: str | None = None) -> Plan:
    if throughput <= 0:
        raise PlanError("the target throughput must be positive")
    run = _load_run(path)
    machine = machine_for(run.cluster, machine_name)
    calibration, final, best = _calibration(run)
    if machine_name is not None:
        calibration = replace(calibration, host_cores=None)  # separate machines: no shared host
    timeout = run.workload.clients.timeout_ms
    clients = max(8, calibration.clients)
    need = throughput
    seen: set[str] = set()
    options: list[tuple[Plan, float]] = []
    alternatives: list[dict[str, Any]] = []
    for it in run.kept:
        structure = Configuration.from_json(it["config"]).structure()
        if structure.steps_text() in seen:
            continue
        seen.add(structure.steps_text())
        try:
            costs = structure_costs(run.base, structure, calibration, machine.cores, clients, timeout)
        except EvaluationError as exc:
            alternatives.append({"structure": structure.describe(), "error": str(exc)})
            continue
        placement = cheapest(costs.terms, need, calibration.host_cores, costs.host_cost, calibration.runtime.node)
        if placement.status != "optimal":
            alternatives.append(
                {"structure": structure.describe(), "error": f"cannot sustain it: {placement.bound} caps at {placement.throughput:,.0f} requests/s"}
            )
            continue
        parts = costs.partitions()
        aim = need
        for _ in range(MAX_ROUNDS):
            config = costs.configuration(placement.counts)
            program, topology = derive(run.base, config)
            quotas = {a: machine.cores for _, a, _ in topology.addresses()}
            around = int(max(8, calibration.clients * min(4.0, max(0.25, throughput / best.throughput))))
            prediction = predict(calibration, program, topology, quotas, around=around, timeout_ms=timeout)
            if prediction.throughput >= throughput or not parts:
                break
            # the full prediction falls short of the placement's: place again for proportionally
            # more, and for more still while the linear model finds the same machines enough
            aim *= throughput / max(prediction.throughput, 1e-9) * 1.02
            again = cheapest(costs.terms, aim, calibration.host_cores, costs.host_cost, calibration.runtime.node)
            for _ in range(MAX_RAISES):
                if again.status != "optimal" or again.counts != placement.counts:
                    break
                aim *= RAISE
                again = cheapest(costs.terms, aim, calibration.host_cores, costs.host_cost, calibration.runtime.node)
            if again.status != "optimal" or again.counts == placement.counts:
                break
            placement = again
        meets = prediction.throughput >= throughput and (p99_ms is None or prediction.p99_ms <= p99_ms)
        rows = []
        for c, n in _per_component(topology).items():
            instances = next((t.instances for t in costs.terms if t.name == c), n)
            rows.append({"component": c, "instances": instances, "partitions": max(1, n // max(1, instances)), "machines": n})
        total = len(topology.addresses())
        cost = None if machine.price_per_hour is None else machine.price_per_hour * total
        plan = Plan(
            throughput, p99_ms, machine, config, rows, total, cost, prediction.throughput, prediction.p99_ms,
            prediction.bound,
        )  # fmt: skip
        alternatives.append(
            {"structure": structure.describe(), "machines": total, "predicted_throughput": prediction.throughput,
             "meets_target": meets}
        )  # fmt: skip
        if meets:
            options.append((plan, prediction.throughput))
    if machine_name is None:  # on the machines the run measured on, its measurements stand as they are
        options += _measured_options(run, machine, throughput, p99_ms, alternatives)
    if not options:
        reasons = "; ".join(f"{a['structure']}: {a.get('error') or 'predicted ' + format(a['predicted_throughput'], ',.0f')}" for a in alternatives)
        raise PlanError(f"no configuration of this run is predicted to sustain {throughput:,.0f} requests/s ({reasons})")
    plan = min(options, key=lambda o: (o[0].machines, -o[1]))[0]
    plan.alternatives = alternatives
    rt = calibration.runtime
    plan.rests_on = [
        f"the run {path}: {run.workload.name}, cluster {run.cluster.get('name', '?')}; costs calibrated on "
        f"{calibration.measured_from} ({best.throughput:,.0f} requests/s at {best.clients} clients)",
        f"{rt.rows} node measurements fitted: per message in {rt.msg_in * 1e6:.2f} µs, out {rt.msg_out * 1e6:.2f} µs (to a client "
        f"{rt.reply * 1e6:.2f} µs more), "
        f"per frame out {rt.frame_out * 1e6:.1f} µs, in {rt.frame_in * 1e6:.1f} µs, per tick {rt.tick * 1e6:.1f} µs, per fsync {rt.fsync * 1e6:.1f} µs, "
        f"{rt.node:.4f} cores per node at rest",
        f"{len(calibration.costs.rule_scale)} rules' CPU on the cluster against the same rules in this process "
        f"(others scaled by {calibration.costs.evaluate_scale:.2f}x): the simulation charges each rule its CPU "
        "here on the simulated batches, scaled",
        f"iteration {final['index']} reached {calibration.efficiency:.0%} of its modelled capacity",
        *_track_record(run),
        f"machines: {machine.note}" + ("" if calibration.host_cores is None else f"; cores of this host the deployment may use: {calibration.host_cores:.2f}"),
    ]
    return plan


def _measured_options(
    run: _Run, machine: Machine, throughput: float, p99_ms: float | None, alternatives: list[dict[str, Any]]
) -> list[tuple[Plan, float]]:
    """The run's kept configurations that were measured to sustain the target, as plans: the
    model can be pessimistic about a configuration the run measured (2PC's final configuration:
    10,794 requests/s measured, 8,342 in the model), and a measurement on the same machines is
    better evidence than a prediction."""
    out: list[tuple[Plan, float]] = []
    for it in run.kept:
        measured = it.get("measured") or {}
        peak = float(measured.get("max_throughput") or 0.0)
        p99 = float(measured.get("p99_ms") or math.nan)
        if peak < throughput or (p99_ms is not None and not p99 <= p99_ms):
            continue
        config = Configuration.from_json(it["config"])
        _, topology = derive(run.base, config)
        counts = config.counts()
        rows = [
            {"component": c, "instances": max(1, n // counts.get(c, 1)), "partitions": counts.get(c, 1), "machines": n}
            for c, n in _per_component(topology).items()
        ]
        total = len(topology.addresses())
        cost = None if machine.price_per_hour is None else machine.price_per_hour * total
        plan = Plan(throughput, p99_ms, machine, config, rows, total, cost, peak, p99, "measured", measured_in=int(it["index"]))
        alternatives.append(
            {"structure": config.describe(), "machines": total, "measured_throughput": peak, "iteration": it["index"],
             "meets_target": True}
        )  # fmt: skip
        out.append((plan, peak))
    return out


def _track_record(run: _Run) -> list[str]:
    """How the run's own predictions compared with what its kept iterations then measured."""
    errors = [
        (it["index"], it["measured"]["prediction_error"], it["measured"].get("drift"), it["measured"].get("paired_prediction_error"))
        for it in run.kept
        if math.isfinite((it.get("measured") or {}).get("prediction_error", math.nan))
    ]
    if not errors:
        return []

    def one(index: int, error: float, drift: float | None, paired: float | None) -> str:
        moved = f" measured while the deployment {drift_moved(drift)}" if drift_flagged(drift) else ""
        check = "" if paired is None else f" and {paired:+.0%} deployed back to back with its parent"
        return f"{error:+.0%} (iteration {index}){check}{moved}"

    listed = ", ".join(one(*e) for e in errors)
    return [f"this run's predictions against what its kept iterations measured: {listed}"]


def _per_component(topology: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c, _, _ in topology.addresses():
        out[c] = out.get(c, 0) + 1
    return out


def write_plan(plan: Plan, run: Path, out: Path | None = None) -> Path:
    """Write the plan as a runnable experiment; the directory."""
    data = _load_run(run)
    folder = out or run / "plans" / f"{time.strftime('%Y%m%d-%H%M%S')}_{plan.throughput:.0f}"
    folder.mkdir(parents=True, exist_ok=True)
    program, topology = derive(data.base, plan.config)
    (folder / "program.ded").write_text(print_program(program))
    counts = topology.partition_counts()
    if counts:
        (folder / "program.topology.json").write_text(json.dumps({"partitions": counts}, indent=2, sort_keys=True) + "\n")
    (folder / "steps.txt").write_text(plan.config.steps_text() or "# the base program\n")
    cluster = dict(data.cluster)
    if cluster.get("kind", "local") == "local":
        cluster["name"] = f"{cluster.get('name', 'local')}-plan"
        cluster.setdefault("machine", {})
        cluster["machine"] = {**cluster["machine"], "cpus": None if math.isinf(plan.machine.cores) else plan.machine.cores}
        # the planned configuration runs packed onto CPUs as the measurement it rests on did:
        # messages between processes on one CPU cost half the CPU (deploy/local.py), which the
        # calibrated costs do not carry over
        cluster["machine"]["pack"] = _calibrated_packed(data)
    (folder / "cluster.yaml").write_text(yaml.safe_dump(cluster, sort_keys=False))
    workload = data.workload.model_dump()
    workload["name"] = f"{data.workload.name}-plan"
    workload["protocol"] = "program.ded"
    workload["cluster"] = "cluster.yaml"
    workload["budget"] = {"machines": plan.machines}
    if data.workload.analyze.max_clients is not None and data.workload.sweep.clients is None:
        # measure as far as the analysis did: planned configurations may peak at many clients
        workload["sweep"] = {**workload["sweep"], "max_clients": max(data.workload.sweep.max_clients, data.workload.analyze.max_clients)}
    (folder / "workload.yaml").write_text(
        "# A capacity plan of `hydrodeploy plan`; run it with: hydrodeploy run " + str(folder / "workload.yaml") + "\n"
        + yaml.safe_dump(workload, sort_keys=False)
    )
    (folder / "plan.json").write_text(json.dumps(plan.to_json(), indent=2) + "\n")
    (folder / "plan.txt").write_text(plan.render() + "\n")
    return folder
