"""Program edits the rewrites are built from (TR §3.1 Redirection, A.3.1 Decoupling, B.1.1
Redirection With Partitioning), expressed in `.ded` itself.

The report models where a fact goes with EDB relations: ``forward(addr, addr2)`` maps a node to the
node that took over some of its rules. Addresses are the deployment's business, so the rewritten
program computes that map from built-ins: ``<new>_for(c, x)`` pairs each instance ``c`` of the
original component with the instance ``x`` of the new one. With one instance each it is their
product; otherwise instances are paired by rank in address order (``index()`` numbers a
component's addresses in sorted order), which every node computes the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

from hydrodeploy.analysis.context import arity_of, context
from hydrodeploy.language import ir

# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


def used_names(program: ir.Program) -> set[str]:
    """Every name a new relation or component must not take."""
    names: set[str] = set(ir.builtin_relations(program))
    names.update(c.name for c in program.components)
    names.update(i.relation for i in program.inputs)
    names.update(o.relation for o in program.outputs)
    names.update(f.name for f in program.functions)
    names.update(t.name for t in program.timers)
    names.update(p.relation for p in program.persists)
    names.update(lg.relation for lg in program.logs)
    for block in program.blocks:
        for fact in block.facts:
            names.add(fact.atom.relation)
        for rule in block.rules:
            names.add(rule.head.relation)
            names.update(a.relation for a in rule.atoms())
    return names


def unique(program: ir.Program, base: str, taken: set[str] | None = None) -> str:
    used = used_names(program) | (taken or set())
    if base not in used:
        return base
    n = 2
    while f"{base}{n}" in used:
        n += 1
    return f"{base}{n}"


def component_name_ok(program: ir.Program, name: str) -> bool:
    """A new component name clashes with nothing, nor do its built-ins."""
    used = used_names(program)
    return name.isidentifier() and name not in used and f"{name}_count" not in used


def rule_vars(rule: ir.Rule) -> set[str]:
    out: set[str] = set()
    for lit in rule.body:
        if isinstance(lit, ir.Atom):
            out.update(t.name for t in lit.terms if isinstance(t, ir.Var))
        elif isinstance(lit, ir.Compare):
            out |= ir.expr_vars(lit.left) | ir.expr_vars(lit.right)
        else:
            out.add(lit.var.name)
            out |= ir.expr_vars(lit.expr)
    for t in rule.head.terms:
        out |= ir.expr_vars(t)
    return out


def fresh_var(rule: ir.Rule, base: str, taken: Iterable[str] = ()) -> str:
    used = rule_vars(rule) | set(taken)
    if base not in used:
        return base
    n = 2
    while f"{base}{n}" in used:
        n += 1
    return f"{base}{n}"


# --------------------------------------------------------------------------------------------
# Blocks and declarations
# --------------------------------------------------------------------------------------------


def add_component(program: ir.Program, after: str, name: str, count: int | None, comment: str | None) -> ir.Program:
    """Declare component ``name`` right after ``after``, with an empty block after its block."""
    decl = ir.ComponentDecl(name, count, comment=comment)
    comps = list(program.components)
    family = [i for i, c in enumerate(comps) if c.name == after or c.name.startswith(f"{after}_")]
    comps.insert(max(family) + 1, decl)
    blocks = list(program.blocks)
    bfamily = [i for i, b in enumerate(blocks) if b.component == after or b.component.startswith(f"{after}_")]
    blocks.insert(max(bfamily) + 1 if bfamily else len(blocks), ir.Block(name, ()))
    return dataclasses.replace(program, components=tuple(comps), blocks=tuple(blocks))


def set_count(program: ir.Program, component: str, count: int | None) -> ir.Program:
    comps = tuple(dataclasses.replace(c, count=count) if c.name == component else c for c in program.components)
    return dataclasses.replace(program, components=comps)


def map_blocks(program: ir.Program, fn: Callable[[ir.Block], ir.Block]) -> ir.Program:
    return dataclasses.replace(program, blocks=tuple(fn(b) for b in program.blocks))


def replace_block(program: ir.Program, component: str, rules: Sequence[ir.Rule], facts: Sequence[ir.Fact] | None = None) -> ir.Program:
    def edit(block: ir.Block) -> ir.Block:
        if block.component != component:
            return block
        return dataclasses.replace(block, rules=tuple(rules), facts=block.facts if facts is None else tuple(facts))

    return map_blocks(program, edit)


def add_rules(program: ir.Program, component: str, rules: Sequence[ir.Rule], front: bool = False) -> ir.Program:
    """Append (or prepend) rules to a block, skipping rules it already has."""
    block = program.block(component)
    assert block is not None
    new = [r for r in dict.fromkeys(rules) if r not in block.rules]
    combined = (*new, *block.rules) if front else (*block.rules, *new)
    return replace_block(program, component, combined)


def add_facts(program: ir.Program, component: str, facts: Sequence[ir.Fact]) -> ir.Program:
    block = program.block(component)
    assert block is not None
    have = {f.atom for f in block.facts}
    new = [f for f in facts if f.atom not in have]
    return replace_block(program, component, block.rules, (*block.facts, *new))


def add_persist(program: ir.Program, relation: str, comment: str | None = None) -> ir.Program:
    if relation in program.persisted:
        return program
    return dataclasses.replace(program, persists=(*program.persists, ir.PersistDecl(relation, comment=comment)))


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


def rename_atoms(rule: ir.Rule, old: str, new: str) -> ir.Rule:
    """Replace body atoms of ``old`` (positive and negated) by ``new``."""
    if not any(isinstance(lit, ir.Atom) and lit.relation == old for lit in rule.body):
        return rule
    body = tuple(
        dataclasses.replace(lit, relation=new) if isinstance(lit, ir.Atom) and lit.relation == old else lit
        for lit in rule.body
    )
    return dataclasses.replace(rule, body=body)


def var_terms(names: Sequence[str]) -> tuple[ir.Var, ...]:
    return tuple(ir.Var(n) for n in names)


def attribute_names(program: ir.Program, relation: str, hints: Iterable[ir.Rule] = ()) -> list[str]:
    """Readable variable names for a relation's attributes: the `.input` attributes, or the
    variables of a rule head or atom that uses distinct plain variables, else ``v0, v1, ...``."""
    arity = arity_of(program, relation) or 0
    for decl in program.inputs:
        if decl.relation == relation:
            return list(decl.attrs)
    candidates: list[tuple[ir.BodyTerm | ir.HeadTerm, ...]] = []
    for rule in hints:
        if rule.head.relation == relation:
            candidates.append(rule.head.terms)
        candidates.extend(a.terms for a in rule.atoms() if a.relation == relation)
    for block in program.blocks:
        for rule in block.rules:
            if rule.head.relation == relation:
                candidates.append(rule.head.terms)
            candidates.extend(a.terms for a in rule.atoms() if a.relation == relation)
    for terms in candidates:
        names = [t.name for t in terms if isinstance(t, ir.Var)]
        if len(names) == arity and len(set(names)) == arity:
            return names
    return [f"v{i}" for i in range(arity)]


def safe_attribute_names(program: ir.Program, relation: str, reserved: Iterable[str]) -> list[str]:
    """:func:`attribute_names`, renamed where they would clash with ``reserved`` variables."""
    taken = set(reserved)
    out: list[str] = []
    for name in attribute_names(program, relation):
        new = name
        n = 2
        while new in taken or new in out:
            new = f"{name}{n}"
            n += 1
        out.append(new)
    return out


# --------------------------------------------------------------------------------------------
# Pairing instances of a component with the instances of the component that took over its rules
# --------------------------------------------------------------------------------------------


def pairing_name(new: str) -> str:
    return f"{new}_for"


def pairing_rules(program: ir.Program, original: str, new: str) -> tuple[ir.Rule, ...]:
    """Rules defining ``<new>_for(c, x)``: instance ``x`` of ``new`` took over from instance ``c``
    of ``original``."""
    rel = pairing_name(new)
    decl = program.component(original)
    single = decl is not None and decl.instances == 1
    c, x = ir.Var("c"), ir.Var("x")
    if single:
        return (
            ir.Rule(
                ir.Head(rel, (c, x)),
                ir.RuleKind.SYNC,
                (ir.Atom(original, (c,)), ir.Atom(new, (x,))),
                comment=f"{new} instance x took over rules of {original} instance c",
            ),
        )
    i = ir.Var("i")
    rank_c, rank_x = f"{original}_rank", f"{new}_rank"
    return (
        ir.Rule(
            ir.Head(rank_c, (c, ir.Aggregate("index", None))),
            ir.RuleKind.SYNC,
            (ir.Atom(original, (c,)),),
            comment=f"{original} instances numbered in address order",
        ),
        ir.Rule(
            ir.Head(rank_x, (x, ir.Aggregate("index", None))),
            ir.RuleKind.SYNC,
            (ir.Atom(new, (x,)),),
            comment=f"{new} instances numbered in address order",
        ),
        ir.Rule(
            ir.Head(rel, (c, x)),
            ir.RuleKind.SYNC,
            (ir.Atom(rank_c, (c, i)), ir.Atom(rank_x, (x, i))),
            comment=f"{new} instance x took over rules of {original} instance c (paired by rank)",
        ),
    )


def ensure_pairing(program: ir.Program, block: str, original: str, new: str) -> ir.Program:
    return add_rules(program, block, pairing_rules(program, original, new))


# --------------------------------------------------------------------------------------------
# Redirection (TR §3.1): facts of `relation` sent to `original` now go to `new`.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Unredirectable:
    """A send that cannot be redirected: the rule and why."""

    rule: ir.Rule
    reason: str


def find_unredirectable(program: ir.Program, relation: str, original: str) -> Unredirectable | None:
    """Sends of ``relation`` that redirection cannot handle: routed to ``original`` by key while
    it has several instances (instances would be paired by index, not by rank)."""
    decl = program.component(original)
    for block in program.blocks:
        for rule in block.rules:
            dest = rule.head.dest
            if rule.kind is not ir.RuleKind.ASYNC or rule.head.relation != relation or dest is None:
                continue
            if dest.keys is not None and dest.target == original and decl is not None and decl.instances > 1:
                return Unredirectable(rule, f"'{relation}' is routed to '{original}' by key ({rule.span})")
    return None


def redirect(program: ir.Program, relation: str, original: str, new: str) -> ir.Program:
    """Every rule sending ``relation`` to an instance of ``original`` sends it to the paired
    instance of ``new`` instead."""
    readers = {
        b.component
        for b in program.blocks
        for r in b.rules
        if any(a.relation == relation for a in r.atoms())
    }
    others_read = bool(readers - {original, new})
    out = program
    for block in program.blocks:
        rules: list[ir.Rule] = []
        needs_pairing = False
        changed = False
        for rule in block.rules:
            dest = rule.head.dest
            if rule.kind is not ir.RuleKind.ASYNC or rule.head.relation != relation or dest is None:
                rules.append(rule)
                continue
            if dest.keys is not None and dest.target == original and dest.target not in _bound(rule):
                rules.append(_set_dest(rule, ir.Dest(new, dest.keys)))
                changed = True
                continue
            if dest.target not in _bound(rule):
                rules.append(rule)  # routed to some other component
                continue
            var = dest.target
            binder = _builtin_binder(rule, var, program)
            if binder is not None and binder != original:
                rules.append(rule)  # provably sent to another component
                continue
            if binder == original and _only_destination(rule, var):
                body = tuple(
                    ir.Atom(new, lit.terms, span=lit.span)
                    if isinstance(lit, ir.Atom) and lit.relation == original and not lit.negated and _is_var(lit, var)
                    else lit
                    for lit in rule.body
                )
                rules.append(dataclasses.replace(rule, body=body))
                changed = True
                continue
            fresh = fresh_var(rule, "node")
            body = (*rule.body, ir.Atom(pairing_name(new), (ir.Var(var), ir.Var(fresh))))
            moved = dataclasses.replace(rule, body=body, head=dataclasses.replace(rule.head, dest=ir.Dest(fresh, dest.keys)))
            rules.append(moved)
            needs_pairing = True
            changed = True
            if binder is None and others_read:
                rules.append(
                    dataclasses.replace(rule, body=(*rule.body, ir.Atom(original, (ir.Var(var),), negated=True)), comment=None)
                )
        if changed:
            out = replace_block(out, block.component, rules)
        if needs_pairing:
            out = ensure_pairing(out, block.component, original, new)
    return out


def _set_dest(rule: ir.Rule, dest: ir.Dest) -> ir.Rule:
    return dataclasses.replace(rule, head=dataclasses.replace(rule.head, dest=dest))


def _bound(rule: ir.Rule) -> set[str]:
    return {t.name for a in rule.positive_atoms() for t in a.terms if isinstance(t, ir.Var)} | {
        lit.var.name for lit in rule.body if isinstance(lit, ir.Assign)
    }


def _is_var(atom: ir.Atom, var: str) -> bool:
    return len(atom.terms) == 1 and isinstance(atom.terms[0], ir.Var) and atom.terms[0].name == var


def _builtin_binder(rule: ir.Rule, var: str, program: ir.Program) -> str | None:
    """The component whose built-in address relation binds ``var`` in ``rule``, if any."""
    names = {c.name for c in program.components}
    for atom in rule.positive_atoms():
        if atom.relation in names and _is_var(atom, var):
            return atom.relation
    return None


def _only_destination(rule: ir.Rule, var: str) -> bool:
    """``var`` appears only in its binding built-in atom and the destination."""
    count = 0
    for lit in rule.body:
        if isinstance(lit, ir.Atom):
            count += sum(1 for t in lit.terms if isinstance(t, ir.Var) and t.name == var)
        elif isinstance(lit, ir.Compare):
            count += 2 * (var in ir.expr_vars(lit.left) | ir.expr_vars(lit.right))
        elif var in ir.expr_vars(lit.expr) or lit.var.name == var:
            count += 2
    head_uses = any(var in ir.expr_vars(t) for t in rule.head.terms)
    keys = rule.head.dest.keys if rule.head.dest is not None and rule.head.dest.keys else ()
    key_uses = any(var in ir.expr_vars(k) for k in keys)
    return count == 1 and not head_uses and not key_uses


# --------------------------------------------------------------------------------------------
# Forwarding (TR A.3.1, Rewrite: Decoupling): C1 sends the facts C2 reads.
# --------------------------------------------------------------------------------------------


def forward_name(program: ir.Program, relation: str, new: str, taken: set[str] | None = None) -> str:
    return unique(program, f"{relation}_to_{new}", taken)


def forward_rule(program: ir.Program, original: str, new: str, relation: str, channel: str, hints: Iterable[ir.Rule] = ()) -> ir.Rule:
    """``channel@x(...) :~ relation(...), <x is the paired instance of new>`` for ``original``'s block."""
    names = attribute_names(program, relation, hints)
    terms = var_terms(names)
    decl = program.component(original)
    single = decl is not None and decl.instances == 1
    dest_var = fresh_name(names, "node")
    # the destination first: the evaluator joins atoms in body order when none is bound, and the
    # one or two destination facts then bind before the (many) forwarded facts are scanned once
    body: list[ir.Literal]
    if single:
        body = [ir.Atom(new, (ir.Var(dest_var),))]
    else:
        me = fresh_name([*names, dest_var], "me")
        body = [ir.Atom("self", (ir.Var(me),)), ir.Atom(pairing_name(new), (ir.Var(me), ir.Var(dest_var)))]
    body.append(ir.Atom(relation, terms))
    return ir.Rule(
        ir.Head(channel, terms, ir.Dest(dest_var)),
        ir.RuleKind.ASYNC,
        tuple(body),
        comment=f"'{relation}' is read by rules now in {new}: forward it there",
    )


def fresh_name(taken: Sequence[str], base: str) -> str:
    if base not in taken:
        return base
    n = 2
    while f"{base}{n}" in taken:
        n += 1
    return f"{base}{n}"


# --------------------------------------------------------------------------------------------
# `self` in moved rules
# --------------------------------------------------------------------------------------------


def replace_self(program: ir.Program, original: str, new: str, rule: ir.Rule) -> tuple[ir.Rule, bool]:
    """In a rule moved from ``original`` to ``new``, ``self(me)`` still means the original
    instance: ``self(x), <new>_for(me, x)``. Returns the rule and whether pairing is needed."""
    if not any(isinstance(lit, ir.Atom) and lit.relation == "self" for lit in rule.body):
        return rule, False
    body: list[ir.Literal] = []
    for lit in rule.body:
        if isinstance(lit, ir.Atom) and lit.relation == "self" and not lit.negated and len(lit.terms) == 1:
            term = lit.terms[0]
            mine = fresh_var(rule, "mine")
            body.append(ir.Atom("self", (ir.Var(mine),), span=lit.span))
            body.append(ir.Atom(pairing_name(new), (term, ir.Var(mine))))
        else:
            body.append(lit)
    return dataclasses.replace(rule, body=tuple(body)), True


# --------------------------------------------------------------------------------------------
# Static relations needed by moved rules
# --------------------------------------------------------------------------------------------


def static_support(program: ir.Program, component: str, rules: Iterable[ir.Rule]) -> tuple[list[ir.Rule], list[ir.Fact]]:
    """The static rules and constant facts of ``component`` that ``rules`` need (transitively)."""
    ctx = context(program, component)
    block = program.block(component)
    assert block is not None
    need: set[str] = set()
    frontier = [a.relation for r in rules for a in r.atoms() if a.relation in ctx.static]
    while frontier:
        rel = frontier.pop()
        if rel in need:
            continue
        need.add(rel)
        for r in ctx.rules_for(rel):
            frontier.extend(a.relation for a in r.atoms() if a.relation in ctx.static)
    static_rules = [r for r in block.rules if r.head.relation in need]
    facts = [f for f in block.facts if f.atom.relation in need]
    return static_rules, facts
