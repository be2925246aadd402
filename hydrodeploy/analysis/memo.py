"""Per-program memoisation for analyses.

Analyses are pure functions of a frozen :class:`~hydrodeploy.language.ir.Program`; ``explain``
calls the same ones many times over one program. Hashing a whole program on every call would cost
more than the analyses, so results are keyed by the program's identity (and checked to be the same
object), in a small bounded table.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from hydrodeploy.language import ir

P = ParamSpec("P")
R = TypeVar("R")

_LIMIT = 512
_TABLE: OrderedDict[tuple[int, str, tuple[Hashable, ...]], tuple[ir.Program, Any]] = OrderedDict()


def per_program(fn: Callable[P, R]) -> Callable[P, R]:
    """Memoise ``fn(program, *hashable_args)`` on the program's identity."""
    name = f"{fn.__module__}.{fn.__qualname__}"

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        program = args[0]
        assert isinstance(program, ir.Program) and not kwargs
        key = (id(program), name, tuple(args[1:]))
        hit = _TABLE.get(key)
        if hit is not None and hit[0] is program:
            _TABLE.move_to_end(key)
            result: R = hit[1]
            return result
        result = fn(*args, **kwargs)
        _TABLE[key] = (program, result)
        if len(_TABLE) > _LIMIT:
            _TABLE.popitem(last=False)
        return result

    return wrapper
