"""Rule patterns the report's relaxed tests recognise (TR Appendix A.2.1, A.4.1).

- **Persistence** — ``r(X) :+ r(X)`` or ``.persist r``: every fact of ``r`` is a fact of the next
  tick.
- **Persistence with garbage collection** — ``r(X) :+ r(X), !g1(Y1), ...`` (or through a carrier,
  ``p(X) :+ r(X), !g(Y)`` with ``r(X) :- p(X)``): facts are kept until a *guard* ``g`` holds for
  their key. The report allows users to annotate persistence with such conditions (Paxos forgets
  the votes of a slot once a quorum committed it).
- **Once-trigger** — ``t(K, ...) :- cond, !done(K)`` with ``done(K) :+ t(K, ...)`` and ``done``
  persisted: ``t`` holds for a key in the first tick its condition holds, and never again.
- **Threshold** — ``a(K, count(x))`` (or ``max``) over a growing relation, read only as
  ``a(K, n), n >= e`` (or ``>``) with ``e`` fixed: once the threshold is crossed it stays crossed
  (thresholds over monotone lattices are monotone).

Variables are matched by name; ``X`` must be distinct variables.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hydrodeploy.analysis.context import ComponentContext
from hydrodeploy.language import ir


@dataclass(frozen=True)
class Carry:
    """``relation`` is kept from tick to tick by ``rule`` (through ``carrier`` if not itself),
    except for facts matching one of ``guards`` (negated atoms of the rule)."""

    relation: str
    carrier: str
    rule: ir.Rule
    guards: tuple[ir.Atom, ...]

    @property
    def garbage_collected(self) -> bool:
        return bool(self.guards)

    def alias(self) -> ir.Atom:
        """The body of ``relation(X) :- carrier(X)`` (the carry rule's head, as an atom)."""
        terms = tuple(t for t in self.rule.head.terms if isinstance(t, ir.Var))
        return ir.Atom(self.carrier, terms)


@dataclass(frozen=True)
class OnceTrigger:
    """``trigger`` fires once per key: ``rule`` negates ``done``, and ``done`` records it."""

    trigger: str
    done: str
    rule: ir.Rule
    record: ir.Rule


@dataclass(frozen=True)
class Threshold:
    """``aggregate`` (``func`` of a growing relation) is only compared upward against fixed values."""

    aggregate: str
    func: str
    position: int
    rule: ir.Rule


def _distinct_vars(terms: Iterable[ir.BodyTerm | ir.HeadTerm]) -> tuple[str, ...] | None:
    names: list[str] = []
    for t in terms:
        if not isinstance(t, ir.Var) or t.name in names:
            return None
        names.append(t.name)
    return tuple(names)


def carries(ctx: ComponentContext, rules: Iterable[int]) -> dict[str, Carry]:
    """Relations kept from tick to tick within ``rules`` (positions), with their guards."""
    chosen = [ctx.rules[i] for i in rules]
    out: dict[str, Carry] = {}
    for rel in ctx.persisted:
        if any(r.head.relation == rel for r in chosen) or any(a.relation == rel for r in chosen for a in r.atoms()):
            out[rel] = Carry(rel, rel, _persist_rule(rel, chosen), ())
    aliases: dict[str, str] = {}  # carrier -> relation, from `r(X) :- p(X)`
    for rule in chosen:
        if rule.kind is ir.RuleKind.SYNC and len(rule.body) == 1 and isinstance(rule.body[0], ir.Atom):
            body = rule.body[0]
            hv, bv = _distinct_vars(rule.head.terms), _distinct_vars(body.terms)
            if not body.negated and hv is not None and hv == bv:
                aliases[body.relation] = rule.head.relation
    for rule in chosen:
        if rule.kind is not ir.RuleKind.NEXT:
            continue
        positives = rule.positive_atoms()
        others = [lit for lit in rule.body if not isinstance(lit, ir.Atom)]
        if len(positives) != 1 or others:
            continue
        source = positives[0]
        hv, sv = _distinct_vars(rule.head.terms), _distinct_vars(source.terms)
        if hv is None or hv != sv:
            continue
        guards = rule.negated_atoms()
        if not all(ir.expr_vars(t) <= set(hv) for g in guards for t in g.terms if not isinstance(t, ir.Wildcard)):
            continue
        head = rule.head.relation
        if head == source.relation:
            out.setdefault(head, Carry(head, head, rule, guards))
        elif aliases.get(head) == source.relation and sum(1 for r in chosen if r.head.relation == head) == 1:
            out.setdefault(source.relation, Carry(source.relation, head, rule, guards))
    return out


def _persist_rule(rel: str, rules: list[ir.Rule]) -> ir.Rule:
    arity = next(
        (r.head.arity for r in rules if r.head.relation == rel),
        next((a.arity for r in rules for a in r.atoms() if a.relation == rel), 0),
    )
    terms = tuple(ir.Var(f"v{i}") for i in range(arity))
    return ir.Rule(ir.Head(rel, terms), ir.RuleKind.NEXT, (ir.Atom(rel, terms),))


def once_triggers(ctx: ComponentContext, rules: Iterable[int]) -> dict[str, OnceTrigger]:
    """Once-triggers within ``rules``, by trigger relation."""
    chosen = [ctx.rules[i] for i in rules]
    kept = carries(ctx, range(len(ctx.rules)))
    records: dict[tuple[str, str], ir.Rule] = {}
    for rule in chosen:
        if rule.kind is ir.RuleKind.NEXT and len(rule.body) == 1 and isinstance(rule.body[0], ir.Atom):
            body = rule.body[0]
            if not body.negated and _distinct_vars(rule.head.terms) is not None:
                records[(body.relation, rule.head.relation)] = rule
    out: dict[str, OnceTrigger] = {}
    for rule in chosen:
        if rule.kind is ir.RuleKind.NEXT:
            continue
        head = rule.head.relation
        for atom in rule.negated_atoms():
            record = records.get((head, atom.relation))
            if record is None or atom.relation not in kept or kept[atom.relation].garbage_collected:
                continue
            # done(K) records the trigger's key K; the trigger must test exactly that key.
            recorded = [record.head.terms[i] for i in range(record.head.arity)]
            body_atom = record.body[0]
            assert isinstance(body_atom, ir.Atom)
            positions = [_position(body_atom, t) for t in recorded]
            if any(p is None for p in positions):
                continue
            expected = [rule.head.terms[p] for p in positions if p is not None]
            if [_name(t) for t in atom.terms] == [_name(t) for t in expected]:
                out[head] = OnceTrigger(head, atom.relation, rule, record)
    return out


def _position(atom: ir.Atom, term: ir.HeadTerm) -> int | None:
    for i, t in enumerate(atom.terms):
        if isinstance(t, ir.Var) and isinstance(term, ir.Var) and t.name == term.name:
            return i
    return None


def _name(term: ir.HeadTerm | ir.BodyTerm) -> str | None:
    return term.name if isinstance(term, ir.Var) else None


INCREASING = frozenset(("count", "max"))


def threshold_reads(ctx: ComponentContext, rules: Iterable[int], aggregate_rule: ir.Rule) -> str | None:
    """None when every read of ``aggregate_rule``'s head within ``rules`` compares its aggregated
    column upward against fixed values; otherwise why not."""
    head = aggregate_rule.head
    positions = [i for i, t in enumerate(head.terms) if isinstance(t, ir.Aggregate)]
    funcs = {t.func for t in head.terms if isinstance(t, ir.Aggregate)}
    if len(positions) != 1 or not funcs <= INCREASING:
        return f"'{head.relation}' aggregates with {', '.join(sorted(funcs))}, which can go down as facts arrive"
    pos = positions[0]
    for i in rules:
        rule = ctx.rules[i]
        for atom in rule.atoms():
            if atom.relation != head.relation:
                continue
            if atom.negated:
                return f"'{head.relation}' is negated at {atom.span}"
            term = atom.terms[pos]
            if isinstance(term, ir.Wildcard):
                continue
            if not isinstance(term, ir.Var):
                return f"'{head.relation}' is matched against a constant count at {atom.span}"
            if not _only_upward(ctx, rule, atom, term.name):
                func = next(iter(funcs))
                return (
                    f"the {func} in '{head.relation}' is used at {atom.span} other than as a lower "
                    "bound (`n >= e`): it is not a threshold"
                )
    return None


def _only_upward(ctx: ComponentContext, rule: ir.Rule, atom: ir.Atom, var: str) -> bool:
    """``var`` (bound by ``atom``) is read only by comparisons ``var >= e``/``var > e`` whose other
    side is fixed (constants or variables bound by EDB atoms only)."""
    fixed = _edb_bound(ctx, rule)
    for lit in rule.body:
        if lit is atom:
            continue
        if isinstance(lit, ir.Atom):
            if any(isinstance(t, ir.Var) and t.name == var for t in lit.terms):
                return False
        elif isinstance(lit, ir.Compare):
            left, right = ir.expr_vars(lit.left), ir.expr_vars(lit.right)
            if var not in left | right:
                continue
            if isinstance(lit.left, ir.Var) and lit.left.name == var and lit.op in (">=", ">") and right <= fixed:
                continue
            if isinstance(lit.right, ir.Var) and lit.right.name == var and lit.op in ("<=", "<") and left <= fixed:
                continue
            return False
        elif var in ir.expr_vars(lit.expr) or lit.var.name == var:
            return False
    head_vars = set().union(*(ir.expr_vars(t) for t in rule.head.terms)) if rule.head.terms else set()
    return var not in head_vars


def _edb_bound(ctx: ComponentContext, rule: ir.Rule) -> set[str]:
    out: set[str] = set()
    for atom in rule.positive_atoms():
        if atom.relation in ctx.static or atom.relation in ctx.builtins:
            out.update(t.name for t in atom.terms if isinstance(t, ir.Var))
    changed = True
    while changed:
        changed = False
        for lit in rule.body:
            if isinstance(lit, ir.Assign) and lit.var.name not in out and ir.expr_vars(lit.expr) <= out:
                out.add(lit.var.name)
                changed = True
    return out
