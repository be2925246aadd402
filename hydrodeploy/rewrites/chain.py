"""Chains of rewrites, as the CLI and the derivation scripts write them.

A step is ``decouple COMPONENT:RULES[:NAME]`` or ``partition COMPONENT:KEY:N``, optionally naming
the rewrite to use (``functional``, ``cohashing``, ...); without one, the first rewrite of the
registry whose precondition holds is used. ``RULES`` is a comma-separated list of rule selectors
(:func:`~.base.rule_positions`): relation names, ``rel#k``, or source line numbers.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass
from types import ModuleType

from hydrodeploy.errors import RewriteError
from hydrodeploy.language import ir
from hydrodeploy.rewrites import DECOUPLING, PARTITIONING, REGISTRY
from hydrodeploy.rewrites.base import (
    Applicable,
    Decouple,
    NotApplicable,
    Partition,
    Target,
    rule_positions,
)
from hydrodeploy.runtime.topology import Topology


@dataclass(frozen=True)
class Step:
    kind: str  # "decouple" | "partition"
    spec: str
    using: str | None = None

    def __str__(self) -> str:
        using = f" --using {self.using}" if self.using else ""
        return f"{self.kind} {self.spec}{using}"


@dataclass(frozen=True)
class Applied:
    step: Step
    result: Applicable


def module_named(short: str) -> ModuleType:
    for mod in REGISTRY:
        if short in (mod.SHORT, mod.NAME):
            return mod
    known = ", ".join(m.SHORT for m in REGISTRY)
    raise RewriteError(f"unknown rewrite '{short}' (known: {known})", None)


def target_of(program: ir.Program, step: Step) -> Target:
    parts = step.spec.split(":")
    if step.kind == "decouple":
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise RewriteError(f"'{step.spec}': expected COMPONENT:RULES[:NAME]", None)
        if program.component(parts[0]) is None:
            raise RewriteError(f"'{step.spec}': no component '{parts[0]}'", None, program.source)
        rules = rule_positions(program, parts[0], parts[1].split(","))
        return Decouple(parts[0], rules, parts[2] if len(parts) == 3 and parts[2] else None)
    if step.kind == "partition":
        if len(parts) != 3 or not parts[0] or not parts[2].isdigit():
            raise RewriteError(f"'{step.spec}': expected COMPONENT:KEY:N", None)
        if program.component(parts[0]) is None:
            raise RewriteError(f"'{step.spec}': no component '{parts[0]}'", None, program.source)
        return Partition(parts[0], parts[1] or None, int(parts[2]))
    raise RewriteError(f"unknown step '{step.kind}' (decouple or partition)", None)


def choose(program: ir.Program, step: Step) -> tuple[ModuleType, Target, Applicable] | NotApplicable:
    """The rewrite a step uses and its target, or the first candidate's rejection."""
    target = target_of(program, step)
    candidates = DECOUPLING if step.kind == "decouple" else PARTITIONING
    if step.using is not None:
        candidates = (module_named(step.using),)
    rejections: list[NotApplicable] = []
    for mod in candidates:
        result = mod.check(program, target)
        if isinstance(result, Applicable):
            return mod, target, result
        rejections.append(result)
    return rejections[0] if len(rejections) == 1 else _combined(rejections)


def _combined(rejections: list[NotApplicable]) -> NotApplicable:
    first = rejections[0]
    reason = "; ".join(f"{r.rewrite}: {r.reason}" for r in rejections)
    return NotApplicable("no rewrite", first.target, reason, first.span)


def apply_step(program: ir.Program, topology: Topology | None, step: Step) -> tuple[ir.Program, Topology, Applied]:
    chosen = choose(program, step)
    if isinstance(chosen, NotApplicable):
        raise RewriteError(f"{step}: {chosen.reason}", chosen.span, program.source)
    mod, target, result = chosen
    out, topo = mod.apply(program, topology, target)
    return out, topo, Applied(step, result)


def apply_chain(
    program: ir.Program, steps: list[Step], topology: Topology | None = None, source: str | None = None
) -> tuple[ir.Program, Topology, list[Applied]]:
    """Apply ``steps`` in order; each sees the program the previous one produced. With ``source``
    (the original file's name), the result's header comment says how it was derived."""
    applied: list[Applied] = []
    topo = topology if topology is not None else Topology.of(program)
    for step in steps:
        program, topo, done = apply_step(program, topo, step)
        applied.append(done)
    if source is not None and applied:
        lines = [f"Derived from {source} by hydrodeploy rewrite:"]
        lines += [f"  {a.step.kind} {a.step.spec}  ({a.result.rewrite})" for a in applied]
        header = "\n".join(lines)
        program = dataclasses.replace(program, comment=f"{header}\n\n{program.comment}" if program.comment else header)
    return program, topo, applied


def parse_steps(text: str) -> list[Step]:
    """Steps from a script: one per line, ``decouple SPEC [--using R]`` or ``partition SPEC
    [--using R]``; ``#`` at the start of a line or after a space starts a comment (``rel#2``
    selects a rule)."""
    steps: list[Step] = []
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        words = shlex.split(line)
        if len(words) not in (2, 4) or (len(words) == 4 and words[2] != "--using"):
            raise RewriteError(f"cannot read step '{line}': expected 'decouple|partition SPEC [--using REWRITE]'", None)
        steps.append(Step(words[0], words[1], words[3] if len(words) == 4 else None))
    return steps


def topology_file(program_path: str) -> str:
    """Where ``hydrodeploy rewrite -o OUT.ded`` records partitions: ``OUT.topology.json``."""
    return program_path[: -len(".ded")] + ".topology.json" if program_path.endswith(".ded") else program_path + ".topology.json"


def load_topology(program: ir.Program, program_path: str) -> Topology:
    """The topology written next to a rewritten program (no file: every instance whole)."""
    import json
    from pathlib import Path

    path = Path(topology_file(program_path))
    if not path.exists():
        return Topology.of(program)
    data = json.loads(path.read_text(encoding="utf-8"))
    counts = data.get("partitions", {})
    if not isinstance(counts, dict) or not all(isinstance(v, int) and v >= 1 for v in counts.values()):
        raise RewriteError(f"{path}: 'partitions' must map components to positive integers", None)
    unknown = [c for c in counts if program.component(c) is None]
    if unknown:
        raise RewriteError(f"{path}: no component '{unknown[0]}' in the program", None)
    return Topology.of(program, counts)
