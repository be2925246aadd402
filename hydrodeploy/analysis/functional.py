"""Functional components (TR §3.3).

A set of rules is *functional* — it behaves like a ``map`` over individual facts — when (1) no rule
negates or aggregates, and (2) every rule body reads at most one IDB relation. Each output fact then
depends on one input fact only, never on what arrived before, so the rules can run anywhere, late,
without persisting anything. EDB relations (constants, built-ins, functions, static relations) may
be joined freely.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hydrodeploy.analysis.context import context
from hydrodeploy.errors import Span
from hydrodeploy.language import ir


@dataclass(frozen=True)
class Functional:
    """Result of :func:`functional`: ``reason``/``span`` say why not, when not."""

    reason: str | None
    span: Span | None

    @property
    def functional(self) -> bool:
        return self.reason is None


def functional(program: ir.Program, component: str, rules: Iterable[int]) -> Functional:
    """Whether the rules at ``rules`` (positions in the block) form a functional component."""
    ctx = context(program, component)
    chosen = [ctx.rules[i] for i in sorted(set(rules))]
    for rule in chosen:  # aggregation first: it is what most often disqualifies a component
        aggregates = rule.head.aggregates
        if aggregates:
            return Functional(
                f"'{rule.head.relation}' aggregates ({aggregates[0].func}): its facts depend on many "
                "input facts together",
                aggregates[0].span or rule.head.span,
            )
    for rule in chosen:
        for atom in rule.negated_atoms():
            if ctx.is_idb(atom.relation):
                return Functional(
                    f"the rule for '{rule.head.relation}' negates '{atom.relation}': its output depends "
                    "on what else has arrived",
                    atom.span,
                )
        idb = [a for a in rule.positive_atoms() if ctx.is_idb(a.relation)]
        if len(idb) > 1:
            return Functional(
                f"the rule for '{rule.head.relation}' joins '{idb[0].relation}' with '{idb[1].relation}': "
                "a functional rule reads at most one IDB relation",
                idb[1].span,
            )
    return Functional(None, None)
