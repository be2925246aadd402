"""Independence of two rule sets of one component (TR §3.1).

C1 is *independent* of C2 when C1 reads nothing C2 derives. (What C2 *sends* travels over the
network already; it reaches C1 at some later tick whether C2 runs beside C1 or elsewhere, as long
as it is sent to the same address.) The TR also asks the two to
reference disjoint sets of relations; that is what lets the Redirection rewrite send each input to
exactly one of them, so it is checked separately (:func:`shared_references`): mutually
independent decoupling needs it, while functional and monotonic decoupling forward the relations C1
reads or receives to C2 and so only need C1 to be independent of C2.

A relation derived in both sets by ``:-``/``:+`` rules ties them together as well: after a split
neither side would see all of its facts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hydrodeploy.analysis.context import context
from hydrodeploy.analysis.references import references
from hydrodeploy.errors import Span
from hydrodeploy.language import ir


@dataclass(frozen=True)
class Dependence:
    """Why one rule set depends on another: ``reader`` reads ``relation``, derived by ``writer``."""

    relation: str
    reader: ir.Rule
    writer: ir.Rule

    @property
    def span(self) -> Span | None:
        return next((a.span for a in self.reader.atoms() if a.relation == self.relation), self.reader.span)


@dataclass(frozen=True)
class Independence:
    """Result of :func:`independence`: ``dependence`` is None when C1 is independent of C2."""

    dependence: Dependence | None

    @property
    def independent(self) -> bool:
        return self.dependence is None


def independence(program: ir.Program, component: str, c1: Iterable[int], c2: Iterable[int]) -> Independence:
    """Whether the rules ``c1`` read nothing that the rules ``c2`` derive with ``:-``/``:+``
    (positions in the component's block)."""
    ctx = context(program, component)
    set1, set2 = frozenset(c1), frozenset(c2)
    heads2 = references(program, component, set2).derived
    for i in sorted(set1):
        rule = ctx.rules[i]
        reads = [a.relation for a in ctx.idb_atoms(rule)]
        for rel in reads:
            if rel in heads2:
                writer = next(ctx.rules[j] for j in sorted(set2) if ctx.rules[j].head.relation == rel)
                return Independence(Dependence(rel, rule, writer))
    return Independence(None)


def shared_derivation(program: ir.Program, component: str, c1: Iterable[int], c2: Iterable[int]) -> str | None:
    """A relation derived by ``:-``/``:+`` rules in both sets, if any."""
    both = references(program, component, c1).derived & references(program, component, c2).derived
    return min(both) if both else None


def shared_references(program: ir.Program, component: str, c1: Iterable[int], c2: Iterable[int]) -> frozenset[str]:
    """IDB relations referenced by both sets (TR §3.1 condition (a) asks for none)."""
    return references(program, component, c1).references & references(program, component, c2).references


@dataclass(frozen=True)
class MutualIndependence:
    """Result of :func:`mutual_independence`; ``reason`` and ``span`` say why not."""

    reason: str | None
    span: Span | None

    @property
    def independent(self) -> bool:
        return self.reason is None


def mutual_independence(program: ir.Program, component: str, c1: Iterable[int], c2: Iterable[int]) -> MutualIndependence:
    """C1 and C2 reference disjoint relations and neither reads what the other derives."""
    set1, set2 = frozenset(c1), frozenset(c2)
    for a, b, name_a, name_b in ((set1, set2, "the rules that stay", "the moved rules"), (set2, set1, "the moved rules", "the rules that stay")):
        dep = independence(program, component, a, b).dependence
        if dep is not None:
            return MutualIndependence(
                f"{name_a} read '{dep.relation}', which {name_b} derive ({_where(dep.writer)})", dep.span
            )
    shared = shared_derivation(program, component, set1, set2)
    if shared is not None:
        return MutualIndependence(f"both sides derive '{shared}'", _first_head_span(program, component, set2, shared))
    common = shared_references(program, component, set1, set2)
    if common:
        rel = min(common)
        return MutualIndependence(
            f"both sides read '{rel}', so it cannot be redirected to just one of them",
            _first_read_span(program, component, set2, rel),
        )
    return MutualIndependence(None, None)


def _where(rule: ir.Rule) -> str:
    return f"line {rule.span.line}" if rule.span is not None else "a generated rule"


def _first_head_span(program: ir.Program, component: str, rules: frozenset[int], rel: str) -> Span | None:
    ctx = context(program, component)
    return next((ctx.rules[i].span for i in sorted(rules) if ctx.rules[i].head.relation == rel), None)


def _first_read_span(program: ir.Program, component: str, rules: frozenset[int], rel: str) -> Span | None:
    ctx = context(program, component)
    for i in sorted(rules):
        for atom in ctx.rules[i].atoms():
            if atom.relation == rel:
                return atom.span
    return None
