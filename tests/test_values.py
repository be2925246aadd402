"""Value ordering: the native fast paths of index()/min/max give exactly the order of order_key."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hydrodeploy.language import ir
from hydrodeploy.runtime.aggregate import AggregateHead
from hydrodeploy.runtime.values import (
    max_value,
    min_value,
    natively_ordered,
    order_key,
    sorted_rows,
    tuple_order_key,
)

numbers = st.one_of(st.integers(-5, 5), st.integers(), st.floats(allow_nan=True), st.booleans())
scalars = st.one_of(numbers, st.text(max_size=3), st.none())
# values as a rule can produce them: numbers, strings, None and tuples of those
natives = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6)
# and values Python orders otherwise than order_key (by repr): they must never take the native path
foreign = st.one_of(st.binary(max_size=3), st.frozensets(st.integers(0, 3), max_size=3))
anything = st.recursive(st.one_of(scalars, foreign), lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6)

# rows of one shape: the same type at each position (homogeneous), or anything at any position
homogeneous_rows = st.sampled_from(
    [
        (st.integers(),),
        (st.integers(-3, 3), st.text(max_size=2)),
        (st.text(max_size=2), st.floats(allow_nan=True), st.none()),
        (st.booleans(), st.integers(-1, 1), st.floats(-1, 1)),
        (natives, natives),
    ]
).flatmap(lambda cols: st.lists(st.tuples(*cols), max_size=12))
# native leading columns before values only order_key orders (a request's payload bytes)
native_prefix_rows = st.sampled_from(
    [
        (st.integers(-3, 3), st.binary(max_size=2)),
        (st.text(max_size=1), st.integers(-1, 1), foreign),
        (st.booleans(), st.floats(allow_nan=True), st.binary(max_size=1), st.integers(-1, 1)),
        (st.integers(), st.integers(-1, 1), st.binary(max_size=2)),
    ]
).flatmap(lambda cols: st.lists(st.tuples(*cols), max_size=12))


@st.composite
def mixed_rows(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> list[tuple[Any, ...]]:
    width = draw(st.integers(1, 4))
    return draw(st.lists(st.lists(values, min_size=width, max_size=width).map(tuple), max_size=12))


def same(a: list[Any], b: list[Any]) -> bool:
    """The same objects in the same order (NaN-safe, and 1 vs True vs 1.0 told apart)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def by_key(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(rows, key=tuple_order_key)


@settings(max_examples=400, deadline=None)
@given(st.one_of(homogeneous_rows, native_prefix_rows, mixed_rows(natives), mixed_rows(scalars), mixed_rows(anything)))
def test_sorted_rows_is_the_order_of_order_key(rows: list[tuple[Any, ...]]) -> None:
    assert same(sorted_rows(rows), by_key(rows))


@settings(max_examples=400, deadline=None)
@given(st.one_of(homogeneous_rows, mixed_rows(natives), mixed_rows(scalars)))
def test_native_sort_agrees_with_order_key_whenever_it_does_not_raise(rows: list[tuple[Any, ...]]) -> None:
    assert natively_ordered(rows)
    try:
        native = sorted(rows)
    except TypeError:
        return
    assert same(native, by_key(rows))


@settings(max_examples=600, deadline=None)
@given(natives, natives)
def test_native_comparisons_agree_with_order_key_whenever_they_do_not_raise(x: Any, y: Any) -> None:
    try:
        less = x < y
    except TypeError:
        pass  # different classes, or None against None: order_key alone orders them
    else:
        assert less == (order_key(x) < order_key(y))
    try:
        greater = x > y
    except TypeError:
        pass
    else:
        assert greater == (order_key(x) > order_key(y))


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.sets(numbers, min_size=1), st.sets(scalars, min_size=1), st.sets(anything, min_size=1)))
def test_min_and_max_are_those_of_order_key(values: set[Any]) -> None:
    assert max_value(values) is max(values, key=order_key)
    assert min_value(values) is min(values, key=order_key)


def test_only_numbers_strings_none_and_their_tuples_are_ordered_natively() -> None:
    assert natively_ordered([1, 2.5, True, "a", None, (1, ("b", None))])
    assert not natively_ordered([b"a"])
    assert not natively_ordered([(1, [2])])
    assert not natively_ordered([frozenset()])
    # bytes order natively otherwise than by repr: order_key's order is kept
    assert sorted_rows([(b"\x7f",), (b"~",)]) == [(b"\x7f",), (b"~",)]
    assert sorted_rows([(2, "b"), ("a", 1), (1, "c")]) == [(1, "c"), (2, "b"), ("a", 1)]  # falls back


def index_head(*terms: ir.HeadTerm) -> AggregateHead:
    return AggregateHead(ir.Head("numbered", tuple(terms)), ())


def test_index_numbers_groups_in_order_key_order_wherever_the_index_sits() -> None:
    groups: dict[tuple[Any, ...], Any] = {("b",): None, (2,): None, ("a",): None, (1.5,): None}
    last = index_head(ir.Var("x"), ir.Aggregate("index", None))
    assert last.values(groups) == [(1.5, 0), (2, 1), ("a", 2), ("b", 3)]
    first = index_head(ir.Aggregate("index", None), ir.Var("x"))
    assert first.values(groups) == [(0, 1.5), (1, 2), (2, "a"), (3, "b")]
    # an asynchronous head's groups end with their destination, which orders them last
    sent = {("b", "n/1"): None, ("b", "n/0"): None, (b"x", "n/0"): None, (2, "n/0"): None}
    assert last.finish(sent) == [("n/0", (2, 0)), ("n/0", ("b", 1)), ("n/1", ("b", 2)), ("n/0", (b"x", 3))]
