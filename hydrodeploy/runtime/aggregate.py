"""Finish rules with aggregates in their heads.

The generated rule body collects the distinct bindings of its variables; here they are grouped by
the head's non-aggregate terms and each aggregate is computed (docs/LANGUAGE.md, aggregates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from hydrodeploy.language import ir
from hydrodeploy.runtime.codegen import dest_expr, expr_code
from hydrodeploy.runtime.values import order_key, tuple_order_key

Binding = tuple[Any, ...]


class AggregateHead:
    """Computes the head tuples of an aggregating rule from its collected bindings."""

    def __init__(self, head: ir.Head, binding_vars: tuple[str, ...], namespace: dict[str, Any]) -> None:
        self.head = head
        self.positions = {name: i for i, name in enumerate(binding_vars)}
        args = "".join(f"v_{name}, " for name in binding_vars)
        self.group_terms = [t for t in head.terms if not isinstance(t, ir.Aggregate)]
        group = "(" + "".join(expr_code(t) + ", " for t in self.group_terms) + ")"
        # An async head's destination is part of the group: each destination gets its own groups.
        dest = dest_expr(head.dest, set(binding_vars)) if head.dest is not None else "None"
        unpack = f"    ({args}) = _b\n" if binding_vars else ""
        src = f"def _group(_b):\n{unpack}    return ({group}, {dest})\n"
        ns = dict(namespace)
        exec(compile(src, "<aggregate group>", "exec"), ns)
        self.group_fn: Callable[[Binding], tuple[tuple[Any, ...], Any]] = ns["_group"]
        self.is_index = any(isinstance(t, ir.Aggregate) and t.func == "index" for t in head.terms)

    def _value(self, agg: ir.Aggregate, rows: list[Binding]) -> Any:
        if agg.func == "count" and agg.arg is None:
            return len(rows)
        assert agg.arg is not None
        col = self.positions[agg.arg.name]
        if agg.func == "count":
            return len({row[col] for row in rows})
        if agg.func == "sum":
            return sum(row[col] for row in rows)
        if agg.func == "min":
            return min((row[col] for row in rows), key=order_key)
        if agg.func == "max":
            return max((row[col] for row in rows), key=order_key)
        if agg.func == "choose":
            return min((row[col] for row in rows), key=order_key)
        raise AssertionError(agg.func)

    def finish(self, bindings: Iterable[Binding]) -> list[tuple[Any, tuple[Any, ...]]]:
        """(destination or None, head tuple) for every group."""
        if self.is_index:
            keys = sorted({self.group_fn(b) for b in bindings}, key=lambda k: (tuple_order_key(k[0]), order_key(k[1])))
            return [(dest, self._place(key, {}, index=i)) for i, (key, dest) in enumerate(keys)]
        groups: dict[tuple[tuple[Any, ...], Any], list[Binding]] = {}
        for b in bindings:
            groups.setdefault(self.group_fn(b), []).append(b)
        out = []
        for (key, dest), rows in groups.items():
            values = {i: self._value(t, rows) for i, t in enumerate(self.head.terms) if isinstance(t, ir.Aggregate)}
            out.append((dest, self._place(key, values)))
        return out

    def _place(self, key: tuple[Any, ...], values: dict[int, Any], index: int | None = None) -> tuple[Any, ...]:
        result: list[Any] = []
        it = iter(key)
        for i, term in enumerate(self.head.terms):
            if isinstance(term, ir.Aggregate):
                result.append(index if index is not None else values[i])
            else:
                result.append(next(it))
        return tuple(result)
