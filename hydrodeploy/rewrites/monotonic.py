"""Monotonic decoupling (TR §3.2, Appendix A.2).

Precondition: the rules that stay (C1) are independent of the rules that move (C2); every relation
C2 reads from C1 is logically persisted in the original component (once a fact is there, it stays);
and C2 is monotonic (:mod:`hydrodeploy.analysis.monotonicity`: no negation or aggregation beyond
the report's relaxations — thresholds over growing aggregates, garbage collection of decided keys,
once-triggers — and inputs that are not persisted only accumulated).

Mechanism: Redirection with Persistence. Like functional decoupling (C1 forwards what C2 reads
from it; other senders are redirected), and C2 keeps every forwarded fact in a persisted alias
``<input>_persisted`` that its rules read instead: the forwarded relations stay persisted, as they
were in the original, and by the CALM theorem a monotonic C2 produces the same outputs whatever
the order and timing in which they arrive.
"""

from __future__ import annotations

from hydrodeploy.analysis.monotonicity import logically_persisted, monotonicity
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

NAME = "monotonic decoupling"
SHORT = "monotonic"


def check(program: ir.Program, target: Decouple) -> CheckResult:
    s = split_keeping_c1_independent(program, target, NAME)
    if isinstance(s, NotApplicable):
        return s
    kept = logically_persisted(program, target.component)
    for rel in sorted(s.forwarded):
        if rel not in kept:
            return NotApplicable(
                NAME,
                target,
                f"the moved rules read '{rel}' from the rules that stay, and it is not logically "
                "persisted (its facts do not stay): after decoupling they would meet other facts than "
                "in the original",
                s.spans.get(f"moved:{rel}"),
            )
    result = monotonicity(program, target.component, s.moved, persisted=s.forwarded)
    if not result.monotonic:
        return NotApplicable(NAME, target, result.reason or "", result.span)
    details = describe_split(program, s)
    relaxed = []
    if result.thresholds:
        relaxed.append("thresholds: " + ", ".join(t.aggregate for t in result.thresholds))
    if result.garbage_collected:
        relaxed.append("garbage-collected: " + ", ".join(c.relation for c in result.garbage_collected))
    return Applicable(NAME, target, f"move to new component '{s.name}'", (*details, *relaxed))


def apply(program: ir.Program, topology: Topology | None, target: Decouple) -> tuple[ir.Program, Topology]:
    require(check(program, target), program)
    s = split(program, target, NAME)
    assert isinstance(s, Split)
    out = build(
        program,
        s,
        forwarded=s.forwarded,
        redirected=s.redirected,
        persist_inputs=True,
        comment=f"took over monotonic rules of {s.component}; keeps every input ({NAME})",
    )
    return out, topology_for(out, topology)
