"""Value helpers shared by generated rule code: stable hashing, total ordering, division."""

from __future__ import annotations

import zlib
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


def divide(left: Any, right: Any) -> Any:
    """``/`` of the language: floor division on integers, true division otherwise."""
    if isinstance(left, int) and isinstance(right, int):
        return left // right
    return left / right
