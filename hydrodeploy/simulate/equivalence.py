"""Differential equivalence checking of a rewritten program against its original.

Both programs run in simulation under the same seeds, with the same client requests (a request's
attributes depend only on the seed and its id) on a network that delays and reorders messages (and
loses them, for protocols that tolerate loss: clients then retry). What clients see is compared:

- ``"per-request"`` — for order-insensitive protocols (voting, 2PC, the key-value example): the set
  of distinct output facts each request received must be the same, and so must the set of requests
  that completed;
- ``"log"`` — for replicated logs (Paxos): replies carry the slot a request was executed at. In each
  run the replies must define one sequence (no slot answered with two requests), and across the two
  runs the same requests must complete and be executed; with a single closed-loop client the
  executed sequences themselves must be equal. (With several clients, slot order legitimately
  depends on timing.)

Seeds give different schedules to the two programs (they send different messages), so equivalence
here means "the rewritten program's runs look like runs the original could produce", tested on
many schedules. A difference is a bug in the rewrite or in its precondition.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from hydrodeploy.language import ir
from hydrodeploy.runtime.topology import Topology
from hydrodeploy.simulate.config import Network, SimulationError, Workload
from hydrodeploy.simulate.results import SimResult
from hydrodeploy.simulate.simulation import Simulation

Mode = Literal["per-request", "log"]


@dataclass(frozen=True)
class Observation:
    """What the clients saw in one run."""

    completed: frozenset[int]
    outputs: dict[int, frozenset[tuple[str, tuple[Any, ...]]]]
    sequence: tuple[int, ...] = ()  # log mode: request ids in slot order (first execution)
    problems: tuple[str, ...] = ()  # log mode: inconsistencies within the run


@dataclass(frozen=True)
class Difference:
    seed: int
    message: str

    def __str__(self) -> str:
        return f"seed {self.seed}: {self.message}"


@dataclass(frozen=True)
class EquivalenceReport:
    seeds: tuple[int, ...]
    differences: tuple[Difference, ...]
    requests: int
    mode: Mode
    completed: int = 0  # requests completed by the rewritten program, over all seeds
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def equivalent(self) -> bool:
        return not self.differences

    def summary(self) -> str:
        verdict = "equivalent" if self.equivalent else f"{len(self.differences)} difference(s)"
        return f"{verdict} over {len(self.seeds)} seeds x {self.requests} requests ({self.mode})"


def observe(result: SimResult, program: ir.Program, mode: Mode) -> Observation:
    outputs: dict[int, set[tuple[str, tuple[Any, ...]]]] = {}
    id_column = _id_columns(program)
    for out in result.outputs:
        col = id_column.get(out.relation)
        if col is None or col >= len(out.values):
            continue
        rid = out.values[col]
        if isinstance(rid, int):
            outputs.setdefault(rid, set()).add((out.relation, out.values))
    completed = frozenset(r.id for r in result.requests.values() if r.done_ms is not None)
    frozen = {rid: frozenset(v) for rid, v in outputs.items()}
    if mode == "per-request":
        return Observation(completed, frozen)
    slot_col = _slot_columns(program)
    by_slot: dict[Any, set[int]] = {}
    for out in result.outputs:
        col, scol = id_column.get(out.relation), slot_col.get(out.relation)
        if col is None or scol is None:
            continue
        by_slot.setdefault(out.values[scol], set()).add(out.values[col])
    problems = tuple(
        f"slot {slot} answered for requests {sorted(ids)}" for slot, ids in sorted(by_slot.items()) if len(ids) > 1
    )
    sequence: list[int] = []
    seen: set[int] = set()
    for slot in sorted(by_slot):
        for rid in sorted(by_slot[slot]):
            if rid not in seen:
                seen.add(rid)
                sequence.append(rid)
    return Observation(completed, frozen, tuple(sequence), problems)


def _id_columns(program: ir.Program) -> dict[str, int]:
    out: dict[str, int] = {}
    for decl in program.outputs:
        if decl.attrs is not None and "id" in decl.attrs:
            out[decl.relation] = decl.attrs.index("id")
        elif decl.attrs is None:
            out[decl.relation] = 0
    return out


def _slot_columns(program: ir.Program) -> dict[str, int]:
    return {
        d.relation: d.attrs.index("slot") for d in program.outputs if d.attrs is not None and "slot" in d.attrs
    }


def compare(seed: int, original: Observation, rewritten: Observation, mode: Mode, single_client: bool) -> list[Difference]:
    diffs: list[Difference] = []
    if original.completed != rewritten.completed:
        only_o = sorted(original.completed - rewritten.completed)
        only_r = sorted(rewritten.completed - original.completed)
        diffs.append(
            Difference(
                seed,
                f"completed requests differ: only the original completed {only_o[:10]}, "
                f"only the rewritten {only_r[:10]}",
            )
        )
    if mode == "per-request":
        for rid in sorted(set(original.outputs) | set(rewritten.outputs)):
            a, b = original.outputs.get(rid, frozenset()), rewritten.outputs.get(rid, frozenset())
            if a != b:
                diffs.append(
                    Difference(seed, f"request {rid}: original answered {sorted(a)}, rewritten {sorted(b)}")
                )
                if len(diffs) >= 5:
                    break
        return diffs
    for problem in rewritten.problems:
        diffs.append(Difference(seed, f"rewritten: {problem}"))
    if set(original.sequence) != set(rewritten.sequence):
        diffs.append(
            Difference(
                seed,
                f"executed requests differ: original {sorted(set(original.sequence) - set(rewritten.sequence))[:10]} "
                f"not in rewritten, rewritten {sorted(set(rewritten.sequence) - set(original.sequence))[:10]} not in original",
            )
        )
    elif single_client and original.sequence != rewritten.sequence:
        diffs.append(Difference(seed, f"executed sequences differ: {original.sequence[:20]} vs {rewritten.sequence[:20]}"))
    return diffs


Crash = tuple[str, float, float | None]  # (address, at ms, restart at ms or None)


def run_once(
    program: ir.Program,
    seed: int,
    network: Network,
    workload: Workload,
    topology: Topology | None,
    max_time_ms: float,
    crashes: tuple[Crash, ...] = (),
) -> SimResult:
    sim = Simulation(program, seed=seed, network=network, workload=workload, topology=topology)
    for address, at_ms, restart_ms in crashes:
        sim.crash(address, at_ms, restart_ms)
    return sim.run(max_time_ms=max_time_ms)


def check_equivalence(
    original: ir.Program,
    rewritten: ir.Program,
    *,
    seeds: Iterable[int] = range(20),
    network: Network | None = None,
    workload: Workload | None = None,
    original_topology: Topology | None = None,
    rewritten_topology: Topology | None = None,
    mode: Mode = "per-request",
    max_time_ms: float = 60_000.0,
    stop_after: int = 3,
    crashes: tuple[Crash, ...] = (),
) -> EquivalenceReport:
    """Run both programs under every seed and compare what clients saw (module docstring). Stops
    after ``stop_after`` seeds with differences. ``crashes`` are applied to both runs (nodes that
    exist in both programs: components a rewrite kept)."""
    network = network or Network(min_delay_ms=0.05, max_delay_ms=10.0)
    workload = workload or Workload(clients=4, requests=50, timeout_ms=200.0 if network.loss > 0 else None)
    if [d.relation for d in original.inputs[:1]] != [d.relation for d in rewritten.inputs[:1]]:
        raise SimulationError("the two programs take different client inputs")
    seeds = tuple(seeds)
    diffs: list[Difference] = []
    failing = 0
    completed = 0
    done: list[int] = []
    for seed in seeds:
        a = observe(run_once(original, seed, network, workload, original_topology, max_time_ms, crashes), original, mode)
        b = observe(run_once(rewritten, seed, network, workload, rewritten_topology, max_time_ms, crashes), rewritten, mode)
        completed += len(b.completed)
        done.append(seed)
        found = compare(seed, a, b, mode, workload.clients == 1)
        if not a.completed and workload.requests:
            found.append(Difference(seed, "the original program completed no request: nothing was compared"))
        if found:
            diffs.extend(found)
            failing += 1
            if failing >= stop_after:
                break
    return EquivalenceReport(tuple(done), tuple(diffs), workload.requests, mode, completed)
