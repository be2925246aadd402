"""Monotonicity of a set of rules (TR §3.2 and Appendix A.2.1).

A component is monotonic when more input can only ever produce more output, whatever the order
and timing of the input. The report's strictest sufficient test: (1) every input relation is
persisted and (2) no rule negates or aggregates. Here (1) is relaxed to: every input is
*logically persisted* in the original component (then monotonic decoupling keeps it persisted in
the new one), or is only accumulated — read alone by a rule adding to a relation that keeps its
facts (``acks(x) :- ack(x)`` with ``acks`` persisted), which works the same wherever it runs. (2)
is relaxed as the report allows:

- negation or aggregation over EDB relations (constants, built-ins, static relations) is harmless;
- **logically persisted** relations — persisted, or derived by monotone rules from logically
  persisted relations only — may be read freely (A.2.1);
- **thresholds over monotone aggregates**: ``count``/``max`` over a logically persisted (or
  garbage-collected, see below) relation, read only as ``n >= e`` against fixed values (A.2.1,
  "threshold operations over monotone lattices");
- **persistence with garbage collection**: a relation kept from tick to tick unless a guard holds
  for its key, where every guard is a once-trigger or what records it — facts are forgotten only
  for keys whose outcome was already decided (A.2.1, Paxos' votes after a quorum);
- **once-triggers** ``t :- cond, !done(K)`` (``done(K) :+ t``): the negation only suppresses
  repeating an output already produced.

Any other negation or aggregation makes the set non-monotonic; the result says which literal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hydrodeploy.analysis.context import ComponentContext, context
from hydrodeploy.analysis.idioms import (
    Carry,
    OnceTrigger,
    Threshold,
    carries,
    once_triggers,
    threshold_reads,
)
from hydrodeploy.analysis.memo import per_program
from hydrodeploy.analysis.references import references
from hydrodeploy.errors import Span
from hydrodeploy.language import ir


@dataclass(frozen=True)
class Monotonicity:
    """Result of :func:`monotonicity`. ``reason``/``span`` say why not, when not."""

    component: str
    rules: frozenset[int]
    reason: str | None
    span: Span | None
    logically_persisted: frozenset[str]
    garbage_collected: tuple[Carry, ...]
    thresholds: tuple[Threshold, ...]
    once: tuple[OnceTrigger, ...]
    conservative: bool  # passes the strict test (no negation or aggregation over IDB at all)

    @property
    def monotonic(self) -> bool:
        return self.reason is None


def monotonicity(
    program: ir.Program, component: str, rules: Iterable[int], persisted: Iterable[str] = ()
) -> Monotonicity:
    """Whether the rules at ``rules`` (positions in the block) are monotonic, when the input
    relations in ``persisted`` keep their facts (the others hold only in the tick they arrive)."""
    return _monotonicity(program, component, frozenset(rules), frozenset(persisted))


def logically_persisted(program: ir.Program, component: str) -> frozenset[str]:
    """Relations of a component whose facts, once there, stay (persisted, or derived monotonically
    from such relations; garbage-collected ones included, see the module docstring)."""
    ctx = context(program, component)
    result = _monotonicity(program, component, frozenset(range(len(ctx.rules))), frozenset())
    return result.logically_persisted | {c.relation for c in result.garbage_collected}


@per_program
def _monotonicity(program: ir.Program, component: str, chosen: frozenset[int], persisted: frozenset[str]) -> Monotonicity:
    ctx = context(program, component)
    refs = references(program, component, chosen)
    kept = carries(ctx, chosen)
    once = once_triggers(ctx, chosen)
    done = {o.done for o in once.values()}
    rules = [ctx.rules[i] for i in sorted(chosen)]

    # Logically persisted relations, to a fixpoint (A.2.1). A relation kept from tick to tick
    # (persisted, or persisted with sealed garbage collection) grows with every rule that adds facts
    # from growing relations and at most one transient one; any other relation grows when all its
    # rules are monotone over growing relations.
    lp: set[str] = set(refs.inputs & persisted)
    gc: dict[str, Carry] = {}
    changed = True
    while changed:
        changed = False
        growing = lp | set(gc)
        for rel in sorted(refs.derived - growing):
            carry = kept.get(rel)
            defs = [r for r in rules if r.head.relation == rel and r.kind is not ir.RuleKind.ASYNC]
            if carry is not None:
                if carry.garbage_collected and not _guards_sealed(carry, once, done):
                    continue
                alias = carry.alias()
                adds = [r for r in defs if r is not carry.rule and r.body != (alias,)]
                if all(_accumulates(ctx, r, growing) for r in adds):
                    if carry.garbage_collected:
                        gc[rel] = carry
                    else:
                        lp.add(rel)
                    changed = True
                continue
            if defs and all(_monotone_over(ctx, r, growing) for r in defs):
                lp.add(rel)
                changed = True
    conservative = all(
        not r.head.aggregates and not any(ctx.is_idb(a.relation) for a in r.negated_atoms()) for r in rules
    )
    thresholds: list[Threshold] = []
    reason: str | None = None
    span: Span | None = None
    growing = lp | set(gc)
    for rule in rules:
        if reason is not None:
            break
        carry = next((c for c in kept.values() if c.rule == rule), None)
        if carry is not None:
            if carry.garbage_collected and carry.relation not in gc:
                guard = carry.guards[0]
                reason = (
                    f"'{carry.relation}' is forgotten when '{guard.relation}' holds, and "
                    f"'{guard.relation}' is not a once-trigger (an outcome decided for good), so "
                    f"forgetting can undo results"
                )
                span = guard.span
            continue
        trigger = once.get(rule.head.relation)
        for atom in rule.negated_atoms():
            if not ctx.is_idb(atom.relation):
                continue
            if trigger is not None and trigger.rule == rule and atom.relation == trigger.done:
                continue
            reason, span = f"negates '{atom.relation}', which can change as inputs arrive", atom.span
            break
        if reason is None and rule.head.aggregates:
            idb = [a for a in rule.positive_atoms() if ctx.is_idb(a.relation)]
            not_growing = [a for a in idb if a.relation not in growing]
            if not_growing:
                atom = not_growing[0]
                reason = f"aggregates over '{atom.relation}', which is not kept across ticks (not logically persisted)"
                span = atom.span
            else:
                why = threshold_reads(ctx, chosen, rule)
                if why is not None:
                    reason, span = why, rule.head.span
                else:
                    agg = next(t for t in rule.head.terms if isinstance(t, ir.Aggregate))
                    pos = rule.head.terms.index(agg)
                    thresholds.append(Threshold(rule.head.relation, agg.func, pos, rule))
    return Monotonicity(
        component=component,
        rules=chosen,
        reason=reason,
        span=span,
        logically_persisted=frozenset(lp),
        garbage_collected=tuple(gc.values()),
        thresholds=tuple(thresholds),
        once=tuple(once.values()),
        conservative=conservative and reason is None,
    )


def _monotone_over(ctx: ComponentContext, rule: ir.Rule, growing: set[str]) -> bool:
    """No negation or aggregation over IDB, and every IDB atom grows."""
    if rule.head.aggregates:
        return False
    if any(ctx.is_idb(a.relation) for a in rule.negated_atoms()):
        return False
    return all(a.relation in growing for a in rule.positive_atoms() if ctx.is_idb(a.relation))


def _accumulates(ctx: ComponentContext, rule: ir.Rule, growing: set[str]) -> bool:
    """A rule adding facts to a relation that keeps them: monotone, and at most one IDB atom that
    does not grow (its facts are accumulated as they arrive)."""
    if rule.head.aggregates or any(ctx.is_idb(a.relation) for a in rule.negated_atoms()):
        return False
    transient = [a for a in rule.positive_atoms() if ctx.is_idb(a.relation) and a.relation not in growing]
    return len(transient) <= 1


def _guards_sealed(carry: Carry, once: dict[str, OnceTrigger], done: set[str]) -> bool:
    return all(g.relation in once or g.relation in done for g in carry.guards)
