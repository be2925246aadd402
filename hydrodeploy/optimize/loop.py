"""The optimizer loop behind ``hydrodeploy analyze``.

1. (Once) measure the runtime's own costs with a calibration program on the same cluster.
2. Measure the base program: deploy it, sweep closed-loop clients, profile every point.
3. Find the bottleneck of the current configuration's best point; calibrate the cost model on
   everything measured so far; list the candidate rewrites of the bottleneck component and
   their combinations; place each (partition counts by MILP within the machine budget and the
   host's cores); predict the best few with the performance simulation; choose the highest.
4. Stop when no candidate is predicted to raise throughput by the workload's minimum gain over
   the current configuration's capacity in the same model (:func:`predicted_gain`). Otherwise
   verify the chosen configuration against the base program in simulation, deploy it, measure
   it, deploy its parent and then it afresh back to back (:mod:`.paired`), record predicted
   against measured, keep it when that pair shows the minimum gain, roll back otherwise (and try
   the next choice), and go to 3.
5. Deploy the base program and the final configuration in turn to confirm the speed-up
   (:mod:`.confirm`).

Everything is written to the run directory as it happens (``iterations/NN/iteration.json``,
``decision.json``, point and profile files, ``state.json``); ``--resume`` continues from there:
measured iterations are kept, an interrupted one is measured again. Every measurement is a
deployment of its own; on GCP they share the instances, created for the first one and deleted
when the loop ends (:class:`~hydrodeploy.deploy.cluster.RunClusters`).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hydrodeploy.bench.experiment import Bench, Observer
from hydrodeploy.bench.measure import Plateau, Point, measured_peak
from hydrodeploy.bench.workload import ClientsSpec, WindowsSpec, WorkloadSpec
from hydrodeploy.deploy import DeployError, ProcessFailure
from hydrodeploy.deploy.cluster import AnyClusterSpec, ClusterSpec, RunClusters
from hydrodeploy.deploy.local import cfs_period_s
from hydrodeploy.errors import HydrodeployError
from hydrodeploy.language import ir, load_program, print_program
from hydrodeploy.optimize.bottleneck import Bottleneck, find_bottleneck
from hydrodeploy.optimize.candidates import (
    Candidates,
    DecouplingOption,
    PartitionOption,
    find_candidates,
    structures,
)
from hydrodeploy.optimize.choose import ComponentTerm, Placement, place
from hydrodeploy.optimize.config import Configuration, derive
from hydrodeploy.optimize.confirm import (
    CONFIRMATION_FILE,
    RAMP_FROM,
    RAMP_WINDOWS,
    VISIT_WINDOWS,
    Confirmation,
    Visit,
    knee_clients,
    median_fsync_ms,
    ramp_counts,
)
from hydrodeploy.optimize.costmodel import (
    SIM_SEEDS,
    Calibration,
    Prediction,
    background_cores,
    calibrate,
    host_capacity,
    identities,
    predict,
)
from hydrodeploy.optimize.evaluate import EvaluationError, structure_costs
from hydrodeploy.optimize.paired import PairedCheck
from hydrodeploy.profile import machine
from hydrodeploy.profile.counters import WindowProfile
from hydrodeploy.profile.session import Measured, TolerantPlateau, profiled_sweep
from hydrodeploy.report.load import load_points
from hydrodeploy.report.rundir import RunDirectory
from hydrodeploy.runtime.topology import Topology, is_client
from hydrodeploy.simulate import Network, Workload
from hydrodeploy.simulate.equivalence import Mode, check_equivalence

CALIBRATION_PROGRAM = Path(__file__).resolve().parent / "data" / "calibration.ded"
CALIBRATION_WINDOWS = WindowsSpec(warmup_s=1.0, measure_s=2.0, cooldown_s=0.2, bin_s=0.5)
CALIBRATION_COUNTS = (4, 32, 256)
DEFAULT_BUDGET = 64  # machines, when the workload names no budget
TOP_PREDICTED = 3  # placements predicted with the full performance simulation
MAX_FAILURES = 2  # rolled-back attempts from one configuration before the loop stops
CO_BOTTLENECK = 0.05  # another component this close to the bottleneck's saturation is one too
MIN_SHARE = 0.05  # decouplings of rules that sent nothing and took less of the bottleneck's rule CPU are not tried
DEPLOY_S = 10.0  # about how long a deployment takes to start and stop, for the time budget


class AnalyzeError(HydrodeployError):
    """An analysis that cannot start or continue as asked."""


class LoopObserver(Observer):
    """Progress of the loop; the CLI renders it. Every method is optional."""

    def iteration_started(self, index: int, description: str, machines: int) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@dataclass
class Iteration:
    """One configuration the loop measured (or rejected), as written to iteration.json."""

    index: int
    config: Configuration
    parent: int | None = None
    machines: int = 0
    components: dict[str, int] = field(default_factory=dict)
    status: str = "planned"  # planned, measured, rejected, failed
    prediction: Prediction | None = None
    verification: dict[str, Any] | None = None
    measured: dict[str, Any] | None = None
    kept: bool | None = None
    reason: str = ""
    bottleneck: Bottleneck | None = None
    perf: dict[str, Any] | None = None
    sweep_stopped: str = ""
    started: float = 0.0
    seconds: float = 0.0
    machine_ms: list[float] = field(default_factory=list)  # this machine's speed probed before and after the sweep (local clusters)
    paired: PairedCheck | None = None  # it and its parent deployed afresh one after the other, after its sweep

    @property
    def max_throughput(self) -> float:
        return float(self.measured["max_throughput"]) if self.measured else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "description": self.config.describe(),
            "config": self.config.to_json(),
            "steps": [str(s) for s in self.config.steps()],
            "parent": self.parent,
            "machines": self.machines,
            "components": self.components,
            "status": self.status,
            "predicted_throughput": None if self.prediction is None else self.prediction.throughput,
            "prediction": None if self.prediction is None else self.prediction.to_json(),
            "verification": self.verification,
            "measured": self.measured,
            "kept": self.kept,
            "reason": self.reason,
            "bottleneck": None if self.bottleneck is None else self.bottleneck.to_json(),
            "perf": self.perf,
            "sweep_stopped": self.sweep_stopped,
            "started": self.started,
            "seconds": self.seconds,
            "machine_ms": self.machine_ms,
            "paired": None if self.paired is None else self.paired.to_json(),
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Iteration:
        return Iteration(
            index=int(data["index"]),
            config=Configuration.from_json(data["config"]),
            parent=data.get("parent"),
            machines=int(data.get("machines", 0)),
            components=dict(data.get("components", {})),
            status=str(data.get("status", "planned")),
            prediction=None if data.get("prediction") is None else Prediction.from_json(data["prediction"]),
            verification=data.get("verification"),
            measured=data.get("measured"),
            kept=data.get("kept"),
            reason=str(data.get("reason", "")),
            bottleneck=None if data.get("bottleneck") is None else Bottleneck.from_json(data["bottleneck"]),
            perf=data.get("perf"),
            sweep_stopped=str(data.get("sweep_stopped", "")),
            started=float(data.get("started", 0.0)),
            seconds=float(data.get("seconds", 0.0)),
            machine_ms=[float(x) for x in data.get("machine_ms", [])],
            paired=None if data.get("paired") is None else PairedCheck.from_json(data["paired"]),
        )


def load_profiles(folder: Path) -> list[WindowProfile]:
    if not folder.is_dir():
        return []
    return [WindowProfile.from_json(json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]


class Analysis:
    """One run of the loop in ``run_dir`` (new, or resumed when it holds iterations)."""

    def __init__(self, workload: WorkloadSpec, cluster: AnyClusterSpec, run_dir: RunDirectory, observer: LoopObserver) -> None:
        self.workload = workload
        self.cluster = cluster
        self.run_dir = run_dir
        self.observer = observer
        self.base_path = workload.protocol
        self.base = load_program(self.base_path)
        self.iterations: list[Iteration] = []
        self.stopped: str | None = None
        self.failures: dict[int, int] = {}
        self.windows = workload.analyze.windows or workload.windows
        self.budget = workload.budget.machines or DEFAULT_BUDGET
        self.slo = workload.slo.p99_ms
        self.local = isinstance(cluster, ClusterSpec)
        self.clusters = RunClusters(cluster, run_dir.path)  # GCP instances kept across iterations
        self.quota: float | None = cluster.machine.cpus if isinstance(cluster, ClusterSpec) else None
        # as the cgroups enforce it: the performance simulation throttles nodes over the same period
        self.period_s = cfs_period_s(self.quota, cluster.machine.cfs_period_us) if isinstance(cluster, ClusterSpec) else 0.01
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.mode: Mode = "log" if any(o.attrs and "slot" in o.attrs for o in self.base.outputs) else "per-request"
        self._load()

    # ---- state ----------------------------------------------------------------------------------

    def _load(self) -> None:
        folder = self.run_dir.path / "iterations"
        for path in sorted(folder.glob("*/iteration.json")) if folder.is_dir() else []:
            self.iterations.append(Iteration.from_json(json.loads(path.read_text())))
        state = self.run_dir.path / "state.json"
        if state.exists():
            data = json.loads(state.read_text())
            self.stopped = data.get("stopped")
            self.failures = {int(k): int(v) for k, v in data.get("failures", {}).items()}

    def _save(self, iteration: Iteration | None = None) -> None:
        if iteration is not None:
            self.run_dir.write_json(f"iterations/{iteration.index:02d}/iteration.json", iteration.to_json())
        current = self.current()
        self.run_dir.write_json(
            "state.json",
            {
                "current": None if current is None else current.index,
                "stopped": self.stopped,
                "failures": self.failures,
                "iterations": len(self.iterations),
            },
        )

    def current(self) -> Iteration | None:
        """The configuration the loop stands on: the last kept one."""
        kept = [it for it in self.iterations if it.status == "measured" and it.kept]
        return kept[-1] if kept else None

    def tried(self) -> dict[str, int]:
        """The configurations measured so far (:meth:`~.config.Configuration.identity`), each with
        its last iteration."""
        return {it.config.identity(): it.index for it in self.iterations}

    # ---- the loop -------------------------------------------------------------------------------

    async def run(self) -> str:
        """Run (or continue) the loop, then confirm its speed-up; why the loop stopped."""
        try:
            if not self.stopped:
                await self._run()
            await self._confirm()
            return self.stopped or ""
        finally:
            self.clusters.close()

    async def _run(self) -> str:
        self.started = time.monotonic()
        if self.workload.analyze.calibrate and not (self.run_dir.path / "calibration" / "profiles").is_dir():
            await self._calibration_run()
        if not self.iterations:
            self.iterations.append(Iteration(0, Configuration()))
            self._save(self.iterations[0])
        while True:
            pending = [it for it in self.iterations if it.status == "planned"]
            if pending:
                await self._measure(pending[0])
                continue
            if len(self.iterations) >= self.workload.analyze.iterations:
                self.stopped = f"the workload allows {self.workload.analyze.iterations} iterations"
                break
            current = self.current()
            if current is None:
                self.stopped = "the base program could not be measured"
                break
            late = self._out_of_time()
            if late is not None:
                self.stopped = late
                break
            if self.failures.get(current.index, 0) >= MAX_FAILURES:
                self.stopped = f"{MAX_FAILURES} rewrites of iteration {current.index} did not help: nothing left to try"
                break
            chosen = self._decide(current)
            if chosen is None:
                break
        self._save()
        return self.stopped or ""

    def _out_of_time(self) -> str | None:
        """Why no further iteration may start under the workload's time budget (None: it may):
        the time spent so far (this run, and the iterations of a resumed one) plus an iteration
        as long as the longest so far, with its decision, would exceed it."""
        budget = self.workload.analyze.time_budget_s
        if budget is None:
            return None
        earlier = sum(it.seconds for it in self.iterations if it.started < self.started_wall)
        spent = earlier + (time.monotonic() - self.started)
        longest = max((it.seconds for it in self.iterations), default=0.0)
        if spent + 1.5 * longest + self._confirmation_s() > budget:
            return (
                f"the time budget of {budget:g} s would run out before another iteration and the confirmation "
                f"end ({spent:.0f} s spent)"
            )
        return None

    def _confirmation_s(self) -> float:
        """About how long the confirmation after the loop takes."""
        ramp = (math.log2(RAMP_FROM) + 1) * (RAMP_WINDOWS.total_s + 1.0)  # at most four steps
        per_deployment = DEPLOY_S + ramp + self._visit_windows() * (self.windows.total_s + 1.0)
        return 2 * self.workload.analyze.confirm_pairs * per_deployment

    def _visit_windows(self) -> int:
        """Windows measured on each deployment of the confirmation: :data:`~.confirm.VISIT_WINDOWS`,
        or the sweep's repeats when more."""
        return max(VISIT_WINDOWS, self.workload.sweep.repeats)

    # ---- measuring ------------------------------------------------------------------------------

    def max_clients(self) -> int:
        """The most clients a sweep of this run measures."""
        return max(self.workload.analyze_sweep().counts())

    def _counts(self, hint: int | None) -> list[int]:
        counts = self.workload.analyze_sweep().counts()
        if hint:
            low = max(1, hint // 4)
            counts = [n for n in counts if n >= low] or counts[-1:]
        return counts

    async def _calibration_run(self) -> None:
        """The calibration program on the cluster: varied messages, frames and ticks per node."""
        self.observer.note("calibrating the runtime's costs on the cluster (calibration program)")
        folder = self.run_dir.path / "calibration"
        folder.mkdir(parents=True, exist_ok=True)
        program = load_program(str(CALIBRATION_PROGRAM))
        topology = Topology.of(program)
        shutil.copyfile(CALIBRATION_PROGRAM, folder / "program.ded")
        cluster = self.clusters.deployment()
        bench = Bench(
            folder / "program.ded", cluster, folder / "logs", self.workload.clients.processes, topology=topology, speed_meter=self.local
        )

        def keep(point: Point, profile: WindowProfile) -> None:
            self.run_dir.write_json(f"calibration/profiles/{point.index:03d}.json", profile.to_json())

        try:
            await bench.start()
            await profiled_sweep(
                bench, CALIBRATION_WINDOWS, CALIBRATION_COUNTS, 1, ClientsSpec(payload_bytes=self.workload.clients.payload_bytes),
                Plateau(0.0, 99, None), self.observer, None, keep, local=False,
            )  # fmt: skip
            if bench.deployment.failure is None:
                await asyncio.shield(bench.stop())
        finally:
            bench.close()

    async def _measure(self, it: Iteration) -> None:
        """Verify (rewritten configurations), deploy, sweep, profile; keep or roll back."""
        folder = self.run_dir.iteration(it.index)
        for stale in ("points", "profiles", "perf", "logs", "durable"):
            shutil.rmtree(folder / stale, ignore_errors=True)
        program, topology = derive(self.base, it.config)
        it.machines = len(topology.addresses())
        it.components = _component_counts(topology)
        it.started = time.time()
        path = folder / "program.ded"
        path.write_text(print_program(program))
        (folder / "steps.txt").write_text(it.config.steps_text() or "# the base program: no rewrite\n")
        self.run_dir.write_json(
            f"iterations/{it.index:02d}/topology.json", {"instances": topology.instances, "partitions": topology.partitions}
        )
        self.observer.iteration_started(it.index, it.config.describe(), it.machines)
        if it.index > 0 and it.verification is None:
            it.verification = self._verify(program, topology)
            self._save(it)
            if not it.verification["equivalent"]:
                it.status, it.kept = "rejected", False
                it.reason = "the rewritten program does not behave like the base program in simulation: not deployed"
                self._fail(it)
                return
        parent = self.iterations[it.parent] if it.parent is not None else None
        hint = it.prediction.clients if it.prediction else (parent.measured or {}).get("clients") if parent else None
        it.machine_ms = self._probe()
        measured = await self._sweep(it, path, topology, self._counts(hint))
        it.machine_ms += self._probe()
        top, best = measured.peak(self.slo), measured.best_index(self.slo)
        if top is None or best is None:
            it.seconds = time.time() - it.started
            it.status, it.kept = "failed", False
            it.reason = "no point was measured"
            self._fail(it)
            return
        profile = measured.profiles[best]
        it.measured = measured_peak(top)
        it.sweep_stopped = measured.stopped
        it.bottleneck = find_bottleneck(profile, program)
        if measured.perf is not None:
            it.perf = measured.perf.to_json()
        current = self.current()
        if current is not None and self.workload.analyze.paired_check:
            it.paired = await self._paired_check(it, current)
        it.seconds = time.time() - it.started
        it.status = "measured"
        if current is None:
            it.kept, it.reason = True, "the base program"
        else:
            self._keep_or_roll_back(it, current, top.throughput)
        speed = ""
        if it.prediction is not None:
            error = it.prediction.throughput / top.throughput - 1 if top.throughput > 0 else math.inf
            it.measured["prediction_error"] = error
            if it.paired is not None:
                it.measured["paired_prediction_error"] = it.paired.prediction_error
            slower = machine.slowdown(it.machine_ms, parent.machine_ms) if parent else None
            it.measured["machine_slowdown"] = slower
            speed = "" if slower is None or parent is None else f"; {machine.machine_note(slower, parent.index)}"
            in_window = machine.window_slowdown(it.measured, parent.measured if parent else None)
            it.measured["window_slowdown"] = in_window
            if in_window is not None and top.throughput > 0:
                # what the peak would have measured at the speed the prediction was calibrated at,
                # had the throughput followed the machine's speed: a diagnosis, not the verdict
                it.measured["prediction_error_at_calibration_speed"] = it.prediction.throughput / (top.throughput * in_window) - 1
        self._save(it)
        paired = "" if it.paired is None else f"; {it.paired.describe(it.index)}"
        self.observer.note(f"iteration {it.index}: {top.describe()}{paired}; {it.reason}{speed}")

    def _keep_or_roll_back(self, it: Iteration, current: Iteration, throughput: float) -> None:
        """Keep ``it`` when it beat ``current`` by the workload's minimum gain: by the paired check
        when it measured both, by the two sweeps otherwise."""
        need = self.workload.analyze.min_gain
        sweeps = throughput / current.max_throughput - 1 if current.max_throughput > 0 else math.inf
        ratio = None if it.paired is None else it.paired.ratio
        if ratio is not None:
            gain, how = ratio - 1, f"deployed afresh one after the other (the sweeps: {sweeps:+.0%})"
        else:
            gain, how = sweeps, "by the sweeps"
        if gain >= need:
            it.kept, it.reason = True, f"throughput rose {gain:+.0%} over iteration {current.index} {how} (at least {need:.0%} needed): kept"
            return
        it.kept = False
        it.reason = (
            f"throughput changed {gain:+.0%} over iteration {current.index} {how} (at least {need:.0%} needed): "
            f"rolled back to iteration {current.index}"
        )
        self.failures[current.index] = self.failures.get(current.index, 0) + 1

    async def _paired_check(self, it: Iteration, parent: Iteration) -> PairedCheck:
        """``parent``, ``it`` and ``parent`` again deployed afresh (:mod:`.paired`); logs under ``paired/``."""
        check = PairedCheck(parent.index, parent.max_throughput, None if it.prediction is None else it.prediction.throughput)
        folder = self.run_dir.iteration(it.index) / "paired"
        shutil.rmtree(folder, ignore_errors=True)
        order = (parent, it, parent)
        for n, side in enumerate(order):
            self.observer.status(f"paired check: deployment {n + 1} of {len(order)} (iteration {side.index})")
            visit = await self._visit(side, folder / f"{n:02d}")
            check.visits.append(visit)
            if visit.error:
                break
        return check

    # ---- confirming ----------------------------------------------------------------------------

    async def _confirm(self) -> None:
        """Deploy the base program and the final configuration in turn and measure each at its
        sweep's knee (:mod:`.confirm`); confirmation.json after every deployment."""
        pairs = self.workload.analyze.confirm_pairs
        final = self.current()
        base = self.iterations[0] if self.iterations else None
        path = self.run_dir.path / CONFIRMATION_FILE
        if pairs == 0 or final is None or base is None or final.index == 0 or base.max_throughput <= 0:
            path.unlink(missing_ok=True)  # of an earlier final (a resumed run)
            return
        record = Confirmation.from_json(json.loads(path.read_text())) if path.exists() else None
        if record is None or not record.confirms(final.index, pairs, final.started):
            shutil.rmtree(self.run_dir.path / "confirmation", ignore_errors=True)
            record = Confirmation(0, final.index, pairs, final.started)
        for n, index in enumerate(record.pending(), start=len(record.visits)):
            it = self.iterations[index]
            self.observer.status(f"confirming: deployment {n + 1} of {2 * pairs} (iteration {index})")
            record.visits.append(await self._visit(it, self.run_dir.path / "confirmation" / f"{n:02d}"))
            self.run_dir.write_json(CONFIRMATION_FILE, record.to_json())
        self.observer.note(f"confirmation: {record.describe(final.max_throughput / base.max_throughput)}")

    async def _visit(self, it: Iteration, folder: Path) -> Visit:
        """A fresh deployment of ``it``'s configuration, brought up to the client count of its
        sweep's knee (:func:`~.confirm.knee_clients`) through short unmeasured windows
        (:func:`~.confirm.ramp_counts`), then measured there for :meth:`_visit_windows` windows
        (more in place of windows the hypervisor took much of the CPU in: :meth:`.Visit.wants_window`);
        its processes' logs under ``folder``."""
        peak = int((it.measured or {}).get("clients", 1))
        clients = knee_clients(load_points(self.run_dir.path, it.index), it.max_throughput, peak)
        _, topology = derive(self.base, it.config)
        program = self.run_dir.iteration(it.index) / "program.ded"
        bench = Bench(
            program, self.clusters.deployment(), folder / "logs", self.workload.clients.processes,
            durable_dir=folder / "durable", topology=topology, speed_meter=self.local,
        )  # fmt: skip
        visit = Visit(it.index, clients, [], [])
        try:
            await bench.start()
            for n in ramp_counts(clients):
                await bench.point(-1, n, RAMP_WINDOWS, self.workload.clients)
            windows = self._visit_windows()
            while visit.wants_window(windows):  # windows the hypervisor took much of are measured again
                repeat = len(visit.throughputs)
                point, _ = await bench.point(repeat, clients, self.windows, self.workload.clients, repeat)
                visit.throughputs.append(point.throughput)
                visit.p99_ms.append(point.p99_ms)
                visit.steal.append(point.host_steal)
                visit.machine_ms.append(point.machine_ms)
            if bench.deployment.failure is None:
                final = await asyncio.shield(bench.stop())
                # every node's counters (rule firings: an election, say), for reading a window that stalled
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "final_metrics.json").write_text(json.dumps(final, indent=1))
                visit.fsync_ms = median_fsync_ms(final)
        except ProcessFailure:
            raise
        except DeployError as exc:
            visit.error = f"could not be measured: {exc}"
        finally:
            bench.close()
        return visit

    def _probe(self) -> list[float]:
        """This machine's speed now (:mod:`~hydrodeploy.profile.machine`), on a local cluster."""
        ms = machine.probe() if self.local else None
        return [] if ms is None else [ms]

    def _fail(self, it: Iteration) -> None:
        parent = it.parent if it.parent is not None else 0
        self.failures[parent] = self.failures.get(parent, 0) + 1
        self._save(it)
        self.observer.note(f"iteration {it.index}: {it.reason}")

    def _verify(self, program: ir.Program, topology: Topology) -> dict[str, Any]:
        seeds = self.workload.analyze.verify_seeds
        if seeds == 0:
            return {"equivalent": True, "summary": "not verified (verify_seeds: 0)", "differences": []}
        timeout = 300.0 if self.mode == "log" else None
        report = check_equivalence(
            self.base,
            program,
            rewritten_topology=topology,
            seeds=range(seeds),
            network=Network(min_delay_ms=0.05, max_delay_ms=10.0),
            workload=Workload(clients=4, requests=40, timeout_ms=timeout),
            mode=self.mode,
        )
        return {
            "equivalent": report.equivalent,
            "summary": report.summary(),
            "differences": [str(d) for d in report.differences[:10]],
        }

    async def _sweep(self, it: Iteration, path: Path, topology: Topology, counts: Sequence[int]) -> Measured:
        folder = self.run_dir.iteration(it.index)
        cluster = self.clusters.deployment()
        for warning in cluster.warnings:
            self.observer.warning(warning)
        bench = Bench(
            path, cluster, folder / "logs", self.workload.clients.processes, durable_dir=folder / "durable", topology=topology,
            speed_meter=self.local,
        )  # fmt: skip

        def keep(point: Point, profile: WindowProfile) -> None:
            self.run_dir.add_result(it.index, point)
            self.run_dir.write_json(f"iterations/{it.index:02d}/profiles/{point.index:03d}.json", profile.to_json())

        plateau = TolerantPlateau(self.workload.sweep.plateau_gain, self.workload.sweep.plateau_steps, self.slo)
        try:
            self.observer.status(f"iteration {it.index}: deploying {bench.machines} nodes")
            await bench.start()
            measured = await profiled_sweep(
                bench, self.windows, counts, self.workload.sweep.repeats, self.workload.clients, plateau, self.observer,
                folder / "perf", keep, self.slo, self.local, self.workload.sweep.refine_rounds(),
                self.workload.sweep.confirm_points(),
            )  # fmt: skip
            if bench.deployment.failure is None:
                final = await asyncio.shield(bench.stop())
                self.run_dir.write_json(f"iterations/{it.index:02d}/final_metrics.json", final)
        finally:
            bench.close()
        return measured

    # ---- deciding -------------------------------------------------------------------------------

    def history(self) -> list[tuple[WindowProfile, Mapping[str, Sequence[str]]]]:
        """Every window measured so far, with the rule identities of the program it ran."""
        calibration = load_program(str(CALIBRATION_PROGRAM))
        names: Mapping[str, Sequence[str]] = identities(calibration, None)
        out: list[tuple[WindowProfile, Mapping[str, Sequence[str]]]] = [
            (p, names) for p in load_profiles(self.run_dir.path / "calibration" / "profiles")
        ]
        for it in self.iterations:
            if it.status == "measured":
                program, _ = derive(self.base, it.config)
                names = identities(program, self.base_path)
                out.extend((p, names) for p in load_profiles(self.run_dir.path / "iterations" / f"{it.index:02d}" / "profiles"))
        return out

    def quotas(self, topology: Topology) -> dict[str, float | None]:
        return {a: self.quota for _, a, _ in topology.addresses()}

    def _decide(self, current: Iteration) -> Iteration | None:
        """Choose the next configuration from ``current``; None when nothing is predicted to help
        (``self.stopped`` says why)."""
        self.observer.status(f"choosing a rewrite (from iteration {current.index})")
        started = time.time()
        program, topology = derive(self.base, current.config)
        profiles = load_profiles(self.run_dir.path / "iterations" / f"{current.index:02d}" / "profiles")
        best_point = int((current.measured or {}).get("point", 0))
        best = next((p for p in profiles if p.point == best_point), None)
        if best is None or current.bottleneck is None:
            self.stopped = f"iteration {current.index} has no profile to decide from"
            return None
        neck = current.bottleneck
        cores = os.cpu_count() or 1
        host = host_capacity(best, cores) if self.local else None
        timeout = self.workload.clients.timeout_ms
        calibration = calibrate(
            program, topology, self.quotas(topology), self.period_s, best, profiles, self.history(), self.base_path,
            host, timeout, measured_from=f"iteration {current.index}, point {best_point}", max_clients=self.max_clients(),
        )  # fmt: skip
        candidates = find_candidates(self.base, current.config, neck.component)
        kept: list[tuple[DecouplingOption, float]] = []
        pruned: list[tuple[DecouplingOption, float]] = []
        names = identities(program, self.base_path)
        # the bottleneck's component, and any other saturated as much (relieving one of two
        # saturated components cannot raise the throughput)
        for component, address, found in [
            (neck.component, neck.address, candidates),
            *((c, a, find_candidates(self.base, current.config, c)) for c, a in _co_bottlenecks(best, neck)),
        ]:
            shares = _rule_shares(best, address, names.get(component, []))
            sending = _sending_rules(best, address, names.get(component, []))
            for option in found.decouplings:
                share = sum(shares.get(i, 0.0) for i in option.identities)
                # rules that sent messages cost the node more than their rule CPU (encoding,
                # frames): never left out; rules that can send but sent nothing at the best
                # point (an election's, re-proposals') relieve nothing there
                sends = bool(option.identities & sending)
                (kept if share >= MIN_SHARE or sends else pruned).append((option, share))
            if found is not candidates:
                candidates.rejected.extend(found.rejected)
        candidates = replace(candidates, decouplings=[o for o, _ in kept])
        evaluated = self._evaluate_structures(current, neck, best, candidates, calibration)
        tried = self.tried()
        for e in evaluated:
            earlier = tried.get(e["config"].identity())
            if earlier is not None:
                e["skipped"] = f"measured before (iteration {earlier})"
        ranked = sorted(
            (e for e in evaluated if e["placement"].status == "optimal" and e["config"].identity() not in tried),
            key=lambda e: (-_bucket(e["placement"].throughput), -e["ceiling"]),
        )
        # the current structure re-placed answers the measured bottleneck directly (its cost fitted to
        # the measurement, which the other structures' model costs are not): predicted whatever its rank
        again = [e for e in ranked[TOP_PREDICTED:] if not e["combo"]]
        screened: list[dict[str, Any]] = []
        for entry in [*ranked[:TOP_PREDICTED], *again]:
            prog, topo = derive(self.base, entry["config"])
            # a faster configuration peaks at more clients (Little's law, latency alike): load it so
            entry["around"] = _scaled_clients(
                calibration.clients, entry["placement"].throughput / max(current.max_throughput, 1e-9), calibration.max_clients
            )
            entry["prediction"] = predict(
                calibration, prog, topo, self.quotas(topo), around=entry["around"], timeout_ms=timeout, seeds=SIM_SEEDS
            )
            screened.append(entry)
        need = current.max_throughput * (1 + self.workload.analyze.min_gain)
        # the highest prediction; among predictions within a bucket of it, the structure that can
        # go furthest later (its throughput with the whole budget and no host limit)
        top = max((e["prediction"].throughput for e in screened), default=0.0)
        near = [e for e in screened if _bucket(e["prediction"].throughput) >= _bucket(top) - 1]
        chosen_entry = max(near, key=lambda e: (e["ceiling"], e["prediction"].throughput), default=None)
        choice: tuple[Configuration, Prediction] | None = None
        if chosen_entry is not None:
            # the chosen candidate's prediction, the one recorded and measured against, from more
            # runs per load than the screening's
            config: Configuration = chosen_entry["config"]
            prog, topo = derive(self.base, config)
            prediction = predict(calibration, prog, topo, self.quotas(topo), around=chosen_entry["around"], timeout_ms=timeout)
            chosen_entry["screened"], chosen_entry["prediction"] = chosen_entry["prediction"], prediction
            choice = (config, prediction)
        decision = {
            "from_iteration": current.index,
            "bottleneck": neck.to_json(),
            "calibration": calibration.to_json(),
            "candidates": _candidates_json(candidates),
            "pruned": [_pruned_json(o, share, neck.address) for o, share in pruned],
            "structures": [_structure_json(e) for e in evaluated],
            "needed_throughput": need,
            "background_cores": background_cores(best, cores) if self.local else None,
            "seconds": time.time() - started,
        }
        min_gain = self.workload.analyze.min_gain
        gain = None if choice is None else predicted_gain(choice[1], calibration)
        decision["predicted_gain"] = gain
        if choice is None or not enough_gain(choice[1], calibration, need, min_gain):
            if choice is None:
                best_text = "nothing"
            elif gain is None:
                best_text = f"{choice[1].throughput:,.0f} requests/s, {need:,.0f} needed"
            else:
                best_text = (
                    f"{choice[1].throughput:,.0f} requests/s, {gain - 1:+.0%} over the {calibration.modelled:,.0f} "
                    f"the model gives iteration {current.index} (measured {calibration.throughput:,.0f})"
                )
            self.stopped = (
                f"no candidate is predicted to raise throughput by {min_gain:.0%} over iteration {current.index}; "
                f"the best predicted: {best_text}"
            )
            decision["chosen"] = None
            decision["stopped"] = self.stopped
            self.run_dir.write_json(f"iterations/{current.index:02d}/final_decision.json", decision)
            self.observer.note(self.stopped)
            return None
        config, prediction = choice
        it = Iteration(len(self.iterations), config, parent=current.index, prediction=prediction)
        chosen: dict[str, Any] = {"config": config.to_json(), "description": config.describe(), "prediction": prediction.to_json()}
        decision["chosen"] = chosen
        self.iterations.append(it)
        self.run_dir.write_json(f"iterations/{it.index:02d}/decision.json", decision)
        self._save(it)
        self.observer.note(
            f"bottleneck {neck.address} ({neck.saturation:.0%}); chose {config.describe()}: "
            f"predicted {prediction.throughput:,.0f} requests/s on {prediction.machines} machines"
            + ("" if gain is None else f" ({gain - 1:+.0%} over iteration {current.index} in the model)")
        )
        return it

    def _within_budget(self, config: Configuration) -> Configuration:
        """``config`` with partitions removed (from the most partitioned component first) until its
        machines fit the budget: rewrites may add machines the placement does not count (the
        coordinator of each partially partitioned instance)."""
        while len(derive(self.base, config)[1].addresses()) > self.budget:
            smaller = _largest_partition(config)
            if smaller is None:
                break
            config = smaller
        return config

    def _evaluate_structures(
        self, current: Iteration, neck: Bottleneck, best: WindowProfile, candidates: Candidates, calibration: Calibration
    ) -> list[dict[str, Any]]:
        """Every structure: per-component costs in the performance simulation, then placement; the
        current structure's components cost what they were measured to cost at its best point
        (:func:`_fit_measured`)."""
        out: list[dict[str, Any]] = []
        around = max(8, calibration.clients)
        timeout = self.workload.clients.timeout_ms
        for combo, structure in structures(self.base, current.config, candidates):
            entry: dict[str, Any] = {
                "combo": combo, "structure": structure, "config": structure, "ceiling": 0.0,
                "reason": _structure_reason(combo, current.config, candidates, self.budget),
            }  # fmt: skip
            try:
                costs = structure_costs(self.base, structure, calibration, self.quota, around, timeout)
            except EvaluationError as exc:
                entry["error"] = str(exc)
                entry["placement"] = Placement({}, 0.0, 0, "", "error")
                out.append(entry)
                continue
            terms = costs.terms
            if not combo:
                terms, fits = _fit_measured(terms, current.config, best, calibration.runtime.node)
                fit = next((f for f in fits if f["component"] == neck.component), None)
                if fits:
                    entry["fitted"] = fits
                    entry["reason"] += "; every component placed on its measured cost per request"
                if fit is not None:
                    entry["reason"] += (
                        f" ({fit['component']} x{fit['partitions']}: {fit['measured_cost'] * 1e6:.2f} µs on {fit['node']}, "
                        f"the model's {fit['model_cost'] * 1e6:.2f} µs)"
                    )
            placement = place(terms, self.budget, calibration.host_cores, costs.host_cost, calibration.runtime.node)
            ceiling = place(terms, self.budget).maximum  # with no host limit: how far it can go
            try:
                config = self._within_budget(costs.configuration(placement.counts))
            except HydrodeployError as exc:  # the partitioned program does not derive
                entry["error"] = str(exc)
                entry["placement"] = Placement({}, 0.0, 0, "", "error")
                out.append(entry)
                continue
            entry.update(
                {
                    "placement": placement,
                    "ceiling": ceiling,
                    "config": config,
                    "partitionable": {c: (o.key if isinstance(o, PartitionOption) else str(o)) for c, o in costs.options.items()},
                    "simulated": costs.simulated,
                }
            )
            out.append(entry)
        return out


def _scaled_clients(clients: int, gain: float, most: int) -> int:
    """The client count to simulate a configuration expected to be ``gain`` times as fast at (at most ``most``)."""
    return int(min(most, max(8, clients * max(1.0, gain))))


def predicted_gain(prediction: Prediction, calibration: Calibration) -> float | None:
    """A candidate's predicted throughput over the current configuration's capacity in the same
    model and calibration (:attr:`Calibration.modelled`); None when the model gave it none.

    Both sides carry the model's error on this cluster, so it cancels: set against the measured
    throughput instead, a model that overestimates the current configuration by 15% (Paxos, 22
    November: 4,654 for 4,051 measured) offers steps it predicts to gain nothing (4,694) as +16%,
    and the noise of the measurements keeps some of them (three forwarding hops in a row); one
    that underestimates by as much never tries steps it predicts to gain 10%.
    """
    modelled = calibration.modelled
    if not (modelled > 0 and math.isfinite(modelled)):
        return None
    return prediction.throughput / modelled


def enough_gain(prediction: Prediction, calibration: Calibration, need: float, min_gain: float) -> bool:
    """Whether a candidate is worth measuring: its predicted gain in the model reaches the
    workload's minimum (``need``, the measured throughput plus that minimum, only when the model
    gave the current configuration no capacity)."""
    gain = predicted_gain(prediction, calibration)
    if gain is None:
        return prediction.throughput >= need
    return gain >= 1 + min_gain


def _bucket(throughput: float) -> int:
    """Throughputs within ~5% of each other fall in one bucket (the model cannot tell them apart)."""
    return int(math.log(throughput) / math.log(1.05)) if throughput > 0 else -1


def _structure_reason(combo: Sequence[int], current: Configuration, candidates: Candidates, budget: int) -> str:
    """Why a structure is offered: its new decouplings, or (no new decoupling) the current
    structure with every partition count placed again - the way a component already partitioned,
    or partitionable and not yet partitioned, gets more (or fewer) partitions."""
    if combo:
        moved = "; ".join(candidates.decouplings[i].decoupling.describe() for i in combo)
        return f"new decoupling: {moved}; partition counts placed within the budget of {budget} machines"
    neck = candidates.component
    now = current.counts().get(neck, 1)
    if candidates.partition is not None:
        key = candidates.partition.key or "(any key)"
        why = f"the bottleneck {neck} partitions on {key} ({candidates.partition.rewrite}), x{now} now"
    else:
        why = f"the bottleneck {neck} does not partition, the other components' counts may change"
    counts = ", ".join(f"{c} x{k}" for c, k in sorted(current.counts().items())) or "nothing partitioned"
    return f"re-placement of the current structure ({counts}) within the budget of {budget} machines: {why}"


def _fit_measured(
    terms: Sequence[ComponentTerm], config: Configuration, profile: WindowProfile, node_cores: float
) -> tuple[list[ComponentTerm], list[dict[str, Any]]]:
    """``terms`` of ``config``'s structure, just measured, each fitted to what the busiest node of
    its component measured at its current partition count at the best point (CPU per request,
    less the constant every node spends), with the fits. On the model's costs a partitioned
    bottleneck can look as if it sustained more than it did (2PC collectors cost 1.3-1.5x the
    model's per request on their busiest partition), and placed again it keeps the count it
    saturated at; a component the model holds dearer than measured (a Paxos leader at 8.9 µs per
    request against 7.9 measured) can look like the limit, and the saturated collectors get no
    more partitions. Measured costs answer both."""
    counts = config.counts()
    fitted: list[ComponentTerm] = []
    fits: list[dict[str, Any]] = []
    for term in terms:
        k = counts.get(term.name, 1)
        busiest = max((n for n in profile.nodes if n.component == term.name), key=lambda n: n.cpu, default=None)
        measured = 0.0 if busiest is None or profile.throughput <= 0 else max(0.0, busiest.cpu - node_cores) / profile.throughput
        if busiest is None or measured <= 0 or term.cost(k) <= 0:
            fitted.append(term)
            continue
        fits.append(
            {"component": term.name, "node": busiest.address, "partitions": k, "model_cost": term.cost(k), "measured_cost": measured}
        )
        fitted.append(term.fitted(k, measured))
    return fitted, fits


def _largest_partition(config: Configuration) -> Configuration | None:
    """``config`` with one partition fewer of its most partitioned component (None: none)."""
    if not config.partitions:
        return None
    top = max(config.partitions, key=lambda p: p.count)
    return config.with_partitions(p if p is not top else replace(p, count=p.count - 1) for p in config.partitions)


def _component_counts(topology: Topology) -> dict[str, int]:
    out: dict[str, int] = {}
    for component, _, _ in topology.addresses():
        out[component] = out.get(component, 0) + 1
    return out


def _co_bottlenecks(profile: WindowProfile, neck: Bottleneck) -> list[tuple[str, str]]:
    """(component, busiest node) of every other component whose busiest node is saturated within
    :data:`CO_BOTTLENECK` of the bottleneck (CPU against quota)."""
    busiest: dict[str, tuple[float, str]] = {}
    for node in profile.nodes:
        if node.component == neck.component or is_client(node.address):
            continue
        load = node.saturation
        if load > busiest.get(node.component, (-1.0, ""))[0]:
            busiest[node.component] = (load, node.address)
    return sorted(
        (c, a) for c, (load, a) in busiest.items() if load >= neck.saturation - CO_BOTTLENECK and load >= 0.9
    )


def _rule_shares(profile: WindowProfile, address: str, names: Sequence[str]) -> dict[str, float]:
    """Each rule's share (by identity) of a node's rule CPU."""
    node = profile.node(address)
    total = node.rule_cpu
    if total <= 0:
        return {}
    return {names[r.number]: r.cpu / total for r in node.rules if r.number < len(names)}


def _sending_rules(profile: WindowProfile, address: str, names: Sequence[str]) -> set[str]:
    """The identities of a node's asynchronous rules that sent anything in the window."""
    node = profile.node(address)
    return {names[r.number] for r in node.rules if r.kind == ":~" and r.facts_per_s > 0 and r.number < len(names)}


def _pruned_json(option: DecouplingOption, share: float, node: str) -> dict[str, Any]:
    reason = f"its rules sent nothing at the best point and took {share:.0%} of {node}'s rule CPU (under {MIN_SHARE:.0%})"
    return {"description": option.decoupling.describe(), "share": share, "reason": reason}


def _candidates_json(c: Candidates) -> dict[str, Any]:
    return {
        "component": c.component,
        "decouplings": [
            {"description": o.decoupling.describe(), "rules": list(o.decoupling.rules), "summary": o.summary, "also": list(o.also)}
            for o in c.decouplings
        ],
        "partition": None
        if c.partition is None
        else {"key": c.partition.key, "rewrite": c.partition.rewrite, "summary": c.partition.summary},
        "rejected": [str(r) for r in c.rejected],
    }


def _structure_json(e: Mapping[str, Any]) -> dict[str, Any]:
    placement: Placement = e["placement"]
    prediction: Prediction | None = e.get("prediction")
    config: Configuration = e["config"]
    return {
        "combo": list(e["combo"]),
        "description": config.describe(),
        "steps": [str(s) for s in config.steps()],
        "placement": placement.to_json(),
        "ceiling": e.get("ceiling"),
        "partitionable": e.get("partitionable", {}),
        "simulated": e.get("simulated"),
        "predicted_throughput": None if prediction is None else prediction.throughput,
        "prediction": None if prediction is None else prediction.to_json(),
        "screened_throughput": None if e.get("screened") is None else e["screened"].throughput,
        "error": e.get("error"),
        "reason": e.get("reason", ""),
        "skipped": e.get("skipped"),
        "fitted": e.get("fitted"),
    }
