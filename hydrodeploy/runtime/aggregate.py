"""Finish rules with aggregates in their heads (docs/LANGUAGE.md, aggregates).

The generated rule body accumulates straight into a dict keyed by the group — the head's
non-aggregate terms plus, for an asynchronous head, the destination — holding one collection per
aggregate: the distinct values of the aggregated variable (``count(x)``, ``min``, ``max``,
``choose``) or the distinct bindings of the body's variables (``count(*)``, ``sum``). ``index()``
keeps only the groups. Here each group becomes a head tuple.
"""

from __future__ import annotations

from typing import Any

from hydrodeploy.language import ir
from hydrodeploy.runtime.values import order_key, tuple_order_key

Accumulator = dict[tuple[Any, ...], Any]


def collects_bindings(agg: ir.Aggregate) -> bool:
    """Whether the aggregate ranges over whole body bindings rather than one variable's values."""
    return (agg.func == "count" and agg.arg is None) or agg.func == "sum"


class AggregateHead:
    """Turns a rule's accumulated groups into head tuples."""

    def __init__(self, head: ir.Head, binding_vars: tuple[str, ...]) -> None:
        self.head = head
        self.aggregates = [t for t in head.terms if isinstance(t, ir.Aggregate)]
        self.is_index = any(a.func == "index" for a in self.aggregates)
        positions = {name: i for i, name in enumerate(binding_vars)}
        # for sum(x): where x sits in a collected binding
        self.sum_positions = [positions[a.arg.name] if a.func == "sum" and a.arg else -1 for a in self.aggregates]
        self.slots = [i for i, t in enumerate(head.terms) if isinstance(t, ir.Aggregate)]

    def finish(self, acc: Accumulator) -> list[tuple[Any, tuple[Any, ...]]]:
        """(destination or None, head tuple) for every group."""
        if self.is_index:
            keys = sorted(acc, key=lambda k: (tuple_order_key(k[:-1]), order_key(k[-1])))
            return [(key[-1], self._place(key[:-1], [i])) for i, key in enumerate(keys)]
        out = []
        for key, collections in acc.items():
            values = [self._value(agg, collections[i], self.sum_positions[i]) for i, agg in enumerate(self.aggregates)]
            out.append((key[-1], self._place(key[:-1], values)))
        return out

    @staticmethod
    def _value(agg: ir.Aggregate, collected: set[Any], sum_position: int) -> Any:
        if agg.func == "count":
            return len(collected)
        if agg.func == "sum":
            return sum(binding[sum_position] for binding in collected)
        if agg.func == "max":
            return max(collected, key=order_key)
        return min(collected, key=order_key)  # min, and choose: deterministically the smallest

    def _place(self, group: tuple[Any, ...], values: list[Any]) -> tuple[Any, ...]:
        result = list(group)
        for slot, value in zip(self.slots, values, strict=True):
            result.insert(slot, value)
        return tuple(result)
