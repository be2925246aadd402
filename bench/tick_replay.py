"""Tick replay: a node's recorded ticks run again in this process, timed and broken down by rule.

    HYDRODEPLOY_RECORD_TICKS=DIR hydrodeploy run WORKLOAD.yaml      # local cluster: every node records
    python -m bench.tick_replay DIR/*.ticks [--program FILE.ded] [--repeat R] [--rules N]

For every recording (:mod:`hydrodeploy.runtime.tickrecord`) prints the node's ticks, facts taken
per tick, and the CPU its evaluator needs per fact and per tick when the same ticks run again in
one process (best of ``--repeat`` runs, per-rule profiling off), its cost with an empty inbox
after the first half of its ticks (what carried state alone costs a tick), and the ``--rules``
costliest rules (profiling on). On the cluster the same node also pays for receiving, decoding,
encoding and sending, and runs with a cold cache after every quota period: the difference
between its measured CPU per request and this evaluator cost is what the runtime around the
evaluator costs there.

``--program`` replays the inputs against another version of the program (the same component and
relations): the way to compare a protocol's formulations, or the evaluator before and after a
change, on identical input.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hydrodeploy.language import load_program
from hydrodeploy.runtime.codec import Fact
from hydrodeploy.runtime.node import EvaluatorEngine, NodeSpec
from hydrodeploy.runtime.tickrecord import read_recording

Tick = tuple[list[tuple[str, Fact]], list[str]]


def load(path: str, program: str | None) -> tuple[NodeSpec, list[Tick]]:
    header, ticks = read_recording(path)
    fields = {**header, "secret": "", "control": tuple(header["control"])}
    fields["instances"] = {c: list(a) for c, a in header["instances"].items()}
    fields["partitions"] = {a: list(p) for a, p in header.get("partitions", {}).items()}
    if program is not None:
        fields["program"] = program
    return NodeSpec(**fields), list(ticks)


def replay(spec: NodeSpec, ticks: list[Tick], profile: bool) -> tuple[float, EvaluatorEngine]:
    spec = NodeSpec(**{**spec.__dict__, "profile": profile})
    engine = EvaluatorEngine(load_program(spec.program), spec)
    start = time.process_time()
    for inbox, timers in ticks:
        engine.step(inbox, timers)
    return time.process_time() - start, engine


def empty_tick_cost(spec: NodeSpec, ticks: list[Tick], n: int = 500) -> float:
    _, engine = replay(spec, ticks[: len(ticks) // 2], profile=False)
    start = time.process_time()
    for _ in range(n):
        engine.step([], [])
    return (time.process_time() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recordings", nargs="+", metavar="FILE.ticks")
    parser.add_argument("--program", help="replay against this version of the program")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rules", type=int, default=6, help="costliest rules to show per node")
    args = parser.parse_args()
    for path in args.recordings:
        spec, ticks = load(path, args.program)
        facts = sum(len(inbox) for inbox, _ in ticks)
        if not ticks or not facts:
            print(f"{spec.address}: no facts recorded ({len(ticks)} ticks)")
            continue
        best = min(replay(spec, ticks, profile=False)[0] for _ in range(max(1, args.repeat)))
        empty = empty_tick_cost(spec, ticks)
        print(
            f"{spec.address} ({Path(spec.program).name}): {len(ticks):,} ticks, {facts:,} facts "
            f"({facts / len(ticks):.1f} per tick): {best / facts * 1e6:.2f} µs per fact, "
            f"{best / len(ticks) * 1e6:.1f} µs per tick; a tick with an empty inbox {empty * 1e6:.1f} µs"
        )
        _, engine = replay(spec, ticks, profile=True)
        rules = sorted(engine.rule_metrics(), key=lambda r: -r[5])
        total = sum(r[5] for r in rules) or 1
        for number, head, kind, calls, derived, ns in rules[: args.rules]:
            print(
                f"    rule {number:3d} {head} {kind:2s}  {ns / facts / 1e3:5.2f} µs per fact "
                f"({ns / total:4.0%} of rule time)  {calls:,} calls, {derived:,} facts"
            )


if __name__ == "__main__":
    main()
