"""Value helpers shared by generated rule code: stable hashing, total ordering, division."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection
from itertools import chain
from typing import Any

_MASK = (1 << 63) - 1


def stable_hash_value(value: Any) -> int:
    """A hash that is the same in every process (Python's str hash is salted per process).

    Integers hash to themselves, so routing on an integer id is ``id mod N``.
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return zlib.crc32(value.encode("utf-8"))
    if isinstance(value, bytes):
        return zlib.crc32(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else zlib.crc32(repr(value).encode())
    if isinstance(value, tuple):
        return stable_hash(value)
    return zlib.crc32(repr(value).encode("utf-8"))


def stable_hash(keys: tuple[Any, ...]) -> int:
    """Hash of a partition key (one or more values); a single key hashes like its value."""
    if len(keys) == 1:
        return stable_hash_value(keys[0])
    h = 0
    for key in keys:
        h = ((h * 1_000_003) ^ stable_hash_value(key)) & _MASK
    return h


def order_key(value: Any) -> tuple[int, Any]:
    """Sort key giving a total order over mixed values: numbers, then strings, then the rest."""
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    if isinstance(value, tuple):
        return (2, tuple(order_key(v) for v in value))
    return (3, repr(value))


def tuple_order_key(values: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
    return tuple(order_key(v) for v in values)


# The types on which Python's own ordering is the order of :func:`order_key` wherever it is defined.
#
# Take values x, y whose types are exactly int, float, bool, str, NoneType or tuple (recursively
# of such values), and write K for order_key. Sorting, min and max only ever ask ``a < b`` or
# ``a > b``; tuple comparisons (Python's, and K's tuples) first look for the first position whose
# items are not ``==`` (an identity check first), then compare those items or, with no such
# position, the lengths. Then:
#   (E) ``x == y`` iff ``K(x) == K(y)``, and neither raises. Numbers: K(x) = (0, x), equal iff x
#       equals y (the same identity shortcut inside the tuple: a NaN equals itself). Strings:
#       (1, x), likewise. None: (3, 'None') equals only itself, as None does. Tuples: (2, item
#       keys), by (E) on the items. Different classes (number / str / None / tuple): Python says
#       not equal, K's class tags differ.
#   (O) if Python's ``x < y`` (or ``>``) does not raise, it equals ``K(x) < K(y)`` (``>``).
#       Different classes: Python raises TypeError. None with None: raises. Numbers, strings:
#       K compares equal tags and then the values themselves (equal values, or a NaN against
#       itself, give False both ways, as Python's own < and > do). Tuples: both find the same first
#       unequal position by (E) and then compare those items (by (O): the same answer unless
#       Python raises) or the lengths.
# A sort (or min, max) asks only such questions and, when every answer is the same, does the same
# thing; so whenever the native sort, min or max does not raise, its result is exactly the one
# with ``key=order_key``. Other types (bytes, lists, frozensets, subclasses, ...) are ordered
# natively in other ways than by their repr, so they always take order_key.
_NATIVE = frozenset({int, float, bool, str, type(None)})


def natively_ordered(values: Collection[Any]) -> bool:
    """Whether every value is of the exact types on which Python's own ``<`` agrees with
    :func:`order_key` whenever it does not raise TypeError (see above)."""
    if _NATIVE.issuperset(map(type, values)):
        return True
    return all(type(v) in _NATIVE or (type(v) is tuple and natively_ordered(v)) for v in values)


def rows_natively_ordered(rows: Collection[tuple[Any, ...]]) -> bool:
    """:func:`natively_ordered` of every value of every row."""
    return _NATIVE.issuperset(map(type, chain.from_iterable(rows))) or all(natively_ordered(r) for r in rows)


def sorted_rows(rows: Collection[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows of one length in the order of :func:`tuple_order_key`: natively when that is the same
    order (above) and no comparison raises, else by the key."""
    if rows_natively_ordered(rows):
        try:
            return sorted(rows)
        except TypeError:  # values of different classes: only order_key orders them
            pass
    return sorted(rows, key=tuple_order_key)


def _extreme(pick: Callable[..., Any], values: Collection[Any]) -> Any:
    """``pick(values, key=order_key)`` (``pick`` is max or min), natively when that is the same
    (above)."""
    if len(values) == 1:
        for value in values:
            return value
    if natively_ordered(values):
        try:
            return pick(values)
        except TypeError:
            pass
    return pick(values, key=order_key)


def max_value(values: Collection[Any]) -> Any:
    """``max(values, key=order_key)``, natively when that is the same (above)."""
    return _extreme(max, values)


def min_value(values: Collection[Any]) -> Any:
    """``min(values, key=order_key)``, natively when that is the same (above)."""
    return _extreme(min, values)


def divide(left: Any, right: Any) -> Any:
    """``/`` of the language: floor division on integers, true division otherwise."""
    if isinstance(left, int) and isinstance(right, int):
        return left // right
    return left / right
