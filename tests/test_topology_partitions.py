"""Topology partitions: a logical instance split into partitions runs one node per partition,
each of which is the logical node for the program (self, self_index, built-in addresses), and
``@x[key]`` reaches the partition the key hashes to."""

from __future__ import annotations

from hydrodeploy.language import load_source
from hydrodeploy.runtime import NodeEvaluator, Topology, compile_program

PROGRAM = load_source(
    """
    .component sender
    .component worker 2
    .input client_in(client, id) @ sender
    .output client_out(id, who, index)
    sender {
      job@w[id](client, id) :~ client_in(client, id), worker(w).
    }
    worker {
      client_out@client(id, me, i) :~ job(client, id), self(me), self_index(i).
    }
    """
)


def test_partitions_are_the_nodes_that_run() -> None:
    topology = Topology.of(PROGRAM, {"worker": 3})
    nodes = topology.addresses()
    assert ("sender", "sender/0", 0) in nodes
    assert [n for n in nodes if n[0] == "worker"] == [
        ("worker", f"worker/{i}#{j}", i) for i in range(2) for j in range(3)
    ]
    assert topology.instances["worker"] == ("worker/0", "worker/1")  # logical addresses
    assert topology.partition_counts() == {"worker": 3}
    assert topology.logical_address("worker/1#2") == "worker/1"
    assert topology.component_of("worker/1#2") == "worker"
    assert Topology.of(PROGRAM).addresses() == Topology.of(PROGRAM, {"worker": 1}).addresses()


def test_a_partition_is_its_logical_node_and_keys_pick_partitions() -> None:
    topology = Topology.of(PROGRAM, {"worker": 3})
    plans = compile_program(PROGRAM)
    sender = NodeEvaluator(plans["sender"], "sender/0", 0, topology)
    out = sender.tick(sender.initial_state(), [("client_in", ("client/0", 7))]).outbox
    assert sorted(dst for dst, _, _ in out) == ["worker/0#1", "worker/1#1"]  # 7 mod 3
    worker = NodeEvaluator(plans["worker"], "worker/1#1", 1, topology)
    reply = worker.tick(worker.initial_state(), [("job", ("client/0", 7))]).outbox
    assert reply == [("client/0", "client_out", (7, "worker/1", 1))]


def test_self_partition_tells_partitions_apart() -> None:
    program = load_source(
        """
        .component sender
        .component worker 2
        .input client_in(client, id) @ sender
        .output client_out(id, part)
        sender {
          job@w[id](client, id) :~ client_in(client, id), worker(w).
        }
        worker {
          client_out@client(id, j) :~ job(client, id), self_partition(j).
        }
        """
    )
    plans = compile_program(program)
    whole = Topology.of(program)
    split = Topology.of(program, {"worker": 3})
    for topology, address, expected in ((whole, "worker/1", 0), (split, "worker/1#2", 2)):
        worker = NodeEvaluator(plans["worker"], address, 1, topology)
        reply = worker.tick(worker.initial_state(), [("job", ("client/0", 5))]).outbox
        assert reply == [("client/0", "client_out", (5, expected))]
