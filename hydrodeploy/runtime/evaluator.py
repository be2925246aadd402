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
from hydrodeploy.language import ir
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
WALL_CLOCK = time.perf_counter_ns


@dataclass
class RuleCounters:
    """Per-rule work, for profiles: invocations, facts produced, CPU nanoseconds.

    ``ns`` is the thread's CPU time (:data:`CPU_CLOCK`) spent in the rule: a node throttled by a
    CPU quota while a rule runs is not charged for the time it waits. Reading the thread's CPU
    clock is a system call (~0.3 µs, as long as a small rule), so a profiled tick reads it only at
    its start and end, and times each rule on :data:`WALL_CLOCK` (read in user space): a rule is
    charged its elapsed time, which is its CPU time when the tick ran without pause (its CPU time
    then covers its elapsed time); a tick that waited (a quota's throttling, another thread holding
    the GIL) charges each rule its elapsed time scaled by the tick's CPU over its elapsed time, so
    the wait is never charged and every rule gets its share of the CPU the tick used."""

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


_NOTHING: frozenset[Fact] = frozenset()


def _inputs(db: dict[str, set[Fact]], relations: tuple[str, ...]) -> int:
    """Facts in ``relations`` (a rule's positive atoms): what a rule's work grows with."""
    n = 0
    for rel in relations:
        n += len(db.get(rel, ()))
    return n


def _fault(rule: CompiledRule, exc: Exception) -> RuntimeFault:
    """A rule's function raised ``exc`` (a Python function or an operator failed on this data)."""
    return RuntimeFault(f"{rule.describe()} failed: {type(exc).__name__}: {exc}")


# one rule, ready to run: the rule, its function, the relations that must be non-empty for its body
# to match, its counters, its aggregate's finish (None without one) and its head relation
_Step = tuple[CompiledRule, Any, tuple[str, ...], RuleCounters, Any, str]


class NodeEvaluator:
    """Evaluates ticks of one instance of a component."""

    def __init__(self, plan: ComponentPlan, address: str, index: int, topology: Topology, profile: bool = False) -> None:
        self.plan = plan
        self.address = address
        self.profile = profile
        # when a list (and profiling), every rule run appends (rule number, facts in its positive
        # atoms' relations, facts it derived, elapsed ns): the performance simulation fits each
        # rule's cost to this (:mod:`hydrodeploy.optimize.perfsim`)
        self.trace: list[tuple[int, int, int, int]] | None = None
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
        # Rules that read only static relations (a rewrite's routing ranks over the instances, a
        # quorum size) derive the same facts every tick: they run once, here.
        self.precomputed = self._precompute(plan)
        # Every tick's database starts as this: the static relations, and an empty read-only
        # placeholder for every relation the synchronous rules derive (so that the tick's db shows
        # them all); a relation becomes an owned set when something first adds to it.
        self._base: dict[str, frozenset[Fact]] = dict.fromkeys(sorted(self.derived), _NOTHING)
        self._base.update(self.static)
        # the synchronous rules in stratum order; a recursive stratum is one step, (None, stratum, ...)
        self._sync_steps: tuple[Any, ...] = tuple(
            step
            for stratum in plan.strata
            for step in (
                [(None, stratum, (), None, None, "")]
                if stratum.recursive
                else [self._step(r) for r in stratum.rules if r.number not in self.precomputed]
            )
        )
        self._next_steps = tuple(self._step(r) for r in plan.next_rules)
        self._async_steps = tuple((*self._step(r), r.distinct) for r in plan.async_rules)

    def _precompute(self, plan: ComponentPlan) -> frozenset[int]:
        """Evaluate, once, the synchronous rules whose relations are all static, in stratum
        order, adding what they derive to :attr:`static`; returns their numbers.

        A relation qualifies when every rule deriving it in this component is non-recursive, calls
        no Python function and reads only static relations (or ones that qualified before it),
        and nothing else gives it facts: no :+ rule carries it, it is not persisted, no message or
        client input or timer can bring it."""
        program = plan.program
        brought = {d.relation for d in program.inputs} | {t.name for t in program.timers}
        brought |= {r.head.relation for b in program.blocks for r in b.rules if r.kind is ir.RuleKind.ASYNC}
        brought |= {r.head for r in plan.next_rules} | set(plan.persisted)
        by_head: dict[str, list[CompiledRule]] = {}
        for stratum in plan.strata:
            for rule in stratum.rules:
                by_head.setdefault(rule.head, []).append(rule)
        static = {rel for rel in self.static if rel not in self.derived and rel not in brought}
        done: set[int] = set()
        db: dict[str, set[Fact]] = {rel: set(v) for rel, v in self.static.items()}
        for stratum in plan.strata:
            if stratum.recursive:
                continue
            for rule in stratum.rules:
                head = rule.head
                siblings = by_head[head]
                if (
                    head in brought
                    or head in self.static  # it has facts of its own besides the rules: left alone
                    or any(r.rule_functions for r in siblings)  # (a relation's rules share its stratum)
                    or not all(a.relation in static for r in siblings for a in r.rule.atoms())
                ):
                    continue
                target = db.setdefault(head, set())
                before = len(target)
                indexes = _Indexes(db)
                try:
                    if rule.aggregate is None:
                        rule.fn(db, indexes, None, None, target)
                    else:
                        groups: dict[Fact, Any] = {}
                        rule.fn(db, indexes, None, None, groups)
                        target.update(rule.aggregate.values(groups))
                except Exception as exc:
                    raise _fault(rule, exc) from exc
                counters = self.counters[rule.number]
                counters.calls += 1
                counters.facts += len(target) - before
                done.add(rule.number)
                if all(r.number in done for r in siblings):
                    static.add(head)
        for rel in static - set(self.static):
            self.static[rel] = frozenset(db.get(rel, ()))
        return frozenset(done)

    def _step(self, rule: CompiledRule) -> _Step:
        # an aggregate's finish: head tuples (synchronous), (destination, head tuple) pairs (asynchronous)
        aggregate = rule.aggregate
        finish = None if aggregate is None else aggregate.finish if rule.rule.head.dest is not None else aggregate.values
        return (rule, rule.fn, rule.requires, self.counters[rule.number], finish, rule.head)

    def initial_state(self) -> NodeState:
        return NodeState()

    # ---- the tick ----------------------------------------------------------------------------

    def tick(self, state: NodeState, inbox: Iterable[tuple[str, Fact]], timers: Iterable[str] = ()) -> TickResult:
        plan = self.plan
        profile = self.profile
        trace = self.trace
        clock = WALL_CLOCK
        timed: list[tuple[RuleCounters, int]] = []  # profiling: the rules run, with their elapsed ns
        if profile:
            cpu_start = CPU_CLOCK()
            wall_start = clock()
        db: dict[str, set[Fact]] = dict(self._base)  # type: ignore[arg-type]  # read-only until owned
        owned: dict[str, set[Fact]] = {}  # the relations this tick may extend in place

        def mutable(rel: str) -> set[Fact]:
            facts = owned.get(rel)
            if facts is None:
                current = db.get(rel)
                facts = set() if current is None else set(current)
                db[rel] = owned[rel] = facts
            return facts

        carried_in = state.carried
        before_sizes = {rel: len(facts) for rel, facts in carried_in.items()}
        static = self.static
        persisted = plan.persisted
        for rel, facts in carried_in.items():
            if rel in static:
                mutable(rel).update(facts)
            else:
                db[rel] = facts
                if rel in persisted:
                    owned[rel] = facts  # persisted sets only grow: the tick extends them in place
        for rel, values in inbox:
            target = owned.get(rel)
            if target is None:
                target = mutable(rel)
            target.add(values)
        for name in timers:
            mutable(name).add(())

        indexes = _Indexes(db)
        for rule, fn, requires, counters, finish, head in self._sync_steps:
            for rel in requires:
                if not db.get(rel):
                    break  # a positive atom has no facts: the body cannot match
            else:
                if rule is None:  # a recursive stratum
                    self._recursive(fn.rules, fn.relations, db, indexes, mutable, timed)
                    continue
                target = owned.get(head)
                if target is None:  # a derived relation: in db (as a placeholder, or carried)
                    target = db[head] = owned[head] = set(db[head])
                start = clock() if profile else 0
                before = len(target)
                try:
                    if finish is None:
                        fn(db, indexes, None, None, target)
                    else:
                        groups: dict[Fact, Any] = {}
                        fn(db, indexes, None, None, groups)
                except RuntimeFault:
                    raise
                except Exception as exc:
                    raise _fault(rule, exc) from exc
                if finish is not None:
                    target.update(finish(groups))
                counters.calls += 1
                counters.facts += len(target) - before
                if profile:
                    elapsed = clock() - start
                    timed.append((counters, elapsed))
                    if trace is not None:
                        trace.append((rule.number, _inputs(db, requires), len(target) - before, elapsed))

        carried: dict[str, set[Fact]] = {}
        for rule, fn, requires, counters, finish, head in self._next_steps:
            for rel in requires:
                if not db.get(rel):
                    break
            else:
                out: set[Fact] = set()
                start = clock() if profile else 0
                try:
                    if finish is None:
                        fn(db, indexes, None, None, out)
                    else:
                        groups = {}
                        fn(db, indexes, None, None, groups)
                except RuntimeFault:
                    raise
                except Exception as exc:
                    raise _fault(rule, exc) from exc
                if finish is not None:
                    out.update(finish(groups))
                counters.calls += 1
                counters.facts += len(out)
                if profile:
                    elapsed = clock() - start
                    timed.append((counters, elapsed))
                    if trace is not None:
                        trace.append((rule.number, _inputs(db, requires), len(out), elapsed))
                if out:
                    previous = carried.get(head)
                    if previous is None:
                        carried[head] = out
                    else:
                        previous |= out
        log: list[tuple[str, Fact]] = []
        for rel in plan.logged:
            new = carried.get(rel)
            if new:
                visible = db.get(rel, ())
                log.extend((rel, f) for f in new if f not in visible)
        for rel in persisted:
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
        for rule, fn, requires, counters, finish, head, distinct in self._async_steps:
            for rel in requires:
                if not db.get(rel):
                    break
            else:
                sent: list[tuple[Any, Fact]] = []
                start = clock() if profile else 0
                try:
                    if finish is None:
                        fn(db, indexes, None, None, sent)
                    else:
                        groups = {}
                        fn(db, indexes, None, None, groups)
                except RuntimeFault:
                    raise
                except Exception as exc:
                    raise _fault(rule, exc) from exc
                if finish is None:
                    # set semantics: one message per (destination, fact) per tick
                    if len(sent) > 1 and not distinct:
                        sent = list(dict.fromkeys(sent))
                else:
                    sent.extend(finish(groups))
                counters.calls += 1
                counters.facts += len(sent)
                if profile:
                    elapsed = clock() - start
                    timed.append((counters, elapsed))
                    if trace is not None:
                        trace.append((rule.number, _inputs(db, requires), len(sent), elapsed))
                for dest, values in sent:
                    if not isinstance(dest, str):
                        raise RuntimeFault(f"{rule.describe()}: destination {dest!r} is not an address")
                    outbox.append((dest, head, values))

        changed = self._changed(state, before_sizes, carried)
        if timed:
            wall = clock() - wall_start
            cpu = CPU_CLOCK() - cpu_start
            if cpu >= wall:  # no pause: each rule's elapsed time was CPU time
                for counters, ns in timed:
                    counters.ns += ns
            else:
                for counters, ns in timed:
                    counters.ns += ns * cpu // wall
        return TickResult(NodeState(carried, state.tick + 1), outbox, log, changed, db)

    def _changed(self, before: NodeState, before_sizes: dict[str, int], after: dict[str, set[Fact]]) -> bool:
        """Whether the facts carried into the next tick differ from those carried into this one.

        A persisted relation's carried set is a superset of its previous one, so comparing sizes
        (taken before the tick touched anything) suffices; other carried sets were never mutated.
        Every set the tick carries is non-empty.
        """
        if after.keys() != {rel for rel, n in before_sizes.items() if n}:
            return True
        persisted = self.plan.persisted
        for rel, facts in after.items():
            if rel in persisted:
                if len(facts) != before_sizes[rel]:
                    return True
            elif facts != before.carried[rel]:
                return True
        return False

    # ---- running rules -----------------------------------------------------------------------

    @staticmethod
    def _call(rule: CompiledRule, fn: Any, db: Any, indexes: Any, out: Any, delta: Any = None, delta_idx: Any = None) -> None:
        try:
            fn(db, indexes, delta, delta_idx, out)
        except RuntimeFault:
            raise
        except Exception as exc:
            raise _fault(rule, exc) from exc

    def _recursive(
        self,
        rules: tuple[CompiledRule, ...],
        relations: frozenset[str],
        db: Any,
        indexes: _Indexes,
        mutable: Any,
        timed: list[tuple[RuleCounters, int]],
    ) -> None:
        """Semi-naive evaluation of one recursive stratum.

        A rule one of whose positive atoms has no facts derives nothing in the first round; when no
        rule can derive anything there, the stratum is skipped (and, like a skipped rule, its rules
        count no call).
        """
        runnable = [rule for rule in rules if all(db.get(rel) for rel in rule.requires)]
        if not runnable:
            return
        start = WALL_CLOCK() if self.profile else 0
        new: dict[str, set[Fact]] = {rel: set() for rel in relations}
        for rule in runnable:
            self._call(rule, rule.fn, db, indexes, new[rule.head])
        while True:
            delta: dict[str, set[Fact]] = {}
            for rel, facts in new.items():
                if not facts:
                    continue
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
                    self._call(rule, fn, db, indexes, new[rule.head], delta, delta_indexes)
        for rule in rules:
            c = self.counters[rule.number]
            c.calls += 1
        if self.profile:
            share = (WALL_CLOCK() - start) // len(rules)
            timed.extend((self.counters[rule.number], share) for rule in rules)
            if self.trace is not None:
                self.trace.extend((rule.number, _inputs(db, rule.requires), 0, share) for rule in rules)
