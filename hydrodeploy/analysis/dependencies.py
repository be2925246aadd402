"""Functional and co-partition dependencies (TR §4.2, Appendix B.2.1).

A relation ``r`` has the functional dependency (FD) ``g: A -> B`` when every fact's ``B`` is ``g``
of its ``A``. FDs arise in three ways:

- **function annotation** — ``.function hash(value) -> (digest)`` gives ``hash: value -> digest``;
- **variable sharing** — if every rule deriving ``r`` binds attributes ``A`` and ``B`` to the same
  variable, then ``A -> B`` and ``B -> A`` (``g`` the identity);
- **inheritance** — the head of a rule inherits the FDs that hold among its variables given the
  FDs of the body's relations: substitute variables for attributes (and constants), close
  transitively, and keep what can be expressed over the head's attributes.

A relation derived by several rules keeps the FDs all of them give (intersection); since rules may
be recursive, this is a greatest fixpoint, starting from every candidate FD. Channels take the FDs
every rule sending them gives; ``.input`` relations have none.

Within one rule, the same closure relates attributes of different relations: a *co-partition
dependency* (CD) ``r1.A ↪ r2.B`` via ``g`` holds when ``r2.B = g(r1.A)`` in every fact the rule
combines. :func:`rule_equalities` exposes that closure for the distribution-policy search.

Terms of the closure are variables, constants and applications ``f(t1, ...)`` of declared
functions (``f#j`` for a function's ``j``-th output); congruence is computed naively (rules are
small).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hydrodeploy.analysis.context import arity_of
from hydrodeploy.analysis.memo import per_program
from hydrodeploy.language import ir
from hydrodeploy.language.binding import functions_of


@dataclass(frozen=True, order=True)
class FD:
    """``codomain = fn(domain...)``; ``fn`` None is the identity (one-attribute domain)."""

    domain: tuple[int, ...]
    codomain: int
    fn: str | None = None

    def describe(self, relation: str) -> str:
        dom = ", ".join(f"{relation}.{i}" for i in self.domain)
        if self.fn is None:
            return f"{dom} -> {relation}.{self.codomain}"
        return f"{dom} -> {relation}.{self.codomain} ({self.fn})"


@dataclass(frozen=True)
class CD:
    """Co-partition dependency: in every fact combination of some rule, ``right.B = fn(left.A)``."""

    left: str
    left_attr: int
    right: str
    right_attr: int
    fn: str | None


Term = tuple[object, ...]  # ("var", name) | ("const", value) | ("app", fn, args...)


class Closure:
    """Congruence closure over the terms of one rule body."""

    def __init__(self) -> None:
        self.parent: dict[Term, Term] = {}
        self.apps: list[Term] = []
        self.dirty = False

    def add(self, term: Term) -> Term:
        if term not in self.parent:
            self.parent[term] = term
            if term[0] == "app":
                for arg in term[2:]:
                    assert isinstance(arg, tuple)
                    self.add(arg)
                self.apps.append(term)
                self.dirty = True
        return term

    def find(self, term: Term) -> Term:
        self.add(term)
        root = term
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[term] != root:
            self.parent[term], term = root, self.parent[term]
        return root

    def union(self, a: Term, b: Term) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # keep variables as representatives where possible (readable rule keys)
            if ra[0] == "var" and rb[0] != "var":
                ra, rb = rb, ra
            self.parent[ra] = rb
            self.dirty = True

    def close(self) -> None:
        if not self.dirty:
            return
        self.dirty = False
        changed = True
        while changed:
            changed = False
            sig: dict[tuple[object, ...], Term] = {}
            for app in self.apps:
                key = (app[1], *(self.find(a) for a in app[2:] if isinstance(a, tuple)))
                other = sig.get(key)
                if other is None:
                    sig[key] = app
                elif self.find(other) != self.find(app):
                    self.union(other, app)
                    changed = True
        self.dirty = False

    def same(self, a: Term, b: Term) -> bool:
        self.add(a)
        self.add(b)
        self.close()
        return self.find(a) == self.find(b)


def term_of(t: ir.BodyTerm | ir.HeadTerm) -> Term | None:
    """A closure term for an atom or head term (None: a wildcard, arithmetic or aggregate)."""
    if isinstance(t, ir.Var):
        return ("var", t.name)
    if isinstance(t, ir.Const):
        return ("const", t.value)
    return None


def app(fn: str, args: Iterable[Term]) -> Term:
    return ("app", fn, *args)


def rule_equalities(
    rule: ir.Rule,
    functions: Mapping[str, ir.FunctionDecl],
    fds: Mapping[str, frozenset[FD]] | None = None,
) -> Closure:
    """The equalities a rule's body forces among terms: shared variables, ``x = y``, function
    atoms (outputs are applications of the function to the inputs) and, with ``fds``, the FDs of
    the relations it reads."""
    closure = Closure()
    for lit in rule.body:
        if isinstance(lit, ir.Assign) and isinstance(lit.expr, ir.Var | ir.Const):
            rhs = term_of(lit.expr)
            if rhs is not None:
                closure.union(("var", lit.var.name), rhs)
        elif isinstance(lit, ir.Compare) and lit.op == "==":
            left, right = lit.left, lit.right
            if isinstance(left, ir.Var | ir.Const) and isinstance(right, ir.Var | ir.Const):
                lt, rt = term_of(left), term_of(right)
                if lt is not None and rt is not None:
                    closure.union(lt, rt)
        elif isinstance(lit, ir.Atom) and not lit.negated:
            fn = functions.get(lit.relation)
            if fn is not None:
                ins = [term_of(t) for t in lit.terms[: len(fn.inputs)]]
                outs = lit.terms[len(fn.inputs) :]
                if all(i is not None for i in ins):
                    for j, out in enumerate(outs):
                        ot = term_of(out)
                        if ot is not None:
                            closure.union(ot, app(fn_name(fn, j), [i for i in ins if i is not None]))
            elif fds is not None:
                for fd in fds.get(lit.relation, ()):
                    _instantiate(closure, lit.terms, fd)
    closure.close()
    return closure


def fn_name(fn: ir.FunctionDecl, output: int) -> str:
    return fn.name if len(fn.outputs) == 1 else f"{fn.name}#{output}"


def _instantiate(closure: Closure, terms: tuple[ir.BodyTerm, ...] | tuple[ir.HeadTerm, ...], fd: FD) -> None:
    if max((*fd.domain, fd.codomain)) >= len(terms):
        return
    dom = [term_of(terms[i]) for i in fd.domain]
    cod = term_of(terms[fd.codomain])
    if cod is None or any(d is None for d in dom):
        return
    doms = [d for d in dom if d is not None]
    closure.union(cod, doms[0] if fd.fn is None else app(fd.fn, doms))


def candidate_fds(program: ir.Program, arity: int) -> frozenset[FD]:
    """Every FD the inference considers for a relation of ``arity`` attributes: identities between
    two attributes, and each declared function from some attributes to another."""
    out: set[FD] = set()
    for a in range(arity):
        for b in range(arity):
            if a != b:
                out.add(FD((a,), b))
    for fn in program.functions:
        k = len(fn.inputs)
        if k == 0 or k >= arity:
            continue
        for j in range(len(fn.outputs)):
            name = fn_name(fn, j)
            for dom in _tuples(arity, k):
                for b in range(arity):
                    if b not in dom:
                        out.add(FD(dom, b, name))
    return frozenset(out)


def _tuples(n: int, k: int) -> list[tuple[int, ...]]:
    if k == 0:
        return [()]
    return [(i, *rest) for i in range(n) for rest in _tuples(n, k - 1) if i not in rest]


def _head_fds(
    program: ir.Program, rule: ir.Rule, fds: Mapping[str, frozenset[FD]], candidates: frozenset[FD]
) -> frozenset[FD]:
    functions = functions_of(program)
    closure = rule_equalities(rule, functions, fds)
    terms = [term_of(t) for t in rule.head.terms]
    out: set[FD] = set()
    for fd in candidates:
        cod = terms[fd.codomain]
        dom = [terms[i] for i in fd.domain]
        if cod is None or any(d is None for d in dom):
            continue
        doms = [d for d in dom if d is not None]
        target = doms[0] if fd.fn is None else app(fd.fn, doms)
        if closure.same(cod, target):
            out.add(fd)
    return frozenset(out)


@per_program
def functional_dependencies(program: ir.Program) -> dict[str, frozenset[FD]]:
    """The FDs of every relation of the program (greatest fixpoint over all rules), function
    relations included."""
    functions = functions_of(program)
    defs: dict[str, list[ir.Rule]] = {}
    for block in program.blocks:
        for rule in block.rules:
            defs.setdefault(rule.head.relation, []).append(rule)
        for fact in block.facts:
            terms = tuple(t for t in fact.atom.terms if isinstance(t, ir.Var | ir.Const))
            fact_rule = ir.Rule(ir.Head(fact.atom.relation, terms), ir.RuleKind.SYNC, ())
            defs.setdefault(fact.atom.relation, []).append(fact_rule)
    fds: dict[str, frozenset[FD]] = {}
    for fn in functions.values():
        k = len(fn.inputs)
        fds[fn.name] = frozenset(FD(tuple(range(k)), k + j, fn_name(fn, j)) for j in range(len(fn.outputs)))
    candidates: dict[str, frozenset[FD]] = {}
    for rel in defs:
        if rel in functions:
            continue
        arity = arity_of(program, rel) or 0
        candidates[rel] = candidate_fds(program, arity)
        fds[rel] = candidates[rel]
    for decl in program.inputs:
        fds[decl.relation] = frozenset()
    changed = True
    while changed:
        changed = False
        for rel, rules in defs.items():
            if rel in functions or rel in program.input_relations:
                continue
            new = candidates[rel]
            for rule in rules:
                new = new & _head_fds(program, rule, fds, new)
                if not new:
                    break
            if new != fds[rel]:
                fds[rel] = new
                changed = True
    return fds


def co_partition_dependencies(program: ir.Program, rule: ir.Rule) -> tuple[CD, ...]:
    """CDs between the attributes of the relations one rule reads (and its head): pairs whose
    values are equal, or related by a one-input function, in every fact combination."""
    functions = functions_of(program)
    closure = rule_equalities(rule, functions, functional_dependencies(program))
    atoms = [a for a in rule.positive_atoms() if a.relation not in functions]
    places: list[tuple[str, int, Term]] = []
    for atom in atoms:
        for i, t in enumerate(atom.terms):
            term = term_of(t)
            if term is not None and term[0] == "var":
                places.append((atom.relation, i, term))
    unary = [(fn_name(f, j), f) for f in functions.values() if len(f.inputs) == 1 for j in range(len(f.outputs))]
    out: list[CD] = []
    for lrel, li, lt in places:
        for rrel, ri, rt in places:
            if (lrel, li) == (rrel, ri):
                continue
            if closure.same(lt, rt):
                out.append(CD(lrel, li, rrel, ri, None))
                continue
            for name, _ in unary:
                if closure.same(rt, app(name, [lt])):
                    out.append(CD(lrel, li, rrel, ri, name))
    return tuple(dict.fromkeys(out))
