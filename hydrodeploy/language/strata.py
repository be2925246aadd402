"""Stratification of a component's synchronous rules.

Relations are ordered so that a rule reading a relation through negation or aggregation runs only
after that relation is complete. Each strongly connected component of the dependency graph is a
stratum; a dependency through negation or aggregation inside one is a cycle the program cannot be
evaluated with, reported with the relations on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hydrodeploy.errors import LanguageError, Span
from hydrodeploy.language import ir


@dataclass(frozen=True)
class Stratum:
    relations: frozenset[str]
    rules: tuple[ir.Rule, ...]
    recursive: bool  # some rule reads a relation of this stratum: evaluate semi-naively


@dataclass(frozen=True)
class _Edge:
    source: str  # body relation
    target: str  # head relation
    nonmonotone: bool
    span: Span | None
    negated: bool = False


def _edges(rules: Iterable[ir.Rule], functions: frozenset[str]) -> list[_Edge]:
    edges: list[_Edge] = []
    for rule in rules:
        aggregating = bool(rule.head.aggregates)
        for atom in rule.atoms():
            if atom.relation in functions:
                continue
            nonmono = atom.negated or aggregating
            span = atom.span if atom.negated else (rule.head.span if aggregating else atom.span)
            edges.append(_Edge(atom.relation, rule.head.relation, nonmono, span, atom.negated))
    return edges


def _sccs(nodes: list[str], succ: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm; components come out in reverse topological order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0

    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = succ.get(node, [])
            if i < len(children):
                work.append((node, i + 1))
                child = children[i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                comp: list[str] = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                out.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def _path(succ: dict[str, list[str]], start: str, goal: str, within: set[str]) -> list[str]:
    """Shortest path start -> goal inside one strongly connected component."""
    prev: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            if node == goal:
                path = [node]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])  # type: ignore[arg-type]
                return path[::-1]
            for child in succ.get(node, []):
                if child in within and child not in prev:
                    prev[child] = node
                    nxt.append(child)
        frontier = nxt
    return [start, goal]


def stratify(program: ir.Program, component: str) -> tuple[Stratum, ...]:
    """The strata of ``component``'s synchronous rules, lowest first.

    Raises LanguageError when a relation depends on itself through negation or aggregation.
    """
    rules = [r for r in program.rules_of(component) if r.kind is ir.RuleKind.SYNC]
    functions = frozenset(f.name for f in program.functions)
    edges = _edges(rules, functions)
    succ: dict[str, list[str]] = {}
    nodes: list[str] = []
    seen: set[str] = set()
    for e in edges:
        succ.setdefault(e.source, []).append(e.target)
        for n in (e.source, e.target):
            if n not in seen:
                seen.add(n)
                nodes.append(n)
    for r in rules:
        if r.head.relation not in seen:
            seen.add(r.head.relation)
            nodes.append(r.head.relation)

    components = _sccs(nodes, succ)
    where = {rel: i for i, comp in enumerate(components) for rel in comp}
    for e in edges:
        if e.nonmonotone and where[e.source] == where[e.target]:
            cycle = _path(succ, e.target, e.source, set(components[where[e.source]]))
            shown = " -> ".join([*cycle, e.target])
            how = "negation" if e.negated else "aggregation"
            raise LanguageError(
                f"unstratifiable: '{e.target}' depends on itself through {how} ({shown})",
                e.span,
                program.source,
            )

    strata: list[Stratum] = []
    for comp in reversed(components):  # topological order: producers first
        members = frozenset(comp)
        comp_rules = tuple(r for r in rules if r.head.relation in members)
        if not comp_rules:
            continue
        recursive = any(
            a.relation in members for r in comp_rules for a in r.positive_atoms() if a.relation not in functions
        )
        strata.append(Stratum(members, comp_rules, recursive))
    return tuple(strata)
