"""A component's rules compiled once into an evaluation plan.

Synchronous rules are grouped into strata (:mod:`hydrodeploy.language.strata`); recursive strata
get one semi-naive variant per recursive body atom. Sequential (``:+``) and asynchronous (``:~``)
rules run once per tick after the synchronous fixpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hydrodeploy.errors import RuntimeFault
from hydrodeploy.language import ir
from hydrodeploy.language.strata import stratify
from hydrodeploy.runtime.aggregate import AggregateHead
from hydrodeploy.runtime.codegen import RuleFn, compile_source, generate
from hydrodeploy.runtime.functions import resolve_functions
from hydrodeploy.runtime.values import divide


@dataclass(eq=False)
class CompiledRule:
    """One rule: its generated function(s) and how its results are finished."""

    number: int  # position in the component's block, for counters and reports
    rule: ir.Rule
    rule_functions: tuple[ir.FunctionDecl, ...]
    fn: RuleFn
    delta_fns: tuple[RuleFn, ...]  # semi-naive variants (recursive rules only)
    aggregate: AggregateHead | None
    source: str
    requires: tuple[str, ...] = ()  # relations that must be non-empty for the body to match
    distinct: bool = False  # no two body matches give the same output (see _distinct_outputs)
    single_fact: frozenset[str] = frozenset()  # relations known to hold one fact (ir.single_fact_builtins)

    def __post_init__(self) -> None:
        functions = {f.name for f in self.rule_functions}
        self.requires = tuple(
            dict.fromkeys(a.relation for a in self.rule.positive_atoms() if a.relation not in functions)
        )
        self.distinct = _distinct_outputs(self.rule, functions, self.single_fact)

    @property
    def head(self) -> str:
        return self.rule.head.relation

    def describe(self) -> str:
        where = f" ({self.rule.span})" if self.rule.span else ""
        return f"rule {self.number} for '{self.head}'{where}"


def _distinct_outputs(rule: ir.Rule, functions: set[str], single_fact: frozenset[str] = frozenset()) -> bool:
    """Whether the rule's function never emits the same output twice in one call, so that an
    asynchronous rule's messages need no deduplication.

    The generated body enumerates the facts of each positive atom (a set, or an index bucket of
    one) and computes everything else (assignments, function calls: one result each) from them,
    filtering with comparisons and negations. Two different matches therefore differ in the facts
    of some atom; when no atom has a wildcard, those facts (distinct tuples) differ in a variable
    (constants are equal); when every such variable is a term of the head (or its ``@x``
    destination), the two outputs differ too. An atom over a relation of one fact (``self(me)``)
    matches one way only, so two matches never differ in its facts. A partitioned destination
    ``@x[k]`` is a partition of instance ``x``: different instances, different addresses.
    """
    if rule.kind is not ir.RuleKind.ASYNC or rule.head.aggregates:
        return False
    atom_vars: set[str] = set()
    fixed: set[str] = set()  # bound by a one-fact relation: equal in every match
    for atom in rule.positive_atoms():
        if atom.relation in single_fact:
            fixed.update(t.name for t in atom.terms if isinstance(t, ir.Var))
            continue
        if atom.relation in functions:
            continue
        for term in atom.terms:
            if isinstance(term, ir.Var):
                atom_vars.add(term.name)
            elif not isinstance(term, ir.Const):
                return False  # a wildcard: matches may differ only there
    output = {t.name for t in rule.head.terms if isinstance(t, ir.Var)}
    dest = rule.head.dest
    if dest is not None:
        output.add(dest.target)
    return atom_vars - fixed <= output


@dataclass(frozen=True)
class CompiledStratum:
    relations: frozenset[str]
    rules: tuple[CompiledRule, ...]
    recursive: bool


@dataclass
class ComponentPlan:
    component: str
    program: ir.Program
    strata: tuple[CompiledStratum, ...]
    next_rules: tuple[CompiledRule, ...]
    async_rules: tuple[CompiledRule, ...]
    facts: dict[str, frozenset[tuple[Any, ...]]]
    persisted: frozenset[str]
    logged: frozenset[str]
    timers: tuple[ir.TimerDecl, ...]
    namespace: dict[str, Any] = field(repr=False)

    @property
    def rules(self) -> tuple[CompiledRule, ...]:
        """Every rule, in block order."""
        all_rules = [r for s in self.strata for r in s.rules] + list(self.next_rules) + list(self.async_rules)
        return tuple(sorted(all_rules, key=lambda r: r.number))

    def bind_routing(
        self, route_component: Callable[[str, tuple[Any, ...]], str], route_partition: Callable[[str, tuple[Any, ...]], str]
    ) -> None:
        """Install the deployment's routing functions used by ``@comp[key]`` / ``@x[key]``."""
        self.namespace["_route_component"] = route_component
        self.namespace["_route_partition"] = route_partition


def _unroutable(*_: Any) -> str:
    raise RuntimeFault("routing used before the plan was bound to a topology")


def _namespace(program: ir.Program) -> dict[str, Any]:
    ns: dict[str, Any] = {
        "_EMPTY": (),
        "_div": divide,
        "_route_component": _unroutable,
        "_route_partition": _unroutable,
    }
    for name, fn in resolve_functions(program).items():
        ns[f"_f_{name}"] = fn
    return ns


def _compile_rule(
    number: int,
    rule: ir.Rule,
    functions: dict[str, ir.FunctionDecl],
    namespace: dict[str, Any],
    recursive_relations: frozenset[str] = frozenset(),
    single_fact: frozenset[str] = frozenset(),
) -> CompiledRule:
    name = f"rule_{number}"
    source, binding_vars = generate(rule, name, functions)
    fn = compile_source(source, name, namespace)
    delta_fns: list[RuleFn] = []
    sources = [source]
    for pos, lit in enumerate(rule.body):
        if isinstance(lit, ir.Atom) and not lit.negated and lit.relation in recursive_relations:
            dname = f"rule_{number}_delta{pos}"
            dsource, _ = generate(rule, dname, functions, delta_position=pos)
            delta_fns.append(compile_source(dsource, dname, namespace))
            sources.append(dsource)
    aggregate = AggregateHead(rule.head, binding_vars) if rule.head.aggregates else None
    used = tuple(functions[a.relation] for a in rule.atoms() if a.relation in functions)
    return CompiledRule(
        number, rule, used, fn, tuple(delta_fns), aggregate, "\n".join(sources), single_fact=single_fact
    )


def compile_component(program: ir.Program, component: str, namespace: dict[str, Any] | None = None) -> ComponentPlan:
    """Compile ``component`` of a checked program."""
    ns = _namespace(program) if namespace is None else namespace
    functions = {f.name: f for f in program.functions}
    block = program.block(component)
    rules = block.rules if block else ()
    numbers = {id(r): i for i, r in enumerate(rules)}
    strata: list[CompiledStratum] = []
    for stratum in stratify(program, component):
        recursive = stratum.relations if stratum.recursive else frozenset()
        compiled = tuple(_compile_rule(numbers[id(r)], r, functions, ns, recursive) for r in stratum.rules)
        strata.append(CompiledStratum(stratum.relations, compiled, stratum.recursive))
    next_rules = tuple(
        _compile_rule(numbers[id(r)], r, functions, ns) for r in rules if r.kind is ir.RuleKind.NEXT
    )
    single_fact = ir.single_fact_builtins(program)
    async_rules = tuple(
        _compile_rule(numbers[id(r)], r, functions, ns, single_fact=single_fact)
        for r in rules
        if r.kind is ir.RuleKind.ASYNC
    )
    facts: dict[str, set[tuple[Any, ...]]] = {}
    for fact in block.facts if block else ():
        facts.setdefault(fact.atom.relation, set()).add(tuple(t.value for t in fact.atom.terms))  # type: ignore[union-attr]
    return ComponentPlan(
        component=component,
        program=program,
        strata=tuple(strata),
        next_rules=next_rules,
        async_rules=async_rules,
        facts={k: frozenset(v) for k, v in facts.items()},
        persisted=program.persisted,
        logged=program.logged,
        timers=tuple(t for t in program.timers if t.component == component),
        namespace=ns,
    )


def compile_program(program: ir.Program) -> dict[str, ComponentPlan]:
    """Compile every component; Python functions are imported once and shared."""
    ns = _namespace(program)
    return {c.name: compile_component(program, c.name, dict(ns)) for c in program.components}
