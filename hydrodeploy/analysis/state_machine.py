"""State machines: existence and no-change dependencies (TR Appendix A.4, A.4.1).

A relation has an *existence dependency* on the inputs when it is empty in every tick without
input; a *no-change dependency* when it keeps the facts of the previous tick in every tick without
input. A set of rules behaves like a state machine when (a) every relation it references has one
of the two and (b) every relation it sends has an existence dependency: between inputs nothing
happens, so only the order and grouping of inputs matter, not the ticks in between.

The report's conservative tests (A.4.1), computed as greatest fixpoints:

- existence: no rule for the relation is sequential (``:+``), and every rule reads, positively, an
  input or a relation with an existence dependency;
- no-change: (1) its only sequential rule is its persistence rule, and its other rules read an
  input or an existence-dependent relation; or (2) it has no sequential rule and every rule reads
  only EDB relations and relations with no-change dependencies.

Relaxations, each sound for the reason given:

- a **once-trigger** (``t :- cond, !done(K)``, ``done(K) :+ t``; see :mod:`.idioms`) whose
  condition reads only relations with either dependency has an existence dependency: in a tick
  without input its condition is what it was in the previous tick, when it either fired (so now
  ``done`` holds) or did not hold;
- with ``settling`` (asymmetric decoupling, where the decoupled rules receive their inputs straight
  from the network, so any alignment of their ticks is one the original could have seen): a kept
  relation (persisted, or persisted with garbage collection) whose other rules read an input or an
  existence-dependent relation *settles*: it changes only in the tick after an input, and is then
  treated as having a no-change dependency; the same holds for what a once-trigger records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hydrodeploy.analysis.context import ComponentContext, context
from hydrodeploy.analysis.idioms import Carry, carries, once_triggers
from hydrodeploy.analysis.memo import per_program
from hydrodeploy.analysis.references import references
from hydrodeploy.errors import Span
from hydrodeploy.language import ir


@dataclass(frozen=True)
class StateMachine:
    """Result of :func:`state_machine`. ``reason``/``span`` say why not, when not."""

    component: str
    rules: frozenset[int]
    inputs: frozenset[str]
    existence: frozenset[str]
    no_change: frozenset[str]
    reason: str | None
    span: Span | None

    @property
    def state_machine(self) -> bool:
        return self.reason is None


def state_machine(
    program: ir.Program,
    component: str,
    rules: Iterable[int],
    inputs: Iterable[str] | None = None,
    settling: bool = False,
) -> StateMachine:
    """Whether the rules at ``rules`` behave like a state machine over ``inputs`` (default: the
    rule set's inputs, TR §2.4)."""
    chosen = frozenset(rules)
    ins = references(program, component, chosen).inputs if inputs is None else frozenset(inputs)
    return _state_machine(program, component, chosen, ins, settling)


@per_program
def _state_machine(
    program: ir.Program, component: str, chosen: frozenset[int], ins: frozenset[str], settling: bool
) -> StateMachine:
    ctx = context(program, component)
    rules = [ctx.rules[i] for i in sorted(chosen)]
    refs = references(program, component, chosen)
    kept = carries(ctx, chosen)
    once = once_triggers(ctx, chosen)
    recorded = {o.done for o in once.values()}
    local = sorted(refs.derived)
    by_head = {rel: [r for r in rules if r.head.relation == rel] for rel in local}

    def idb(rule: ir.Rule) -> list[ir.Atom]:
        return [a for a in rule.positive_atoms() if ctx.is_idb(a.relation)]

    carriers = {c.carrier for c in kept.values() if c.carrier != c.relation}

    def fed(rule: ir.Rule, exist: set[str]) -> bool:
        return rule.kind is ir.RuleKind.SYNC and any(a.relation in ins or a.relation in exist for a in idb(rule))

    # Both dependencies as one greatest fixpoint: start from "everything qualifies" and remove
    # relations that violate their test until nothing changes.
    exist = {rel for rel in local if rel not in kept and rel not in recorded and rel not in carriers}
    no_change = set(local) - exist
    changed = True
    while changed:
        changed = False
        steady = ins | exist | no_change
        for rel in sorted(exist):
            if all(fed(r, exist) for r in by_head[rel]):
                continue
            trigger = once.get(rel)
            if trigger is not None and trigger.rule in by_head[rel]:
                reads = [a.relation for a in trigger.rule.positive_atoms() if ctx.is_idb(a.relation)]
                others = [r for r in by_head[rel] if r != trigger.rule]
                if all(x in steady for x in reads) and all(fed(r, exist) for r in others):
                    continue
            exist.discard(rel)
            no_change.add(rel)
            changed = True
        for rel in sorted(no_change):
            if rel in carriers:
                ok = settling
            else:
                ok = _no_change_ok(ctx, rel, by_head[rel], kept, recorded, ins, exist, steady, settling)
            if not ok:
                no_change.discard(rel)
                changed = True

    reason: str | None = None
    span: Span | None = None
    for rel in local:
        if rel in exist or rel in no_change:
            continue
        rule = by_head[rel][0]
        reason = (
            f"'{rel}' can change in a tick without input (neither an existence nor a no-change "
            "dependency on the inputs)"
        )
        span = rule.head.span or rule.span
        break
    if reason is None:
        for rule in rules:
            if rule.kind is ir.RuleKind.ASYNC and not any(a.relation in ins or a.relation in exist for a in idb(rule)):
                reason = (
                    f"'{rule.head.relation}' is sent from facts that persist, so it could be sent in "
                    "a tick without input (an output needs an existence dependency)"
                )
                span = rule.head.span or rule.span
                break
    return StateMachine(component, chosen, ins, frozenset(exist), frozenset(no_change), reason, span)


def _no_change_ok(
    ctx: ComponentContext,
    rel: str,
    defs: list[ir.Rule],
    kept: Mapping[str, Carry],
    recorded: set[str],
    ins: frozenset[str],
    exist: set[str],
    steady: frozenset[str] | set[str],
    settling: bool,
) -> bool:
    carry = kept.get(rel)
    sequential = [r for r in defs if r.kind is ir.RuleKind.NEXT]

    def fed_by_input(rule: ir.Rule) -> bool:
        return any(ctx.is_idb(a.relation) and (a.relation in ins or a.relation in exist) for a in rule.positive_atoms())

    def steady_body(rule: ir.Rule) -> bool:
        return all(a.relation in steady for a in rule.atoms() if ctx.is_idb(a.relation))

    if carry is not None and not carry.garbage_collected:
        others = [r for r in defs if r != carry.rule]
        if all(r.kind is not ir.RuleKind.NEXT for r in others):
            # (1) with (3); a same-tick rule over steady relations adds only what it added in
            # the previous tick, which the relation kept
            return all(fed_by_input(r) or steady_body(r) for r in others)
        if settling or rel in recorded:
            # a persisted relation adding facts at the next tick from input-driven relations settles
            return all(fed_by_input(r) or steady_body(r) for r in others)
        return False
    if carry is not None:  # persisted with garbage collection
        if not settling:
            return False
        alias = carry.alias()
        others = [r for r in defs if r != carry.rule and r.body != (alias,)]
        return all(fed_by_input(r) or steady_body(r) for r in others)
    if sequential:
        return False
    return all(steady_body(r) for r in defs)  # (2)
