"""The paper's scalable protocols, derived from the base ones by chaining rewrites
(protocols/scalable/*.steps, run by protocols/scalable/derive.sh): the committed programs are
exactly what the chains produce, they have the paper's shape, and they behave like the base
programs in simulation — over 200 seeds with reordering (slow); voting and 2PC also under message
loss, Paxos (which assumes reliable delivery) also when a proposer crashes."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from hydrodeploy.language import ir, load_program, print_program
from hydrodeploy.rewrites.chain import apply_chain, load_topology, parse_steps
from hydrodeploy.runtime.topology import Topology
from hydrodeploy.simulate import Network, Workload
from hydrodeploy.simulate.equivalence import check_equivalence

ROOT = Path(__file__).resolve().parents[1]
SCALABLE = ROOT / "protocols" / "scalable"

REORDERING = Network(min_delay_ms=0.05, max_delay_ms=10.0)
LOSSY = Network(min_delay_ms=0.5, max_delay_ms=5.0, loss=0.1)

# protocol -> (nodes, components) of the paper's configuration
SHAPES = {
    "voting": (26, {"leader": 1, "leader_broadcaster": 5, "leader_collector": 5, "participant": 15}),
    "two_pc": (
        46,
        {
            "coordinator": 1,
            "coordinator_vote_requester": 5,
            "coordinator_committer": 5,
            "coordinator_ender": 5,
            "participant": 15,
            "participant_voter": 15,
        },
    ),
    "paxos": (
        29,
        {
            "proposer": 2,
            "proposer_p2a_proxy": 6,
            "proposer_p2b_proxy": 6,
            "acceptor": 9,
            "acceptor_coordinator": 3,
            "replica": 3,
        },
    ),
}
PER_REQUEST = ["voting", "two_pc"]
ALL = [*PER_REQUEST, "paxos"]
# Paxos clients retry requests that reached no leader; replies carry slots, compared as a log.
PAXOS_WORKLOAD = Workload(clients=4, requests=40, timeout_ms=500.0)


@cache
def base(name: str) -> ir.Program:
    return load_program(str(ROOT / "protocols" / f"{name}.ded"))


@cache
def derived(name: str) -> tuple[ir.Program, Topology]:
    steps = parse_steps((SCALABLE / f"{name}.steps").read_text())
    program, topology, _ = apply_chain(base(name), steps, source=f"protocols/{name}.ded")
    return program, topology


@cache
def committed(name: str) -> tuple[ir.Program, Topology]:
    path = str(SCALABLE / f"{name}.ded")
    program = load_program(path)
    return program, load_topology(program, path)


@pytest.mark.parametrize("name", ALL)
def test_committed_program_is_what_the_chain_derives(name: str) -> None:
    program, topology = derived(name)
    assert print_program(program) == (SCALABLE / f"{name}.ded").read_text()
    on_disk, disk_topology = committed(name)
    assert on_disk == program
    assert disk_topology == topology


@pytest.mark.parametrize("name", ALL)
def test_scalable_program_has_the_papers_shape(name: str) -> None:
    _, topology = committed(name)
    nodes, per_component = SHAPES[name]
    assert len(topology.addresses()) == nodes
    counts: dict[str, int] = {}
    for component, _, _ in topology.addresses():
        counts[component] = counts.get(component, 0) + 1
    assert counts == per_component


@pytest.mark.parametrize("name", PER_REQUEST)
def test_scalable_program_behaves_like_the_base_under_loss(name: str) -> None:
    program, topology = committed(name)
    report = check_equivalence(
        base(name),
        program,
        rewritten_topology=topology,
        seeds=range(10),
        network=LOSSY,
        workload=Workload(clients=4, requests=40, timeout_ms=150.0),
        max_time_ms=20_000.0,
    )
    assert report.equivalent, "\n".join(map(str, report.differences))
    assert report.completed == 10 * 40


@pytest.mark.slow
@pytest.mark.parametrize("name", PER_REQUEST)
def test_scalable_program_behaves_like_the_base_over_200_seeds(name: str) -> None:
    program, topology = committed(name)
    report = check_equivalence(
        base(name),
        program,
        rewritten_topology=topology,
        seeds=range(200),
        network=REORDERING,
        workload=Workload(clients=4, requests=40),
    )
    assert report.equivalent, "\n".join(map(str, report.differences))
    assert len(report.seeds) == 200 and report.completed == 200 * 40


@pytest.mark.parametrize("clients", [1, 4])
def test_scalable_paxos_executes_what_base_paxos_executes(clients: int) -> None:
    """With one client the executed sequences must be equal; with several, the same requests."""
    program, topology = committed("paxos")
    report = check_equivalence(
        base("paxos"),
        program,
        rewritten_topology=topology,
        seeds=range(6),
        network=REORDERING,
        workload=Workload(clients=clients, requests=30, timeout_ms=500.0),
        mode="log",
    )
    assert report.equivalent, "\n".join(map(str, report.differences))
    assert report.completed == 6 * 30


@pytest.mark.parametrize("crashed", ["proposer/0", "proposer/1"])
def test_scalable_paxos_survives_a_proposer_crash_like_base_paxos(crashed: str) -> None:
    """A proposer crashes for good mid-run (whichever leads at that time, depending on the seed):
    the other is elected, reconciles the partitioned acceptors' logs and finishes the work."""
    program, topology = committed("paxos")
    report = check_equivalence(
        base("paxos"),
        program,
        rewritten_topology=topology,
        seeds=range(6),
        network=Network(min_delay_ms=0.05, max_delay_ms=30.0),
        workload=Workload(clients=4, requests=40, timeout_ms=400.0),
        mode="log",
        crashes=((crashed, 250.0, None),),
        max_time_ms=30_000.0,
    )
    assert report.equivalent, "\n".join(map(str, report.differences))
    assert report.completed == 6 * 40


@pytest.mark.slow
def test_scalable_paxos_behaves_like_base_paxos_over_200_seeds() -> None:
    program, topology = committed("paxos")
    report = check_equivalence(
        base("paxos"),
        program,
        rewritten_topology=topology,
        seeds=range(200),
        network=REORDERING,
        workload=PAXOS_WORKLOAD,
        mode="log",
    )
    assert report.equivalent, "\n".join(map(str, report.differences))
    assert len(report.seeds) == 200 and report.completed == 200 * PAXOS_WORKLOAD.requests
