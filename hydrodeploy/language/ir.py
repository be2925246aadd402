"""Frozen intermediate representation of a `.ded` program.

Every node carries the source span it came from. Spans and comments are excluded from equality,
so ``parse(print(p)) == p`` compares meaning, not layout. Nodes are never mutated: analyses build
separate results and rewrites build new programs (use :func:`dataclasses.replace`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from hydrodeploy.errors import Span

Value = int | float | str


def _no_span() -> Span | None:
    return None


# --------------------------------------------------------------------------------------------
# Terms
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Var:
    name: str
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Const:
    value: Value
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Wildcard:
    """``_`` in a body atom: matches anything, binds nothing."""

    span: Span | None = field(default=None, compare=False, repr=False)


ARITH_OPS = ("+", "-", "*", "/", "%")


@dataclass(frozen=True)
class BinOp:
    """Arithmetic over terms. ``/`` is floor division when both operands are integers."""

    op: str
    left: Expr
    right: Expr
    span: Span | None = field(default=None, compare=False, repr=False)


AGGREGATES = ("count", "sum", "min", "max", "choose", "index")


@dataclass(frozen=True)
class Aggregate:
    """An aggregate in a rule head. ``arg`` is None for ``count(*)`` and ``index()``."""

    func: str
    arg: Var | None
    span: Span | None = field(default=None, compare=False, repr=False)


Expr = Var | Const | BinOp
BodyTerm = Var | Const | Wildcard
HeadTerm = Var | Const | BinOp | Aggregate


# --------------------------------------------------------------------------------------------
# Literals and rules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Atom:
    """``rel(t1, ..., tn)`` in a body (possibly negated) or as a fact."""

    relation: str
    terms: tuple[BodyTerm, ...]
    negated: bool = False
    span: Span | None = field(default=None, compare=False, repr=False)

    @property
    def arity(self) -> int:
        return len(self.terms)


COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")


@dataclass(frozen=True)
class Compare:
    """``left op right``; a filter over bound variables."""

    op: str
    left: Expr
    right: Expr
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Assign:
    """``var = expr``: binds ``var`` when it is unbound, otherwise tests equality."""

    var: Var
    expr: Expr
    span: Span | None = field(default=None, compare=False, repr=False)


Literal = Atom | Compare | Assign


class RuleKind(Enum):
    SYNC = ":-"  # same node, same tick
    NEXT = ":+"  # same node, next tick
    ASYNC = ":~"  # sent to the head's destination, arrives at a later tick


@dataclass(frozen=True)
class Dest:
    """Where an asynchronous head is sent.

    ``@x`` — ``target`` is a body variable bound to an address, ``keys`` is None.
    ``@c[k1, ...]`` — ``target`` is a component name (the instance chosen by the distribution
    policy on the keys) or a variable bound to the address of a partitioned logical node (its
    partition chosen by the keys).
    """

    target: str
    keys: tuple[Expr, ...] | None = None
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Head:
    relation: str
    terms: tuple[HeadTerm, ...]
    dest: Dest | None = None
    span: Span | None = field(default=None, compare=False, repr=False)

    @property
    def arity(self) -> int:
        return len(self.terms)

    @property
    def aggregates(self) -> tuple[Aggregate, ...]:
        return tuple(t for t in self.terms if isinstance(t, Aggregate))


@dataclass(frozen=True)
class Rule:
    head: Head
    kind: RuleKind
    body: tuple[Literal, ...]
    span: Span | None = field(default=None, compare=False, repr=False)
    comment: str | None = field(default=None, compare=False, repr=False)

    def atoms(self) -> tuple[Atom, ...]:
        return tuple(lit for lit in self.body if isinstance(lit, Atom))

    def positive_atoms(self) -> tuple[Atom, ...]:
        return tuple(a for a in self.atoms() if not a.negated)

    def negated_atoms(self) -> tuple[Atom, ...]:
        return tuple(a for a in self.atoms() if a.negated)


@dataclass(frozen=True)
class Fact:
    """A constant fact of a component, true at every tick: ``quorum(2).``"""

    atom: Atom
    span: Span | None = field(default=None, compare=False, repr=False)
    comment: str | None = field(default=None, compare=False, repr=False)


# --------------------------------------------------------------------------------------------
# Declarations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentDecl:
    """``.component name [count]``; count None means one instance."""

    name: str
    count: int | None = None
    span: Span | None = field(default=None, compare=False, repr=False)
    comment: str | None = field(default=None, compare=False, repr=False)

    @property
    def instances(self) -> int:
        return 1 if self.count is None else self.count


@dataclass(frozen=True)
class InputDecl:
    """``.input rel(a, b) @ component``: a channel from external clients to every instance of
    the component."""

    relation: str
    attrs: tuple[str, ...]
    component: str
    span: Span | None = field(default=None, compare=False, repr=False)
    comment: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class OutputDecl:
    """``.output rel[(a, b)]``: a channel back to external clients."""

    relation: str
    attrs: tuple[str, ...] | None = None
    span: Span | None = field(default=None, compare=False, repr=False)
    comment: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PersistDecl:
    """``.persist rel``: every fact of rel in a tick is also a fact of the next tick."""

    relation: str
    span: Span | None = field(default=None, compare=False, repr=False)
    comment: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LogDecl:
    """``.log rel``: facts derived into rel (by ``:+`` rules only) are appended to the node's
    durable log at the end of the tick, flushed, and visible in the next tick."""

    relation: str
    span: Span | None = field(default=None, compare=False, repr=False)
    comment: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class TimerDecl:
    """``.timer name 100ms @ component``: the nullary fact ``name()`` once per period."""

    name: str
    period_ms: int
    component: str
    span: Span | None = field(default=None, compare=False, repr=False)
    comment: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class FunctionDecl:
    """``.function name(in...) -> (out...) = "module:attr"``: an infinite relation of arity
    len(inputs) + len(outputs), usable only with its inputs bound; implies the functional
    dependency inputs -> outputs. With no outputs it is a predicate."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    target: str
    span: Span | None = field(default=None, compare=False, repr=False)
    comment: str | None = field(default=None, compare=False, repr=False)

    @property
    def arity(self) -> int:
        return len(self.inputs) + len(self.outputs)


@dataclass(frozen=True)
class Block:
    """The rules and facts of one component."""

    component: str
    rules: tuple[Rule, ...]
    facts: tuple[Fact, ...] = ()
    span: Span | None = field(default=None, compare=False, repr=False)
    comment: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Program:
    components: tuple[ComponentDecl, ...] = ()
    inputs: tuple[InputDecl, ...] = ()
    outputs: tuple[OutputDecl, ...] = ()
    persists: tuple[PersistDecl, ...] = ()
    logs: tuple[LogDecl, ...] = ()
    timers: tuple[TimerDecl, ...] = ()
    functions: tuple[FunctionDecl, ...] = ()
    blocks: tuple[Block, ...] = ()
    path: str = field(default="<program>", compare=False, repr=False)
    source: str | None = field(default=None, compare=False, repr=False)
    comment: str | None = field(default=None, compare=False, repr=False)

    # ---- lookups used everywhere; cheap enough to recompute ------------------------------

    def component(self, name: str) -> ComponentDecl | None:
        return next((c for c in self.components if c.name == name), None)

    def block(self, name: str) -> Block | None:
        return next((b for b in self.blocks if b.component == name), None)

    def function(self, name: str) -> FunctionDecl | None:
        return next((f for f in self.functions if f.name == name), None)

    def rules_of(self, component: str) -> tuple[Rule, ...]:
        block = self.block(component)
        return () if block is None else block.rules

    @property
    def persisted(self) -> frozenset[str]:
        return frozenset(p.relation for p in self.persists)

    @property
    def logged(self) -> frozenset[str]:
        return frozenset(lg.relation for lg in self.logs)

    @property
    def input_relations(self) -> frozenset[str]:
        return frozenset(i.relation for i in self.inputs)

    @property
    def output_relations(self) -> frozenset[str]:
        return frozenset(o.relation for o in self.outputs)


def builtin_relations(program: Program) -> dict[str, int]:
    """Relations every component can read, with their arities: ``<component>(addr)``,
    ``<component>_count(n)`` for each declared component, ``self(addr)``, ``self_index(i)``,
    ``self_partition(j)``."""
    out: dict[str, int] = {"self": 1, "self_index": 1, "self_partition": 1}
    for c in program.components:
        out[c.name] = 1
        out[f"{c.name}_count"] = 1
    return out


def single_fact_builtins(program: Program) -> frozenset[str]:
    """Built-in relations that hold exactly one fact on every node: ``self``, ``self_index``,
    ``self_partition`` and every ``<component>_count``."""
    return frozenset(("self", "self_index", "self_partition", *(f"{c.name}_count" for c in program.components)))


def expr_vars(expr: Expr | Aggregate | Wildcard) -> frozenset[str]:
    """Variables an expression reads."""
    if isinstance(expr, Var):
        return frozenset((expr.name,))
    if isinstance(expr, BinOp):
        return expr_vars(expr.left) | expr_vars(expr.right)
    if isinstance(expr, Aggregate):
        return frozenset(() if expr.arg is None else (expr.arg.name,))
    return frozenset()
