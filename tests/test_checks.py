"""Static checks in process: programs the checks must accept (binding is order-independent,
names after '@' resolve to variables first, ...) and errors the corpus does not cover."""

from __future__ import annotations

import pytest

from hydrodeploy.errors import LanguageError
from hydrodeploy.language import ir, load_source, parse
from hydrodeploy.language.binding import analyze_body, bound_variables, functions_of

DECLS = """\
.component front
.component back 3
.input req(client, id, key) @ front
.output resp(id)
.function hash(v) -> (h) = "m:hash"
.function pair(v) -> (a, b) = "m:pair"
.function even(n) -> () = "m:even"
"""


def error_of(source: str) -> LanguageError:
    with pytest.raises(LanguageError) as info:
        load_source(DECLS + source, "t.ded")
    return info.value


@pytest.mark.parametrize(
    "block",
    [
        # binding does not depend on the order of the body
        "front { h(z) :- z = y * 2, y = x + 1, even(y), req(_, x, _). }",
        "front { h(b) :- pair(a, x, b), hash(k, a), req(_, _, k). }",
        # an assignment to a bound variable is a test
        "front { h(x) :- req(_, x, k), x = k. }",
        # negated function predicates and negated atoms with wildcards
        "front { h(x) :- req(_, x, _), !even(x), !g(x, _). g(1, 2). }",
        # a name after '@' is a variable when the body binds it, even a component's name
        "front { m@back(x) :~ req(_, x, _), back(back). }",
        # a partitioned destination and a routed one
        "front { m@b[k + 1](x) :~ req(_, x, k), back(b). n@back[k](x) :~ req(_, x, k). }",
        # a relation derived locally in two components
        "front { m@back[x](x) :~ req(_, x, _). s(1). } back { s(2). t(x) :- s(x), m(x). }",
        # aggregates, index() alone, a :~ rule with an aggregate head
        "front { c(k, count(*), min(x)) :- req(_, x, k). n(x, index()) :- req(_, x, _). "
        "resp@cl(count(x)) :~ req(cl, x, _). }",
        # recursion through positive atoms only is stratifiable
        "front { p(x) :- req(_, x, _). p(y) :- p(x), y = x + 1, y < 10. }",
    ],
)
def test_accepted(block: str) -> None:
    load_source(DECLS + block, "t.ded")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("front { h(x) :- req(_, x, _), hash(_, x). }", "input 'v' of function 'hash' cannot be '_'"),
        ("front { h(y) :- y = y + 1, req(_, _, _). }", "unsafe: variable 'y' in assignment 'y = y + 1'"),
        ("front { m@nobody(x) :~ req(_, x, _). }", "unbound destination: variable 'nobody'"),
        ("front { p(x) :- req(_, x, _), !q(x). q(x) :- p(x). }", "unstratifiable: 'p' depends on itself through negation"),
        ("front { h(x) :- req(_, x, _). } back { g(x) :- h(x). }", "'h' is derived only locally in component 'front'"),
        ("front { h(x) :- reqq(_, x, _). }", "unknown relation 'reqq'"),
        ("front { resp@c(x) :~ req(c, x, _). } back { resp(1). }", "'resp' is an .output relation"),
    ],
)
def test_rejected(block: str, message: str) -> None:
    assert message in error_of(block).message


def test_input_and_output_cannot_share_a_name() -> None:
    err = error_of(".output req\nfront { resp@c(x) :~ req(c, x, _). }")
    assert err.message.startswith("'req' cannot be both .input (line 3) and .output")
    assert err.span is not None and (err.span.line, err.span.col) == (8, 9)


def test_first_error_in_a_check_is_the_earliest_in_the_file() -> None:
    err = error_of("front {\n  a(x) :- req(_, x, _).\n  b(x) :- a(x, 1).\n  c(x) :- a(x, 2, 3).\n}")
    assert err.span is not None and err.span.line == 10


# --------------------------------------------------------------------------------------------
# binding
# --------------------------------------------------------------------------------------------


def body_of(rule_text: str) -> tuple[ir.Literal, ...]:
    program = parse(DECLS + "front { " + rule_text + " }")
    return program.blocks[0].rules[0].body


def test_analyze_body_orders_literals_so_inputs_are_bound() -> None:
    program = parse(DECLS)
    functions = functions_of(program)
    body = body_of("h(z) :- z > 3, z = y * 2, even(y), y = x + 1, req(_, x, _), !g(z).")
    binding = analyze_body(body, functions)
    assert binding.bound == {"x", "y", "z"}
    assert binding.stuck == ()
    order = [lit for lit in binding.order]
    assert order[0] == body[4]  # the relation atom first
    assert order.index(body[3]) < order.index(body[2]) < order.index(body[1])  # y, then even(y), then z
    assert order.index(body[1]) < order.index(body[0])  # z is bound before z > 3
    assert order[-1] == body[5]


def test_analyze_body_reports_stuck_literals() -> None:
    functions = functions_of(parse(DECLS))
    body = body_of("h(x) :- req(_, x, _), hash(v, d), !g(w), d > 1.")
    binding = analyze_body(body, functions)
    assert binding.bound == {"x"}
    assert binding.stuck == (body[1], body[2], body[3])
    assert bound_variables(body, functions) == {"x"}
