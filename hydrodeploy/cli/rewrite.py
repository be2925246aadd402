"""`hydrodeploy rewrite FILE.ded --decouple C:RULES[:NAME] --partition C:KEY:N ... -o OUT.ded`

Applies a chain of rewrites in the order given, checks each one's precondition (a rejection is one
located error), verifies the result against the original in simulation over many seeds, and
writes the rewritten program. When partitions of multi-instance components are part of the
result, their counts are written next to it as ``OUT.topology.json``.

RULES is a comma-separated list of rule selectors: relation names (every rule deriving it),
``rel#k`` (its k-th rule) or source line numbers. ``--steps FILE`` reads steps from a file, one
per line (``decouple SPEC`` / ``partition SPEC``, optionally ``--using REWRITE``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hydrodeploy.language import load_program, print_program
from hydrodeploy.rewrites.chain import Step, apply_chain, parse_steps, topology_file
from hydrodeploy.simulate import Network, Workload
from hydrodeploy.simulate.equivalence import Mode, check_equivalence


class _StepAction(argparse.Action):
    """Keeps --decouple and --partition in command-line order."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None) -> None:
        steps = list(getattr(namespace, "steps", None) or [])
        kind = "decouple" if option == "--decouple" else "partition"
        steps.append(Step(kind, str(values)))
        namespace.steps = steps


def register(verbs: Any) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "rewrite",
        help="apply decoupling and partitioning rewrites, verify them in simulation, write the result",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE.ded")
    p.add_argument("--decouple", action=_StepAction, metavar="COMPONENT:RULES[:NAME]", dest="steps")
    p.add_argument("--partition", action=_StepAction, metavar="COMPONENT:KEY:N", dest="steps")
    p.add_argument("--steps", dest="steps_file", metavar="FILE", help="read steps from FILE (after any given inline)")
    p.add_argument("-o", "--output", metavar="OUT.ded", help="where to write the rewritten program (default: print it)")
    p.add_argument("--seeds", type=int, default=20, help="seeds to verify with (default 20; 0 skips verification)")
    p.add_argument("--requests", type=int, default=40, help="requests per verification run (default 40)")
    p.add_argument("--clients", type=int, default=4, help="closed-loop clients per run (default 4)")
    p.add_argument("--loss", type=float, default=0.0, help="message loss in verification runs (default 0)")
    p.add_argument(
        "--mode",
        choices=("auto", "per-request", "log"),
        default="auto",
        help="compare replies per request, or as a replicated log (auto: log when outputs carry a slot)",
    )
    p.set_defaults(run=run, steps=None)


def run(args: argparse.Namespace) -> int:
    program = load_program(args.file)
    steps: list[Step] = list(args.steps or [])
    if args.steps_file:
        steps += parse_steps(Path(args.steps_file).read_text(encoding="utf-8"))
    out, topology, applied = apply_chain(program, steps, source=args.file)
    for done in applied:
        print(f"{done.step}: {done.result.rewrite} — {done.result.summary}")
    machines = len(topology.addresses())
    print(f"result: {len(out.components)} components, {machines} nodes")
    if args.seeds > 0 and steps:
        mode: Mode
        if args.mode == "auto":
            mode = "log" if any(o.attrs and "slot" in o.attrs for o in program.outputs) else "per-request"
        else:
            mode = args.mode
        network = Network(min_delay_ms=0.05, max_delay_ms=10.0, loss=args.loss)
        workload = Workload(
            clients=args.clients, requests=args.requests, timeout_ms=300.0 if args.loss > 0 or mode == "log" else None
        )
        report = check_equivalence(
            program, out, rewritten_topology=topology, seeds=range(args.seeds), network=network, workload=workload, mode=mode
        )
        print(f"verified: {report.summary()}")
        if not report.equivalent:
            for diff in report.differences[:10]:
                print(f"  {diff}")
            print("not written: the rewritten program does not behave like the original")
            return 1
    text = print_program(out)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
        counts = topology.partition_counts()
        if counts:
            side = Path(topology_file(args.output))
            side.write_text(json.dumps({"partitions": counts}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            print(f"wrote {side} (partitions per instance: {', '.join(f'{c} x{n}' for c, n in sorted(counts.items()))})")
    else:
        print(text, end="")
    return 0
