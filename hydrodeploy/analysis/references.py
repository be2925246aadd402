"""References, inputs and outputs of a component or of a set of its rules (TR §2.4).

A rule *references* the IDB relations in its body; a set of rules references the union. An *input*
of a rule set is a relation it references but does not derive; an *output* is a relation it derives
but does not reference. Inputs and outputs are the set's asynchronous channels once it runs on its
own node. ``.persist r`` counts as the rule ``r :+ r`` in every rule set that derives or reads
``r``, so a persisted relation is referenced where it lives.

Rule sets are given by the positions of rules in their component's block (rules are values, so two
identical rules would otherwise be indistinguishable).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hydrodeploy.analysis.context import ComponentContext, context
from hydrodeploy.analysis.memo import per_program
from hydrodeploy.language import ir


@dataclass(frozen=True)
class References:
    """What a set of rules of one component reads and derives (relation names)."""

    component: str
    rules: frozenset[int]
    references: frozenset[str]  # IDB relations read in bodies (and persisted relations present)
    derived: frozenset[str]  # heads of ':-' and ':+' rules
    sent: frozenset[str]  # heads of ':~' rules
    inputs: frozenset[str]  # referenced, not derived here
    outputs: frozenset[str]  # derived or sent, not referenced

    @property
    def heads(self) -> frozenset[str]:
        return self.derived | self.sent


def references(program: ir.Program, component: str, rules: Iterable[int] | None = None) -> References:
    """The :class:`References` of ``rules`` (positions in the block; default: every rule)."""
    ctx = context(program, component)
    chosen = frozenset(range(len(ctx.rules))) if rules is None else frozenset(rules)
    return _references(program, component, chosen)


@per_program
def _references(program: ir.Program, component: str, chosen: frozenset[int]) -> References:
    ctx = context(program, component)
    refs: set[str] = set()
    derived: set[str] = set()
    sent: set[str] = set()
    for i in sorted(chosen):
        rule = ctx.rules[i]
        refs.update(a.relation for a in ctx.idb_atoms(rule))
        if rule.kind is ir.RuleKind.ASYNC:
            sent.add(rule.head.relation)
        else:
            derived.add(rule.head.relation)
    refs |= (refs | derived) & ctx.persisted
    heads = derived | sent
    return References(
        component=component,
        rules=chosen,
        references=frozenset(refs),
        derived=frozenset(derived),
        sent=frozenset(sent),
        inputs=frozenset(refs - derived),
        outputs=frozenset(heads - refs),
    )


def rules_reading(ctx: ComponentContext, relation: str) -> frozenset[int]:
    """Positions of the rules whose body mentions ``relation``."""
    return frozenset(i for i, r in enumerate(ctx.rules) if any(a.relation == relation for a in r.atoms()))


def rules_deriving(ctx: ComponentContext, relation: str) -> frozenset[int]:
    """Positions of the rules whose head is ``relation``."""
    return frozenset(i for i, r in enumerate(ctx.rules) if r.head.relation == relation)


def downstream_closure(program: ir.Program, component: str, seed: Iterable[int]) -> frozenset[int]:
    """``seed`` plus every rule that reads, directly or transitively, a relation those rules derive
    (synchronous and sequential derivations only: what is sent leaves the component)."""
    ctx = context(program, component)
    out = set(seed)
    frontier = list(out)
    while frontier:
        rule = ctx.rules[frontier.pop()]
        if rule.kind is ir.RuleKind.ASYNC:
            continue
        for j in rules_reading(ctx, rule.head.relation):
            if j not in out:
                out.add(j)
                frontier.append(j)
    return frozenset(out)


def upstream_closure(program: ir.Program, component: str, seed: Iterable[int]) -> frozenset[int]:
    """``seed`` plus every rule deriving, directly or transitively, an IDB relation those rules
    read (static relations excluded: they can be copied)."""
    ctx = context(program, component)
    out = set(seed)
    frontier = list(out)
    while frontier:
        rule = ctx.rules[frontier.pop()]
        reads = {a.relation for a in ctx.idb_atoms(rule)}
        if rule.head.relation in ctx.persisted:
            reads.add(rule.head.relation)
        for rel in reads:
            for j in rules_deriving(ctx, rel):
                if ctx.rules[j].kind is not ir.RuleKind.ASYNC and j not in out:
                    out.add(j)
                    frontier.append(j)
    return frozenset(out)


def clusters(program: ir.Program, component: str) -> tuple[frozenset[int], ...]:
    """The rules of a component grouped so that no two groups share an IDB relation (read or
    derived) — candidates for mutually independent decoupling. Rules deriving only static
    relations are left out (they can be copied to every group)."""
    ctx = context(program, component)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    members: list[tuple[int, str]] = []
    for i, rule in enumerate(ctx.rules):
        if rule.head.relation in ctx.static:
            continue
        node = f"rule:{i}"
        members.append((i, node))
        if rule.kind is not ir.RuleKind.ASYNC:
            union(node, f"rel:{rule.head.relation}")
        for atom in ctx.idb_atoms(rule):
            union(node, f"rel:{atom.relation}")
    groups: dict[str, set[int]] = {}
    for i, node in members:
        groups.setdefault(find(node), set()).add(i)
    return tuple(sorted((frozenset(g) for g in groups.values()), key=min))
