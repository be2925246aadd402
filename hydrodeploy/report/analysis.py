"""Reports of ``hydrodeploy analyze`` runs, rendered from the run directory's files alone.

:func:`write_summary` writes ``summary.json`` (the form ``hydrodeploy run`` writes, one entry per
iteration); :func:`render` draws the plots and writes ``report.md`` and ``report.html``:

- one throughput-latency curve per iteration, on one plot;
- every node's CPU against its quota at each iteration's best point;
- where each bottleneck's CPU went (its rules and the runtime's parts), and perf's attribution
  with a flame graph when perf ran;
- predicted against measured maximum throughput;
- the chain of rewrites with the reason for each (bottleneck evidence, candidates, prediction,
  outcome), and the final program.
"""

from __future__ import annotations

import html
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from hydrodeploy.bench.measure import Point, drift_flagged, drifted, measured_peak, peak
from hydrodeploy.errors import HydrodeployError
from hydrodeploy.optimize.confirm import CONFIRMATION_FILE, Confirmation
from hydrodeploy.optimize.paired import PairedCheck
from hydrodeploy.profile.machine import machine_note
from hydrodeploy.report.load import load_points


class ReportError(HydrodeployError):
    """A run directory that cannot be reported on."""


PLOTS = {
    "curves": "iterations_throughput_latency.png",
    "cpu": "iterations_node_cpu.png",
    "rules": "iterations_bottleneck_breakdown.png",
    "predicted": "predicted_vs_measured.png",
}


# ---- reading the run directory --------------------------------------------------------------


def iterations(run: Path) -> list[dict[str, Any]]:
    """Every iteration's record; a ``hydrodeploy run`` directory (points but no iteration.json)
    gets one made from its points."""
    folder = run / "iterations"
    out = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        record = sub / "iteration.json"
        if record.exists():
            out.append(json.loads(record.read_text()))
        elif (sub / "points").is_dir():
            out.append(_as_run(run, int(sub.name)))
    return out


def _as_run(run: Path, index: int) -> dict[str, Any]:
    """The record of an iteration that ``hydrodeploy run`` measured (one deployment, no rewrite)."""
    points = load_points(run, index)
    top = peak(points)
    topology = _read(run / "iterations" / f"{index:02d}" / "topology.json") or {}
    machines = sum(len(topology.get("partitions", {}).get(a, [a])) for addrs in topology.get("instances", {}).values() for a in addrs)
    return {
        "index": index,
        "description": "the program as run",
        "config": {"decouplings": [], "partitions": []},
        "steps": [],
        "parent": None,
        "machines": machines,
        "status": "measured" if top else "failed",
        "predicted_throughput": None,
        "measured": None if top is None else measured_peak(top),
        "kept": top is not None,
        "reason": "measured by hydrodeploy run",
        "bottleneck": None,
    }


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _profiles(run: Path, index: int) -> dict[int, dict[str, Any]]:
    folder = run / "iterations" / f"{index:02d}" / "profiles"
    if not folder.is_dir():
        return {}
    return {int(p.stem): json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _spec(run: Path) -> dict[str, Any]:
    import yaml

    path = run / "spec.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def _rewrite(it: Mapping[str, Any], by_index: Mapping[int, Mapping[str, Any]]) -> str | None:
    """What this iteration changed relative to the configuration it came from."""
    if it["index"] == 0 or it.get("parent") is None:
        return None
    parent = by_index.get(int(it["parent"]))
    before = set(parent["steps"]) if parent else set()
    new = [s for s in it["steps"] if s not in before]
    return "; ".join(new) if new else it["description"]


# ---- summary.json ---------------------------------------------------------------------------


def summary(run: Path) -> dict[str, Any]:
    """summary.json: per iteration its machines, best point, prediction, rewrite and outcome."""
    spec = _spec(run)
    its = iterations(run)
    by_index = {int(i["index"]): i for i in its}
    fresh = fresh_deployments(run, its)
    entries = []
    for it in its:
        measured = it.get("measured") or {}
        every = ([measured["max_throughput"]] if measured else []) + fresh.get(int(it["index"]), [])
        entries.append(
            {
                "index": it["index"],
                "machines": it["machines"],
                "max_throughput": None if not measured else round(measured["max_throughput"], 1),
                "p50_ms": None if not measured else round(measured["p50_ms"], 3),
                "p99_ms": None if not measured else round(measured["p99_ms"], 3),
                "predicted_throughput": None if it.get("predicted_throughput") is None else round(it["predicted_throughput"], 1),
                # it and its parent deployed afresh one after the other (:mod:`hydrodeploy.optimize.paired`)
                "paired_ratio": _rounded((it.get("paired") or {}).get("ratio"), 3),
                "paired_prediction_error": _rounded((it.get("paired") or {}).get("prediction_error"), 3),
                # its sweep's maximum and every fresh deployment of it (:func:`fresh_deployments`)
                "deployments": [round(x, 1) for x in every],
                "measured_every_deployment": round(statistics.fmean(every), 1) if every else None,
                # this machine's speed in the peak's window over the calibration's (the speed meter)
                "window_slowdown": _rounded(measured.get("window_slowdown"), 3),
                "prediction_error_at_calibration_speed": _rounded(measured.get("prediction_error_at_calibration_speed"), 3),
                "rewrite": _rewrite(it, by_index),
                "kept": it.get("kept"),
                "status": it.get("status"),
                "configuration": it["description"],
            }
        )
    workload = spec.get("workload", {})
    protocol = Path(workload.get("protocol", "program")).stem
    cluster = spec.get("cluster", {}).get("name", "")
    state = _read(run / "state.json") or {}
    base = next((e["max_throughput"] for e in entries if e["index"] == 0 and e["max_throughput"]), None)
    kept = [e for e in entries if e["kept"] and e["max_throughput"]]
    final = kept[-1] if kept else None
    confirmation = confirmed(run, None if final is None else final["index"])
    confirmed_speedup = None if confirmation is None else confirmation.speedup
    return {
        "protocol": protocol,
        "cluster": cluster,
        "iterations": entries,
        "stopped": state.get("stopped"),
        "final": None if final is None else final["index"],
        "speedup": None if not (base and final) else round(final["max_throughput"] / base, 3),
        # the base program and the final configuration deployed in turn after the loop (:mod:`hydrodeploy.optimize.confirm`)
        "confirmed_speedup": None if confirmed_speedup is None else round(confirmed_speedup, 3),
    }


def fresh_deployments(run: Path, its: Sequence[Mapping[str, Any]]) -> dict[int, list[float]]:
    """Per iteration, the throughput of every fresh deployment of its configuration (the mean of
    the windows that count of each): in paired checks, as the rewritten configuration or as its
    parent, and in the confirmation. With its sweep's maximum, these are every measurement of the
    configuration the run made; this machine's speed moves by tens of percent within minutes, so
    their mean is a steadier measure of the configuration than any one of them."""
    visits = [v for it in its if (check := paired_check(it)) is not None for v in check.visits]
    data = _read(run / CONFIRMATION_FILE)
    if data is not None:
        visits.extend(Confirmation.from_json(data).visits)
    out: dict[int, list[float]] = {}
    for visit in visits:
        if visit.counted and not visit.error:
            out.setdefault(visit.iteration, []).append(statistics.fmean(visit.counted))
    return out


def _rounded(x: Any, digits: int) -> float | None:
    return None if x is None else round(float(x), digits)


def paired_check(it: Mapping[str, Any]) -> PairedCheck | None:
    """An iteration's paired check (it and its parent deployed afresh one after the other), if any."""
    data = it.get("paired")
    return None if data is None else PairedCheck.from_json(data)


def confirmed(run: Path, final: int | None) -> Confirmation | None:
    """The run's confirmation of the speed-up of its final iteration ``final``, when there was one."""
    data = _read(run / CONFIRMATION_FILE)
    if data is None or final is None:
        return None
    confirmation = Confirmation.from_json(data)
    return confirmation if confirmation.final == final else None


def write_summary(run: Path) -> Path:
    path = run / "summary.json"
    path.write_text(json.dumps(summary(run), indent=2) + "\n")
    return path


# ---- plots ----------------------------------------------------------------------------------


def plot_curves(run: Path, its: Sequence[Mapping[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for it in its:
        points: list[Point] = load_points(run, it["index"])
        if not points:
            continue
        ordered = sorted(points, key=lambda p: (p.clients, p.repeat))
        style = "-" if it.get("kept") else ":"
        label = f"{it['index']}: {it['machines']} machines" + ("" if it.get("kept") else " (rolled back)")
        ax.plot([p.throughput for p in ordered], [p.p50_ms for p in ordered], "o" + style, markersize=4, label=label)
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("median latency (ms)")
    ax.set_title("throughput-latency, one curve per iteration (points: client counts)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, title="iteration", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_cpu(run: Path, its: Sequence[Mapping[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    colours: dict[str, Any] = {}
    cmap = plt.get_cmap("tab10")
    for x, it in enumerate(its):
        measured = it.get("measured") or {}
        profile = _profiles(run, it["index"]).get(int(measured.get("point", -1)))
        if profile is None:
            continue
        nodes = profile["nodes"]
        for j, node in enumerate(nodes):
            comp = node["component"]
            if comp not in colours:
                colours[comp] = cmap(len(colours) % 10)
            quota = node["quota"] or 1.0
            jitter = (j / max(1, len(nodes) - 1) - 0.5) * 0.5
            neck = (it.get("bottleneck") or {}).get("address") == node["address"]
            ax.scatter(
                [x + jitter], [node["cpu"] / quota], s=40 if neck else 14, color=colours[comp],
                edgecolors="black" if neck else "none", label=comp,
            )  # fmt: skip
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(its)))
    ax.set_xticklabels([str(it["index"]) for it in its])
    ax.set_xlabel("iteration (best point of each; outlined: the bottleneck)")
    ax.set_ylabel("CPU / quota")
    ax.set_title("every node's CPU against its quota", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


TOP_RULES = 5  # rules named in a bottleneck's breakdown; the others are summed


def _breakdown(it: Mapping[str, Any]) -> dict[str, float]:
    neck = it.get("bottleneck") or {}
    ranked = sorted(neck.get("rules", []), key=lambda r: -r[1])
    rules = {f"rule: {name}": share for name, share in ranked[:TOP_RULES]}
    rest = sum(share for _, share in ranked[TOP_RULES:])
    if rest > 0:
        rules["rules: the others"] = rest
    parts = {k: v for k, v in (neck.get("parts") or {}).items() if k != "rules"}
    return {**rules, **parts}


def plot_breakdown(its: Sequence[Mapping[str, Any]], path: Path) -> Path:
    measured = [it for it in its if it.get("bottleneck")]
    fig, ax = plt.subplots(figsize=(10, max(3.2, 1.2 + 0.55 * len(measured))), dpi=110)
    labels: list[str] = []
    for it in measured:
        for name in _breakdown(it):
            if name not in labels:
                labels.append(name)
    cmap = plt.get_cmap("tab20")
    for y, it in enumerate(measured):
        left = 0.0
        parts = _breakdown(it)
        for name in labels:
            share = parts.get(name, 0.0)
            if share <= 0:
                continue
            ax.barh(y, share, left=left, color=cmap(labels.index(name) % 20), label=name, edgecolor="white")
            left += share
    ax.set_yticks(range(len(measured)))
    ax.set_yticklabels([f"{it['index']}: {it['bottleneck']['address']}" for it in measured], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of the bottleneck node's CPU")
    ax.set_title("where each bottleneck's CPU went (rules, and the runtime's own work)", fontsize=10)
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=False))
    ax.legend(unique.values(), unique.keys(), fontsize=6.5, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_predicted(its: Sequence[Mapping[str, Any]], path: Path, fresh: Mapping[int, Sequence[float]] | None = None) -> Path:
    """Measured (the sweep's maximum) and predicted maximum throughput per iteration; with
    ``fresh``, each fresh deployment of an iteration's configuration as a dot on its bar."""
    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    xs = list(range(len(its)))
    measured = [(it.get("measured") or {}).get("max_throughput", 0.0) or 0.0 for it in its]
    predicted = [it.get("predicted_throughput") or 0.0 for it in its]
    ax.bar([x - 0.2 for x in xs], measured, width=0.4, label="measured (sweep)", color="tab:blue")
    ax.bar([x + 0.2 for x in xs], predicted, width=0.4, label="predicted before deploying", color="tab:orange")
    dots = [(x - 0.2, y) for x, it in zip(xs, its, strict=True) for y in (fresh or {}).get(int(it["index"]), [])]
    if dots:
        ax.scatter([d[0] for d in dots], [d[1] for d in dots], s=14, color="black", zorder=3, label="measured (fresh deployments)")
    for x, m, p in zip(xs, measured, predicted, strict=True):
        if m and p:
            ax.annotate(f"{p / m - 1:+.0%}", (x + 0.2, p), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{it['index']}{'' if it.get('kept') else ' x'}" for it in its])
    ax.set_xlabel("iteration (x: rolled back or rejected)")
    ax.set_ylabel("max throughput (requests/s)")
    ax.set_title("predicted against measured maximum throughput", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ---- the report -----------------------------------------------------------------------------


def _fmt(x: Any, spec: str = ",.0f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def _sections(run: Path) -> list[tuple[str, list[Any]]]:
    """The report's content as (heading, blocks); a block is a str (paragraph), a ("table",
    header, rows), an ("image", path, alt) or a ("code", text)."""
    spec = _spec(run)
    its = iterations(run)
    data = summary(run)
    workload = spec.get("workload", {})
    cluster = spec.get("cluster", {})
    windows = (workload.get("analyze") or {}).get("windows") or workload.get("windows") or {}
    out: list[tuple[str, list[Any]]] = []
    base = data["iterations"][0]["max_throughput"] if data["iterations"] else None
    final = next((e for e in data["iterations"] if e["index"] == data["final"]), None)
    intro: list[Any] = [
        f"Protocol `{Path(workload.get('protocol', '?')).name}` on cluster `{cluster.get('name', '?')}` "
        f"(kind {cluster.get('kind', 'local')}, {_fmt((cluster.get('machine') or {}).get('cpus'), 'g')} cores per node), "
        f"machine budget {(workload.get('budget') or {}).get('machines') or 'none'}, "
        f"SLO p99 {(workload.get('slo') or {}).get('p99_ms') or 'none'} ms."
    ]
    if final and base:
        intro.append(
            f"From {base:,.0f} to {final['max_throughput']:,.0f} requests/s ({final['max_throughput'] / base:.2f}x the base "
            f"program, measured in this run) on {final['machines']} machines (iteration {final['index']})."
        )
    if data.get("stopped"):
        intro.append(f"The loop stopped: {data['stopped']}.")
    confirmation = confirmed(run, data["final"])
    if confirmation is not None:
        sweeps = final["max_throughput"] / base if final and base else None
        intro.append(
            f"Confirmation, after the loop: {confirmation.describe(sweeps)}. Each deployment was measured at its "
            "peak's client count; the order turns around every pair, so a change of this machine's speed over the "
            "minutes between the sweeps does not carry into the ratio."
        )
    intro.append(
        "How it was measured: closed-loop clients, every point a "
        f"{_fmt(windows.get('warmup_s'), 'g')} s warm-up and a {_fmt(windows.get('measure_s'), 'g')} s measurement window; "
        "throughput is completed requests per second of the window, latencies from HdrHistograms merged over client "
        "processes; per-node CPU is each process's CPU time over the window (its own counters, and psutil), against "
        "its quota; the maximum throughput of an iteration is the mean throughput of its peak client count within "
        "the SLO, which the sweep measures again once it has gone past it (one window at the peak is the highest of "
        "several noisy draws)."
    )
    if any(e["paired_ratio"] is not None for e in data["iterations"]):
        intro.append(
            "Paired check: after each rewritten configuration's sweep, the configuration it came from, it, and the "
            "configuration it came from again were deployed afresh, one after the other, each measured at the knee of "
            "its sweep (runs before the parent was deployed again: the parent, then it). Its throughput over the mean "
            "of its parent's deployments decided whether the rewrite was kept, and judged its prediction at one speed "
            "of this machine: the predicted "
            "ratio (prediction over the parent's sweep, on which it was calibrated) against the measured one "
            "(\"error, paired\"). \"error, sweeps\" compares the prediction with a sweep made a minute or more "
            "after the one it was calibrated on. \"every deployment\" is the mean of every measurement of the "
            "configuration in the run: its sweep's maximum and each of its fresh deployments (in paired checks, as "
            "either side, and in the confirmation), how many in brackets; this machine's speed moves by tens of "
            "percent within minutes, so one measurement is a noisy draw of it. \"machine, peak / calibration\" is "
            "the speed meter's reading (the CPU time of a fixed piece of work, sampled twice a second while a window "
            "is measured) in the window of the peak over the window the prediction was calibrated on: 1.5x means "
            "the machine ran 1.5 times slower. \"error at calibration speed\" compares the prediction with the peak "
            "scaled by it, as if throughput followed the machine's speed: a diagnosis of the model, not a measurement."
        )
    rows = [
        [
            str(e["index"]), str(e["machines"]), _fmt(e["max_throughput"]), _fmt(e["predicted_throughput"]),
            "-" if not (e["predicted_throughput"] and e["max_throughput"]) else f"{e['predicted_throughput'] / e['max_throughput'] - 1:+.0%}",
            "-" if e["paired_ratio"] is None else f"{e['paired_ratio']:.2f}x",
            "-" if e["paired_prediction_error"] is None else f"{e['paired_prediction_error']:+.0%}",
            "-" if len(e["deployments"]) < 2 else f"{_fmt(e['measured_every_deployment'])} ({len(e['deployments'])})",
            "-" if len(e["deployments"]) < 2 or not e["predicted_throughput"]
            else f"{e['predicted_throughput'] / e['measured_every_deployment'] - 1:+.0%}",
            "-" if e.get("window_slowdown") is None else f"{e['window_slowdown']:.2f}x",
            "-" if e.get("prediction_error_at_calibration_speed") is None else f"{e['prediction_error_at_calibration_speed']:+.0%}",
            _fmt(e["p50_ms"], ".1f"), _fmt(e["p99_ms"], ".1f"), {True: "kept", False: "rolled back", None: "-"}[e["kept"]],
            e["rewrite"] or "base program",
        ]
        for e in data["iterations"]
    ]  # fmt: skip
    header = [
        "#", "machines", "max req/s", "predicted", "error, sweeps", "paired ratio", "error, paired",
        "every deployment req/s (n)", "error, every deployment", "machine, peak / calibration", "error at calibration speed",
        "p50 ms", "p99 ms", "outcome", "rewrite",
    ]  # fmt: skip
    intro.append(("table", header, rows))
    out.append(("Summary", intro))
    out.append(
        (
            "Throughput and latency",
            [("image", PLOTS["curves"], "throughput-latency curves, one per iteration"),
             ("image", PLOTS["predicted"], "predicted against measured maximum throughput")],
        )
    )  # fmt: skip
    out.append(("CPU of every node", [("image", PLOTS["cpu"], "per-node CPU against quota per iteration")]))
    out.append(("Bottlenecks", [("image", PLOTS["rules"], "per-rule breakdown of each bottleneck"), *_bottleneck_blocks(run, its)]))
    out.append(("Chain of rewrites", _chain_blocks(run, its)))
    kept = [it for it in its if it.get("kept")]
    if kept:
        program = run / "iterations" / f"{kept[-1]['index']:02d}" / "program.ded"
        steps = "\n".join(kept[-1]["steps"]) or "(no rewrite)"
        text = program.read_text() if program.exists() else ""
        out.append(
            (
                "Final program",
                [f"Iteration {kept[-1]['index']}: {kept[-1]['description']}.", ("code", steps), ("code", text)],
            )
        )
    return out


def _bottleneck_blocks(run: Path, its: Sequence[Mapping[str, Any]]) -> list[Any]:
    blocks: list[Any] = []
    for it in its:
        neck = it.get("bottleneck")
        if not neck:
            continue
        blocks.append(f"**Iteration {it['index']}** — bottleneck {neck['address']}: " + "; ".join(neck.get("evidence", [])) + ".")
        perf = it.get("perf")
        if perf and perf.get("available"):
            rows = [[k, f"{v:.0%}"] for k, v in sorted(perf.get("attribution", {}).items(), key=lambda kv: -kv[1])]
            blocks.append(
                f"perf on {perf['node']}: {perf['samples']} samples of `{ 'cpu-clock' }` at {perf['frequency']} Hz over "
                f"{perf['seconds']:g} s; the interpreter's share is split between rules and the runtime by the node's "
                "per-rule CPU counters."
            )
            blocks.append(("table", ["work", "share of CPU"], rows))
            image = Path("iterations") / f"{it['index']:02d}" / "perf" / (perf.get("flamegraph") or "flamegraph.png")
            if (run / image).exists():
                blocks.append(("image", str(image), f"flame graph of {perf['node']}"))
        elif perf:
            blocks.append(f"perf did not run: {perf.get('reason')}. The breakdown above comes from the runtime's own counters.")
    return blocks


def _chain_blocks(run: Path, its: Sequence[Mapping[str, Any]]) -> list[Any]:
    blocks: list[Any] = []
    for it in its:
        if it["index"] == 0:
            measured = it.get("measured") or {}
            blocks.append(
                f"**0. Base program** — {_fmt(measured.get('max_throughput'))} requests/s{_drift_note(measured)} "
                f"on {it['machines']} machines."
            )
            continue
        decision = _read(run / "iterations" / f"{it['index']:02d}" / "decision.json") or {}
        neck = decision.get("bottleneck") or {}
        cal = decision.get("calibration") or {}
        measured = it.get("measured") or {}
        head = (
            f"**{it['index']}. {it['description']}** — from iteration {it.get('parent')}, whose bottleneck was "
            f"{neck.get('address', '?')} ({_fmt(neck.get('saturation'), '.0%')} of its quota)."
        )
        blocks.append(head)
        reason = (decision.get("chosen") or {}).get("reason")
        if reason:
            blocks.append(f"Chosen although {reason}.")
        cands = decision.get("candidates") or {}
        for d in cands.get("decouplings", []):
            also = f" (also: {', '.join(d['also'])})" if d.get("also") else ""
            blocks.append(f"- candidate: {d['description']} — {d['summary']}{also}")
        if cands.get("partition"):
            blocks.append(f"- candidate: partition {cands['component']} — {cands['partition']['summary']}")
        for pruned in decision.get("pruned", []):
            blocks.append(f"- not tried: {pruned['description']} — {pruned['reason']}")
        rejected = cands.get("rejected", [])
        if rejected:
            blocks.append(f"- {len(rejected)} rewrite(s) rejected, e.g. {rejected[0]}")
        rows = []
        for s in decision.get("structures", []):
            p = s.get("placement") or {}
            # the current structure with its counts placed again (older decisions have no reason)
            what = f"re-placement: {s['description']}" if s.get("combo") == [] and s.get("reason") else s["description"]
            bound = f"error: {s['error']}" if s.get("error") else p.get("bound", "")
            rows.append(
                [what, str(p.get("machines", "-")), _fmt(p.get("throughput")), _fmt(s.get("predicted_throughput")),
                 f"{bound}; {s['skipped']}" if s.get("skipped") else bound]
            )  # fmt: skip
        if rows:
            blocks.append(("table", ["combination (with MILP partition counts)", "machines", "MILP req/s", "predicted req/s", "bound"], rows))
        if cal:
            blocks.append(
                f"Cost model calibrated on {cal.get('measured_from', '?')}: it reproduced that configuration's "
                f"{_fmt(cal.get('throughput'))} requests/s as {_fmt(cal.get('modelled'))}; "
                f"runtime costs per message in {_fmt(cal['runtime']['msg_in'] * 1e6, '.2f')} µs, out "
                f"{_fmt(cal['runtime']['msg_out'] * 1e6, '.2f')} µs (to a client {_fmt(cal['runtime'].get('reply', 0.0) * 1e6, '.2f')} µs "
                f"more), per frame out {_fmt(cal['runtime']['frame_out'] * 1e6, '.1f')} µs, in "
                f"{_fmt(cal['runtime'].get('frame_in', 0.0) * 1e6, '.1f')} µs, "
                f"per tick {_fmt(cal['runtime']['tick'] * 1e6, '.1f')} µs; rule CPU on the cluster "
                f"{cal['costs']['evaluate_scale']:.2f}x the same rules in this process."
                + (
                    f" Other programs used {decision['background_cores']:.2f} of this machine's cores while it was measured."
                    if decision.get("background_cores") is not None
                    else ""
                )
                + (
                    f" The chosen configuration, predicted {_fmt(it.get('predicted_throughput'))}, is "
                    f"{decision['predicted_gain'] - 1:+.0%} over that {_fmt(cal.get('modelled'))} in the same model: "
                    "candidates are judged by this gain, on which the model's error cancels."
                    if decision.get("predicted_gain") is not None
                    else ""
                )
            )
        verification = it.get("verification") or {}
        paired = paired_check(it)
        check = "" if paired is None else paired.describe(int(it["index"]))
        outcome = (
            f"Predicted {_fmt(it.get('predicted_throughput'))} requests/s; verified in simulation: "
            f"{verification.get('summary', 'not verified')}; measured {_fmt(measured.get('max_throughput'))} requests/s"
            f"{_drift_note(measured)}. "
            + (f"{check[:1].upper()}{check[1:]}. " if check else "")
            + f"{it.get('reason', '')}."
        )
        slower = measured.get("machine_slowdown")
        if slower is not None and it.get("parent") is not None:
            outcome += f" Probed before and after the sweep, {machine_note(slower, int(it['parent']))}."
        blocks.append(outcome)
    return blocks


def _drift_note(measured: dict[str, Any]) -> str:
    """The drift of an iteration's peak (:attr:`~hydrodeploy.bench.measure.Peak.drift`) when it
    exceeds the flag: the mean's points, and how far apart they were."""
    drift = measured.get("drift")
    if not drift_flagged(drift):
        return ""
    points = ", ".join(_fmt(x) for x in measured.get("measurements", []))
    return f" (the mean of {points} at {measured.get('clients')} clients: {drifted(drift)})"


def _markdown(sections: list[tuple[str, list[Any]]], title: str) -> str:
    lines = [f"# {title}", ""]
    for heading, blocks in sections:
        lines += [f"## {heading}", ""]
        for b in blocks:
            if isinstance(b, str):
                lines += [b, ""]
            elif b[0] == "table":
                lines.append("| " + " | ".join(b[1]) + " |")
                lines.append("| " + " | ".join("---" for _ in b[1]) + " |")
                lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in b[2]]
                lines.append("")
            elif b[0] == "image":
                lines += [f"![{b[2]}]({b[1]})", ""]
            elif b[0] == "code":
                lines += ["```", b[1].rstrip("\n"), "```", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Escape, then render **bold** and `code`."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _html(sections: list[tuple[str, list[Any]]], title: str) -> str:
    body: list[str] = [f"<h1>{html.escape(title)}</h1>"]
    for heading, blocks in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>")
        items: list[str] = []
        for b in blocks:
            if isinstance(b, str):
                if b.startswith("- "):
                    items.append(f"<li>{_inline(b[2:])}</li>")
                    continue
                if items:
                    body.append("<ul>" + "".join(items) + "</ul>")
                    items = []
                body.append(f"<p>{_inline(b)}</p>")
                continue
            if items:
                body.append("<ul>" + "".join(items) + "</ul>")
                items = []
            if b[0] == "table":
                head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in b[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif b[0] == "image":
                body.append(f'<figure><img class="plot" src="{html.escape(b[1])}" alt="{html.escape(b[2])}"><figcaption>{html.escape(b[2])}</figcaption></figure>')
            elif b[0] == "code":
                body.append(f"<pre><code>{html.escape(b[1])}</code></pre>")
        if items:
            body.append("<ul>" + "".join(items) + "</ul>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px;overflow-wrap:anywhere}"
        "th{background:#f3f3f3}img.plot{max-width:100%;border:1px solid #ddd}pre{background:#f7f7f7;padding:1em;"
        "overflow-x:auto;font-size:0.85em}figure{margin:1em 0}figcaption{font-size:0.85em;color:#555}"
    )
    script = (
        "window.addEventListener('load',function(){var imgs=document.querySelectorAll('img.plot');var ok=0;"
        "imgs.forEach(function(i){if(i.complete&&i.naturalWidth>0)ok++;});"
        "document.body.setAttribute('data-plots',imgs.length);document.body.setAttribute('data-plots-loaded',ok);});"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style><script>{script}</script></head><body>{''.join(body)}</body></html>\n"
    )


def render(run: Path) -> Path:
    """Draw the plots and write report.md and report.html into ``run``; the HTML's path."""
    its = iterations(run)
    plot_curves(run, its, run / PLOTS["curves"])
    plot_cpu(run, its, run / PLOTS["cpu"])
    plot_breakdown(its, run / PLOTS["rules"])
    plot_predicted(its, run / PLOTS["predicted"], fresh_deployments(run, its))
    data = summary(run)
    title = f"hydrodeploy analyze: {data['protocol']} on {data['cluster']}"
    sections = _sections(run)
    (run / "report.md").write_text(_markdown(sections, title) + "\n")
    path = run / "report.html"
    path.write_text(_html(sections, title))
    return path
