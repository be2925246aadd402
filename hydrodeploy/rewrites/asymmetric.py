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

Beyond the TR: a relayed relation that C1 only folds into a maximum it carries (:func:`absorbed`;
the Paxos proposer and the ballots of p2bs) is relayed only when above everything relayed before
(:func:`.batching.rising`). C1 processes each stream's batches in order, and once it processed a
value its carried maximum never falls below it, so a later fact no greater than that value would
change nothing: C1 behaves as the original component given every fact, and C2's outputs, which
would have waited for C1 to see such a fact, have nothing to wait for.
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

    for i, r in enumerate(relayed):
        if absorbed(out, c1, r.relation):
            relayed[i], rising = batching.rising(p, r)
            delta_rules += rising

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


def absorbed(program: ir.Program, component: str, relation: str) -> bool:
    """Whether ``component`` reads ``relation`` (one column) only to raise a maximum it carries:
    every rule reading it copies it into some X (``X(v) :- relation(v)``), X is read only by one
    ``M(max(v)) :- X(v)``, and X also holds what M was at the previous tick (``X(v) :- H(v)`` with
    ``H(v) :+ M(v)``); none of them persisted, logged or an output. Then max(X) never decreases,
    so a fact no greater than one ``component`` was given at an earlier tick leaves X's maximum,
    and everything else, as it was: the sender need not relay it again (:func:`batching.rising`).
    A Paxos proposer reads the p2b ballots its collector relays this way (``seen`` into
    ``max_seen``, carried as ``highest``)."""
    rules = program.rules_of(component)
    hidden = program.persisted | program.logged | program.output_relations

    def copy(rule: ir.Rule, source: str) -> bool:
        return (
            rule.kind is ir.RuleKind.SYNC
            and rule.head.dest is None
            and len(rule.head.terms) == 1
            and isinstance(rule.head.terms[0], ir.Var)
            and len(rule.body) == 1
            and isinstance(rule.body[0], ir.Atom)
            and not rule.body[0].negated
            and rule.body[0].relation == source
            and rule.body[0].terms == rule.head.terms
        )

    def reading(rel: str) -> list[ir.Rule]:
        return [r for r in rules if any(a.relation == rel for a in r.atoms())]

    readers = reading(relation)
    if relation in hidden or not readers or not all(copy(r, relation) for r in readers):
        return False
    for x in {r.head.relation for r in readers}:
        maxima = set()
        for rule in reading(x):
            term = rule.head.terms[0] if len(rule.head.terms) == 1 else None
            if not (
                rule.kind is ir.RuleKind.SYNC
                and rule.head.dest is None
                and isinstance(term, ir.Aggregate)
                and term.func == "max"
                and len(rule.body) == 1
                and isinstance(rule.body[0], ir.Atom)
                and not rule.body[0].negated
                and rule.body[0].terms == (term.arg,)
            ):
                return False
            maxima.add(rule.head.relation)
        if x in hidden or len(maxima) != 1:
            return False
        (most,) = maxima
        carriers = {
            r.head.relation
            for r in rules
            if r.kind is ir.RuleKind.NEXT and len(r.body) == 1 and isinstance(r.body[0], ir.Atom)
            and not r.body[0].negated and r.body[0].relation == most and r.body[0].terms == r.head.terms
        }  # fmt: skip
        if not any(r.head.relation == x and copy(r, h) for r in rules for h in carriers):
            return False
    return True


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
