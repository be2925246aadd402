"""Distribution policies for partitioning a component (TR §4.1-4.2, Appendix B.1-B.2).

A distribution policy sends every fact of the relations a component references to one partition.
It is *parallel disjoint correct* when the facts that any rule combines (joins, groups for an
aggregate, anti-joins) always land on the same partition. We look for policies of one shape: each
relation ``r`` is partitioned on a *partition expression* — one of its attributes (``r.i``) or a
declared one-input function of one (``hash(r.i)``) — and the policy hashes its value.

For every rule of the component, the partition expressions of its IDB body atoms (positive and
negated) and of its head (when the head stays in the component) must denote the same value: the
rule's *key*. With **co-hashing** (§4.1) values are compared through shared variables only; with
**dependencies** (§4.2) also through function atoms, ``x = y`` and the relations' FDs
(:mod:`.dependencies`), which is what co-partition dependencies amount to. An aggregate's key must
be one of its group-by terms. Node-local bookkeeping of the batching rewrite is not data: every
partition keeps its own, so it constrains nothing.

The search is constraint propagation: every relation starts with all its partition expressions;
each rule keeps, for each of its atoms, those that can agree with some expression of every other
atom; repeat to a fixpoint. An empty set is a proof that no policy of this shape exists, and the
rule where it happened is the reason. Otherwise a policy is chosen, preferring expressions whose
rule keys are the variable the user named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hydrodeploy.analysis.context import ComponentContext, arity_of, context, node_local
from hydrodeploy.analysis.dependencies import (
    Closure,
    Term,
    app,
    fn_name,
    functional_dependencies,
    rule_equalities,
    term_of,
)
from hydrodeploy.analysis.memo import per_program
from hydrodeploy.errors import Span
from hydrodeploy.language import ir
from hydrodeploy.language.binding import functions_of


@dataclass(frozen=True, order=True)
class PartitionExpr:
    """``attr`` of a relation, or ``fn(attr)`` for a one-input function."""

    attr: int
    fn: str | None = None

    def describe(self, relation: str) -> str:
        inner = f"{relation}.{self.attr}"
        return inner if self.fn is None else f"{self.fn}({inner})"


@dataclass(frozen=True)
class Policy:
    """A distribution policy: each relation's partition expression, and each rule's key (printed)."""

    component: str
    relations: Mapping[str, PartitionExpr]
    rule_keys: Mapping[int, str]
    dependencies: bool  # needs function atoms or FDs (TR §4.2), not co-hashing alone

    def describe(self) -> str:
        return ", ".join(self.relations[r].describe(r) for r in sorted(self.relations))


@dataclass(frozen=True)
class PolicySearch:
    """Result of :func:`find_policy`: a policy, or why none exists."""

    policy: Policy | None
    reason: str | None = None
    span: Span | None = None
    rule: int | None = None
    candidates: Mapping[str, frozenset[PartitionExpr]] = field(default_factory=dict)


@dataclass(frozen=True)
class _RuleView:
    index: int
    rule: ir.Rule
    atoms: tuple[tuple[str, tuple[ir.BodyTerm, ...] | tuple[ir.HeadTerm, ...], Span | None], ...]
    closure: Closure
    aggregate: bool


def find_policy(program: ir.Program, component: str, key: str | None = None, dependencies: bool = True) -> PolicySearch:
    """A policy partitioning ``component`` consistently with co-hashing (``dependencies=False``)
    or with co-hashing and dependencies, preferring rule keys named ``key``."""
    return _find_policy(program, component, key, dependencies)


@per_program
def _find_policy(program: ir.Program, component: str, key: str | None, dependencies: bool) -> PolicySearch:
    ctx = context(program, component)
    if ctx.inputs:
        rel = min(ctx.inputs)
        decl = next(i for i in program.inputs if i.relation == rel)
        return PolicySearch(
            None,
            f"'{component}' receives '{rel}' from external clients, who send it to every instance and "
            "cannot be told about partitions",
            decl.span,
        )
    if ctx.timers:
        name = min(ctx.timers)
        timer = next(t for t in program.timers if t.name == name)
        return PolicySearch(None, f"timer '{name}' would fire in every partition", timer.span)
    functions = functions_of(program)
    fds = functional_dependencies(program) if dependencies else None
    unary = sorted(fn_name(f, j) for f in functions.values() if len(f.inputs) == 1 for j in range(len(f.outputs)))
    if not dependencies:
        unary = []
    views = _views(ctx, functions, fds)
    relations = sorted(
        {
            a.relation
            for r in ctx.rules
            if r.head.relation not in ctx.static and not node_local(program, r.head.relation)
            for a in ctx.idb_atoms(r)
            if not node_local(program, a.relation)
        }
        | {name for v in views for name, _, _ in v.atoms}
    )
    cands: dict[str, set[PartitionExpr]] = {}
    for rel in relations:
        arity = arity_of(program, rel) or 0
        cands[rel] = {PartitionExpr(i) for i in range(arity)} | {PartitionExpr(i, f) for i in range(arity) for f in unary}

    failure = _propagate(views, cands)
    if failure is not None:
        return failure
    for rel in relations:  # a relation no rule combines with another still needs an attribute
        if not cands[rel]:
            return PolicySearch(None, f"'{rel}' has no attributes to partition on", _read_span(ctx, rel))
    snapshot = {r: frozenset(c) for r, c in cands.items()}
    # Choose: fix relations one at a time, preferring expressions that make rule keys `key`.
    for rel in relations:
        if len(cands[rel]) <= 1:
            continue
        preferred = sorted(cands[rel], key=lambda c: (not _named(views, rel, c, key, ctx), c.fn is not None, c.attr))
        for choice in preferred:
            trial = {r: set(c) for r, c in cands.items()}
            trial[rel] = {choice}
            if _propagate(views, trial) is None:
                cands = trial
                break
        else:  # pragma: no cover - arc consistency left a value with no support
            return PolicySearch(None, f"no consistent choice for '{rel}'", None)
    chosen = {r: next(iter(c)) for r, c in cands.items()}
    keys: dict[int, str] = {}
    uses_fn = any(c.fn is not None for c in chosen.values())
    for view in views:
        term = next((_value(view, t, chosen[n]) for n, t, _ in view.atoms), None)
        if term is not None:
            keys[view.index] = _show(view.closure.find(term))
        if dependencies and not uses_fn and not _agrees(view, chosen, with_functions=False):
            uses_fn = True
    return PolicySearch(Policy(component, chosen, keys, uses_fn), candidates=snapshot)


def _views(
    ctx: ComponentContext, functions: Mapping[str, ir.FunctionDecl], fds: Mapping[str, frozenset[object]] | None
) -> list[_RuleView]:
    views: list[_RuleView] = []
    for i, rule in enumerate(ctx.rules):
        if rule.head.relation in ctx.static or node_local(ctx.program, rule.head.relation):
            continue
        atoms: list[tuple[str, tuple[ir.BodyTerm, ...] | tuple[ir.HeadTerm, ...], Span | None]] = [
            (a.relation, a.terms, a.span) for a in ctx.idb_atoms(rule) if not node_local(ctx.program, a.relation)
        ]
        if rule.kind is not ir.RuleKind.ASYNC:
            atoms.append((rule.head.relation, rule.head.terms, rule.head.span))
        if rule.head.relation in ctx.persisted and rule.kind is not ir.RuleKind.ASYNC:
            pass  # the persistence rule r :+ r constrains nothing
        if len(atoms) < 2:
            continue
        closure = rule_equalities(rule, functions, fds if fds is not None else None)  # type: ignore[arg-type]
        views.append(_RuleView(i, rule, tuple(atoms), closure, bool(rule.head.aggregates)))
    return views


def _value(view: _RuleView, terms: Sequence[ir.BodyTerm | ir.HeadTerm], cand: PartitionExpr) -> Term | None:
    if cand.attr >= len(terms):
        return None
    term = term_of(terms[cand.attr])
    if term is None:
        return None
    return term if cand.fn is None else app(cand.fn, [term])


def _propagate(views: list[_RuleView], cands: dict[str, set[PartitionExpr]]) -> PolicySearch | None:
    changed = True
    while changed:
        changed = False
        for view in views:
            options: list[dict[Term, set[PartitionExpr]]] = []
            for name, terms, _ in view.atoms:
                by_value: dict[Term, set[PartitionExpr]] = {}
                for cand in cands[name]:
                    value = _value(view, terms, cand)
                    if value is None:
                        continue
                    view.closure.add(value)
                    view.closure.close()
                    by_value.setdefault(view.closure.find(value), set()).add(cand)
                options.append(by_value)
            common = set(options[0])
            for opt in options[1:]:
                common &= set(opt)
            for (name, _, span), by_value in zip(view.atoms, options, strict=True):
                keep: set[PartitionExpr] = set().union(*(by_value[v] for v in common)) if common else set()
                keep &= cands[name]  # a relation read twice keeps what both reads allow
                if keep != cands[name]:
                    if not keep:
                        return _failure(view, name, span, cands)
                    cands[name] = keep
                    changed = True
    return None


def _failure(view: _RuleView, name: str, span: Span | None, cands: Mapping[str, set[PartitionExpr]]) -> PolicySearch:
    rule = view.rule
    where = f"the rule for '{rule.head.relation}'"
    if not cands[name] and not any(t for n, t, _ in view.atoms if n == name):
        return PolicySearch(
            None,
            f"'{name}' has no attributes to partition on, and {where} combines it with other facts",
            span or rule.span,
            view.index,
        )
    others = sorted({n for n, _, _ in view.atoms if n != name})
    if view.aggregate and not any(not isinstance(t, ir.Aggregate) for t in rule.head.terms):
        agg = rule.head.aggregates[0]
        body = ", ".join(sorted({a.relation for a in rule.positive_atoms() if a.relation != rule.head.relation}))
        return PolicySearch(
            None,
            f"'{rule.head.relation}' is the {agg.func} of all facts of {body} (no group-by key): every "
            "partition would need all of them; a value every key reads can only be replicated "
            "(partial partitioning)",
            rule.head.span or rule.span,
            view.index,
        )
    return PolicySearch(
        None,
        f"in {where}, no partition key keeps '{name}' together with {', '.join(repr(o) for o in others)}: "
        "they share no attribute (no policy can co-locate the facts this rule combines)",
        span or rule.span,
        view.index,
    )


def _agrees(view: _RuleView, chosen: Mapping[str, PartitionExpr], with_functions: bool) -> bool:
    """Whether the rule's atoms agree on the chosen expressions through shared variables alone."""
    values: set[Term] = set()
    for name, terms, _ in view.atoms:
        value = _value(view, terms, chosen[name])
        if value is None:
            return False
        values.add(value)
    return len(values) == 1


def _named(views: list[_RuleView], rel: str, cand: PartitionExpr, key: str | None, ctx: ComponentContext | None = None) -> bool:
    if key is None:
        return False
    if ctx is not None and cand.fn is None:
        for rule in ctx.rules:
            for atom in rule.atoms():
                if atom.relation == rel and cand.attr < atom.arity:
                    term = atom.terms[cand.attr]
                    if isinstance(term, ir.Var) and term.name == key:
                        return True
    for view in views:
        for name, terms, _ in view.atoms:
            if name != rel:
                continue
            value = _value(view, terms, cand)
            if value is not None and view.closure.find(value) == view.closure.find(("var", key)):
                return True
    return False


def _show(term: Term) -> str:
    if term[0] == "var":
        return str(term[1])
    if term[0] == "const":
        return repr(term[1])
    return f"{term[1]}({', '.join(_show(a) for a in term[2:] if isinstance(a, tuple))})"


def _read_span(ctx: ComponentContext, rel: str) -> Span | None:
    for rule in ctx.rules:
        for atom in rule.atoms():
            if atom.relation == rel:
                return atom.span
    return None
