"""What a structure (a set of decouplings) costs, per component, for placement.

The structure runs unpartitioned in the performance simulation; each component's CPU per request
on its busiest node, split into the work on requests (which partitions share) and the per-tick
work (which each partition repeats), gives the :class:`~.choose.ComponentTerm` the MILP places
partitions with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydrodeploy.errors import HydrodeployError
from hydrodeploy.language import ir
from hydrodeploy.optimize.candidates import PartitionOption, Rejection, partitionable
from hydrodeploy.optimize.choose import ComponentTerm
from hydrodeploy.optimize.config import Configuration, Partitioning, derive
from hydrodeploy.optimize.costmodel import Calibration, load_point

SCREEN_LOADS = (0.25, 1.0)  # simulated loads, relative to the measured best point's clients


class EvaluationError(HydrodeployError):
    """A structure that cannot be evaluated (its rewrites do not apply, or nothing completes)."""


@dataclass
class StructureCosts:
    structure: Configuration
    options: dict[str, PartitionOption | Rejection]
    terms: list[ComponentTerm]
    host_cost: float  # CPU seconds per request of every node and client process, unpartitioned
    simulated: dict[str, Any] = field(default_factory=dict)

    def partitions(self) -> dict[str, PartitionOption]:
        return {c: o for c, o in self.options.items() if isinstance(o, PartitionOption) and self._term(c).partitionable}

    def _term(self, component: str) -> ComponentTerm:
        return next(t for t in self.terms if t.name == component)

    def configuration(self, counts: Mapping[str, int]) -> Configuration:
        """The structure with these partition counts."""
        parts = self.partitions()
        return self.structure.with_partitions(
            Partitioning(c, parts[c].key, k, parts[c].rewrite) for c, k in counts.items() if c in parts and k > 1
        )


def structure_costs(
    base: ir.Program,
    structure: Configuration,
    calibration: Calibration,
    quota: float | None,
    clients: int,
    timeout_ms: float | None = None,
) -> StructureCosts:
    """Per-component costs of ``structure`` with every node limited to ``quota`` cores: its CPU
    per request unpartitioned, in the performance simulation, and how that divides among ``k``
    partitions - the work on requests divides by ``k`` (co-hashing sends each partition its share
    of them), the per-tick work does not (each partition still ticks as often)."""
    try:
        options = partitionable(base, structure)
        parts = {c: o for c, o in options.items() if isinstance(o, PartitionOption)}
        program, topology = derive(base, structure)
    except HydrodeployError as exc:  # a rewrite that does not apply, or a program that does not check
        raise EvaluationError(str(exc)) from None
    quotas = {a: quota for _, a, _ in topology.addresses()}
    point = load_point(calibration, program, topology, quotas, clients, timeout_ms, seeds=1, loads=SCREEN_LOADS)
    if point.throughput <= 0:
        raise EvaluationError("no request completed in the performance simulation")
    costs = calibration.costs
    per_tick = costs.tick + costs.bookkeeping_tick
    instances = {c.name: c.instances for c in program.components}
    capacity = (quota or 1.0) - calibration.runtime.node
    busiest: dict[str, str] = {}
    for component, address, _ in topology.addresses():
        if point.busy.get(address, 0.0) >= point.busy.get(busiest.get(component, ""), -1.0):
            busiest[component] = address
    terms = []
    for c, address in busiest.items():
        cost = point.busy.get(address, 0.0) / point.throughput
        fixed = min(cost, point.ticks.get(address, 0.0) * per_tick / point.throughput)
        split = (cost - fixed) / 2 + fixed if c in parts else None
        terms.append(ComponentTerm(c, instances[c], capacity, cost, split))
    host_cost = sum(point.busy.values()) / point.throughput
    if not math.isnan(calibration.client_cost):
        host_cost += calibration.client_cost
    simulated = {"clients": point.clients, "throughput": point.throughput}
    return StructureCosts(structure, options, terms, host_cost, simulated)
