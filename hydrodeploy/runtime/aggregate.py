"""Finish rules with aggregates in their heads (docs/LANGUAGE.md, aggregates).

The generated rule body accumulates straight into a dict keyed by the group — the head's
non-aggregate terms plus, for an asynchronous head, the destination — holding one collection per
aggregate (a tuple of them; with a single aggregate, the collection itself): the distinct values
of the aggregated variable (``count(x)``, ``min``, ``max``, ``choose``) or the distinct bindings
of the body's variables (``count(*)``, ``sum``). ``index()`` keeps only the groups. Here each
group becomes a head tuple.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hydrodeploy.language import ir
from hydrodeploy.runtime.values import max_value, min_value, sorted_rows

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
        # the aggregates are the head's last terms (the usual case): a head tuple is group + values
        self.trailing = self.slots == list(range(len(head.terms) - len(self.slots), len(head.terms)))
        self.finishers = [self._finisher(agg, pos) for agg, pos in zip(self.aggregates, self.sum_positions, strict=True)]

    def finish(self, acc: Accumulator) -> list[tuple[Any, tuple[Any, ...]]]:
        """(destination, head tuple) for every group of an asynchronous head (whose groups end
        with their destination)."""
        if self.is_index:
            keys = sorted_rows(acc) if len(acc) > 1 else list(acc)
            if self.trailing:
                return [(key[-1], (*key[:-1], i)) for i, key in enumerate(keys)]
            return [(key[-1], self._place(key[:-1], [i])) for i, key in enumerate(keys)]
        return [(key[-1], values) for key, values in zip(acc, self._tuples(acc, 1), strict=True)]

    def values(self, acc: Accumulator) -> list[tuple[Any, ...]]:
        """The head tuple of every group of a synchronous head (whose groups are just the head's
        other terms)."""
        if self.is_index:
            # groups numbered in order_key's order
            keys = sorted_rows(acc) if len(acc) > 1 else list(acc)
            if self.trailing:
                return [(*key, i) for i, key in enumerate(keys)]
            return [self._place(key, [i]) for i, key in enumerate(keys)]
        return self._tuples(acc, 0)

    def _tuples(self, acc: Accumulator, dest: int) -> list[tuple[Any, ...]]:
        """The head tuple of every group, in the accumulator's order."""
        finishers = self.finishers
        if len(finishers) == 1:
            (fn,) = finishers
            if not dest:
                if self.trailing:
                    return [(*key, fn(collected)) for key, collected in acc.items()]
                return [self._place(key, [fn(collected)]) for key, collected in acc.items()]
            if self.trailing:
                return [(*key[:-1], fn(collected)) for key, collected in acc.items()]
            return [self._place(key[:-1], [fn(collected)]) for key, collected in acc.items()]
        out = []
        for key, collections in acc.items():
            group = key[:-1] if dest else key
            values = [fn(collections[i]) for i, fn in enumerate(finishers)]
            out.append(group + tuple(values) if self.trailing else self._place(group, values))
        return out

    @staticmethod
    def _finisher(agg: ir.Aggregate, sum_position: int) -> Callable[[set[Any]], Any]:
        if agg.func == "count":
            return len
        if agg.func == "sum":
            return lambda collected: sum(binding[sum_position] for binding in collected)
        if agg.func == "max":
            return max_value
        return min_value  # min, and choose: deterministically the smallest

    def _place(self, group: tuple[Any, ...], values: list[Any]) -> tuple[Any, ...]:
        result = list(group)
        for slot, value in zip(self.slots, values, strict=True):
            result.insert(slot, value)
        return tuple(result)
