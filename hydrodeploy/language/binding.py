"""Which variables a rule body binds, and an order in which its literals can be evaluated.

Order in a body does not matter: ``h(x) :- y = x + 1, r(x), z > y, z = y * 2.`` is safe. A
variable is *bound* by

- a positive atom of a relation that is not a function (every variable in it);
- a positive function atom whose input terms are all bound (its output variables);
- an assignment ``v = expr`` whose expression's variables are all bound (``v``).

Binding is computed to a fixpoint. Negated atoms, comparisons, and assignments whose variable is
already bound only *test* bound variables. The static checks use this to report unsafe variables;
the runtime uses :func:`analyze_body` to order a body's literals so each literal's inputs are bound
when it is evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hydrodeploy.language import ir


@dataclass(frozen=True)
class BodyBinding:
    """The result of :func:`analyze_body`.

    ``bound``: every variable the body binds.
    ``order``: the literals that can be evaluated, in an order where each literal's inputs are bound
    when it is reached: positive relation atoms first, in body order, then repeatedly the first
    literal (in body order) whose inputs are bound, preferring filters (literals that bind nothing
    new) so they prune as early as possible.
    ``stuck``: the literals that can never be evaluated because some input is never bound (empty
    for a safe body), in body order.
    """

    bound: frozenset[str]
    order: tuple[ir.Literal, ...]
    stuck: tuple[ir.Literal, ...]


def term_vars(terms: Iterable[ir.Expr | ir.Wildcard | ir.Aggregate]) -> frozenset[str]:
    """The variables read by some terms."""
    out: frozenset[str] = frozenset()
    for term in terms:
        out |= ir.expr_vars(term)
    return out


def function_inputs(atom: ir.Atom, function: ir.FunctionDecl) -> tuple[ir.BodyTerm, ...]:
    """The terms of a function atom in input positions."""
    return atom.terms[: len(function.inputs)]


def function_outputs(atom: ir.Atom, function: ir.FunctionDecl) -> tuple[ir.BodyTerm, ...]:
    """The terms of a function atom in output positions."""
    return atom.terms[len(function.inputs) :]


def needs(lit: ir.Literal, functions: Mapping[str, ir.FunctionDecl]) -> frozenset[str]:
    """Variables that must be bound before ``lit`` can be evaluated.

    A wildcard in a function input can never be bound; it is reported by the checks, and here it
    makes the literal need the impossible variable ``"_"``.
    """
    if isinstance(lit, ir.Atom):
        function = functions.get(lit.relation)
        if lit.negated:
            return term_vars(lit.terms)
        if function is None:
            return frozenset()
        inputs = function_inputs(lit, function)
        wildcard = frozenset(("_",)) if any(isinstance(t, ir.Wildcard) for t in inputs) else frozenset()
        return term_vars(inputs) | wildcard
    if isinstance(lit, ir.Compare):
        return ir.expr_vars(lit.left) | ir.expr_vars(lit.right)
    return ir.expr_vars(lit.expr)


def binds(lit: ir.Literal, functions: Mapping[str, ir.FunctionDecl]) -> frozenset[str]:
    """Variables ``lit`` binds once its inputs (:func:`needs`) are bound."""
    if isinstance(lit, ir.Atom):
        if lit.negated:
            return frozenset()
        function = functions.get(lit.relation)
        if function is None:
            return term_vars(lit.terms)
        return term_vars(function_outputs(lit, function))
    if isinstance(lit, ir.Assign):
        return frozenset((lit.var.name,))
    return frozenset()


def analyze_body(
    body: Iterable[ir.Literal], functions: Mapping[str, ir.FunctionDecl]
) -> BodyBinding:
    """Bind a body's variables to a fixpoint and order its literals for evaluation."""
    pending = list(body)
    order: list[ir.Literal] = []
    bound: set[str] = set()

    def take(lit: ir.Literal) -> None:
        order.append(lit)
        bound.update(binds(lit, functions))

    for lit in [lit for lit in pending if _is_relation_atom(lit, functions)]:
        take(lit)
    pending = [lit for lit in pending if not _is_relation_atom(lit, functions)]
    while pending:
        ready = [lit for lit in pending if needs(lit, functions) <= bound]
        if not ready:
            break
        # Filters (literals that bind nothing new) first, so they prune as early as possible.
        lit = next((r for r in ready if binds(r, functions) <= bound), ready[0])
        take(lit)
        pending.remove(lit)
    return BodyBinding(frozenset(bound), tuple(order), tuple(pending))


def bound_variables(
    body: Iterable[ir.Literal], functions: Mapping[str, ir.FunctionDecl]
) -> frozenset[str]:
    """Every variable the body binds (see the module docstring)."""
    return analyze_body(body, functions).bound


def functions_of(program: ir.Program) -> dict[str, ir.FunctionDecl]:
    """The program's functions by name (the first declaration of each name)."""
    out: dict[str, ir.FunctionDecl] = {}
    for function in program.functions:
        out.setdefault(function.name, function)
    return out


def _is_relation_atom(lit: ir.Literal, functions: Mapping[str, ir.FunctionDecl]) -> bool:
    return isinstance(lit, ir.Atom) and not lit.negated and lit.relation not in functions
