"""What the protocol simulation tests share: seed ranges, network settings and one way to run a
program under them."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from hydrodeploy.language import ir, load_program
from hydrodeploy.simulate import Network, SimResult, Simulation, Workload

PROTOCOLS = Path(__file__).resolve().parents[1] / "protocols"

SEEDS = range(30)
MANY_SEEDS = range(30, 230)

DEFAULT = Network(min_delay_ms=0.5, max_delay_ms=5.0, loss=0.0)
REORDERING = Network(min_delay_ms=0.05, max_delay_ms=40.0, loss=0.0)
LOSSY = Network(min_delay_ms=0.5, max_delay_ms=5.0, loss=0.1)

Crash = tuple[str, float, float | None]  # node, when, when it restarts (None: never)


@cache
def protocol(name: str) -> ir.Program:
    """protocols/<name>.ded, parsed and checked once per test session."""
    return load_program(str(PROTOCOLS / f"{name}.ded"))


def run(
    program: ir.Program,
    seed: int,
    network: Network = DEFAULT,
    workload: Workload | None = None,
    crash: Crash | None = None,
) -> tuple[Simulation, SimResult]:
    """Simulate ``program`` with messages recorded (default: 4 clients, 200 requests)."""
    sim = Simulation(
        program,
        seed=seed,
        network=network,
        workload=workload or Workload(clients=4, requests=200),
        record_messages=True,
    )
    if crash is not None:
        node, at_ms, restart_ms = crash
        sim.crash(node, at_ms=at_ms, restart_at_ms=restart_ms)
    return sim, sim.run(max_time_ms=60_000.0)
