"""Mutually independent decoupling (TR §3.1, proof in Appendix A.1).

Precondition: the rules that move (C2) and the rules that stay (C1) are mutually independent —
they reference disjoint relations and neither reads what the other derives — and the moved rules
read no ``.input`` relation (clients cannot be redirected).

Mechanism (Redirection): C2 runs as a new component; every rule, in any component, that sends a
relation C2 reads to the original component sends it to C2's paired instance instead.
"""

from __future__ import annotations

from hydrodeploy.analysis.independence import mutual_independence
from hydrodeploy.language import ir
from hydrodeploy.rewrites.base import (
    Applicable,
    CheckResult,
    Decouple,
    NotApplicable,
    require,
    topology_for,
)
from hydrodeploy.rewrites.decoupling import Split, build, describe_split, split
from hydrodeploy.runtime.topology import Topology

NAME = "mutually-independent decoupling"
SHORT = "mutually-independent"


def check(program: ir.Program, target: Decouple) -> CheckResult:
    s = split(program, target, NAME)
    if isinstance(s, NotApplicable):
        return s
    result = mutual_independence(program, target.component, s.kept, s.moved)
    if not result.independent:
        return NotApplicable(NAME, target, result.reason or "", result.span)
    if s.client_inputs:
        rel = min(s.client_inputs)
        return NotApplicable(
            NAME,
            target,
            f"the moved rules read '{rel}', which external clients send to '{target.component}'; "
            "clients cannot be redirected",
            s.spans.get(f"moved:{rel}"),
        )
    return Applicable(NAME, target, f"move to new component '{s.name}'", describe_split(program, s))


def apply(program: ir.Program, topology: Topology | None, target: Decouple) -> tuple[ir.Program, Topology]:
    require(check(program, target), program)
    s = split(program, target, NAME)
    assert isinstance(s, Split)
    out = build(
        program,
        s,
        forwarded=(),
        redirected=s.redirected,
        persist_inputs=False,
        comment=f"took over rules of {s.component} that share no state with the rest ({NAME})",
    )
    return out, topology_for(out, topology)
