"""Printing and parsing are inverse: ``parse(print_program(p)) == p`` for random programs built
from every construct of the language, printing is idempotent, and comments survive."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydrodeploy.language import ir, parse, print_program

VALID = Path(__file__).parent / "corpus" / "valid"

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
names = st.builds(
    str.__add__, st.sampled_from(_FIRST), st.text(_FIRST + "0123456789", max_size=6)
).filter(lambda n: n != "_")
# A few names that look like keywords, aggregates or durations, which must stay plain names.
tricky_names = st.sampled_from(
    ["count", "index", "sum", "component", "input", "log", "ms", "s", "e1", "_x", "self", "x_count"]
)
name = st.one_of(names, tricky_names)

ints = st.integers(min_value=-(10**20), max_value=10**20)
floats = st.floats(allow_nan=False, allow_infinity=False)
# Any text without lone surrogates (not UTF-8 encodable): quotes, backslashes, control
# characters, '#' and '//', line separators such as U+2028, emoji.
strings = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
values: st.SearchStrategy[ir.Value] = st.one_of(ints, floats, strings)

consts = st.builds(ir.Const, values)
variables = st.builds(ir.Var, name)


def _binop(children: st.SearchStrategy[ir.Expr]) -> st.SearchStrategy[ir.Expr]:
    return st.builds(ir.BinOp, st.sampled_from(ir.ARITH_OPS), children, children)


exprs: st.SearchStrategy[ir.Expr] = st.recursive(st.one_of(variables, consts), _binop, max_leaves=6)
body_terms = st.one_of(variables, consts, st.builds(ir.Wildcard))
aggregates = st.one_of(
    st.builds(ir.Aggregate, st.sampled_from(("count", "sum", "min", "max", "choose")), variables),
    st.just(ir.Aggregate("count", None)),
    st.just(ir.Aggregate("index", None)),
)
head_terms = st.one_of(exprs, aggregates)

atoms = st.builds(ir.Atom, name, st.lists(body_terms, max_size=4).map(tuple), st.booleans())
literals: st.SearchStrategy[ir.Literal] = st.one_of(
    atoms,
    st.builds(ir.Compare, st.sampled_from(ir.COMPARISONS), exprs, exprs),
    st.builds(ir.Assign, variables, exprs),
)
bodies = st.lists(literals, min_size=1, max_size=5).map(tuple)

# Comments: one or more non-blank lines without surrounding whitespace.
comment_lines = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=20
).map(str.strip).filter(bool)
comments = st.one_of(st.none(), st.lists(comment_lines, min_size=1, max_size=3).map("\n".join))

destinations = st.builds(
    ir.Dest, name, st.one_of(st.none(), st.lists(exprs, min_size=1, max_size=3).map(tuple))
)


@st.composite
def rules(draw: st.DrawFn) -> ir.Rule:
    kind = draw(st.sampled_from(list(ir.RuleKind)))
    dest = draw(destinations) if kind is ir.RuleKind.ASYNC else None
    terms = tuple(draw(st.lists(head_terms, max_size=4)))
    head = ir.Head(draw(name), terms, dest)
    return ir.Rule(head, kind, draw(bodies), comment=draw(comments))


facts = st.builds(
    ir.Fact,
    st.builds(ir.Atom, name, st.lists(consts, max_size=4).map(tuple)),
    comment=comments,
)

attr_lists = st.lists(name, min_size=1, max_size=4, unique=True).map(tuple)


@st.composite
def functions(draw: st.DrawFn) -> ir.FunctionDecl:
    params = draw(st.lists(name, max_size=5, unique=True))
    split = draw(st.integers(0, len(params)))
    module = draw(st.sampled_from(["protocols.functions", "m", "a_b.c"]))
    target = f"{module}:{draw(strings)}"
    return ir.FunctionDecl(
        draw(name), tuple(params[:split]), tuple(params[split:]), target, comment=draw(comments)
    )


@st.composite
def programs(draw: st.DrawFn) -> ir.Program:
    component_names = draw(st.lists(name, min_size=1, max_size=3, unique=True))
    components = tuple(
        ir.ComponentDecl(c, draw(st.one_of(st.none(), st.integers(1, 64))), comment=draw(comments))
        for c in component_names
    )
    component = st.sampled_from(component_names)
    blocks = tuple(
        ir.Block(
            draw(component),
            tuple(draw(st.lists(rules(), max_size=4))),
            tuple(draw(st.lists(facts, max_size=2))),
            comment=draw(comments),
        )
        for _ in range(draw(st.integers(0, 3)))
    )
    return ir.Program(
        components=components,
        inputs=tuple(
            draw(st.lists(st.builds(ir.InputDecl, name, attr_lists, component, comment=comments), max_size=2))
        ),
        outputs=tuple(
            draw(
                st.lists(
                    st.builds(ir.OutputDecl, name, st.one_of(st.none(), attr_lists), comment=comments),
                    max_size=2,
                )
            )
        ),
        persists=tuple(draw(st.lists(st.builds(ir.PersistDecl, name, comment=comments), max_size=2))),
        logs=tuple(draw(st.lists(st.builds(ir.LogDecl, name, comment=comments), max_size=2))),
        timers=tuple(
            draw(
                st.lists(
                    st.builds(
                        ir.TimerDecl,
                        name,
                        st.one_of(st.integers(1, 10**6), st.integers(1, 1000).map(lambda s: s * 1000)),
                        component,
                        comment=comments,
                    ),
                    max_size=2,
                )
            )
        ),
        functions=tuple(draw(st.lists(functions(), max_size=2))),
        blocks=blocks,
        comment=draw(comments),
    )


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def all_comments(program: ir.Program) -> list[str | None]:
    """Every comment of a program, in a fixed traversal order."""
    out: list[str | None] = [program.comment]
    for group in (
        program.components,
        program.inputs,
        program.outputs,
        program.persists,
        program.logs,
        program.timers,
        program.functions,
    ):
        out.extend(d.comment for d in group)
    for block in program.blocks:
        out.append(block.comment)
        out.extend(f.comment for f in block.facts)
        out.extend(r.comment for r in block.rules)
    return out


def typed(value: object) -> object:
    """A structure that tells 1 from 1.0 and -0.0 from 0.0 (== does not)."""
    if isinstance(value, ir.Const):
        return (type(value.value).__name__, repr(value.value))
    if isinstance(value, tuple):
        return tuple(typed(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        fields = value.__dataclass_fields__
        return (type(value).__name__, *(typed(getattr(value, f)) for f in fields if fields[f].compare))
    return value


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(programs())
def test_parse_inverts_print(program: ir.Program) -> None:
    text = print_program(program)
    parsed = parse(text, "generated.ded")
    assert parsed == program, text
    assert typed(parsed) == typed(program), text
    assert all_comments(parsed) == all_comments(program), text
    # Printing is idempotent: the printed text is a fixpoint of parse-then-print.
    assert print_program(parsed) == text


@SETTINGS
@given(exprs)
def test_expressions_keep_their_shape(expr: ir.Expr) -> None:
    # Precedence, associativity and negative constants survive printing inside a head and in
    # an assignment.
    rule = ir.Rule(
        ir.Head("h", (expr,)), ir.RuleKind.SYNC, (ir.Atom("r", ()), ir.Assign(ir.Var("z"), expr))
    )
    program = ir.Program(components=(ir.ComponentDecl("c"),), blocks=(ir.Block("c", (rule,)),))
    parsed = parse(print_program(program))
    assert typed(parsed) == typed(program), print_program(program)


@pytest.mark.parametrize("path", sorted(VALID.glob("*.ded")), ids=lambda p: p.name)
def test_valid_corpus_round_trips(path: Path) -> None:
    source = path.read_text("utf-8")
    program = parse(source, path.name)
    text = print_program(program)
    reparsed = parse(text, path.name)
    assert reparsed == program
    assert typed(reparsed) == typed(program)
    assert all_comments(reparsed) == all_comments(program)
    assert print_program(reparsed) == text


def test_printed_corpus_keeps_its_comments() -> None:
    program = parse((VALID / "features.ded").read_text("utf-8"), "features.ded")
    assert program.comment is not None and program.comment.startswith("features.ded")
    front = program.block("front")
    assert front is not None
    assert front.facts[0].comment == "constant facts"
    text = print_program(program)
    assert "# Route each write to the shard chosen by its key." in text
    assert "# constant facts" in text
