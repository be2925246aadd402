"""One node's tick: ``tick(state, inbox) -> TickResult``, with no I/O.

The tick consumes its input state (sets are updated in place rather than copied, so that
persisted relations cost only their new facts per tick); callers keep only the returned state.
The same evaluator runs in the simulator and in node processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from hydrodeploy.errors import RuntimeFault
from hydrodeploy.runtime.plan import CompiledRule, ComponentPlan
from hydrodeploy.runtime.topology import Topology

Fact = tuple[Any, ...]
Message = tuple[str, str, Fact]  # (destination address, relation, values)


@dataclass
class NodeState:
    """What a node carries from one tick into the next."""

    carried: dict[str, set[Fact]] = field(default_factory=dict)
    tick: int = 0


@dataclass
class TickResult:
    state: NodeState
    outbox: list[Message]
    log: list[tuple[str, Fact]]  # facts to append durably before the next tick
    changed: bool  # the carried facts differ: the node must tick again
    db: dict[str, set[Fact]]  # every fact of the tick, for inspection (a persisted relation also
    # shows the facts its :+ rules carry into the next tick)


CPU_CLOCK = time.thread_time_ns


@dataclass
class RuleCounters:
    """Per-rule work, for profiles: invocations, facts produced, CPU nanoseconds (the thread's
    CPU time, :data:`CPU_CLOCK`: a node throttled by a CPU quota while a rule runs is not
    charged for the time it waits)."""

    calls: int = 0
    facts: int = 0
    ns: int = 0


class _Indexes:
    """Hash indexes over a database, built on first use and cached until invalidated."""

    __slots__ = ("cache", "db")

    def __init__(self, db: dict[str, set[Fact]]) -> None:
        self.db = db
        self.cache: dict[tuple[str, tuple[int, ...]], dict[Any, list[Fact]]] = {}

    def __call__(self, rel: str, cols: tuple[int, ...]) -> dict[Any, list[Fact]]:
        key = (rel, cols)
        index = self.cache.get(key)
        if index is None:
            index = {}
            getter = itemgetter(*cols)
            for row in self.db.get(rel, ()):
                k = getter(row)
                bucket = index.get(k)
                if bucket is None:
                    index[k] = [row]
                else:
                    bucket.append(row)
            self.cache[key] = index
        return index

    def invalidate(self, relations: Iterable[str]) -> None:
        rels = set(relations)
        for key in [k for k in self.cache if k[0] in rels]:
            del self.cache[key]


class NodeEvaluator:
    """Evaluates ticks of one instance of a component."""

    def __init__(self, plan: ComponentPlan, address: str, index: int, topology: Topology, profile: bool = False) -> None:
        self.plan = plan
        self.address = address
        self.profile = profile
        self.counters = {r.number: RuleCounters() for r in plan.rules}
        plan.bind_routing(topology.route_component, topology.route_partition)
        static: dict[str, set[Fact]] = {rel: set(facts) for rel, facts in plan.facts.items()}
        # A partition of a logical node is that node for the program (runtime/topology.py).
        static.setdefault("self", set()).add((topology.logical_address(address),))
        static.setdefault("self_index", set()).add((index,))
        static.setdefault("self_partition", set()).add((topology.partition_index(address),))
        for comp, addrs in topology.instances.items():
            static.setdefault(comp, set()).update((a,) for a in addrs)
            static.setdefault(f"{comp}_count", set()).add((len(addrs),))
        self.static = {rel: frozenset(v) for rel, v in static.items()}
        self.derived = frozenset(r.head for s in plan.strata for r in s.rules)

    def initial_state(self) -> NodeState:
        return NodeState()

    # ---- the tick ----------------------------------------------------------------------------

    def tick(self, state: NodeState, inbox: Iterable[tuple[str, Fact]], timers: Iterable[str] = ()) -> TickResult:
        plan = self.plan
        db: dict[str, set[Fact]] = dict(self.static)  # type: ignore[arg-type]  # read-only until owned
        owned: set[str] = set()

        def mutable(rel: str) -> set[Fact]:
            if rel in owned:
                return db[rel]
            current = db.get(rel)
            fresh: set[Fact] = set() if current is None else set(current)
            db[rel] = fresh
            owned.add(rel)
            return fresh

        before_sizes = {rel: len(facts) for rel, facts in state.carried.items()}
        for rel, facts in state.carried.items():
            if rel in db:
                mutable(rel).update(facts)
            else:
                db[rel] = facts
                if rel in plan.persisted:
                    owned.add(rel)  # persisted sets only grow: the tick extends them in place
        for rel, values in inbox:
            mutable(rel).add(values)
        for name in timers:
            mutable(name).add(())

        indexes = _Indexes(db)
        for stratum in plan.strata:
            if stratum.recursive:
                self._recursive(stratum.rules, stratum.relations, db, indexes, mutable)
            else:
                for rule in stratum.rules:
                    target = mutable(rule.head)
                    self._run_into(rule, db, indexes, target)

        carried: dict[str, set[Fact]] = {}
        log: list[tuple[str, Fact]] = []
        for rule in plan.next_rules:
            out: set[Fact] = set()
            self._run_into(rule, db, indexes, out)
            if out:
                carried.setdefault(rule.head, set()).update(out)
        for rel in plan.logged:
            new = carried.get(rel)
            if new:
                visible = db.get(rel, ())
                log.extend((rel, f) for f in new if f not in visible)
        for rel in plan.persisted:
            plus = carried.get(rel)
            if plus:
                # extend in place: copying a growing persisted relation every tick is quadratic
                facts = mutable(rel)
                facts |= plus
                carried[rel] = facts
            else:
                current = db.get(rel)
                if current:
                    carried[rel] = current if rel in owned else set(current)

        outbox: list[Message] = []
        for rule in plan.async_rules:
            sent: list[tuple[Any, Fact]] = []
            self._run_async(rule, db, indexes, sent)
            rel = rule.head
            for dest, values in sent:
                if not isinstance(dest, str):
                    raise RuntimeFault(f"{rule.describe()}: destination {dest!r} is not an address")
                outbox.append((dest, rel, values))

        changed = self._changed(state, before_sizes, carried)
        return TickResult(NodeState(carried, state.tick + 1), outbox, log, changed, db)

    def _changed(self, before: NodeState, before_sizes: dict[str, int], after: dict[str, set[Fact]]) -> bool:
        """Whether the facts carried into the next tick differ from those carried into this one.

        A persisted relation's carried set is a superset of its previous one, so comparing sizes
        (taken before the tick touched anything) suffices; other carried sets were never mutated.
        """
        if {rel for rel, facts in after.items() if facts} != {rel for rel, n in before_sizes.items() if n}:
            return True
        for rel, facts in after.items():
            if rel in self.plan.persisted:
                if len(facts) != before_sizes.get(rel, 0):
                    return True
            elif facts != before.carried.get(rel, set()):
                return True
        return False

    # ---- running rules -----------------------------------------------------------------------

    def _call(self, rule: CompiledRule, fn: Any, db: Any, indexes: Any, delta: Any, delta_idx: Any, out: Any) -> None:
        try:
            fn(db, indexes, delta, delta_idx, out)
        except RuntimeFault:
            raise
        except Exception as exc:  # a Python function or an operator failed on this data
            raise RuntimeFault(f"{rule.describe()} failed: {type(exc).__name__}: {exc}") from exc

    def _run_into(self, rule: CompiledRule, db: dict[str, set[Fact]], indexes: Any, target: set[Fact]) -> None:
        for rel in rule.requires:
            if not db.get(rel):
                return  # a positive atom has no facts: the body cannot match
        counters = self.counters[rule.number]
        start = CPU_CLOCK() if self.profile else 0
        before = len(target)
        if rule.aggregate is None:
            self._call(rule, rule.fn, db, indexes, None, None, target)
        else:
            groups: dict[Fact, Any] = {}
            self._call(rule, rule.fn, db, indexes, None, None, groups)
            target.update(values for _, values in rule.aggregate.finish(groups))
        counters.calls += 1
        counters.facts += len(target) - before
        if self.profile:
            counters.ns += CPU_CLOCK() - start

    def _run_async(self, rule: CompiledRule, db: dict[str, set[Fact]], indexes: Any, out: list[tuple[Any, Fact]]) -> None:
        for rel in rule.requires:
            if not db.get(rel):
                return
        counters = self.counters[rule.number]
        start = CPU_CLOCK() if self.profile else 0
        if rule.aggregate is None:
            self._call(rule, rule.fn, db, indexes, None, None, out)
            # set semantics: one message per (destination, fact) per tick
            if len(out) > 1:
                out[:] = list(dict.fromkeys(out))
        else:
            groups: dict[Fact, Any] = {}
            self._call(rule, rule.fn, db, indexes, None, None, groups)
            out.extend(rule.aggregate.finish(groups))
        counters.calls += 1
        counters.facts += len(out)
        if self.profile:
            counters.ns += CPU_CLOCK() - start

    def _recursive(
        self, rules: tuple[CompiledRule, ...], relations: frozenset[str], db: Any, indexes: _Indexes, mutable: Any
    ) -> None:
        """Semi-naive evaluation of one recursive stratum."""
        start = CPU_CLOCK() if self.profile else 0
        new: dict[str, set[Fact]] = {rel: set() for rel in relations}
        for rule in rules:
            self._call(rule, rule.fn, db, indexes, None, None, new[rule.head])
        while True:
            delta: dict[str, set[Fact]] = {}
            for rel, facts in new.items():
                target = mutable(rel)
                fresh = facts - target
                if fresh:
                    target |= fresh
                    delta[rel] = fresh
            if not delta:
                break
            indexes.invalidate(delta)
            delta_indexes = _Indexes(delta)
            new = {rel: set() for rel in relations}
            for rule in rules:
                for fn in rule.delta_fns:
                    self._call(rule, fn, db, indexes, delta, delta_indexes, new[rule.head])
        for rule in rules:
            c = self.counters[rule.number]
            c.calls += 1
        if self.profile and rules:
            share = (CPU_CLOCK() - start) // len(rules)
            for rule in rules:
                self.counters[rule.number].ns += share
