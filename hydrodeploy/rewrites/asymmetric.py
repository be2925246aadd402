"""Asymmetric decoupling (TR Appendix A.5).

For rules C2 that the rest of the component, C1, depends on but that depend on nothing C1 derives:
C2 takes its inputs straight from the network and C1 learns what it needs from C2.

Precondition (A.5): C2 is independent of C1 — it reads nothing C1 derives and no client input —
and C2 is (1) a state machine (:mod:`hydrodeploy.analysis.state_machine`, with settling: C2's
inputs arrive from the network, so any alignment of its ticks is one the original could see) and
(2) monotonic or functional.

Mechanism (A.5.1): every channel C2 reads is redirected to C2. What C1 reads from C2 — channels
both read, and relations C2 derives — C2 relays to C1 in sequenced batches (Batching, A.4.2), and
C1 processes each batch whole, in order. C2 holds each of its other outputs until C1 has
acknowledged the batch sent before it (Batch Acknowledgement), so nothing leaves C2 "before" C1
could have seen its cause. See :mod:`.batching`.
"""

from __future__ import annotations

import dataclasses

from hydrodeploy.analysis.context import context
from hydrodeploy.analysis.functional import functional
from hydrodeploy.analysis.monotonicity import monotonicity
from hydrodeploy.analysis.state_machine import state_machine
from hydrodeploy.language import ir
from hydrodeploy.rewrites import batching
from hydrodeploy.rewrites import mechanics as m
from hydrodeploy.rewrites.base import (
    Applicable,
    CheckResult,
    Decouple,
    NotApplicable,
    require,
    topology_for,
)
from hydrodeploy.rewrites.decoupling import Split, build, moved_heads, split
from hydrodeploy.runtime.topology import Topology

NAME = "asymmetric decoupling"
SHORT = "asymmetric"


def check(program: ir.Program, target: Decouple) -> CheckResult:
    s = split(program, target, NAME)
    if isinstance(s, NotApplicable):
        return s
    own = s.forwarded - s.shared_channels
    if own:
        rel = min(own)
        why = "an input from external clients" if rel in s.client_inputs else "derived by the rules that stay"
        return NotApplicable(
            NAME,
            target,
            f"the moved rules read '{rel}', {why}; C2 must be independent of C1",
            s.spans.get(f"moved:{rel}"),
        )
    if not s.back and not s.shared_channels:
        return NotApplicable(
            NAME,
            target,
            "the rules that stay read nothing from the moved ones (mutually independent decoupling applies)",
            None,
        )
    ctx = context(program, target.component)
    for i in sorted(s.moved):
        rule = ctx.rules[i]
        if rule.kind is ir.RuleKind.ASYNC and rule.head.aggregates:
            return NotApplicable(NAME, target, f"'{rule.head.relation}' is sent with an aggregate in its head", rule.span)
    inputs = s.redirected | s.shared_channels
    sm = state_machine(program, target.component, s.moved, inputs=inputs, settling=True)
    if not sm.state_machine:
        return NotApplicable(NAME, target, f"the moved rules are not a state machine: {sm.reason}", sm.span)
    mono = monotonicity(program, target.component, s.moved, persisted=())
    if not mono.monotonic:
        fun = functional(program, target.component, s.moved)
        if not fun.functional:
            return NotApplicable(
                NAME, target, f"the moved rules are neither monotonic nor functional: {mono.reason}", mono.span
            )
    relayed = sorted(s.back | s.shared_channels)
    details = (
        f"rules moving to new component '{s.name}': {', '.join(moved_heads(program, s))}",
        f"redirected to {s.name}: {', '.join(sorted(s.redirected | s.shared_channels))}",
        f"relayed back to {target.component} in sequenced batches: {', '.join(relayed)}",
    )
    return Applicable(NAME, target, f"move to new component '{s.name}'", details)


def apply(program: ir.Program, topology: Topology | None, target: Decouple) -> tuple[ir.Program, Topology]:
    require(check(program, target), program)
    s = split(program, target, NAME)
    assert isinstance(s, Split)
    out = build(
        program,
        s,
        forwarded=(),
        redirected=s.redirected | s.shared_channels,
        persist_inputs=False,
        comment=f"took over rules of {s.component} that read nothing it derives ({NAME}); "
        f"relays what {s.component} reads in batches",
    )
    c1, c2 = s.component, s.name
    p = batching.stream_prefix(out, c2)
    sm = state_machine(program, target.component, s.moved, inputs=s.redirected | s.shared_channels, settling=True)
    relayed: list[batching.Relayed] = []
    delta_rules: list[ir.Rule] = []
    for rel in sorted(s.shared_channels | s.back):
        terms = m.var_terms(m.attribute_names(program, rel))
        body: tuple[ir.Literal, ...] = (ir.Atom(rel, terms),)
        if rel not in s.shared_channels and rel not in sm.existence:
            # A relation that keeps its facts: relay only the facts new in this tick.
            had = f"{p}_had_{rel}"
            delta_rules.append(
                ir.Rule(
                    ir.Head(had, terms),
                    ir.RuleKind.NEXT,
                    (ir.Atom(rel, terms),),
                    comment=f"'{rel}' as of the previous tick, to relay only its new facts",
                )
            )
            body = (*body, ir.Atom(had, terms, negated=True))
        used = _columns_read(out.rules_of(c1), rel, len(terms))
        if len(used) == len(terms):
            relayed.append(batching.Relayed(rel, terms, body))
            continue
        # C1 reads only some columns: relay their projection, which set semantics collapses to
        # far fewer facts (a p2b proxy relays the ballots it saw, not every p2b).
        seen = m.unique(out, f"{p}_seen_{rel}")  # per-node bookkeeping, like the batches
        projected = tuple(terms[i] for i in used)
        delta_rules.append(
            ir.Rule(
                ir.Head(seen, projected),
                ir.RuleKind.SYNC,
                body,
                comment=f"the columns of '{rel}' that {c1} reads: only they are relayed",
            )
        )
        relayed.append(batching.Relayed(seen, projected, (ir.Atom(seen, projected),)))
        out = _read_projection(out, c1, rel, seen, used)
        if rel in program.persisted:
            out = m.add_persist(out, seen, comment=f"{c1}: '{rel}' projected, kept like '{rel}'")

    # C2: relay in batches, track acknowledgements, hold outputs.
    block2 = out.block(c2)
    assert block2 is not None
    to_c1 = (ir.Atom("self", (ir.Var("mine"),)), ir.Atom(m.pairing_name(c2), (ir.Var("receiver"), ir.Var("mine"))))
    sender = batching.sender_rules(p, relayed, to_c1, "receiver")
    acks, ack_facts = batching.ack_rules(p)
    kept: list[ir.Rule] = []
    held: list[ir.Rule] = []
    for rule in block2.rules:
        if rule.kind is ir.RuleKind.ASYNC:
            waiting = m.unique(out, f"{rule.head.relation}_waiting")
            held += batching.held_output(out, p, rule, waiting)
        else:
            kept.append(rule)
    out = m.replace_block(
        out, c2, [*kept, *held, *delta_rules, *sender, *acks], [*block2.facts, *batching.sender_facts(p), *ack_facts]
    )
    out = m.ensure_pairing(out, c2, c1, c2)

    # C1: process batches in order, acknowledge them.
    reserved = {"j", "n", "size", "prev", "c", "r", "me", "proxy"}
    arities = [
        (r.relation, [t.name if isinstance(t, ir.Var) and t.name not in reserved else f"v{i}" for i, t in enumerate(r.terms)])
        for r in relayed
    ]
    ack_to = (ir.Atom("self", (ir.Var("me"),)), ir.Atom(m.pairing_name(c2), (ir.Var("me"), ir.Var("proxy"))))
    receiver = batching.receiver_rules(p, arities, ack_to, "proxy")
    out = m.add_rules(out, c1, receiver)
    out = m.ensure_pairing(out, c1, c1, c2)
    return out, topology_for(out, topology)


def _columns_read(rules: tuple[ir.Rule, ...], relation: str, arity: int) -> tuple[int, ...]:
    """Positions of ``relation`` that some atom of ``rules`` binds or tests (not ``_``)."""
    used = {
        i
        for rule in rules
        for atom in rule.atoms()
        if atom.relation == relation
        for i, term in enumerate(atom.terms)
        if not isinstance(term, ir.Wildcard)
    }
    return tuple(i for i in range(arity) if i in used)


def _read_projection(program: ir.Program, component: str, relation: str, projection: str, used: tuple[int, ...]) -> ir.Program:
    """``component``'s rules read ``projection`` (the ``used`` columns) instead of ``relation``."""

    def project(lit: ir.Literal) -> ir.Literal:
        if isinstance(lit, ir.Atom) and lit.relation == relation:
            return ir.Atom(projection, tuple(lit.terms[i] for i in used), lit.negated, lit.span)
        return lit

    rules = [dataclasses.replace(r, body=tuple(project(lit) for lit in r.body)) for r in program.rules_of(component)]
    return m.replace_block(program, component, rules)
