"""protocols/kvs.ded (the paper's running example, Listings 1-2) in simulation: each write gets
exactly one answer — a certificate that checks against the storage nodes' signatures when their
collision counts agree, an inconsistency report when they disagree — across many seeds, under
reordering, concurrent colliding writes, a storage node holding a stale colliding value, forged
signatures and message loss."""

from __future__ import annotations

import importlib.util
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hydrodeploy.language import ir, load_program, load_source
from hydrodeploy.simulate import Network, Simulation, Workload

PROGRAM = Path(__file__).resolve().parents[1] / "protocols" / "kvs.ded"
FUNCTIONS = PROGRAM.parent / "functions.py"
LEADER = "leader/0"
STORAGE = tuple(f"storage/{i}" for i in range(3))

SEEDS = range(30)
MANY_SEEDS = range(30, 230)

DEFAULT = Network(min_delay_ms=0.5, max_delay_ms=5.0, loss=0.0)
REORDERING = Network(min_delay_ms=0.05, max_delay_ms=40.0, loss=0.0)
LOSSY = Network(min_delay_ms=0.5, max_delay_ms=5.0, loss=0.1)


@cache
def functions() -> ModuleType:
    """protocols/functions.py, loaded from its file (the tests do not rely on sys.path)."""
    spec = importlib.util.spec_from_file_location("kvs_test_functions", FUNCTIONS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stale_values() -> dict[int, str]:
    """One value per weak-hash bucket, none of which a client ever writes."""
    out: dict[int, str] = {}
    k = 0
    while len(out) < functions().WEAK_BUCKETS:
        value = f"stale-{k}"
        out.setdefault(functions().weak_hash(value), value)
        k += 1
    return out


@cache
def program(weak: bool = False, preseed: bool = False, forged: bool = False) -> ir.Program:
    """kvs.ded, or a variant of it:

    - ``weak``: hash into 8 buckets (functions.weak_hash), so that writes collide often;
    - ``preseed``: storage/0 holds, from the start, a stale value in every bucket that the other
      storage nodes do not have — it reports one collision more than they do;
    - ``forged``: the leader signs as somebody else, so storage nodes must reject every write.
    """
    source = PROGRAM.read_text(encoding="utf-8")
    if weak:
        source = source.replace('"protocols.functions:hash"', '"protocols.functions:weak_hash"')
    if preseed:
        facts = "".join(f'  preseeded({b}, "{v}").\n' for b, v in sorted(stale_values().items()))
        rule = "  hashset(h, v) :- preseeded(h, v), self_index(0).\n"
        source = source.replace("storage {\n", "storage {\n" + facts + rule, 1)
    if forged:
        source = source.replace(
            "self(me), sign(me, val, leader_sig)", 'sign("mallory", val, leader_sig)', 1
        )
    if not (weak or preseed or forged):
        return load_program(str(PROGRAM))
    return load_source(source, str(PROGRAM))  # the path lets the runtime find protocols.functions


def simulate(
    seed: int,
    network: Network = DEFAULT,
    workload: Workload | None = None,
    **variant: bool,
) -> tuple[Simulation, Any]:
    sim = Simulation(
        program(**variant),
        seed=seed,
        network=network,
        workload=workload or Workload(clients=4, requests=200),
        record_messages=True,
    )
    return sim, sim.run(max_time_ms=60_000.0)


def written_values(result: Any) -> dict[int, str]:
    """Request id -> the value its client asked to store."""
    return {
        m.values[1]: m.values[2]
        for m in result.messages
        if m.relation == "client_in" and m.dst == LEADER
    }


def expected_cert(value: str) -> int:
    f = functions()
    return sum(f.cert_share(f.sign(s, value)) for s in STORAGE)


def assert_decisions(result: Any) -> Counter[str]:
    """Every answer is the right one for the storage responses the leader had when it answered:
    one valid, signed response per storage node; a certificate (over exactly those signatures)
    iff their collision counts agree, an inconsistency iff they differ. Returns the answer kinds."""
    assert not result.unexpected_outputs
    f = functions()
    values = written_values(result)
    answered_at: dict[int, float] = {}
    for m in result.messages:
        if m.relation in ("certificate", "inconsistency"):
            assert m.src == LEADER
            rid = m.values[0]
            answered_at[rid] = min(m.send_ms, answered_at.get(rid, float("inf")))
    responses: dict[int, dict[str, tuple[str, int]]] = defaultdict(dict)
    for m in result.messages:
        if m.relation != "from_storage" or m.deliver_ms is None:
            continue
        src, sig, client, rid, value, coll = m.values
        assert src == m.src and client == result.requests[rid].client and value == values[rid]
        assert f.verify(src, value, sig), f"{src} sent a bad signature"
        if m.deliver_ms <= answered_at.get(rid, float("-inf")):
            responses[rid][src] = (sig, coll)
    kinds: Counter[str] = Counter()
    for out in result.outputs:
        rid, value = out.values[0], out.values[1]
        assert value == values[rid], f"answer to {rid} is about another value"
        got = responses[rid]
        assert set(got) == set(STORAGE), f"{rid} answered with responses from {sorted(got)} only"
        counts = {coll for _, coll in got.values()}
        if out.relation == "certificate":
            _, _, coll, cert = out.values
            assert counts == {coll}, (
                f"certificate for {rid} although storage nodes reported {counts}"
            )
            assert cert == sum(f.cert_share(sig) for sig, _ in got.values()) == expected_cert(value)
        else:
            assert out.relation == "inconsistency"
            assert len(counts) > 1, (
                f"inconsistency reported for {rid} although all reported {counts}"
            )
        kinds[out.relation] += 1
    return kinds


def assert_exactly_once(result: Any, requests: int) -> None:
    assert result.completed == requests
    for rid, record in result.requests.items():
        assert record.replies == 1, f"request {rid} got {record.replies} answers"
    assert Counter(out.values[0] for out in result.outputs) == Counter(
        dict.fromkeys(result.requests, 1)
    )


def check_run(seed: int, network: Network = DEFAULT) -> None:
    sim, result = simulate(seed, network)
    assert_exactly_once(result, 200)
    kinds = assert_decisions(result)
    # 32-bit hashes of 200 random values: no collisions, so every write is certified with count 0.
    assert kinds == Counter(certificate=200)
    assert all(out.values[2] == 0 for out in result.outputs)
    values = set(written_values(result).values())
    for s in STORAGE:
        assert sim.facts(s, "hashset") == {(functions().hash(v), v) for v in values}
    # Responses are garbage-collected once answered.
    assert len(sim.facts(LEADER, "acks")) <= 3 * 4


@pytest.mark.parametrize("seed", SEEDS)
def test_certificate_per_request(seed: int) -> None:
    check_run(seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_reordering(seed: int) -> None:
    check_run(seed, REORDERING)


@pytest.mark.slow
@pytest.mark.parametrize("seed", MANY_SEEDS)
def test_many_seeds(seed: int) -> None:
    check_run(seed, DEFAULT if seed % 2 else REORDERING)


@pytest.mark.parametrize("seed", range(5))
def test_collisions_are_counted(seed: int) -> None:
    """One client writes sequentially, so every storage node has stored every earlier value: each
    certificate counts the earlier distinct values in the same (weak) hash bucket."""
    _, result = simulate(seed, workload=Workload(clients=1, requests=60), weak=True)
    assert_exactly_once(result, 60)
    assert assert_decisions(result) == Counter(certificate=60)
    f = functions()
    seen: set[str] = set()
    for out in sorted(result.outputs, key=lambda o: o.time_ms):
        _, value, coll, _ = out.values
        assert coll == len({v for v in seen if f.weak_hash(v) == f.weak_hash(value)} - {value})
        seen.add(value)
    assert any(out.values[2] > 0 for out in result.outputs)


@pytest.mark.parametrize("seed", SEEDS)
def test_concurrent_colliding_writes(seed: int) -> None:
    """Many clients, wide delays, 8 hash buckets: colliding writes reach storage nodes in different
    orders. Every write is still answered once, and each answer matches the responses."""
    _, result = simulate(seed, REORDERING, Workload(clients=8, requests=200), weak=True)
    assert_exactly_once(result, 200)
    assert_decisions(result)


def test_inconsistency_path_is_exercised() -> None:
    kinds: Counter[str] = Counter()
    for seed in range(5):
        _, result = simulate(seed, REORDERING, Workload(clients=8, requests=200), weak=True)
        kinds += assert_decisions(result)
    assert kinds["inconsistency"] >= 10
    assert kinds["certificate"] >= 10


@pytest.mark.parametrize("seed", range(5))
def test_stale_colliding_value_is_reported(seed: int) -> None:
    """storage/0 holds a stale value in every bucket: it always reports one collision more than
    the others, so every write is reported inconsistent."""
    sim, result = simulate(seed, workload=Workload(clients=1, requests=40), weak=True, preseed=True)
    assert_exactly_once(result, 40)
    assert assert_decisions(result) == Counter(inconsistency=40)
    assert set(stale_values().values()) <= {v for _, v in sim.facts("storage/0", "hashset")}
    assert not set(stale_values().values()) & {v for _, v in sim.facts("storage/1", "hashset")}


@pytest.mark.parametrize("seed", range(5))
def test_stale_colliding_value_with_concurrent_writes(seed: int) -> None:
    _, result = simulate(
        seed, REORDERING, Workload(clients=8, requests=200), weak=True, preseed=True
    )
    assert_exactly_once(result, 200)
    assert assert_decisions(result)["inconsistency"] > 0


def test_forged_leader_signature_is_rejected() -> None:
    """Storage nodes verify the leader's signature: forged writes are neither stored nor answered."""
    sim, result = simulate(0, workload=Workload(clients=2, requests=10), forged=True)
    assert result.completed == 0 and result.outputs == []
    assert not [m for m in result.messages if m.relation == "from_storage"]
    assert sum(1 for m in result.messages if m.relation == "to_storage") == 2 * 3
    for s in STORAGE:
        assert sim.facts(s, "hashset") == set()


@pytest.mark.parametrize("seed", range(10))
def test_message_loss_gives_no_wrong_answer(seed: int) -> None:
    _, result = simulate(seed, LOSSY, Workload(clients=40, requests=200), weak=True)
    assert_decisions(result)
    assert all(r.replies <= 1 for r in result.requests.values())
    assert result.completed > 0


@pytest.mark.parametrize("seed", range(10))
def test_message_loss_with_retries_gives_no_wrong_answer(seed: int) -> None:
    _, result = simulate(seed, LOSSY, Workload(clients=4, requests=100, timeout_ms=50.0))
    kinds = assert_decisions(result)
    assert result.completed > 0
    assert set(kinds) <= {"certificate"}


def test_functions_are_deterministic_and_cheap_to_check() -> None:
    f = functions()
    sig = f.sign("leader/0", "v1")
    assert sig == f.sign("leader/0", "v1") and len(sig) == f.SIG_HEX
    assert f.verify("leader/0", "v1", sig)
    assert not f.verify("storage/0", "v1", sig)
    assert not f.verify("leader/0", "v2", sig)
    assert f.hash("v1") == f.hash("v1") and 0 <= f.hash("v1") < 2**32
    assert 0 <= f.weak_hash("v1") < f.WEAK_BUCKETS
    assert f.cert_share(sig) == int(sig[:12], 16)
