"""Every reference protocol as real node processes on loopback, driven by real client processes:
the guarantees its simulation tests check, checked on what the clients received (and on the
nodes' durable logs for 2PC). Frames from outside the deployment are dropped and counted."""

from __future__ import annotations

import asyncio
import importlib.util
import struct
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
from network_harness import PROTOCOLS, Recorded, run_protocol

from hydrodeploy.bench.experiment import Bench
from hydrodeploy.runtime.codec import DATA, Sealer, new_nonce

pytestmark = pytest.mark.e2e


def assert_every_request_answered(rec: Recorded, id_column: int = 0) -> dict[int, list[tuple[str, str, tuple]]]:
    """Every request the clients sent got an answer, to the client that sent it; nothing else was
    answered."""
    assert rec.requests, "no request was sent"
    assert rec.outstanding == 0, f"{rec.outstanding} requests never answered"
    assert rec.unmatched == 0, "a reply matched no request"
    by_id = rec.replies_by_id(id_column)
    assert set(by_id) == set(rec.requests)
    for rid, replies in by_id.items():
        assert {client for client, _, _ in replies} == {rec.requests[rid][0]}
    assert rec.point.completed > 0 and rec.point.throughput > 0
    return by_id


def test_voting(tmp_path: Path) -> None:
    rec = run_protocol("voting", tmp_path, clients=8)
    by_id = assert_every_request_answered(rec)
    for rid, replies in by_id.items():
        assert len(replies) == 1, f"request {rid} answered {len(replies)} times"
        (_, relation, (_, payload)) = replies[0]
        client, (sent_client, _, sent_payload) = rec.requests[rid]
        assert relation == "client_out" and payload == sent_payload and sent_client == client
    # a reply needs a vote from every participant: the leader received one per request from each
    leader = rec.final["leader/0"]
    votes = Counter()
    for relation, src, msgs, _ in leader["channels"]["received"]:
        if relation == "vote":
            votes[src] += msgs
    assert set(votes) == {"participant/0", "participant/1", "participant/2"}
    assert min(votes.values()) >= len(rec.requests)


def test_two_pc_answers_once_after_every_record_is_durable(tmp_path: Path) -> None:
    rec = run_protocol("two_pc", tmp_path, clients=8)
    by_id = assert_every_request_answered(rec)
    assert all(len(replies) == 1 for replies in by_id.values())
    logged = {node: Counter((rel, values[1]) for rel, values in facts) for node, facts in rec.durable.items()}
    assert set(logged) == {"coordinator/0", "participant/0", "participant/1", "participant/2"}
    for rid in by_id:
        for record in ("coord_commit_log", "coord_end_log"):
            assert logged["coordinator/0"][(record, rid)] == 1, f"{record} of {rid}"
        for p in ("participant/0", "participant/1", "participant/2"):
            for record in ("part_vote_log", "part_commit_log"):
                assert logged[p][(record, rid)] == 1, f"{record} of {rid} at {p}"
    for node, final in rec.final.items():
        if node in logged:
            assert final["log"]["records"] == sum(logged[node].values())
            assert final["log"]["fsyncs"] > 0


def test_paxos_replies_agree_on_one_command_per_slot(tmp_path: Path) -> None:
    rec = run_protocol("paxos", tmp_path, clients=8, timeout_ms=300.0)
    by_id = assert_every_request_answered(rec)
    command_in: dict[int, int] = {}  # slot -> the command every reply for it names
    for rid, replies in by_id.items():
        slots = {values[1] for _, _, values in replies}
        # a command may hold more than one slot (a retry, or a request both proposers buffered
        # while the first election settled, is proposed again: executed once, answered again),
        # but a slot holds one command, at every replica
        for slot in slots:
            assert command_in.setdefault(slot, rid) == rid, f"slot {slot} answered for {command_in[slot]} and {rid}"
        assert len(replies) <= 3 * len(slots), "more answers than replicas x slots"


def _functions() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kvs_functions", PROTOCOLS / "functions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kvs_certifies_every_value(tmp_path: Path) -> None:
    f = _functions()
    rec = run_protocol("kvs", tmp_path, clients=8)
    by_id = assert_every_request_answered(rec)
    storage = ("storage/0", "storage/1", "storage/2")
    for rid, replies in by_id.items():
        assert len(replies) == 1
        _, relation, values = replies[0]
        _, (_, _, value) = rec.requests[rid]
        assert relation == "certificate", f"{rid}: {relation}"
        _, got_value, collisions, cert = values
        assert got_value == value and collisions == 0
        assert cert == sum(f.cert_share(f.sign(s, value)) for s in storage)


def test_frames_from_outside_the_deployment_are_dropped_and_counted(tmp_path: Path) -> None:
    """Forged (another secret), replayed (an authentic frame of another connection), truncated
    and unparseable input reaches the leader's port before the load; the leader drops and
    counts each, answers no forged request, and serves the clients as usual."""
    forged_id = 12345

    async def attack(bench: Bench) -> None:
        directory = bench.deployment.directory
        assert directory is not None
        host, port = directory.nodes["leader/0"]
        request = [("leader/0", "client_in", [("client/0", forged_id, "p")])]
        forged, _ = Sealer(b"not the secret" * 3, b"n" * 16).data("clients/0", request)
        _, w = await asyncio.open_connection(host, port)
        w.write(forged * 3)
        await w.drain()
        w.close()
        # an authentic frame replayed from another connection: tagged with that one's nonce
        replayed, _ = Sealer(bench.deployment.secret, new_nonce()).data("clients/0", request)
        r, w = await asyncio.open_connection(host, port)
        await r.readexactly(5 + 32 + 16)  # this connection's greeting
        w.write(replayed)
        await w.drain()
        w.close()
        _, w = await asyncio.open_connection(host, port)
        w.write(forged[:-5])  # truncated by the end of the stream
        await w.drain()
        w.close()
        _, w = await asyncio.open_connection(host, port)
        w.write(struct.pack(">IB", 2**31, DATA) + b"junk" * 10)  # impossible length
        await w.drain()
        w.close()
        await asyncio.sleep(0.2)

    rec = run_protocol("voting", tmp_path, clients=4, before_load=attack)
    assert_every_request_answered(rec)
    assert forged_id not in rec.replies_by_id()
    frames = rec.final["leader/0"]["frames"]
    assert frames["forged"] == 4
    assert frames["truncated"] == 1
    assert frames["malformed"] == 1
