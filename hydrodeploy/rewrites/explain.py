"""Which rewrites apply to a program, and why the others do not (the data behind ``hydrodeploy
explain``).

For every component, decoupling is tried on a few candidate rule sets:

- each group of rules sharing no relation with the others (mutually independent candidates);
- each asynchronous rule on its own (a send: functional or monotonic candidates);
- each asynchronous rule with everything it needs (its upstream closure: asymmetric candidates).

Partitioning is tried for the component as a whole with every partitioning rewrite. Each attempt
is reported as applicable (with what would happen) or not (with the reason and the source span).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from hydrodeploy.analysis.context import context
from hydrodeploy.analysis.references import clusters, upstream_closure
from hydrodeploy.language import ir
from hydrodeploy.rewrites import DECOUPLING, PARTITIONING
from hydrodeploy.rewrites.base import CheckResult, Decouple, Partition
from hydrodeploy.rewrites.decoupling import default_name, fans_out

EXAMPLE_PARTITIONS = 3


@dataclass(frozen=True)
class Attempt:
    """One rewrite tried on one target."""

    rules: tuple[str, ...]  # describes what moves ("ballot (line 22)"), empty for partitioning
    result: CheckResult


@dataclass(frozen=True)
class ComponentReport:
    component: str
    instances: int
    rules: int
    decoupling: tuple[Attempt, ...]
    partitioning: tuple[Attempt, ...]


def candidate_sets(program: ir.Program, component: str) -> list[frozenset[int]]:
    ctx = context(program, component)
    dynamic = frozenset(i for i, r in enumerate(ctx.rules) if r.head.relation not in ctx.static)
    out: list[frozenset[int]] = []
    groups = clusters(program, component)
    if len(groups) > 1:
        out.extend(groups)
    for i, rule in enumerate(ctx.rules):
        if rule.kind is ir.RuleKind.ASYNC:
            out.append(frozenset({i}))
            out.append(upstream_closure(program, component, {i}) & dynamic)
    # every rule at once only when one of them fans each input out (see decoupling.fans_out)
    whole_ok = any(fans_out(program, ctx.rules[i]) for i in dynamic)
    unique: list[frozenset[int]] = []
    for s in out:
        if s and (s != dynamic or whole_ok) and s not in unique:
            unique.append(s)
    return sorted(unique, key=lambda s: (min(s), len(s)))


def describe_rules(program: ir.Program, component: str, rules: frozenset[int]) -> tuple[str, ...]:
    ctx = context(program, component)
    out = []
    for i in sorted(rules):
        rule = ctx.rules[i]
        where = f" (line {rule.span.line})" if rule.span is not None else ""
        out.append(f"{rule.head.relation}{where}")
    return tuple(out)


def key_candidates(program: ir.Program, component: str) -> list[str]:
    """Variables of the relations a component receives, most frequent first."""
    ctx = context(program, component)
    counts: dict[str, int] = {}
    for rule in ctx.rules:
        for atom in rule.atoms():
            if atom.relation in ctx.received:
                for t in atom.terms:
                    if isinstance(t, ir.Var):
                        counts[t.name] = counts.get(t.name, 0) + 1
    return sorted(counts, key=lambda v: (-counts[v], v))


def _with_some_key(program: ir.Program, component: str, mod: ModuleType) -> CheckResult:
    """The check with the first key variable for which it applies, or the rejection for the
    most used one."""
    first: CheckResult | None = None
    for key in key_candidates(program, component):
        result: CheckResult = mod.check(program, Partition(component, key, EXAMPLE_PARTITIONS))
        if result.applicable:
            return result
        first = first or result
    if first is None:
        return mod.check(program, Partition(component, None, EXAMPLE_PARTITIONS))  # type: ignore[no-any-return]
    return first


def explain(program: ir.Program, component: str | None = None) -> list[ComponentReport]:
    names = [c.name for c in program.components]
    if component is not None:
        names = [component]
    reports: list[ComponentReport] = []
    for name in names:
        decl = program.component(name)
        if decl is None:
            continue
        ctx = context(program, name)
        attempts: list[Attempt] = []
        for rules in candidate_sets(program, name):
            target = Decouple(name, rules, default_name(program, name, rules))
            described = describe_rules(program, name, rules)
            for mod in DECOUPLING:
                attempts.append(Attempt(described, mod.check(program, target)))
        partitions: list[Attempt] = []
        if ctx.rules:
            target_p = Partition(name, None, EXAMPLE_PARTITIONS)
            for mod in PARTITIONING:
                if mod.SHORT in ("partial", "sealing"):
                    partitions.append(Attempt((), _with_some_key(program, name, mod)))
                else:
                    partitions.append(Attempt((), mod.check(program, target_p)))
        reports.append(ComponentReport(name, decl.instances, len(ctx.rules), tuple(attempts), tuple(partitions)))
    return reports
