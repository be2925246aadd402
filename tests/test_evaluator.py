"""The per-tick evaluator: semantics of every rule form, against hand-computed or reference results."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydrodeploy.errors import RuntimeFault
from hydrodeploy.language import parse
from hydrodeploy.runtime import NodeEvaluator, TickResult, Topology, compile_program


def evaluator(source: str, component: str = "a", address: str | None = None) -> NodeEvaluator:
    program = parse(source, "test.ded")  # inputs are injected directly, so no whole-program checks
    plans = compile_program(program)
    topology = Topology.of(program)
    addr = address or topology.instances[component][0]
    return NodeEvaluator(plans[component], addr, topology.instances[component].index(addr), topology)


def run_ticks(ev: NodeEvaluator, inboxes: list[list[tuple[str, tuple[Any, ...]]]]) -> list[TickResult]:
    state = ev.initial_state()
    results = []
    for inbox in inboxes:
        result = ev.tick(state, inbox)
        state = result.state
        results.append(result)
    return results


def naive_closure(edges: set[tuple[int, int]]) -> set[tuple[int, int]]:
    closure = set(edges)
    while True:
        extra = {(a, d) for a, b in closure for c, d in edges if b == c} - closure
        if not extra:
            return closure
        closure |= extra


@settings(max_examples=60, deadline=None)
@given(st.sets(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=25))
def test_recursive_rules_reach_the_same_fixpoint_as_naive_evaluation(edges: set[tuple[int, int]]) -> None:
    ev = evaluator(
        """
        .component a
        a {
          path(x, y) :- edge(x, y).
          path(x, z) :- path(x, y), edge(y, z).
          sym(x, y) :- path(x, y), path(y, x).
        }
        """
    )
    (result,) = run_ticks(ev, [[("edge", e) for e in edges]])
    closure = naive_closure(edges)
    assert result.db.get("path", set()) == closure
    assert result.db.get("sym", set()) == {(x, y) for x, y in closure if (y, x) in closure}


def test_mutual_recursion_and_negation_of_a_lower_stratum() -> None:
    ev = evaluator(
        """
        .component a
        a {
          even(0).
          num(0). num(1). num(2). num(3). num(4).
          odd(y) :- even(x), y = x + 1, num(y).
          even(y) :- odd(x), y = x + 1, num(y).
          neither(x) :- num(x), !even(x), !odd(x).
          notodd(x) :- num(x), !odd(x).
        }
        """
    )
    (result,) = run_ticks(ev, [[]])
    assert result.db["even"] == {(0,), (2,), (4,)}
    assert result.db["odd"] == {(1,), (3,)}
    assert result.db.get("neither", set()) == set()
    assert result.db["notodd"] == {(0,), (2,), (4,)}


def test_aggregates_follow_the_language_reference() -> None:
    ev = evaluator(
        """
        .component a
        a {
          votes(1, "a", 10). votes(1, "b", 10). votes(1, "c", 5). votes(2, "a", 7).
          n(id, count(v)) :- votes(id, v, _).
          amounts(id, count(amt)) :- votes(id, _, amt).
          total(id, sum(amt)) :- votes(id, v, amt).
          rows(count(*)) :- votes(id, v, amt).
          lo(id, min(v), max(v), choose(amt)) :- votes(id, v, amt).
          numbered(index(), id) :- votes(id, _, _).
        }
        """
    )
    (r,) = run_ticks(ev, [[]])
    assert r.db["n"] == {(1, 3), (2, 1)}
    assert r.db["amounts"] == {(1, 2), (2, 1)}  # count(x) counts distinct values
    assert r.db["total"] == {(1, 25), (2, 7)}  # sum over distinct bindings, duplicates of amt kept
    assert r.db["rows"] == {(4,)}
    assert r.db["lo"] == {(1, "a", "c", 5), (2, "a", "a", 7)}
    assert r.db["numbered"] == {(0, 1), (1, 2)}


def test_next_tick_persistence_deletion_and_change_detection() -> None:
    ev = evaluator(
        """
        .component a
        .persist seen
        a {
          seen(x) :- add(x).
          live(x) :+ add(x).
          live(x) :+ live(x), !del(x).
          size(count(x)) :- live(x).
        }
        """
    )
    r = run_ticks(ev, [[("add", (1,)), ("add", (2,))], [], [("del", (1,))], [], [("add", (2,))]])
    assert r[0].db.get("live", set()) == set()  # :+ facts appear in the next tick only
    assert r[1].db["live"] == {(1,), (2,)}
    assert r[1].db["size"] == {(2,)}
    assert r[3].db["live"] == {(2,)}
    assert r[4].db["seen"] == {(1,), (2,)}
    assert [x.changed for x in r] == [True, False, True, False, False]


def test_log_relations_are_flushed_once_and_visible_next_tick() -> None:
    ev = evaluator(
        """
        .component a
        .log wal
        a {
          wal(x) :+ write(x).
          ack@s(x) :~ wal(x), self(s).
        }
        """
    )
    r = run_ticks(ev, [[("write", (7,))], [], []])
    assert r[0].log == [("wal", (7,))] and r[0].outbox == []
    assert r[1].log == [] and r[1].outbox == [("a/0", "ack", (7,))]
    assert r[2].outbox == []


def test_async_destinations_broadcast_and_route_by_key() -> None:
    ev = evaluator(
        """
        .component a
        .component b 3
        a {
          all@p(x) :~ go(x), b(p).
          one@b[x](x) :~ go(x).
          pair@b[x, y](x, y) :~ go(x), y = "k".
          n@s(count(p)) :~ b(p), self(s), go(_).
        }
        """
    )
    (r,) = run_ticks(ev, [[("go", (4,)), ("go", (5,))]])
    assert sorted(m for m in r.outbox if m[1] == "all") == sorted(
        (f"b/{i}", "all", (x,)) for i in range(3) for x in (4, 5)
    )
    assert sorted(m for m in r.outbox if m[1] == "one") == [("b/1", "one", (4,)), ("b/2", "one", (5,))]
    assert len([m for m in r.outbox if m[1] == "pair"]) == 2
    assert [m for m in r.outbox if m[1] == "n"] == [("a/0", "n", (3,))]


def test_builtins_describe_the_deployment() -> None:
    ev = evaluator(
        """
        .component a
        .component b 2
        b {
          me(s, i, n) :- self(s), self_index(i), b_count(n).
        }
        """,
        component="b",
        address="b/1",
    )
    (r,) = run_ticks(ev, [[]])
    assert r.db["me"] == {("b/1", 1, 2)}
    assert r.db["a"] == {("a/0",)}


def test_functions_compute_and_filter(tmp_path: Any, monkeypatch: Any) -> None:
    (tmp_path / "udfs.py").write_text(
        "def double(x):\n    return 2 * x\n\ndef split(x):\n    return x // 10, x % 10\n\ndef small(x):\n    return x < 20\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ev = evaluator(
        """
        .component a
        .function double(x) -> (y) = "udfs:double"
        .function split(x) -> (tens, ones) = "udfs:split"
        .function small(x) -> () = "udfs:small"
        a {
          d(x, y) :- n(x), double(x, y).
          s(x, t, o) :- n(x), split(x, t, o), small(x).
          fixed(x) :- n(x), double(x, 24).
        }
        """
    )
    (r,) = run_ticks(ev, [[("n", (12,)), ("n", (31,))]])
    assert r.db["d"] == {(12, 24), (31, 62)}
    assert r.db["s"] == {(12, 1, 2)}
    assert r.db["fixed"] == {(12,)}


def test_arithmetic_division_floors_integers() -> None:
    ev = evaluator(
        """
        .component a
        a {
          q(x / 2, x % 3, x * 1.5, x - 10) :- n(x).
          s(y) :- n(x), y = "id-" + "x".
        }
        """
    )
    (r,) = run_ticks(ev, [[("n", (7,))]])
    assert r.db["q"] == {(3, 1, 10.5, -3)}
    assert r.db["s"] == {("id-x",)}


def test_a_failing_operation_names_the_rule() -> None:
    ev = evaluator(
        """
        .component a
        a {
          q(x / y) :- n(x), d(y).
        }
        """
    )
    with pytest.raises(RuntimeFault, match=r"rule 0 for 'q' \(test.ded:4:11\) failed: ZeroDivisionError"):
        run_ticks(ev, [[("n", (1,)), ("d", (0,))]])


def test_rules_that_cannot_match_are_skipped_and_counters_count_what_ran() -> None:
    source = """
        .component a
        a {
          r(x) :- in(x).
          s(x) :- r(x), !blocked(x).
          path(x, y) :- edge(x, y).
          path(x, z) :- path(x, y), edge(y, z).
          top(max(x)) :- in(x).
          seen(x) :+ s(x).
          echo@me(x) :~ s(x), self(me).
        }
        """
    ev = evaluator(source)
    ev.profile = True
    quiet, busy, edges = run_ticks(ev, [[], [("in", (1,)), ("in", (2,)), ("blocked", (2,))], [("edge", (1, 2))]])
    # every derived relation is in the tick's database, empty when no rule derived anything
    assert all(quiet.db[rel] == set() for rel in ("r", "s", "path", "top"))
    assert busy.db["r"] == {(1,), (2,)} and busy.db["s"] == {(1,)} and busy.db["top"] == {(2,)}
    assert busy.outbox == [("a/0", "echo", (1,))] and busy.state.carried == {"seen": {(1,)}}
    assert edges.db["path"] == {(1, 2)} and edges.state.carried == {}
    counters = {n: (c.calls, c.facts) for n, c in ev.counters.items()}
    # r, s, top, seen and echo ran in the busy tick only, the recursive stratum (path: its rules
    # count calls, not facts) only with edges
    assert counters == {0: (1, 2), 1: (1, 1), 2: (1, 0), 3: (1, 0), 4: (1, 1), 5: (1, 1), 6: (1, 1)}


def test_rules_over_static_relations_run_once_and_their_facts_show_in_every_tick() -> None:
    source = """
        .component a 3
        .component b
        a {
          limit(10).
          seen(0).
          peer(p) :- a(p), self(me), p != me.
          peers(count(p)) :- peer(p).
          quorum(q) :- a_count(n), q = n / 2 + 1.
          seen(x) :- in(x).
          biggest(max(x)) :- seen(x).
          over(x) :- in(x), limit(l), x > l.
          big(x) :- quorum(q), in(x), x > q.
          out@p(x) :~ big(x), peer(p).
        }
        """
    ev = evaluator(source)
    ticks = run_ticks(ev, [[], [("in", (1,)), ("in", (11,))], [("in", (3,))]])
    for tick in ticks:  # what the static rules derive is there every tick
        assert tick.db["peer"] == {("a/1",), ("a/2",)} and tick.db["peers"] == {(2,)} and tick.db["quorum"] == {(2,)}
    assert [t.db["biggest"] for t in ticks] == [{(0,)}, {(11,)}, {(3,)}]  # seen has facts and rules: every tick
    assert ticks[1].db["over"] == {(11,)} and ticks[2].db["big"] == {(3,)}
    assert sorted(ticks[2].outbox) == [("a/1", "out", (3,)), ("a/2", "out", (3,))]
    numbers = {r.rule.head.relation: r.number for r in ev.plan.rules}
    assert {numbers["peer"], numbers["peers"], numbers["quorum"]} == set(ev.precomputed)
    # computed once, when the evaluator was made
    assert [ev.counters[numbers[h]].calls for h in ("peer", "peers", "quorum")] == [1, 1, 1]
    assert ev.counters[numbers["biggest"]].calls == 3 and ev.counters[numbers["big"]].calls == 2


def test_a_tick_leaves_its_input_state_and_static_relations_as_they_were() -> None:
    ev = evaluator(
        """
        .component a
        .persist kept
        a {
          base(1).
          base(x) :- add(x).
          kept(x) :+ add(x).
          live(x) :+ add(x).
          live(x) :+ live(x), !del(x).
        }
        """
    )
    first = ev.tick(ev.initial_state(), [("add", (2,))])
    live = first.state.carried["live"]
    second = ev.tick(first.state, [("add", (3,)), ("del", (2,))])
    assert live == {(2,)}  # a carried (not persisted) set is never mutated: change detection compares it
    assert second.db["base"] == {(1,), (3,)} and ev.static["base"] == frozenset({(1,)})
    assert second.state.carried == {"kept": {(2,), (3,)}, "live": {(3,)}} and second.changed


def test_profiled_rules_are_charged_their_share_of_the_ticks_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydrodeploy.runtime import evaluator as module

    ev = evaluator(
        """
        .component a
        a {
          r(x) :- in(x).
          s(x) :- r(x).
          idle(x) :- other(x).
        }
        """
    )
    ev.profile = True
    wall = iter(range(0, 10**6, 100))  # every reading of the elapsed-time clock 100 ns later
    monkeypatch.setattr(module, "WALL_CLOCK", lambda: next(wall))
    # a tick reads the wall clock at its start, around each rule (r, s) and at its end: 500 ns;
    # its CPU time is 500 ns (no pause: rules are charged their elapsed time), then 250 ns
    cpu = iter([0, 600, 1000, 1250])
    monkeypatch.setattr(module, "CPU_CLOCK", lambda: next(cpu))
    run_ticks(ev, [[("in", (1,))], [("in", (2,))]])
    assert [(c.calls, c.ns) for c in ev.counters.values()] == [(2, 150), (2, 150), (0, 0)]


def test_a_traced_tick_records_each_rule_runs_work() -> None:
    ev = evaluator(
        """
        .component a
        .component b
        a {
          seen(x) :- in(x).
          seen(x) :+ seen(x).
          pair(x, y) :- seen(x), in(y), x < y.
          out@b(x) :~ pair(x, _), b(b).
          idle(x) :- other(x).
        }
        """
    )
    ev.profile = True
    state = ev.tick(ev.initial_state(), [("in", (1,)), ("in", (2,))]).state
    ev.trace = []
    ev.tick(state, [("in", (3,))])
    heads = {r.number: r.head for r in ev.plan.rules}
    runs: dict[str, list[tuple[int, int]]] = {}
    for number, work, derived, ns in ev.trace:
        assert ns >= 0
        runs.setdefault(heads[number], []).append((work, derived))
    # (facts in the relations of the positive atoms, facts derived); seen carries 1 and 2, in brings 3
    assert sorted(runs["seen"]) == [(1, 1), (3, 3)]  # :- adds 3 to the carried two; :+ carries all three
    assert runs["pair"] == [(3 + 1, 2)]  # (1, 3) and (2, 3)
    assert runs["out"] == [(2 + 1, 2)]  # pair's two and b's one; one message per x
    assert "idle" not in runs  # its atom has no facts: it does not run


def test_async_rules_send_each_message_once_per_tick() -> None:
    ev = evaluator(
        """
        .component a
        a {
          wild@me(x) :~ r(x, _), self(me).
          hidden@me(x) :~ r(x, y), self(me).
          routed@a[x](x) :~ r(x, y).
          whole@me(x, y) :~ r(x, y), self(me), z = x + y, z > 0.
          forwarded@n[x](x, y) :~ self(me), pair(me, n), r(x, y).
          counted@n(x, y) :~ r(x, y), a_count(k), pair(k, n).
          fanned@n[x](x) :~ r(x, y), pair(y, n).
        }
        """
    )
    # only a rule whose head (or destination) shows every variable of its atoms cannot repeat a
    # message by itself; self(me) and a_count(k) hold one fact, so they match one way only
    assert [r.distinct for r in ev.plan.async_rules] == [False, False, False, True, True, True, False]
    (result,) = run_ticks(ev, [[("r", (1, 2)), ("r", (1, 3))]])
    assert sorted(result.outbox) == [
        ("a/0", "hidden", (1,)),
        ("a/0", "routed", (1,)),
        ("a/0", "whole", (1, 2)),
        ("a/0", "whole", (1, 3)),
        ("a/0", "wild", (1,)),
    ]


rows = st.sets(st.tuples(st.integers(0, 5), st.integers(0, 5), st.sampled_from(["x", "y"])), max_size=20)


@settings(max_examples=80, deadline=None)
@given(
    rows,
    st.sets(st.integers(0, 5), max_size=4),
    st.sets(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=10),
    st.booleans(),
    st.booleans(),
)
def test_rules_that_copy_or_filter_whole_facts_derive_what_their_definition_says(
    r: set[tuple[int, int, str]], gone: set[int], pairs: set[tuple[int, int]], flag: bool, closed: bool
) -> None:
    # the code generator reuses a body fact as the head's (a whole-relation copy is one set update,
    # also under conditions that are atoms without terms; a filtered copy adds the fact it read);
    # these are the rule shapes it does that for, next to ones it must not (columns reordered, a
    # repeated variable, a constant)
    ev = evaluator(
        """
        .component a
        a {
          copy(a, b, c) :- r(a, b, c).
          kept(a, b, c) :- r(a, b, c), !gone(a).
          joined(a, b, c) :- pair(a, b), r(a, b, c).
          swapped(b, a, c) :- r(a, b, c).
          diagonal(a, a, c) :- r(a, a, c).
          xs(a, b, c) :- r(a, b, c), c == "x".
          carried(a, b, c) :+ r(a, b, c), !gone(b).
          while_open(a, b, c) :- r(a, b, c), !closed().
          flagged(a, b, c) :+ flag(), r(a, b, c), !closed().
          sent@s(a, b, c) :~ r(a, b, c), self(s), a > b.
        }
        """
    )
    inbox = [("r", f) for f in r] + [("gone", (g,)) for g in gone] + [("pair", p) for p in pairs]
    inbox += [("flag", ())] * flag + [("closed", ())] * closed
    (result,) = run_ticks(ev, [inbox])
    db = result.db
    assert db.get("copy", set()) == r
    assert db.get("kept", set()) == {f for f in r if f[0] not in gone}
    assert db.get("joined", set()) == {f for f in r if (f[0], f[1]) in pairs}
    assert db.get("swapped", set()) == {(b, a, c) for a, b, c in r}
    assert db.get("diagonal", set()) == {f for f in r if f[0] == f[1]}
    assert db.get("xs", set()) == {f for f in r if f[2] == "x"}
    assert result.state.carried.get("carried", set()) == {f for f in r if f[1] not in gone}
    assert db.get("while_open", set()) == (set() if closed else r)
    assert result.state.carried.get("flagged", set()) == (r if flag and not closed else set())
    assert sorted(values for _, rel, values in result.outbox if rel == "sent") == sorted(f for f in r if f[0] > f[1])
