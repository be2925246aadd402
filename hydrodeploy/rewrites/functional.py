"""Functional decoupling (TR §3.3, mechanism and proof in Appendix A.3).

Precondition: the rules that stay (C1) are independent of the rules that move (C2) — C1 reads
nothing C2 derives — and C2 is functional: no negation or aggregation, at most one IDB relation
per rule body (:mod:`hydrodeploy.analysis.functional`).

Mechanism: Redirection for the channels only C2 reads, and Decoupling for what C2 reads from C1:
C1 forwards each such relation (including client inputs it receives) to C2's paired instance. C2
acts on each forwarded fact on its own, so the extra hop changes only timing.
"""

from __future__ import annotations

from hydrodeploy.analysis.functional import functional
from hydrodeploy.language import ir
from hydrodeploy.rewrites.base import (
    Applicable,
    CheckResult,
    Decouple,
    NotApplicable,
    require,
    topology_for,
)
from hydrodeploy.rewrites.decoupling import (
    Split,
    build,
    describe_split,
    split,
    split_keeping_c1_independent,
)
from hydrodeploy.runtime.topology import Topology

NAME = "functional decoupling"
SHORT = "functional"


def check(program: ir.Program, target: Decouple) -> CheckResult:
    s = split_keeping_c1_independent(program, target, NAME)
    if isinstance(s, NotApplicable):
        return s
    result = functional(program, target.component, s.moved)
    if not result.functional:
        return NotApplicable(NAME, target, result.reason or "", result.span)
    return Applicable(NAME, target, f"move to new component '{s.name}'", describe_split(program, s))


def apply(program: ir.Program, topology: Topology | None, target: Decouple, force: bool = False) -> tuple[ir.Program, Topology]:
    """Decouple; ``force`` skips the precondition (only for tests that show what goes wrong)."""
    if not force:
        require(check(program, target), program)
    s = split(program, target, NAME)
    if isinstance(s, NotApplicable):
        raise s.error(program)
    out = build(
        program,
        s,
        forwarded=s.forwarded,
        redirected=s.redirected,
        persist_inputs=False,
        comment=f"took over functional rules of {s.component} ({NAME})",
    )
    return out, topology_for(out, topology)


__all__ = ["NAME", "Split", "apply", "check"]
