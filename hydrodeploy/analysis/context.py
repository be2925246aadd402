"""What each relation is, seen from one component (TR §2.2-2.4).

The technical report splits relations into EDB (facts known before execution: library functions,
boolean operators, address tables) and IDB (derived by rules, or arriving as messages). In a `.ded`
program the EDB of a component is

- the built-in relations (``<component>(addr)``, ``<component>_count(n)``, ``self``, ``self_index``),
- the declared functions (infinite relations),
- relations given only as constant facts of the block,
- *static* relations: derived by synchronous rules whose bodies read only EDB relations, such as
  ``quorum(q) :- acceptor_count(n), q = n / 2 + 1`` — their contents never change.

A static relation that does not depend on ``self`` or ``self_index`` is *portable*: it has the same
facts on every node, so a rewrite may copy its rules into a new component instead of sending its
facts. Every other relation read in a body is IDB: ``.input`` relations, timers, channels
(relations some ``:~`` rule sends) and relations derived locally.

``.persist r`` is the persistence rule ``r(...) :+ r(...)`` of every component where ``r`` has
facts (``ComponentContext.persisted``); the analyses treat it like any other rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hydrodeploy.analysis.memo import per_program
from hydrodeploy.language import ir
from hydrodeploy.language.binding import functions_of

LOCATION_BUILTINS = frozenset(("self", "self_index"))
"""Built-ins whose facts differ from node to node."""


@dataclass(frozen=True)
class ComponentContext:
    """Relation classes of one component. All sets hold relation names."""

    program: ir.Program
    component: str
    rules: tuple[ir.Rule, ...]
    builtins: frozenset[str]
    functions: Mapping[str, ir.FunctionDecl]
    timers: frozenset[str]  # timers firing in this component
    inputs: frozenset[str]  # `.input` relations sent to this component by external clients
    facts: frozenset[str]  # relations with constant facts in this block
    static: frozenset[str]  # facts and relations derived from EDB only: never change
    portable: frozenset[str]  # static relations that do not read self/self_index
    received: frozenset[str]  # channels: relations some component sends with ':~' that this one reads
    derived: frozenset[str]  # heads of this component's ':-' and ':+' rules (and facts)
    sent: frozenset[str]  # heads of this component's ':~' rules
    persisted: frozenset[str]  # `.persist` relations that have facts here

    @property
    def edb(self) -> frozenset[str]:
        return self.builtins | frozenset(self.functions) | self.static

    def is_idb(self, relation: str) -> bool:
        return relation not in self.edb

    def idb_atoms(self, rule: ir.Rule) -> tuple[ir.Atom, ...]:
        """Body atoms (positive or negated) over IDB relations."""
        return tuple(a for a in rule.atoms() if self.is_idb(a.relation))

    def rules_for(self, relation: str) -> tuple[ir.Rule, ...]:
        return tuple(r for r in self.rules if r.head.relation == relation)


def context(program: ir.Program, component: str) -> ComponentContext:
    """The :class:`ComponentContext` of ``component`` (cached per program value)."""
    return _context(program, component)


@per_program
def _context(program: ir.Program, component: str) -> ComponentContext:
    block = program.block(component)
    rules = block.rules if block is not None else ()
    facts = frozenset(f.atom.relation for f in block.facts) if block is not None else frozenset()
    builtins = frozenset(ir.builtin_relations(program))
    functions = functions_of(program)
    timers = frozenset(t.name for t in program.timers if t.component == component)
    inputs = frozenset(i.relation for i in program.inputs if i.component == component)
    sent_anywhere = frozenset(
        r.head.relation for b in program.blocks for r in b.rules if r.kind is ir.RuleKind.ASYNC
    )
    read = frozenset(a.relation for r in rules for a in r.atoms())
    derived = frozenset(r.head.relation for r in rules if r.kind is not ir.RuleKind.ASYNC) | facts
    sent = frozenset(r.head.relation for r in rules if r.kind is ir.RuleKind.ASYNC)
    received = (read & sent_anywhere) - derived
    static, portable = _static_relations(rules, facts, builtins, frozenset(functions), received | inputs | timers)
    present = derived | received | inputs
    persisted = frozenset(p.relation for p in program.persists) & present
    return ComponentContext(
        program=program,
        component=component,
        rules=rules,
        builtins=builtins,
        functions=functions,
        timers=timers,
        inputs=inputs,
        facts=facts,
        static=static - persisted,
        portable=portable - persisted,
        received=received,
        derived=derived,
        sent=sent,
        persisted=persisted,
    )


def _static_relations(
    rules: Iterable[ir.Rule],
    facts: frozenset[str],
    builtins: frozenset[str],
    functions: frozenset[str],
    dynamic_inputs: frozenset[str],
) -> tuple[frozenset[str], frozenset[str]]:
    """Relations that never change (facts; synchronous rules over EDB only), to a fixpoint, and
    the subset that does not depend on ``self``/``self_index``."""
    by_head: dict[str, list[ir.Rule]] = {}
    for rule in rules:
        by_head.setdefault(rule.head.relation, []).append(rule)
    static: set[str] = {f for f in facts if f not in by_head and f not in dynamic_inputs}
    portable: set[str] = set(static)
    changed = True
    while changed:
        changed = False
        for rel, defs in by_head.items():
            if rel in static or rel in dynamic_inputs:
                continue
            if any(r.kind is not ir.RuleKind.SYNC for r in defs):
                continue
            reads = {a.relation for r in defs for a in r.atoms()}
            known = builtins | functions | static
            if reads <= known:
                static.add(rel)
                if not reads & (LOCATION_BUILTINS | (static - portable)):
                    portable.add(rel)
                changed = True
    return frozenset(static), frozenset(portable)


def node_local(program: ir.Program, relation: str) -> bool:
    """Bookkeeping of the batching rewrite (``<component>_batch_...``, see
    :mod:`hydrodeploy.rewrites.batching`): sequence numbers and acknowledgements that each node —
    each partition of a partitioned component — keeps for itself, not data to partition."""
    return any(relation.startswith(f"{c.name}_batch_") for c in program.components)


def arity_of(program: ir.Program, relation: str) -> int | None:
    """The arity of a relation wherever it appears (None if it appears nowhere)."""
    return _arities(program).get(relation)


@per_program
def _arities(program: ir.Program) -> dict[str, int]:
    out: dict[str, int] = {}
    for decl in program.inputs:
        out.setdefault(decl.relation, len(decl.attrs))
    for fn in program.functions:
        out.setdefault(fn.name, fn.arity)
    for timer in program.timers:
        out.setdefault(timer.name, 0)
    for block in program.blocks:
        for fact in block.facts:
            out.setdefault(fact.atom.relation, fact.atom.arity)
        for rule in block.rules:
            out.setdefault(rule.head.relation, rule.head.arity)
            for atom in rule.atoms():
                out.setdefault(atom.relation, atom.arity)
    for name in ir.builtin_relations(program):
        out.setdefault(name, 1)
    return out
