"""The optimizer's speed-ups, measured: `hydrodeploy analyze` from each base program on the local
emulated cluster of small machines (clusters/local-small.yaml, 0.05 core per node), within the
paper's machine budgets (voting 26, 2PC 46, Paxos 29 machines).

    python -m bench.analyze_ratios [--protocols voting two_pc paxos] [--plan] [--reports DIR]

For each protocol it runs ``hydrodeploy analyze bench/workloads/<protocol>.yaml`` and prints, from
the run directory: the base program's maximum throughput and the final configuration's, both
measured in that same run, their ratio (and the ratio confirmed after the loop by deploying both
in turn: :mod:`hydrodeploy.optimize.confirm`), the machines, how busy this machine's CPUs were at the
final configuration's best point (above 90%: the host, not the configuration, capped it), and for
every kept iteration the prediction made before deploying it against what was measured. Before and
after each protocol it also times the runtime's message round trip between two processes
(:func:`bench.event_loop.measure`, uvloop, unpinned): this machine's speed varies by 2x from hour
to hour, and every number of a run is only comparable with runs made at a similar speed.

With ``--plan`` (2PC only): ``hydrodeploy plan`` on the finished run for 60% of its final
throughput, then ``hydrodeploy run`` of the planned configuration, and the plan's predicted
maximum against the measured one.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import event_loop
from hydrodeploy.report.analysis import confirmed

ROOT = Path(__file__).resolve().parent.parent
SPEED_ROUND_TRIPS = 2000
REQUIRED = {"voting": 2.3, "two_pc": 5.0, "paxos": 2.8}


def _latest(reports: Path) -> Path:
    return (reports / "latest").resolve()


def analyze(protocol: str, reports: Path) -> tuple[Path, float]:
    started = time.monotonic()
    command = [sys.executable, "-m", "hydrodeploy.cli.main", "analyze", str(ROOT / "bench" / "workloads" / f"{protocol}.yaml"), "--reports", str(reports)]
    print("$", " ".join(["hydrodeploy", *command[3:]]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return _latest(reports), time.monotonic() - started


def describe(run: Path, protocol: str, seconds: float) -> dict[str, Any]:
    summary = json.loads((run / "summary.json").read_text())
    its = {e["index"]: e for e in summary["iterations"]}
    final = its[summary["final"]]
    base = its[0]
    record = json.loads((run / "iterations" / f"{final['index']:02d}" / "iteration.json").read_text())
    ratio = final["max_throughput"] / base["max_throughput"]
    errors = [
        (
            e["index"], e["predicted_throughput"], e["max_throughput"], _slowdown(run, e["index"]),
            e.get("paired_prediction_error"), e.get("paired_ratio"), len(e.get("deployments") or []),
            e.get("measured_every_deployment"), e.get("window_slowdown"), e.get("prediction_error_at_calibration_speed"),
        )
        for e in summary["iterations"]
        if e["kept"] and e["predicted_throughput"] and e["max_throughput"]
    ]
    return {
        "protocol": protocol,
        "run": str(run),
        "base": base["max_throughput"],
        "final": final["max_throughput"],
        "ratio": ratio,
        "required": REQUIRED[protocol],
        "machines": final["machines"],
        "iterations": len(summary["iterations"]),
        "host_cpu": record["measured"].get("host_cpu"),
        "steal": _steal(record),
        "predictions": errors,
        "minutes": seconds / 60,
        "stopped": summary.get("stopped"),
        "chain": final["configuration"],
        "confirmation": _confirmation_text(run, summary),
    }


def _steal(final: dict[str, Any]) -> str:
    """The hypervisor's share of this machine's CPU at the final best point (empty when not
    recorded: runs made before it was). The confirmation's sentence names it for its windows."""
    best = (final.get("measured") or {}).get("host_steal")
    return "" if best is None or math.isnan(best) else f"{best:.0%} at the final best point"


def _slowdown(run: Path, index: int) -> float | None:
    """How many times slower this machine ran around iteration ``index``'s sweep than around the
    sweep its prediction was calibrated on (the loop's probes)."""
    record = json.loads((run / "iterations" / f"{index:02d}" / "iteration.json").read_text())
    value = (record.get("measured") or {}).get("machine_slowdown")
    return None if value is None else float(value)


def _confirmation_text(run: Path, summary: dict[str, Any]) -> str | None:
    """The report's sentence on the confirmation (base and final deployed in turn), if any."""
    record = confirmed(run, summary.get("final"))
    return None if record is None else record.describe(summary.get("speedup"))


def plan_and_run(run: Path, reports: Path) -> dict[str, Any]:
    summary = json.loads((run / "summary.json").read_text())
    final = next(e for e in summary["iterations"] if e["index"] == summary["final"])
    target = round(0.6 * final["max_throughput"])
    out = run / "plans" / f"bench-{target}"
    command = [sys.executable, "-m", "hydrodeploy.cli.main", "plan", str(run), "--throughput", str(target), "-o", str(out)]
    print("$", " ".join(["hydrodeploy", *command[3:]]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)
    plan = json.loads((out / "plan.json").read_text())
    command = [sys.executable, "-m", "hydrodeploy.cli.main", "run", str(out / "workload.yaml"), "--reports", str(reports)]
    print("$", " ".join(["hydrodeploy", *command[3:]]), flush=True)
    before = machine_speed()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    after = machine_speed()
    measured = json.loads((_latest(reports) / "summary.json").read_text())["iterations"][0]["max_throughput"]
    return {
        "target": target, "machines": plan["machines"], "predicted": plan["predicted_throughput"], "measured": measured,
        "speed": (before, after),
    }  # fmt: skip


def machine_speed() -> float:
    """CPU µs per side of one message round trip between two processes (lower: a faster machine)."""
    caller, answerer, _ = event_loop.measure("uvloop", SPEED_ROUND_TRIPS)
    return (caller + answerer) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocols", nargs="+", default=["voting", "two_pc", "paxos"], choices=sorted(REQUIRED))
    parser.add_argument("--plan", action="store_true", help="also plan and run a configuration from the 2PC run")
    parser.add_argument("--reports", default=str(ROOT / "reports" / "bench"), help="where run directories go")
    args = parser.parse_args()
    reports = Path(args.reports)
    rows = []
    for protocol in args.protocols:
        before = machine_speed()
        run, seconds = analyze(protocol, reports)
        after = machine_speed()
        row = describe(run, protocol, seconds)
        rows.append(row)
        print(
            f"{protocol}: base {row['base']:,.0f} -> {row['final']:,.0f} requests/s = {row['ratio']:.2f}x "
            f"(needed {row['required']}x) on {row['machines']} machines, host CPU {row['host_cpu']:.0%} at the final best "
            f"point, {row['iterations']} iterations in {row['minutes']:.1f} min; {row['run']}",
            flush=True,
        )
        for index, predicted, measured, slower, paired_error, paired_ratio, deployments, every_mean, window, at_speed in row["predictions"]:
            speed = "" if slower is None else f"; machine {slower:.2f}x as slow as when calibrated"
            if window is not None and at_speed is not None:
                speed += f" (in the peak's window {window:.2f}x: prediction {at_speed:+.0%} at the calibration's speed)"
            paired = "" if paired_error is None else f"; paired check {paired_ratio:.2f}x, prediction {paired_error:+.0%}"
            every = ""
            if deployments > 1 and every_mean:
                every = f"; every deployment ({deployments}) {every_mean:,.0f}, prediction {predicted / every_mean - 1:+.0%}"
            print(
                f"    iteration {index}: predicted {predicted:,.0f}, measured {measured:,.0f} "
                f"({predicted / measured - 1:+.0%}{speed}){paired}{every}"
            )
        if row["confirmation"]:
            print(f"    confirmed: {row['confirmation']}")
        print(f"    configuration: {row['chain']}")
        print(f"    machine: {before:.0f} µs of CPU per round-trip side before, {after:.0f} after (bench.event_loop)")
        if row["steal"]:
            print(f"    CPU time taken by the hypervisor (steal): {row['steal']}")
        print(f"    stopped: {row['stopped']}", flush=True)
        if args.plan and protocol == "two_pc":
            try:
                result = plan_and_run(run, reports)
            except subprocess.CalledProcessError as exc:
                print(f"    plan failed: {exc}", flush=True)
                continue
            print(
                f"    plan for {result['target']:,} requests/s: {result['machines']} machines, predicted "
                f"{result['predicted']:,.0f}, measured {result['measured']:,.0f} ({result['predicted'] / result['measured'] - 1:+.0%}); "
                f"machine {result['speed'][0]:.0f} µs per round-trip side before the run, {result['speed'][1]:.0f} after",
                flush=True,
            )


if __name__ == "__main__":
    main()
