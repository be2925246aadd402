"""The deterministic simulator: seeded histories, loss, crashes, timers and closed-loop clients."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hydrodeploy.language import load_source
from hydrodeploy.simulate import Network, SimResult, Simulation, SimulationError, Workload

ECHO = """
.component server 2
.input req(client, id, payload) @ server
.output resp
.persist served
server {
  served(id) :- req(client, id, payload).
  resp@client(id, me, payload) :~ req(client, id, payload), self(me).
}
"""

QUORUM = """
.component leader
.component member 3
.input req(client, id, payload) @ leader
.output resp
.persist done
leader {
  ask@m(client, id) :~ req(client, id, payload), member(m).
  acks(client, id, m) :+ acks(client, id, m), !done(id).
  acks(client, id, m) :- ack(client, id, m).
  n(client, id, count(m)) :- acks(client, id, m).
  finished(client, id) :- n(client, id, k), member_count(k), !done(id).
  done(id) :+ finished(client, id).
  resp@client(id) :~ finished(client, id).
}
member {
  ack@l(client, id, me) :~ ask(client, id), leader(l), self(me).
}
"""

HEARTBEAT = """
.component node
.input req(client, id) @ node
.output resp
.timer beat 10ms @ node
.persist beats
node {
  beats(n + 1) :+ beats(n), beat(), !newer(n).
  newer(n) :- beats(n), beats(m), m > n.
  first(0) .
  beats(0) :- first(0).
  resp@client(id) :~ req(client, id).
}
"""


def fingerprint(result: SimResult) -> str:
    h = hashlib.sha256()
    for m in result.messages:
        h.update(repr((round(m.send_ms, 9), m.deliver_ms and round(m.deliver_ms, 9), m.src, m.dst, m.relation, m.values)).encode())
    for o in result.outputs:
        h.update(repr((round(o.time_ms, 9), o.client, o.relation, o.values)).encode())
    return h.hexdigest()


def simulate(source: str, seed: int, **kw: object) -> tuple[Simulation, SimResult]:
    program = load_source(source, "sim.ded")
    workload = kw.pop("workload", Workload(clients=3, requests=40))
    network = kw.pop("network", Network(min_delay_ms=0.1, max_delay_ms=8.0))
    sim = Simulation(program, seed=seed, network=network, workload=workload, record_messages=True)  # type: ignore[arg-type]
    return sim, sim.run(**kw)  # type: ignore[arg-type]


def test_same_seed_same_history_and_different_seeds_differ() -> None:
    _, a = simulate(QUORUM, seed=11)
    _, b = simulate(QUORUM, seed=11)
    _, c = simulate(QUORUM, seed=12)
    assert a.completed == 40
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(c)


def test_history_does_not_depend_on_the_process_hash_seed(tmp_path: Path) -> None:
    """String hashing is salted per process; histories must not be."""
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from test_simulate import QUORUM, fingerprint, simulate
            _, result = simulate(QUORUM, seed=5)
            print(fingerprint(result))
            """
        )
    )
    digests = set()
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_messages_are_reordered_by_random_delays() -> None:
    _, result = simulate(QUORUM, seed=3)
    by_send = sorted((m for m in result.messages if m.deliver_ms is not None), key=lambda m: m.send_ms)
    overtaken = sum(1 for x, y in itertools.pairwise(by_send) if y.deliver_ms < x.deliver_ms)  # type: ignore[operator]
    assert overtaken > 0


def test_inputs_reach_every_instance_and_duplicates_are_counted_not_completed() -> None:
    _, result = simulate(ECHO, seed=1)
    assert result.completed == 40
    assert all(r.replies == 2 for r in result.requests.values())
    assert {o.values[1] for o in result.outputs} == {"server/0", "server/1"}


def test_payloads_are_sixteen_bytes_by_default_and_ids_unique() -> None:
    _, result = simulate(ECHO, seed=1)
    payloads = {o.values[2] for o in result.outputs}
    assert all(isinstance(p, str) and len(p) == 16 for p in payloads)
    assert len(result.requests) == 40


def test_loss_drops_messages_and_clients_retry() -> None:
    network = Network(min_delay_ms=0.1, max_delay_ms=2.0, loss=0.2)
    _, lossy = simulate(ECHO, seed=2, network=network, workload=Workload(clients=2, requests=30))
    assert any(m.deliver_ms is None for m in lossy.messages)
    _, retried = simulate(
        ECHO, seed=2, network=network, workload=Workload(clients=2, requests=30, timeout_ms=20.0)
    )
    assert retried.completed == 30
    assert any(r.attempts > 1 for r in retried.requests.values())


def test_a_crashed_node_loses_state_and_messages_until_restart() -> None:
    _, result = simulate(QUORUM, seed=4, workload=Workload(clients=1, requests=20), max_time_ms=2_000.0)
    assert result.completed == 20
    program = load_source(QUORUM, "sim.ded")
    sim = Simulation(program, seed=4, workload=Workload(clients=1, requests=20), record_messages=True)
    sim.crash("member/2", at_ms=20.0)
    result = sim.run(max_time_ms=2_000.0)
    assert 0 < result.completed < 20  # the quorum needs every member: progress stops
    assert not any(m.src == "member/2" and m.send_ms > 20.0 for m in result.messages)

    sim = Simulation(program, seed=4, workload=Workload(clients=1, requests=20, timeout_ms=50.0))
    sim.crash("member/2", at_ms=20.0, restart_at_ms=200.0)
    result = sim.run(max_time_ms=5_000.0)
    assert result.completed == 20  # after the restart, retried requests complete


def test_timers_fire_periodically() -> None:
    program = load_source(HEARTBEAT, "sim.ded")
    sim = Simulation(program, seed=0, workload=Workload(clients=1, requests=0))
    sim.run(max_time_ms=1_000.0, drain_ms=1_000.0)
    beats = max(n for (n,) in sim.facts("node/0", "beats"))
    assert 95 <= beats <= 101  # one per 10 ms


def test_bad_settings_are_refused() -> None:
    with pytest.raises(SimulationError):
        Network(loss=1.5)
    with pytest.raises(SimulationError):
        Network(min_delay_ms=5, max_delay_ms=1)
    with pytest.raises(SimulationError):
        Workload(clients=0)
    program = load_source(QUORUM, "sim.ded")
    sim = Simulation(program)
    with pytest.raises(SimulationError, match="no node 'member/7'"):
        sim.crash("member/7", at_ms=1.0)
