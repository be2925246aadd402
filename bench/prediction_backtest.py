"""Prediction backtest: the cost model's predictions of archived ``hydrodeploy analyze`` runs,
made again offline and set against what the cluster measured.

    python -m bench.prediction_backtest [--calibration stored|refit] [--seeds N] [--json OUT] [RUN_DIR ...]

For every archived run (default: ``/tmp/bench-reports/*-analyze``, ``/tmp/hdreports/*``,
``/tmp/s2-reports/*``) and every iteration deployed after a prediction (kept or rolled back),
the prediction is made again as the loop made it (:func:`hydrodeploy.optimize.costmodel.predict`
from the parent's calibration, on the iteration's program and topology, loaded around the client
count the loop used) and printed against the measured maximum throughput, with the CPU per
request of the bottleneck nodes, predicted and measured (the profile of the measured best point;
the node's fixed cost excluded from both). Where the loop made a paired check (the parent and the
iteration deployed afresh one after the other, :mod:`hydrodeploy.optimize.paired`), the row also
gives the prediction's error at the speed the check ran at: the predicted ratio (the prediction
over the parent's sweep) against the ratio measured back to back. That is the error the loop
reports, and the one a change to the model is best judged by: the sweeps were made minutes apart,
at different speeds of this machine.

``--calibration refit`` calibrates again from the run's archived profiles with the code as it is
now (:func:`~hydrodeploy.optimize.costmodel.calibrate` on the parent's points and every window
measured before the iteration): what a change to the calibration, or to the evaluator whose
in-process CPU the model scales, is judged by (the host's usable cores as the loop reckons them
now). ``stored`` (the default) predicts from the calibration the loop decided with
(``decision.json``); its scales compare the cluster with the evaluator of that day, so it drifts
as the evaluator changes. The cluster ran the evaluator of the run's commit: to judge a model
change apart from what the evaluator gained since, run ``refit`` from an export of that commit
(``git archive``) with the model's files and this one copied in.

Each row also shows the cores other programs used on the host at the calibration's point and at
the measured best point (``background``): their CPU slows the nodes' own, so an iteration measured
under a different background than its calibration had is summarised apart.

The base program is the protocol file as it was when the run was made: the version (the file
now, or one in its git history) that prints as the run's ``iterations/00/program.ded``, parsed
under the calibration's file name so rule identities match. Nodes take at most as many facts per
tick as the run's code let them (``MAX_TICK_FACTS`` at the run's commit). Offline and one
process: no cluster.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hydrodeploy.bench.workload import WorkloadSpec
from hydrodeploy.deploy.local import cfs_period_s
from hydrodeploy.language import ir, load_source, print_program
from hydrodeploy.optimize import costmodel, perfsim
from hydrodeploy.optimize.config import Configuration, derive
from hydrodeploy.optimize.costmodel import (
    Calibration,
    background_cores,
    calibrate,
    host_capacity,
    identities,
    predict,
)
from hydrodeploy.optimize.loop import CALIBRATION_PROGRAM, _scaled_clients, load_profiles
from hydrodeploy.profile.counters import WindowProfile
from hydrodeploy.runtime.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUNS = ("/tmp/bench-reports/*-analyze", "/tmp/hdreports/*", "/tmp/s2-reports/*")
TOLERANCE = 0.2  # the requirement: predicted within 20% of measured
UNCAPPED = 1 << 40
BACKGROUND_TOLERANCE = 0.3  # cores: measurements whose background load differs more are told apart


@dataclass
class NodeRow:
    address: str
    predicted_us: float  # predicted CPU per request (s -> µs), the node's fixed cost excluded
    measured_us: float  # measured CPU per request at the best point, the same fixed cost excluded
    saturation: float  # measured CPU / quota at the best point


@dataclass
class Row:
    run: str
    index: int
    kept: bool | None
    description: str
    archived: float  # the prediction the loop made then
    predicted: float  # the prediction made now
    measured: float
    bound: str
    measured_bound: str
    clients: int  # simulated clients of the predicted point
    measured_clients: int
    background_then: float = math.nan  # cores other programs used at the calibration's point
    background_now: float = math.nan  # and at the measured best point
    nodes: list[NodeRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    parent_peak: float = math.nan  # the parent's maximum throughput by its sweep (what the calibration rests on)
    paired_ratio: float = math.nan  # the iteration over its parent, deployed afresh one after the other (nan: no check)

    @property
    def comparable(self) -> bool:
        """Measured under about the background load the calibration's point had: other programs'
        CPU slows the nodes' own (shared cores and caches), which no calibration foresees."""
        return abs(self.background_now - self.background_then) <= BACKGROUND_TOLERANCE

    @property
    def error(self) -> float:
        return self.predicted / self.measured - 1 if self.measured > 0 else math.inf

    @property
    def archived_error(self) -> float:
        return self.archived / self.measured - 1 if self.measured > 0 else math.inf

    @property
    def paired_error(self) -> float:
        """The predicted ratio over the one the paired check measured, less one (nan: no check)."""
        return _ratio_error(self.predicted, self.parent_peak, self.paired_ratio)

    @property
    def archived_paired_error(self) -> float:
        return _ratio_error(self.archived, self.parent_peak, self.paired_ratio)


def _ratio_error(predicted: float, parent_peak: float, measured_ratio: float) -> float:
    if not (parent_peak > 0 and measured_ratio > 0):
        return math.nan
    return predicted / parent_peak / measured_ratio - 1


# ---- reading an archived run ------------------------------------------------------------------


def _git_versions(path: str) -> list[str]:
    """Texts of ``path`` in the history of the git repository that holds it, newest first (none
    when it is in none)."""
    folder = os.path.dirname(path)
    try:
        top = subprocess.run(
            ["git", "-C", folder, "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        ).stdout.strip()
        rel = os.path.relpath(path, top)
        commits = subprocess.run(
            ["git", "-C", top, "log", "--format=%H", "--", rel], capture_output=True, text=True, check=True
        ).stdout.split()
        return [
            subprocess.run(["git", "-C", top, "show", f"{h}:{rel}"], capture_output=True, text=True, check=True).stdout
            for h in commits
        ]
    except (OSError, subprocess.CalledProcessError):
        return []


_BASES: dict[tuple[str, str], ir.Program | None] = {}


def base_program(run: Path, base_file: str) -> ir.Program | None:
    """The run's base program under ``base_file``'s name: the version of the file that prints as
    the run measured it (iteration 0's program.ded)."""
    printed = (run / "iterations" / "00" / "program.ded").read_text()
    key = (base_file, printed)
    if key in _BASES:
        return _BASES[key]
    texts = []
    if os.path.exists(base_file):
        texts.append(Path(base_file).read_text())
    texts.extend(_git_versions(base_file))
    found = None
    for text in texts:
        try:
            program = load_source(text, base_file)
        except Exception:  # an old version the current language no longer accepts
            continue
        if print_program(program) == printed:
            found = program
            break
    _BASES[key] = found
    return found


def tick_cap(run: Path) -> int | None:
    """The most facts a node took into one tick in the run's code (``MAX_TICK_FACTS`` of
    ``hydrodeploy/runtime/node.py`` at the run's commit); None when that code had no cap or the
    commit is unknown here."""
    commit = str((_spec(run).get("versions") or {}).get("git") or "").removesuffix("+dirty")
    if not commit:
        return None
    try:
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{commit}:hydrodeploy/runtime/node.py"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    found = re.search(r"^MAX_TICK_FACTS = ([0-9_]+)", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def _spec(run: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((run / "spec.yaml").read_text())
    return data


def _quotas(topology: Topology, quota: float | None) -> dict[str, float | None]:
    return {a: quota for _, a, _ in topology.addresses()}


def _history(run: Path, base: ir.Program, before: int) -> list[tuple[WindowProfile, Mapping[str, Sequence[str]]]]:
    """Every window measured before iteration ``before``, as the loop's history had them."""
    names: Mapping[str, Sequence[str]] = identities(load_source(CALIBRATION_PROGRAM.read_text(), str(CALIBRATION_PROGRAM)), None)
    out: list[tuple[WindowProfile, Mapping[str, Sequence[str]]]] = [(p, names) for p in load_profiles(run / "calibration" / "profiles")]
    for path in sorted((run / "iterations").glob("*/iteration.json")):
        data = json.loads(path.read_text())
        if int(data["index"]) >= before or data.get("status") != "measured":
            continue
        program, _ = derive(base, Configuration.from_json(data["config"]))
        names = identities(program, base.path)
        out.extend((p, names) for p in load_profiles(path.parent / "profiles"))
    return out


def refit(run: Path, base: ir.Program, parent: Mapping[str, Any], before: int, stored: Calibration) -> Calibration:
    """The parent's calibration made again from the archived profiles with the code as it is."""
    spec = _spec(run)
    machine = spec["cluster"].get("machine") or {}
    quota = machine.get("cpus")
    period_s = cfs_period_s(quota, machine.get("cfs_period_us", 10000))
    program, topology = derive(base, Configuration.from_json(parent["config"]))
    folder = run / "iterations" / f"{int(parent['index']):02d}" / "profiles"
    profiles = load_profiles(folder)
    best_point = int((parent.get("measured") or {}).get("point", 0))
    best = next(p for p in profiles if p.point == best_point)
    timeout = spec["workload"]["clients"].get("timeout_ms")
    cores = int((spec.get("versions") or {}).get("cpus") or os.cpu_count() or 1)
    host = None if stored.host_cores is None else host_capacity(best, cores)  # as the loop reckons the host's cores now
    return calibrate(
        program, topology, _quotas(topology, quota), period_s, best, profiles, _history(run, base, before), base.path,
        host, timeout, measured_from=f"iteration {parent['index']}, point {best_point} (refit)",
        max_clients=max(WorkloadSpec.model_validate(spec["workload"]).analyze_sweep().counts()),
    )  # fmt: skip


def _around(decision: Mapping[str, Any], calibration: Calibration, parent_throughput: float) -> int:
    """The client count the loop loaded the chosen configuration around: the calibration's, scaled
    by the placement's expected gain."""
    chosen = decision["chosen"]["description"]
    for s in decision.get("structures", ()):
        if s.get("description") == chosen and s.get("placement"):
            gain = float(s["placement"].get("throughput") or 0.0) / max(parent_throughput, 1e-9)
            return _scaled_clients(calibration.clients, gain, calibration.max_clients)
    return calibration.clients


def backtest_iteration(run: Path, it: Mapping[str, Any], mode: str) -> Row | None:
    folder = run / "iterations" / f"{int(it['index']):02d}"
    decision = json.loads((folder / "decision.json").read_text())
    stored = Calibration.from_json(decision["calibration"])
    measured = it["measured"]
    row = Row(
        run.name, int(it["index"]), it.get("kept"), str(it.get("description", "")), float(it.get("predicted_throughput") or math.nan),
        math.nan, float(measured["max_throughput"]), "", "", 0, int(measured.get("clients", 0)),
    )  # fmt: skip
    paired = it.get("paired") or {}
    if paired.get("ratio"):
        row.parent_peak, row.paired_ratio = float(paired["parent_peak"]), float(paired["ratio"])
    if stored.base_file is None:
        row.warnings.append("the calibration names no base file")
        return row
    base = base_program(run, stored.base_file)
    if base is None:
        row.warnings.append(f"no version of {stored.base_file} prints as iterations/00/program.ded: skipped")
        return row
    config = Configuration.from_json(it["config"])
    program, topology = derive(base, config)
    if print_program(program) != (folder / "program.ded").read_text():
        row.warnings.append("the rewrites now derive a program that differs from the one deployed")
    spec = _spec(run)
    machine = spec["cluster"].get("machine") or {}
    quota = machine.get("cpus")
    timeout = spec["workload"]["clients"].get("timeout_ms")
    parent = json.loads((run / "iterations" / f"{int(it['parent']):02d}" / "iteration.json").read_text())
    cap = tick_cap(run)
    perfsim.MAX_TICK_FACTS = cap if cap is not None else UNCAPPED  # simulate the nodes as they ran then
    started = time.perf_counter()
    calibration = refit(run, base, parent, int(it["index"]), stored) if mode == "refit" else stored
    if mode == "stored" and not stored.costs.rule_scale:
        row.warnings.append("the stored calibration has no per-rule in-process scales (made before them): use --calibration refit")
    around = _around(decision, calibration, float((parent.get("measured") or {}).get("max_throughput", 0.0)))
    prediction = predict(calibration, program, topology, _quotas(topology, quota), around=around, timeout_ms=timeout)
    row.seconds = time.perf_counter() - started
    row.predicted = prediction.throughput
    row.bound = prediction.bound
    row.clients = prediction.clients
    cores = int((spec.get("versions") or {}).get("cpus") or os.cpu_count() or 1)
    parent_best = next(
        (p for p in load_profiles(run / "iterations" / f"{int(it['parent']):02d}" / "profiles")
         if p.point == int((parent.get("measured") or {}).get("point", 0))),
        None,
    )  # fmt: skip
    if parent_best is not None:
        row.background_then = background_cores(parent_best, cores)
    profiles = load_profiles(folder / "profiles")
    best = next((p for p in profiles if p.point == int(measured.get("point", 0))), None)
    if best is None:
        row.warnings.append("no profile of the measured best point")
        return row
    row.background_now = background_cores(best, cores)
    fixed = calibration.runtime.node
    busiest = max(best.nodes, key=lambda n: n.saturation)
    row.measured_bound = busiest.address
    per_request = {
        a: (load - fixed) / prediction.throughput for a, load in prediction.loads.items() if prediction.throughput > 0
    }
    shown = sorted(best.nodes, key=lambda n: -n.saturation)[:3]
    if prediction.bound in per_request and all(n.address != prediction.bound for n in shown):
        shown.append(best.node(prediction.bound))
    for n in shown:
        row.nodes.append(
            NodeRow(n.address, per_request.get(n.address, math.nan) * 1e6, (n.cpu - fixed) / best.throughput * 1e6, n.saturation)
        )
    return row


def iterations(runs: Sequence[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every iteration deployed after a prediction (measured, kept or rolled back)."""
    out = []
    for run in runs:
        for path in sorted((run / "iterations").glob("*/iteration.json")):
            data = json.loads(path.read_text())
            if data.get("status") != "measured" or data.get("prediction") is None or data.get("parent") is None:
                continue
            if not (path.parent / "decision.json").exists():
                continue
            out.append((run, data))
    return out


def _pct(x: float) -> str:
    return f"{x:+.0%}" if math.isfinite(x) else "n/a"


def summary(rows: Sequence[Row], paired: bool = False) -> str:
    errors = [e for e in (r.paired_error if paired else r.error for r in rows) if math.isfinite(e)]
    if not errors:
        return "no iteration"
    absolute = sorted(abs(e) for e in errors)
    within = sum(1 for e in absolute if e <= TOLERANCE)
    return (
        f"{len(errors)} iterations: |error| mean {statistics.mean(absolute):.1%}, median {statistics.median(absolute):.1%}, "
        f"max {absolute[-1]:.1%}; signed mean {statistics.mean(errors):+.1%}; within {TOLERANCE:.0%}: {within}/{len(errors)}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run directories (default: the archived analyze runs under /tmp)")
    parser.add_argument("--calibration", choices=("stored", "refit"), default="stored")
    parser.add_argument("--seeds", type=int, default=costmodel.SIM_SEEDS, help="simulation seeds per load")
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args(argv)
    costmodel.SIM_SEEDS = args.seeds
    patterns = args.runs or DEFAULT_RUNS
    runs = sorted({Path(p).resolve() for pattern in patterns for p in glob.glob(pattern) if Path(p, "iterations").is_dir()})
    rows: list[Row] = []
    print(
        f"{'run':<38}{'it':>3} {'kept':<5}{'then':>8}{'now':>8}{'measured':>10}{'err then':>9}{'err now':>9}"
        f"{'paired: then':>13}{'now':>6}{'background':>12}  bound (predicted / measured)"
    )
    for run, it in iterations(runs):
        row = backtest_iteration(run, it, args.calibration)
        if row is None:
            continue
        rows.append(row)
        kept = "-" if row.kept is None else ("yes" if row.kept else "no")
        background = f"{row.background_then:.1f}->{row.background_now:.1f}"
        print(
            f"{row.run:<38}{row.index:>3} {kept:<5}{row.archived:>8,.0f}{row.predicted:>8,.0f}{row.measured:>10,.0f}"
            f"{_pct(row.archived_error):>9}{_pct(row.error):>9}{_pct(row.archived_paired_error):>13}{_pct(row.paired_error):>6}"
            f"{background:>12}  {row.bound} / {row.measured_bound}"
        )
        for n in row.nodes:
            ratio = n.predicted_us / n.measured_us - 1 if n.measured_us > 0 else math.nan
            print(
                f"{'':<44}{n.address:<24} CPU/request predicted {n.predicted_us:7.1f} µs, measured {n.measured_us:7.1f} µs "
                f"({_pct(ratio)}; measured at {n.saturation:.0%} of its quota)"
            )
        for w in row.warnings:
            print(f"{'':<44}warning: {w}")
        sys.stdout.flush()
    print()
    print("background: cores other programs used at the calibration's point -> at the measured best point")
    for label, chosen in (
        ("all", rows),
        (f"background within {BACKGROUND_TOLERANCE} cores of the calibration's", [r for r in rows if r.comparable]),
        ("background changed more", [r for r in rows if not r.comparable]),
    ):
        print(f"{label}:")
        print(f"  then: {summary([_as_then(r) for r in chosen])}")
        print(f"  now:  {summary(chosen)}")
    checked = [r for r in rows if math.isfinite(r.paired_error)]
    if checked:
        print("against the paired checks (the predicted ratio against the ratio measured back to back):")
        for label, chosen in (("all", checked), ("kept", [r for r in checked if r.kept])):
            print(f"  {label}, then: {summary([_as_then(r) for r in chosen], paired=True)}")
            print(f"  {label}, now:  {summary(chosen, paired=True)}")
    if args.json:
        Path(args.json).write_text(json.dumps([_row_json(r) for r in rows], indent=1))


def _as_then(row: Row) -> Row:
    return Row(
        row.run, row.index, row.kept, row.description, row.archived, row.archived, row.measured, "", "", 0, 0,
        parent_peak=row.parent_peak, paired_ratio=row.paired_ratio,
    )  # fmt: skip


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "run": row.run, "index": row.index, "kept": row.kept, "description": row.description,
        "archived": row.archived, "predicted": row.predicted, "measured": row.measured, "error": row.error,
        "parent_peak": row.parent_peak, "paired_ratio": row.paired_ratio, "paired_error": row.paired_error,
        "bound": row.bound, "measured_bound": row.measured_bound, "clients": row.clients,
        "measured_clients": row.measured_clients, "seconds": row.seconds, "warnings": row.warnings,
        "background_then": row.background_then, "background_now": row.background_now,
        "nodes": [n.__dict__ for n in row.nodes],
    }  # fmt: skip


if __name__ == "__main__":
    main()
