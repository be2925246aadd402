"""Compile one rule into a specialised Python function.

A rule body becomes nested loops over hash-index lookups, with every filter, assignment, negation
and function call placed at the first point where its inputs are bound. The function has the
signature ``fn(D, I, DL, IL, OUT)``:

- ``D``: relation name -> set of tuples (this tick's database), ``I(rel, cols)``: a cached hash
  index of ``D[rel]`` on the given columns (key -> list of tuples);
- ``DL``/``IL``: the same for the semi-naive delta of a recursive stratum (unused otherwise);
- ``OUT``: where results go — a set of head tuples (plain rules), a set of body bindings (rules
  with aggregates, finished by :mod:`hydrodeploy.runtime.aggregate`), or a list of
  ``(destination, tuple)`` pairs (asynchronous rules).

Variables are renamed ``v_<name>`` so that no program name clashes with Python.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hydrodeploy.language import ir
from hydrodeploy.runtime.aggregate import collects_bindings

RuleFn = Callable[[Any, Any, Any, Any, Any], None]


@dataclass(frozen=True)
class GeneratedRule:
    source: str
    fn: RuleFn
    binding_vars: tuple[str, ...]  # for aggregate rules: the variables of each collected binding


def _v(name: str) -> str:
    return f"v_{name}"


def expr_code(expr: ir.Expr) -> str:
    if isinstance(expr, ir.Var):
        return _v(expr.name)
    if isinstance(expr, ir.Const):
        return repr(expr.value)
    left, right = expr_code(expr.left), expr_code(expr.right)
    if expr.op == "/":
        return f"_div({left}, {right})"
    return f"({left} {expr.op} {right})"


class _Emitter:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.prelude: list[str] = []
        self.depth = 1
        self.counter = 0
        # the tuple variable of each enumerated atom whose terms are distinct variables, by those
        # variables' names: a head with the same variables in the same order reuses the tuple
        self.rows: dict[tuple[str, ...], str] = {}
        self.sets: dict[tuple[str, str], str] = {}

    def relation(self, source: str, rel: str) -> str:
        """A local bound once, in the prelude, to the relation's set (it does not change during a
        call: the rule adds to OUT, never to what it reads)."""
        name = self.sets.get((source, rel))
        if name is None:
            name = self.sets[(source, rel)] = self.fresh("s")
            self.prelude.append(f"    {name} = {source}.get({rel}, _EMPTY)")
        return name

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"_{prefix}{self.counter}"

    def line(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    def open(self, text: str) -> None:
        self.line(text)
        self.depth += 1


def _order(rule: ir.Rule, functions: dict[str, ir.FunctionDecl], first: int | None) -> list[ir.Literal]:
    """Evaluation order: the delta atom (if any) first, then greedily the positive atom with most
    bound columns, with every filter (and membership test) applied as soon as its inputs are bound."""
    pending = list(rule.body)
    order: list[ir.Literal] = []
    bound: set[str] = set()

    def ready(lit: ir.Literal) -> bool:
        if isinstance(lit, ir.Compare):
            return ir.expr_vars(lit.left) | ir.expr_vars(lit.right) <= bound
        if isinstance(lit, ir.Assign):
            return ir.expr_vars(lit.expr) <= bound
        if lit.relation in functions:
            n_in = len(functions[lit.relation].inputs)
            return all(not isinstance(t, ir.Var) or t.name in bound for t in lit.terms[:n_in])
        if lit.negated:
            return all(not isinstance(t, ir.Var) or t.name in bound for t in lit.terms)
        # a positive atom with every term known (``leader()``, ``r(x, 1)`` with x bound) is a
        # membership test: test it as early as a filter (it binds nothing, so the atoms that
        # enumerate facts keep their order)
        return all(isinstance(t, ir.Const) or (isinstance(t, ir.Var) and t.name in bound) for t in lit.terms)

    def take(lit: ir.Literal) -> None:
        pending.remove(lit)
        order.append(lit)
        if isinstance(lit, ir.Assign):
            bound.add(lit.var.name)
        elif isinstance(lit, ir.Atom) and not lit.negated:
            bound.update(t.name for t in lit.terms if isinstance(t, ir.Var))

    if first is not None:
        take(rule.body[first])
    while pending:
        filters = [lit for lit in pending if ready(lit)]
        if filters:
            take(filters[0])
            continue
        atoms = [
            lit
            for lit in pending
            if isinstance(lit, ir.Atom) and not lit.negated and lit.relation not in functions
        ]
        if not atoms:
            raise ValueError(f"rule at {rule.span} cannot be ordered (unsafe variables)")
        best = max(
            atoms,
            key=lambda a: sum(
                1 for t in a.terms if isinstance(t, ir.Const) or (isinstance(t, ir.Var) and t.name in bound)
            ),
        )
        take(best)
    return order


def _key_code(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ",)"


def generate(
    rule: ir.Rule,
    name: str,
    functions: dict[str, ir.FunctionDecl],
    delta_position: int | None = None,
    route: str = "plain",
) -> tuple[str, tuple[str, ...]]:
    """Python source of the rule's function and, for aggregate rules, the binding variables."""
    copy = _copy_source(rule, delta_position, functions)
    if copy is not None:
        source, conditions = copy
        if not conditions:
            return f"def {name}(D, I, DL, IL, OUT):\n    OUT.update({source})\n", ()
        return f"def {name}(D, I, DL, IL, OUT):\n    if {' and '.join(conditions)}:\n        OUT.update({source})\n", ()
    em = _Emitter()
    bound: set[str] = set()
    for lit in _order(rule, functions, delta_position):
        is_delta = delta_position is not None and lit is rule.body[delta_position]
        _literal(em, lit, bound, functions, is_delta)
    binding_vars: tuple[str, ...] = ()
    head = rule.head
    if head.aggregates:
        binding_vars = tuple(sorted(bound))
        _accumulate(em, head, binding_vars, bound)
    else:
        values = "(" + "".join(expr_code(t) + ", " for t in head.terms if not isinstance(t, ir.Aggregate)) + ")"
        if all(isinstance(t, ir.Var) for t in head.terms):
            values = em.rows.get(tuple(t.name for t in head.terms), values)  # type: ignore[union-attr]
        if rule.kind is ir.RuleKind.ASYNC:
            assert head.dest is not None
            dest = _dest_code(head.dest, bound)
            em.line(f"OUT.append(({dest}, {values}))")
        else:
            em.line(f"OUT.add({values})")
    body = "\n".join(_without_unused(em.lines)) if em.lines else "    pass"
    prelude = "\n".join(em.prelude)
    src = f"def {name}(D, I, DL, IL, OUT):\n{prelude}\n{body}\n" if prelude else f"def {name}(D, I, DL, IL, OUT):\n{body}\n"
    return src, binding_vars


def _copy_source(
    rule: ir.Rule, delta_position: int | None, functions: dict[str, ir.FunctionDecl]
) -> tuple[str, list[str]] | None:
    """The relation a rule copies whole, as the code of its set, and the conditions under which
    it does: ``h(a, b) :- r(a, b).``, or with atoms of no terms besides (``w(a) :+ w(a), !ready().``
    carries ``w`` whole while ``ready()`` is absent: one set operation, not a tuple per fact)."""
    if rule.kind is ir.RuleKind.ASYNC or rule.head.aggregates:
        return None
    conditions = [lit for lit in rule.body if isinstance(lit, ir.Atom) and not lit.terms and lit.relation not in functions]
    atoms = [lit for lit in rule.body if lit not in conditions]
    if len(atoms) != 1 or (delta_position is not None and rule.body[delta_position] is not atoms[0]):
        return None
    atom = atoms[0]
    if not isinstance(atom, ir.Atom) or atom.negated or not atom.terms:
        return None
    names = [t.name for t in atom.terms if isinstance(t, ir.Var)]
    if len(set(names)) != len(atom.terms) or [t.name if isinstance(t, ir.Var) else None for t in rule.head.terms] != names:
        return None
    source = "DL" if delta_position is not None else "D"
    tests = [f"() {'not in' if cond.negated else 'in'} D.get({cond.relation!r}, _EMPTY)" for cond in conditions]
    return f"{source}.get({atom.relation!r}, _EMPTY)", tests


_ASSIGNED = re.compile(r"^(\s*)((?:v_\w+, )*v_\w+,?) = (_t\d+)(\[\d+\])?$")


def _without_unused(lines: list[str]) -> list[str]:
    """The lines without assignments of variables nothing reads (an enumerated tuple's columns
    that only the head's reuse of the whole tuple needed)."""
    text = "\n".join(lines)
    used = {name: len(re.findall(rf"\b{name}\b", text)) for name in set(re.findall(r"\bv_\w+", text))}
    out: list[str] = []
    for line in lines:
        match = _ASSIGNED.match(line)
        if match is None:
            out.append(line)
            continue
        indent, targets, row, index = match.groups()
        names = [n for n in targets.replace(",", " ").split()]
        if index is not None:  # v_x = _t1[3]
            if used[names[0]] > 1:
                out.append(line)
            continue
        live = [(i, n) for i, n in enumerate(names) if used[n] > 1]
        if len(live) == len(names):
            out.append(line)
        else:
            out.extend(f"{indent}{n} = {row}[{i}]" for i, n in live)
    return out


def _accumulate(em: _Emitter, head: ir.Head, binding_vars: tuple[str, ...], bound: set[str]) -> None:
    """Add this binding to its group in ``OUT`` (see :mod:`hydrodeploy.runtime.aggregate`)."""
    group = "".join(expr_code(t) + ", " for t in head.terms if not isinstance(t, ir.Aggregate))
    if head.dest is not None:
        em.line(f"_k = ({group}{_dest_code(head.dest, bound)},)")
    else:
        em.line(f"_k = ({group})")
    aggregates = [t for t in head.terms if isinstance(t, ir.Aggregate)]
    if any(a.func == "index" for a in aggregates):
        em.line("OUT[_k] = None")
        return
    binding = "(" + "".join(_v(b) + ", " for b in binding_vars) + ")"
    items = [binding if collects_bindings(agg) else _v(agg.arg.name) for agg in aggregates]  # type: ignore[union-attr]
    em.line("_a = OUT.get(_k)")
    em.open("if _a is None:")
    if len(aggregates) == 1:  # the group's one collection itself
        em.line("_a = OUT[_k] = set()")
        em.depth -= 1
        em.line(f"_a.add({items[0]})")
        return
    em.line("_a = OUT[_k] = (" + "set(), " * len(aggregates) + ")")
    em.depth -= 1
    for i, item in enumerate(items):
        em.line(f"_a[{i}].add({item})")


def dest_expr(dest: ir.Dest, bound: set[str]) -> str:
    return _dest_code(dest, bound)


def _dest_code(dest: ir.Dest, bound: set[str]) -> str:
    if dest.keys is None:
        return _v(dest.target)
    keys = "(" + "".join(expr_code(k) + ", " for k in dest.keys) + ")"
    if dest.target in bound:
        return f"_route_partition({_v(dest.target)}, {keys})"
    return f"_route_component({dest.target!r}, {keys})"


def _literal(
    em: _Emitter, lit: ir.Literal, bound: set[str], functions: dict[str, ir.FunctionDecl], is_delta: bool
) -> None:
    if isinstance(lit, ir.Compare):
        em.open(f"if {expr_code(lit.left)} {lit.op} {expr_code(lit.right)}:")
        return
    if isinstance(lit, ir.Assign):
        if lit.var.name in bound:
            em.open(f"if {_v(lit.var.name)} == {expr_code(lit.expr)}:")
        else:
            em.line(f"{_v(lit.var.name)} = {expr_code(lit.expr)}")
            bound.add(lit.var.name)
        return
    if lit.relation in functions:
        _function(em, lit, bound, functions[lit.relation])
        return
    if lit.negated:
        _negation(em, lit, bound)
        return
    _positive(em, lit, bound, is_delta)


def _function(em: _Emitter, lit: ir.Atom, bound: set[str], decl: ir.FunctionDecl) -> None:
    n_in = len(decl.inputs)
    args = ", ".join(expr_code(t) for t in lit.terms[:n_in])  # type: ignore[arg-type]
    call = f"_f_{decl.name}({args})"
    outs = lit.terms[n_in:]
    if not outs:
        em.open(f"if {call}:")
        return
    result = em.fresh("r")
    em.line(f"{result} = {call}")
    parts = [result] if len(outs) == 1 else [f"{result}[{i}]" for i in range(len(outs))]
    checks: list[str] = []
    for term, part in zip(outs, parts, strict=True):
        if isinstance(term, ir.Var) and term.name not in bound:
            em.line(f"{_v(term.name)} = {part}")
            bound.add(term.name)
        elif isinstance(term, ir.Var):
            checks.append(f"{_v(term.name)} == {part}")
        elif isinstance(term, ir.Const):
            checks.append(f"{term.value!r} == {part}")
    if checks:
        em.open(f"if {' and '.join(checks)}:")


def _negation(em: _Emitter, lit: ir.Atom, bound: set[str]) -> None:
    rel = repr(lit.relation)
    if all(not isinstance(t, ir.Wildcard) for t in lit.terms):
        values = "(" + "".join(expr_code(t) + ", " for t in lit.terms) + ")"  # type: ignore[arg-type]
        em.open(f"if {values} not in {em.relation('D', rel)}:")
        return
    cols = [i for i, t in enumerate(lit.terms) if not isinstance(t, ir.Wildcard)]
    if not cols:
        em.open(f"if not D.get({rel}):")
        return
    index = em.fresh("n")
    em.prelude.append(f"    {index} = I({rel}, {tuple(cols)!r})")
    key = _key_code([expr_code(lit.terms[c]) for c in cols])  # type: ignore[arg-type]
    em.open(f"if {key} not in {index}:")


def _positive(em: _Emitter, lit: ir.Atom, bound: set[str], is_delta: bool) -> None:
    rel = repr(lit.relation)
    source, indexer = ("DL", "IL") if is_delta else ("D", "I")
    key_cols = [
        i for i, t in enumerate(lit.terms) if isinstance(t, ir.Const) or (isinstance(t, ir.Var) and t.name in bound)
    ]
    row = em.fresh("t")
    new_vars: dict[str, int] = {}
    repeats: list[tuple[int, int]] = []
    for i, t in enumerate(lit.terms):
        if isinstance(t, ir.Var) and t.name not in bound:
            if t.name in new_vars:
                repeats.append((new_vars[t.name], i))
            else:
                new_vars[t.name] = i
    simple_scan = not key_cols and not repeats and all(isinstance(t, ir.Var) for t in lit.terms)
    if all(isinstance(t, ir.Var) for t in lit.terms) and not repeats and lit.terms and len(key_cols) < len(lit.terms):
        em.rows.setdefault(tuple(t.name for t in lit.terms), row)  # type: ignore[union-attr]
    if simple_scan:
        targets = ", ".join(_v(t.name) for t in lit.terms)  # type: ignore[union-attr]
        if len(lit.terms) == 1:
            targets += ","
        if not lit.terms:
            em.open(f"if () in {em.relation(source, rel)}:")
        else:
            em.open(f"for {row} in {source}.get({rel}, _EMPTY):")
            em.line(f"{targets} = {row}")
    elif len(key_cols) == len(lit.terms):
        values = "(" + "".join(expr_code(t) + ", " for t in lit.terms) + ")"  # type: ignore[arg-type]
        em.open(f"if {values} in {em.relation(source, rel)}:")
    elif key_cols:
        lookup = em.fresh("i")
        em.prelude.append(f"    {lookup} = {indexer}({rel}, {tuple(key_cols)!r})")
        key = _key_code([expr_code(lit.terms[c]) for c in key_cols])  # type: ignore[arg-type]
        em.open(f"for {row} in {lookup}.get({key}, _EMPTY):")
    else:
        em.open(f"for {row} in {source}.get({rel}, _EMPTY):")
    if simple_scan or len(key_cols) == len(lit.terms):
        bound.update(new_vars)
        return
    for name, col in new_vars.items():
        em.line(f"{_v(name)} = {row}[{col}]")
    bound.update(new_vars)
    if repeats:
        em.open("if " + " and ".join(f"{row}[{a}] == {row}[{b}]" for a, b in repeats) + ":")


def compile_source(source: str, name: str, namespace: dict[str, Any]) -> RuleFn:
    code = compile(source, f"<rule {name}>", "exec")
    exec(code, namespace)
    fn: RuleFn = namespace[name]
    return fn
