"""State machine decoupling (TR Appendix A.4).

For rules C2 that are neither functional nor monotonic but behave like a state machine — in a tick
without input nothing they reference changes, and nothing is sent — their results depend only on
which inputs arrive together and in which order. C2 may then run elsewhere if it processes its
inputs in the same batches and order as the original component did.

Precondition: the rules that stay (C1) are independent of C2, and C2 is a state machine
(:mod:`hydrodeploy.analysis.state_machine`, the report's conservative tests, no settling).

Mechanism (A.4.2, Batching): every relation C2 reads is relayed by C1 — channels C2 reads keep
arriving at C1 ("we cannot reroute rules from other components to C2; those input facts must be
batched and ordered by C1") — in sequenced batches, one per C1 tick; C2 processes one whole batch
per tick, in order (:mod:`.batching`). Relations C1 keeps from tick to tick are relayed as their
new facts only, and kept again in C2.
"""

from __future__ import annotations

from hydrodeploy.analysis.context import context
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
from hydrodeploy.rewrites.decoupling import (
    Split,
    build,
    moved_heads,
    split,
    split_keeping_c1_independent,
)
from hydrodeploy.runtime.topology import Topology

NAME = "state machine decoupling"
SHORT = "state-machine"


def check(program: ir.Program, target: Decouple) -> CheckResult:
    s = split_keeping_c1_independent(program, target, NAME)
    if isinstance(s, NotApplicable):
        return s
    inputs = s.moved_refs.inputs
    sm = state_machine(program, target.component, s.moved, inputs=inputs)
    if not sm.state_machine:
        return NotApplicable(NAME, target, f"the moved rules are not a state machine: {sm.reason}", sm.span)
    details = (
        f"rules moving to new component '{s.name}': {', '.join(moved_heads(program, s))}",
        f"relayed by {target.component} in sequenced batches: {', '.join(sorted(inputs))}",
    )
    return Applicable(NAME, target, f"move to new component '{s.name}'", details)


def apply(program: ir.Program, topology: Topology | None, target: Decouple) -> tuple[ir.Program, Topology]:
    require(check(program, target), program)
    s = split(program, target, NAME)
    assert isinstance(s, Split)
    c1, c2 = s.component, s.name
    ctx = context(program, c1)
    inputs = sorted(s.moved_refs.inputs)
    out = build(
        program,
        s,
        forwarded=(),
        redirected=(),
        persist_inputs=False,
        comment=f"took over rules of {c1} that behave like a state machine ({NAME}); {c1} relays "
        "their inputs in batches",
    )
    kept_relations = ctx.persisted
    p = batching.stream_prefix(out, c1)  # C1 may already relay to another component
    relayed: list[batching.Relayed] = []
    delta: list[ir.Rule] = []
    # `.input` relations cannot be derived: C2 reads them relayed under another name
    renamed = {rel: m.unique(out, f"{rel}_relayed") for rel in inputs if rel in program.input_relations}
    if renamed:
        block2 = out.block(c2)
        assert block2 is not None
        rules2 = list(block2.rules)
        for old, new in renamed.items():
            rules2 = [m.rename_atoms(r, old, new) for r in rules2]
        out = m.replace_block(out, c2, rules2)
    for rel in inputs:
        names = m.safe_attribute_names(program, rel, {"j", "n", "me", "node", "mine", "receiver"})
        terms = m.var_terms(names)
        if rel in kept_relations:
            had = f"{p}_had_{rel}"
            delta.append(
                ir.Rule(
                    ir.Head(had, terms),
                    ir.RuleKind.NEXT,
                    (ir.Atom(rel, terms),),
                    comment=f"'{rel}' as of the previous tick, to relay only its new facts",
                )
            )
            relayed.append(batching.Relayed(rel, terms, (ir.Atom(rel, terms), ir.Atom(had, terms, negated=True))))
        else:
            relayed.append(batching.Relayed(rel, terms, (ir.Atom(rel, terms),)))
    decl = program.component(c1)
    assert decl is not None
    if decl.instances == 1:
        to_c2: tuple[ir.Literal, ...] = (ir.Atom(c2, (ir.Var("receiver"),)),)
    else:
        to_c2 = (ir.Atom("self", (ir.Var("me"),)), ir.Atom(m.pairing_name(c2), (ir.Var("me"), ir.Var("receiver"))))
        out = m.ensure_pairing(out, c1, c1, c2)
    sender = batching.sender_rules(p, relayed, to_c2, "receiver")
    out = m.add_rules(out, c1, [*delta, *sender])
    out = m.add_facts(out, c1, batching.sender_facts(p))
    receiver = batching.receiver_rules(
        p, [(r.relation, [t.name for t in r.terms if isinstance(t, ir.Var)]) for r in relayed], None, "sender"
    )
    receiver = [
        ir.Rule(ir.Head(renamed[r.head.relation], r.head.terms), r.kind, r.body, r.span, r.comment)
        if r.head.relation in renamed and r.kind is ir.RuleKind.SYNC and not r.head.relation.startswith(p)
        else r
        for r in receiver
    ]
    out = m.add_rules(out, c2, receiver, front=True)
    return out, topology_for(out, topology)
