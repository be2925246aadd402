"""Partial partitioning with a coordinator (TR §4.3, Appendix B.3) — the mechanism shared with
partitioned sealing (:mod:`.sealing`, Appendix B.4).

For a component that cannot be partitioned whole (Paxos acceptors: every slot reads the ballot),
its relations are split by a key variable ``K``:

- **partitioned** relations carry ``K`` at a fixed attribute (the log ``accepted(s, ...)``, the
  ``p2a`` input) and go to one partition each;
- **replicated** state is everything derived without them (the ballot): every partition holds a
  copy, kept identical because every input that changes it is *ordered*: sent to the component's
  coordinator, which numbers it and runs a two-phase commit with the partitions (vote request:
  the partition freezes its partitioned inputs and votes; commit once all voted). Partitions apply
  ordered inputs in index order, one per tick, and process partitioned inputs only when no vote
  is outstanding (B.3.1);
- **sealed** relations are per-partition aggregates over partitioned data (the size of a
  partition's log). An output that sends one is sent by every partition with its part, the index
  of the ordered input that triggered it and the partition number; its receivers rebuild the
  original fact once all partitions' parts are in, summing the parts (B.4.2).

Precondition: the replicated part reads no partitioned relation — except an input shared with the
partitioned part whose only effect on replicated state is to raise a *max register* (``x(b) :-
input(.., b, ..)``, ``m(max(b)) :- x(b)``, ``carry(b) :+ m(b)``, ``x(b) :- carry(b)``). Such an
input goes straight to its partition; a fact that would not raise the register (``b`` at most its
value before the tick) changes no replicated state and is processed there, and one that would is
sent to the coordinator to be ordered like any replicated input (extension of B.3: the report
orders every input that may write replicated state; this orders only those that do). Sealed
outputs must be triggered by one ordered input and carry their aggregate in one attribute.
Partitioned relations must agree on ``K`` in every rule that combines them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hydrodeploy.analysis.context import ComponentContext, context
from hydrodeploy.analysis.policies import PartitionExpr, Policy
from hydrodeploy.errors import Span
from hydrodeploy.language import ir
from hydrodeploy.rewrites import mechanics as m
from hydrodeploy.rewrites.base import (
    Applicable,
    CheckResult,
    NotApplicable,
    Partition,
    require,
    topology_for,
)
from hydrodeploy.rewrites.partitioning import Obstacle, route
from hydrodeploy.runtime.topology import Topology

NAME = "partial partitioning"
SHORT = "partial"

V = ir.Var
PAD = ir.Const(0)
# variables the generated rules use besides a relation's own attributes
RESERVED = frozenset(("i", "j", "k", "t", "n", "v", "kind", "owner", "me", "mine", "node", "coordinator", "prior", "total"))


@dataclass(frozen=True)
class MaxRegister:
    """``feeder(b) :- input(.., b, ..)`` raises ``register`` (``max`` of ``feeder``), carried by
    ``carry``; ``facts`` are the feeder's constant facts (its initial values)."""

    input: str
    attr: int
    feeder: str
    register: str
    carry: str
    facts: tuple[ir.Fact, ...]


@dataclass(frozen=True)
class SealedOutput:
    relation: str
    count_attr: int
    trigger: str  # the ordered input that triggers it
    receivers: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    component: str
    key: str
    partitions: int
    keyed: dict[str, int]
    replicated: frozenset[str]  # replicated state
    sealed: frozenset[str]  # per-partition aggregates
    ordered_inputs: tuple[str, ...]  # always through the coordinator
    shared: dict[str, MaxRegister]  # partitioned inputs that may raise replicated state
    partitioned_inputs: tuple[str, ...]
    sealed_outputs: dict[str, SealedOutput]
    replicated_outputs: frozenset[int]  # positions of sends reading only replicated state


def _fail(target: Partition, reason: str, span: Span | None) -> NotApplicable:
    return NotApplicable(NAME, target, reason, span)


def plan(program: ir.Program, target: Partition) -> Plan | NotApplicable:
    decl = program.component(target.component)
    if decl is None:
        return _fail(target, f"no component '{target.component}'", None)
    key = target.key
    if not key:
        return _fail(target, "partial partitioning needs a key variable (COMPONENT:KEY:N)", None)
    if target.partitions < 2:
        return _fail(target, "partial partitioning needs at least 2 partitions", None)
    ctx = context(program, target.component)
    if ctx.inputs:
        rel = min(ctx.inputs)
        return _fail(target, f"'{target.component}' receives '{rel}' from external clients", None)
    if ctx.timers:
        return _fail(target, f"timer '{min(ctx.timers)}' would fire in every partition", None)
    rules = [(i, r) for i, r in enumerate(ctx.rules) if r.head.relation not in ctx.static]

    # 1. partitioned relations: the key variable at a fixed attribute, never another variable
    keyed: dict[str, int] = {}
    for _, rule in rules:
        occurrences: list[tuple[str, tuple[ir.BodyTerm | ir.HeadTerm, ...]]] = [(a.relation, a.terms) for a in ctx.idb_atoms(rule)]
        if rule.kind is not ir.RuleKind.ASYNC:
            occurrences.append((rule.head.relation, rule.head.terms))
        for rel, terms in occurrences:
            for pos, t in enumerate(terms):
                if isinstance(t, ir.Var) and t.name == key and keyed.setdefault(rel, pos) != pos:
                    return _fail(target, f"'{rel}' has the key '{key}' at two attributes", rule.span)
    if not keyed:
        return _fail(target, f"no relation of '{target.component}' has the key '{key}'", None)
    for _, rule in rules:
        for atom in ctx.idb_atoms(rule):
            at = keyed.get(atom.relation)
            term = atom.terms[at] if at is not None else None
            if isinstance(term, ir.Var) and term.name != key:
                return _fail(target, f"'{atom.relation}' is read with another variable than '{key}' at its key", atom.span)

    # 2. sealed: derived (not keyed) from partitioned relations; replicated: the rest
    derived = {r.head.relation for _, r in rules if r.kind is not ir.RuleKind.ASYNC}
    sealed: set[str] = set()
    changed = True
    while changed:
        changed = False
        for _, rule in rules:
            head = rule.head.relation
            if rule.kind is ir.RuleKind.ASYNC or head in keyed or head in sealed:
                continue
            reads = {a.relation for a in ctx.idb_atoms(rule)}
            if reads & (set(keyed) - ctx.received) or reads & sealed:
                sealed.add(head)
                changed = True
    replicated = derived - set(keyed) - sealed

    # 3. inputs
    received = {a.relation for _, r in rules for a in ctx.idb_atoms(r)} & ctx.received
    shared: dict[str, MaxRegister] = {}
    ordered: list[str] = []
    partitioned_inputs: list[str] = []
    for rel in sorted(received):
        readers = [r for _, r in rules if any(a.relation == rel for a in r.atoms())]
        replicated_readers = [r for r in readers if r.kind is not ir.RuleKind.ASYNC and r.head.relation in replicated]
        if rel not in keyed:
            ordered.append(rel)
            continue
        if not replicated_readers:
            partitioned_inputs.append(rel)
            continue
        register = _max_register(ctx, rel, replicated_readers, rules)
        if isinstance(register, str):
            return _fail(target, register, replicated_readers[0].span)
        shared[rel] = register
    # replicated state must not read partitioned data (other than through a max register)
    for _, rule in rules:
        if rule.kind is ir.RuleKind.ASYNC or rule.head.relation not in replicated:
            continue
        for atom in ctx.idb_atoms(rule):
            if (atom.relation in keyed and atom.relation not in shared) or atom.relation in sealed:
                return _fail(
                    target,
                    f"replicated state '{rule.head.relation}' reads '{atom.relation}', which is "
                    f"partitioned on '{key}': the two parts are not independent",
                    atom.span,
                )
    for rel in sealed:
        for _, rule in rules:
            reader = rule.kind is not ir.RuleKind.ASYNC and rule.head.relation in replicated | set(keyed)
            if reader and any(a.relation == rel for a in rule.atoms()):
                return _fail(target, f"'{rel}' differs per partition but '{rule.head.relation}' reads it", rule.span)

    # 4. outputs
    sealed_outputs: dict[str, SealedOutput] = {}
    replicated_outputs: set[int] = set()
    for i, rule in rules:
        if rule.kind is not ir.RuleKind.ASYNC:
            continue
        reads = {a.relation for a in ctx.idb_atoms(rule)}
        if reads & sealed:
            found = _sealed_output(program, ctx, rule, sealed, set(ordered))
            if isinstance(found, str):
                return _fail(target, found, rule.span)
            prev = sealed_outputs.get(found.relation)
            if prev is not None and (prev.count_attr, prev.trigger) != (found.count_attr, found.trigger):
                return _fail(target, f"the rules sending '{found.relation}' seal it differently", rule.span)
            sealed_outputs[found.relation] = found
        elif not reads & set(keyed):
            replicated_outputs.add(i)
    for rel, out in sealed_outputs.items():
        for _, rule in rules:
            if rule.kind is ir.RuleKind.ASYNC and rule.head.relation == rel and not {a.relation for a in rule.atoms()} & sealed:
                return _fail(target, f"'{rel}' is also sent without its sealed part", rule.span)
        if not out.receivers:
            return _fail(target, f"nobody in the program reads '{rel}' to rebuild it", None)
        if rel in program.output_relations:
            return _fail(target, f"'{rel}' goes to external clients, who cannot combine partitions' parts", None)
    return Plan(
        component=target.component,
        key=key,
        partitions=target.partitions,
        keyed=keyed,
        replicated=frozenset(replicated),
        sealed=frozenset(sealed),
        ordered_inputs=tuple(ordered),
        shared=shared,
        partitioned_inputs=tuple(partitioned_inputs),
        sealed_outputs=sealed_outputs,
        replicated_outputs=frozenset(replicated_outputs),
    )


def _max_register(ctx: ComponentContext, rel: str, readers: list[ir.Rule], rules: list[tuple[int, ir.Rule]]) -> MaxRegister | str:
    why = f"'{rel}' is partitioned but also changes replicated state other than by raising a max register"
    if len(readers) != 1:
        return why
    feed = readers[0]
    if feed.kind is not ir.RuleKind.SYNC or len(feed.head.terms) != 1 or len(feed.body) != 1:
        return why
    atom = feed.body[0]
    var = feed.head.terms[0]
    if not isinstance(atom, ir.Atom) or atom.negated or not isinstance(var, ir.Var):
        return why
    positions = [p for p, t in enumerate(atom.terms) if isinstance(t, ir.Var) and t.name == var.name]
    if len(positions) != 1:
        return why
    feeder = feed.head.relation
    users = [r for _, r in rules if any(a.relation == feeder for a in r.atoms())]
    if len(users) != 1 or not users[0].head.aggregates or users[0].head.aggregates[0].func != "max" or len(users[0].head.terms) != 1:
        return why
    register = users[0].head.relation
    carries = [
        r
        for _, r in rules
        if r.kind is ir.RuleKind.NEXT and len(r.body) == 1 and isinstance(r.body[0], ir.Atom) and r.body[0].relation == register
    ]
    for carry in carries:
        back = [r for r in ctx.rules_for(feeder) if any(a.relation == carry.head.relation for a in r.atoms())]
        if back:
            block = ctx.program.block(ctx.component)
            facts = tuple(f for f in (block.facts if block else ()) if f.atom.relation == feeder)
            return MaxRegister(rel, positions[0], feeder, register, carry.head.relation, facts)
    return why


def _sealed_output(
    program: ir.Program, ctx: ComponentContext, rule: ir.Rule, sealed: set[str], ordered: set[str]
) -> SealedOutput | str:
    triggers = [a.relation for a in rule.positive_atoms() if a.relation in ordered]
    if len(set(triggers)) != 1:
        return f"'{rule.head.relation}' sends a per-partition aggregate but is not triggered by exactly one ordered input"
    count_attr: int | None = None
    for pos, term in enumerate(rule.head.terms):
        if isinstance(term, ir.Var):
            for atom in rule.positive_atoms():
                if atom.relation in sealed and any(isinstance(t, ir.Var) and t.name == term.name for t in atom.terms):
                    agg_rule = next(iter(ctx.rules_for(atom.relation)), None)
                    if agg_rule is not None and agg_rule.head.aggregates and agg_rule.head.aggregates[0].func in ("count", "sum"):
                        count_attr = pos
        elif isinstance(term, ir.Const) and any(a.relation in sealed for a in rule.negated_atoms()):
            count_attr = pos
    if count_attr is None:
        return f"'{rule.head.relation}' sends a per-partition value that is not a count or sum"
    receivers = tuple(
        sorted({b.component for b in program.blocks for r in b.rules if any(a.relation == rule.head.relation for a in r.atoms())})
    )
    return SealedOutput(rule.head.relation, count_attr, triggers[0], receivers)


def check(program: ir.Program, target: Partition) -> CheckResult:
    p = plan(program, target)
    if isinstance(p, NotApplicable):
        return p
    if p.sealed_outputs:
        rel = min(p.sealed_outputs)
        return _fail(
            target,
            f"'{rel}' sends a per-partition aggregate: its receivers must combine the partitions' "
            "parts (partitioned sealing)",
            None,
        )
    return describe(program, target, p, NAME)


def describe(program: ir.Program, target: Partition, p: Plan, name: str) -> CheckResult:
    policy = _input_policy(p)
    trial = route(program, target.component, policy)
    if isinstance(trial, Obstacle):
        return NotApplicable(name, target, trial.reason, trial.span)
    details = [
        f"partitioned on {p.key}: {', '.join(f'{r}.{a}' for r, a in sorted(p.keyed.items()))}",
        f"replicated through '{target.component}_coordinator': {', '.join(sorted(p.replicated)) or '-'}"
        f" (ordered inputs: {', '.join(p.ordered_inputs) or '-'})",
    ]
    if p.shared:
        details.append(
            "ordered only when they raise " + ", ".join(f"'{r.register}': {rel}" for rel, r in sorted(p.shared.items()))
        )
    if p.sealed_outputs:
        details.append(
            "sealed: "
            + ", ".join(f"{o.relation} (rebuilt by {', '.join(o.receivers)})" for o in p.sealed_outputs.values())
        )
    return Applicable(
        name,
        target,
        f"partition '{target.component}' into {target.partitions} partitions per instance on {p.key}, "
        "with a coordinator per instance",
        tuple(details),
    )


def _input_policy(p: Plan) -> Policy:
    rels = {r: PartitionExpr(p.keyed[r]) for r in (*p.partitioned_inputs, *p.shared)}
    return Policy(p.component, rels, {}, False)


# --------------------------------------------------------------------------------------------
# The mechanism
# --------------------------------------------------------------------------------------------


def apply(program: ir.Program, topology: Topology | None, target: Partition) -> tuple[ir.Program, Topology]:
    require(check(program, target), program)
    p = plan(program, target)
    assert isinstance(p, Plan)
    return mechanism(program, topology, p)


def mechanism(program: ir.Program, topology: Topology | None, p: Plan) -> tuple[ir.Program, Topology]:
    """The rewrite for a checked plan (sealed outputs included, see :mod:`.sealing`)."""
    comp = p.component
    decl = program.component(comp)
    assert decl is not None
    coord = m.unique(program, f"{comp}_coordinator")
    o = f"{comp}_order"  # prefix of the ordering protocol's relations
    arity = {rel: _arity(program, rel) for rel in (*p.ordered_inputs, *p.shared)}
    width = max(arity.values(), default=0)
    n_parts = p.partitions

    # Senders: partitioned inputs go to their partition, ordered ones to the coordinator.
    routed = route(program, comp, _input_policy(p))
    assert not isinstance(routed, Obstacle)
    out = m.add_component(routed, comp, coord, decl.count, f"orders the inputs that change replicated state of {comp} ({NAME})")
    for rel in p.ordered_inputs:
        out = m.redirect(out, rel, comp, coord)

    out = _coordinator(out, p, coord, o, arity, width, n_parts)
    out = _partitions(out, p, coord, o, arity, width)
    for sealed in p.sealed_outputs.values():
        for receiver in sealed.receivers:
            out = _rebuild(out, p, sealed, receiver)
    return out, topology_for(out, topology, {comp: n_parts})


def _arity(program: ir.Program, rel: str) -> int:
    from hydrodeploy.analysis.context import arity_of

    return arity_of(program, rel) or 0


def _item_terms(values: list[ir.BodyTerm], width: int) -> list[ir.BodyTerm]:
    return values + [PAD] * (width - len(values))


def _coordinator(
    program: ir.Program, p: Plan, coord: str, o: str, arity: dict[str, int], width: int, n_parts: int
) -> ir.Program:
    comp = p.component
    c = coord
    i, k, t, j, owner, n, kind = V("i"), V("k"), V("t"), V("j"), V("owner"), V("n"), V("kind")
    xs = [V(f"x{q}") for q in range(width)]
    acc = V("node")
    mine = V("mine")
    me_is = [ir.Atom("self", (mine,)), ir.Atom(m.pairing_name(c), (acc, mine))]
    rules: list[ir.Rule] = []
    for rel in p.ordered_inputs:
        names = [V(x) for x in m.safe_attribute_names(program, rel, RESERVED)]
        rules.append(
            ir.Rule(
                ir.Head(f"{c}_new", (ir.Const(rel), ir.Const(-1), *_item_terms(list(names), width))),  # type: ignore[arg-type]
                ir.RuleKind.SYNC,
                (ir.Atom(rel, tuple(names)),),
                comment=f"'{rel}' changes replicated state of {comp}: order it",
            )
        )
    for rel in p.shared:
        names = [V(x) for x in m.safe_attribute_names(program, rel, RESERVED)]
        rules.append(
            ir.Rule(
                ir.Head(f"{c}_new", (ir.Const(rel), owner, *_item_terms(list(names), width))),  # type: ignore[arg-type]
                ir.RuleKind.SYNC,
                (ir.Atom(f"{o}_raise_{rel}", (owner, *names)),),
                comment=f"a '{rel}' that raises replicated state, sent by partition 'owner': order it",
            )
        )
    rules += [
        ir.Rule(
            ir.Head(f"{c}_numbered", (kind, owner, *xs, ir.Aggregate("index", None))),
            ir.RuleKind.SYNC,
            (ir.Atom(f"{c}_new", (kind, owner, *xs)),),
        ),
        ir.Rule(ir.Head(f"{c}_seq", (i,)), ir.RuleKind.SYNC, (ir.Atom(f"{c}_seq_kept", (i,)),)),
        ir.Rule(ir.Head(f"{c}_top", (ir.Aggregate("max", i),)), ir.RuleKind.SYNC, (ir.Atom(f"{c}_seq", (i,)),), comment="the last index given (-1: none)"),
        ir.Rule(
            ir.Head(f"{c}_item", (i, kind, owner, *xs)),
            ir.RuleKind.SYNC,
            (ir.Atom(f"{c}_numbered", (kind, owner, *xs, k)), ir.Atom(f"{c}_top", (t,)), ir.Assign(i, ir.BinOp("+", ir.BinOp("+", t, k), ir.Const(1)))),
            comment="each new input gets the next index",
        ),
        ir.Rule(ir.Head(f"{c}_last", (ir.Aggregate("max", i),)), ir.RuleKind.SYNC, (ir.Atom(f"{c}_item", (i, kind, owner, *xs)),)),
        ir.Rule(ir.Head(f"{c}_seq_kept", (i,)), ir.RuleKind.NEXT, (ir.Atom(f"{c}_last", (i,)),)),
        ir.Rule(ir.Head(f"{c}_seq_kept", (t,)), ir.RuleKind.NEXT, (ir.Atom(f"{c}_top", (t,)),)),
        ir.Rule(
            ir.Head(f"{o}_request", (i, kind, owner, *xs), ir.Dest(acc.name, (j,))),
            ir.RuleKind.ASYNC,
            (ir.Atom(f"{c}_item", (i, kind, owner, *xs)), ir.Atom(f"{comp}_partition", (j,)), *me_is),
            comment="vote request to every partition: it stops processing partitioned inputs and votes",
        ),
        ir.Rule(ir.Head(f"{c}_pending", (i, kind, owner, *xs)), ir.RuleKind.SYNC, (ir.Atom(f"{c}_item", (i, kind, owner, *xs)),)),
        ir.Rule(
            ir.Head(f"{c}_pending", (i, kind, owner, *xs)),
            ir.RuleKind.NEXT,
            (ir.Atom(f"{c}_pending", (i, kind, owner, *xs)), ir.Atom(f"{c}_commit_now", (i,), negated=True)),
        ),
        ir.Rule(ir.Head(f"{c}_votes", (i, j)), ir.RuleKind.SYNC, (ir.Atom(f"{o}_vote", (i, j)),)),
        ir.Rule(
            ir.Head(f"{c}_votes", (i, j)),
            ir.RuleKind.NEXT,
            (ir.Atom(f"{c}_votes", (i, j)), ir.Atom(f"{c}_commit_now", (i,), negated=True)),
        ),
        ir.Rule(ir.Head(f"{c}_vote_count", (i, ir.Aggregate("count", j))), ir.RuleKind.SYNC, (ir.Atom(f"{c}_votes", (i, j)),)),
        ir.Rule(
            ir.Head(f"{c}_commit_now", (i,)),
            ir.RuleKind.SYNC,
            (ir.Atom(f"{c}_vote_count", (i, n)), ir.Atom(f"{comp}_partitions", (n,))),
            comment="every partition voted",
        ),
        ir.Rule(
            ir.Head(f"{o}_commit", (i, kind, owner, *xs), ir.Dest(acc.name, (j,))),
            ir.RuleKind.ASYNC,
            (ir.Atom(f"{c}_pending", (i, kind, owner, *xs)), ir.Atom(f"{c}_commit_now", (i,)), ir.Atom(f"{comp}_partition", (j,)), *me_is),
            comment="commit: partitions apply ordered inputs in index order",
        ),
    ]
    facts = [ir.Fact(ir.Atom(f"{c}_seq", (ir.Const(-1),)))]
    facts += [ir.Fact(ir.Atom(f"{comp}_partition", (ir.Const(q),))) for q in range(n_parts)]
    facts.append(ir.Fact(ir.Atom(f"{comp}_partitions", (ir.Const(n_parts),))))
    out = m.replace_block(program, c, rules, facts)
    return m.ensure_pairing(out, c, comp, c)


def _partitions(program: ir.Program, p: Plan, coord: str, o: str, arity: dict[str, int], width: int) -> ir.Program:
    comp = p.component
    block = program.block(comp)
    assert block is not None
    ctx = context(program, comp)
    i, j, t, kind, owner = V("i"), V("j"), V("t"), V("kind"), V("owner")
    xs = [V(f"x{q}") for q in range(width)]
    to_coord = [ir.Atom("self", (V("me"),)), ir.Atom(m.pairing_name(coord), (V("me"), V("coordinator")))]
    machinery: list[ir.Rule] = [
        ir.Rule(ir.Head(f"{o}_requests", (i, kind, owner, *xs)), ir.RuleKind.SYNC, (ir.Atom(f"{o}_request", (i, kind, owner, *xs)),),
                comment="vote requests not applied yet: partitioned inputs wait while there is one"),
        ir.Rule(
            ir.Head(f"{o}_requests", (i, kind, owner, *xs)),
            ir.RuleKind.NEXT,
            (ir.Atom(f"{o}_requests", (i, kind, owner, *xs)), ir.Atom(f"{o}_applied", (i,), negated=True)),
        ),
        ir.Rule(ir.Head(f"{o}_frozen", ()), ir.RuleKind.SYNC, (ir.Atom(f"{o}_requests", (ir.Wildcard(),) * (3 + width)),)),
        ir.Rule(
            ir.Head(f"{o}_vote", (i, j), ir.Dest("coordinator")),
            ir.RuleKind.ASYNC,
            (ir.Atom(f"{o}_request", (i, kind, owner, *xs)), ir.Atom("self_partition", (j,)), *to_coord),
        ),
        ir.Rule(ir.Head(f"{o}_commits", (i, kind, owner, *xs)), ir.RuleKind.SYNC, (ir.Atom(f"{o}_commit", (i, kind, owner, *xs)),)),
        ir.Rule(
            ir.Head(f"{o}_commits", (i, kind, owner, *xs)),
            ir.RuleKind.NEXT,
            (ir.Atom(f"{o}_commits", (i, kind, owner, *xs)), ir.Atom(f"{o}_applied", (i,), negated=True)),
        ),
        ir.Rule(ir.Head(f"{o}_done", (i,)), ir.RuleKind.SYNC, (ir.Atom(f"{o}_done_kept", (i,)),)),
        ir.Rule(ir.Head(f"{o}_top", (ir.Aggregate("max", i),)), ir.RuleKind.SYNC, (ir.Atom(f"{o}_done", (i,)),), comment="the last ordered input applied (-1: none)"),
        ir.Rule(
            ir.Head(f"{o}_applied", (i,)),
            ir.RuleKind.SYNC,
            (ir.Atom(f"{o}_commits", (i, kind, owner, *xs)), ir.Atom(f"{o}_top", (t,)), ir.Compare("==", i, ir.BinOp("+", t, ir.Const(1)))),
            comment="the next ordered input, once committed, is applied alone in this tick",
        ),
        ir.Rule(ir.Head(f"{o}_done_kept", (i,)), ir.RuleKind.NEXT, (ir.Atom(f"{o}_applied", (i,)),)),
        ir.Rule(ir.Head(f"{o}_done_kept", (t,)), ir.RuleKind.NEXT, (ir.Atom(f"{o}_top", (t,)),)),
    ]
    facts = [ir.Fact(ir.Atom(f"{o}_done", (ir.Const(-1),)))]
    # Ordered inputs, as the component's rules read them.
    for rel in p.ordered_inputs:
        names = [V(x) for x in m.safe_attribute_names(program, rel, RESERVED)]
        machinery.append(
            ir.Rule(
                ir.Head(rel, tuple(names)),
                ir.RuleKind.SYNC,
                (ir.Atom(f"{o}_applied", (i,)), ir.Atom(f"{o}_commits", (i, ir.Const(rel), ir.Wildcard(), *_item_terms(list(names), width)))),
                comment=f"'{rel}', applied in the coordinator's order",
            )
        )
    # Shared inputs: processed here when they do not raise replicated state, else ordered.
    renames: dict[int, list[tuple[str, str]]] = {}
    for rel, reg in p.shared.items():
        names = [V(x) for x in m.safe_attribute_names(program, rel, RESERVED)]
        b = names[reg.attr]
        arrived, taken = f"{o}_arrived_{rel}", f"{o}_taken_{rel}"
        prior_feed, prior = f"{o}_prior_{reg.feeder}", f"{o}_prior_{reg.register}"
        local, all_rel, owned = f"{o}_local_{rel}", f"{rel}_all", f"{rel}_owned"
        prior_val = V(m.fresh_name([x.name for x in names], "prior"))
        machinery += [
            ir.Rule(ir.Head(arrived, tuple(names)), ir.RuleKind.SYNC, (ir.Atom(rel, tuple(names)),),
                    comment=f"'{rel}' waits while an ordered input is outstanding"),
            ir.Rule(ir.Head(arrived, tuple(names)), ir.RuleKind.NEXT, (ir.Atom(arrived, tuple(names)), ir.Atom(taken, tuple(names), negated=True))),
            ir.Rule(ir.Head(taken, tuple(names)), ir.RuleKind.SYNC, (ir.Atom(arrived, tuple(names)), ir.Atom(f"{o}_frozen", (), negated=True))),
            ir.Rule(ir.Head(prior_feed, (V("v"),)), ir.RuleKind.SYNC, (ir.Atom(reg.carry, (V("v"),)),),
                    comment=f"'{reg.register}' before this tick's inputs"),
            ir.Rule(ir.Head(prior, (ir.Aggregate("max", V("v")),)), ir.RuleKind.SYNC, (ir.Atom(prior_feed, (V("v"),)),)),
            ir.Rule(
                ir.Head(local, tuple(names)),
                ir.RuleKind.SYNC,
                (ir.Atom(taken, tuple(names)), ir.Atom(prior, (prior_val,)), ir.Compare("<=", b, prior_val)),
                comment=f"a '{rel}' that cannot raise '{reg.register}' changes no replicated state: process it here",
            ),
            ir.Rule(
                ir.Head(f"{o}_raise_{rel}", (j, *names), ir.Dest("coordinator")),
                ir.RuleKind.ASYNC,
                (ir.Atom(taken, tuple(names)), ir.Atom(prior, (prior_val,)), ir.Compare(">", b, prior_val), ir.Atom("self_partition", (j,)), *to_coord),
                comment="one that raises it must be ordered by the coordinator",
            ),
            ir.Rule(ir.Head(all_rel, tuple(names)), ir.RuleKind.SYNC, (ir.Atom(local, tuple(names)),),
                    comment=f"'{rel}' for replicated state: processed here, or ordered (in every partition)"),
            ir.Rule(
                ir.Head(all_rel, tuple(names)),
                ir.RuleKind.SYNC,
                (ir.Atom(f"{o}_applied", (i,)), ir.Atom(f"{o}_commits", (i, ir.Const(rel), ir.Wildcard(), *_item_terms(list(names), width)))),
            ),
            ir.Rule(ir.Head(owned, tuple(names)), ir.RuleKind.SYNC, (ir.Atom(local, tuple(names)),),
                    comment=f"'{rel}' for partitioned state: processed here, or ordered and sent by this partition"),
            ir.Rule(
                ir.Head(owned, tuple(names)),
                ir.RuleKind.SYNC,
                (ir.Atom(f"{o}_applied", (i,)), ir.Atom(f"{o}_commits", (i, ir.Const(rel), j, *_item_terms(list(names), width))), ir.Atom("self_partition", (j,))),
            ),
        ]
        facts += [ir.Fact(ir.Atom(prior_feed, f.atom.terms)) for f in reg.facts]
        for pos, rule in enumerate(ctx.rules):
            if any(a.relation == rel for a in rule.atoms()):
                feeds = rule.head.relation == reg.feeder
                renames.setdefault(pos, []).append((rel, all_rel if feeds else owned))

    # Partitioned inputs wait while an ordered input is outstanding (B.3.1: r :+ r, !unfreeze).
    for rel in p.partitioned_inputs:
        names = [V(x) for x in m.safe_attribute_names(program, rel, RESERVED)]
        arrived, taken = f"{o}_arrived_{rel}", f"{o}_taken_{rel}"
        machinery += [
            ir.Rule(ir.Head(arrived, tuple(names)), ir.RuleKind.SYNC, (ir.Atom(rel, tuple(names)),),
                    comment=f"'{rel}' waits while an ordered input is outstanding"),
            ir.Rule(ir.Head(arrived, tuple(names)), ir.RuleKind.NEXT, (ir.Atom(arrived, tuple(names)), ir.Atom(taken, tuple(names), negated=True))),
            ir.Rule(ir.Head(taken, tuple(names)), ir.RuleKind.SYNC, (ir.Atom(arrived, tuple(names)), ir.Atom(f"{o}_frozen", (), negated=True))),
        ]
        for pos, rule in enumerate(ctx.rules):
            if any(a.relation == rel for a in rule.atoms()):
                renames.setdefault(pos, []).append((rel, taken))

    # The component's own rules: renamed inputs, sealed outputs, replicated-only sends.
    rules: list[ir.Rule] = []
    for pos, rule in enumerate(block.rules):
        for old, new in renames.get(pos, ()):
            rule = m.rename_atoms(rule, old, new)
        if rule.kind is ir.RuleKind.ASYNC and rule.head.relation in p.sealed_outputs:
            rule = dataclasses.replace(
                rule,
                head=dataclasses.replace(rule.head, relation=f"{rule.head.relation}_part", terms=(i, j, *rule.head.terms)),
                body=(*rule.body, ir.Atom(f"{o}_applied", (i,)), ir.Atom("self_partition", (j,))),
                comment=(rule.comment + "\n" if rule.comment else "")
                + "(sealed: every partition sends its part, with the ordered input's index and its number)",
            )
        elif pos in p.replicated_outputs:
            rule = dataclasses.replace(rule, body=(*rule.body, ir.Atom("self_partition", (ir.Const(0),))))
        rules.append(rule)
    out = m.replace_block(program, comp, [*rules, *machinery], [*block.facts, *facts])
    return m.ensure_pairing(out, comp, comp, coord)


def _rebuild(program: ir.Program, p: Plan, sealed: SealedOutput, receiver: str) -> ir.Program:
    """Receiver rules rebuilding ``sealed.relation`` from all partitions' parts (B.4.2)."""
    rel = sealed.relation
    arity = _arity(program, rel)
    names = [V(x) for x in m.safe_attribute_names(program, rel, RESERVED)]
    if len({v.name for v in names}) != arity:
        names = [V(f"v{q}") for q in range(arity)]
    i, j, k = V("i"), V("j"), V("k")
    count = names[sealed.count_attr]
    group = [v for q, v in enumerate(names) if q != sealed.count_attr]
    parts, sums, whole = f"{rel}_parts", f"{rel}_sum", f"{rel}_whole"
    total = V("total")
    full = [total if q == sealed.count_attr else v for q, v in enumerate(names)]
    n_fact = ir.Fact(ir.Atom(f"{p.component}_partitions", (ir.Const(p.partitions),)))
    rules = [
        ir.Rule(ir.Head(parts, (i, j, *names)), ir.RuleKind.SYNC, (ir.Atom(f"{rel}_part", (i, j, *names)),),
                comment=f"parts of '{rel}' from the partitions of {p.component}, kept until all are in"),
        ir.Rule(
            ir.Head(parts, (i, j, *names)),
            ir.RuleKind.NEXT,
            (ir.Atom(parts, (i, j, *names)), ir.Atom(whole, (i, *group), negated=True)),
        ),
        ir.Rule(
            ir.Head(sums, (i, *group, ir.Aggregate("count", j), ir.Aggregate("sum", count))),
            ir.RuleKind.SYNC,
            (ir.Atom(parts, (i, j, *names)),),
        ),
        ir.Rule(
            ir.Head(whole, (i, *group)),
            ir.RuleKind.SYNC,
            (ir.Atom(sums, (i, *group, k, total)), ir.Atom(f"{p.component}_partitions", (k,))),
        ),
        ir.Rule(
            ir.Head(rel, tuple(full)),
            ir.RuleKind.SYNC,
            (ir.Atom(sums, (i, *group, k, total)), ir.Atom(f"{p.component}_partitions", (k,))),
            comment=f"'{rel}' once every partition sent its part: the parts summed",
        ),
    ]
    out = m.add_rules(program, receiver, rules)
    return m.add_facts(out, receiver, [n_fact])
