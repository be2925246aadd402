"""What a structure (a set of decouplings) costs, per component, for placement.

The structure runs in the performance simulation twice under the same load: unpartitioned, and
with every partitionable component split in two. Each component's CPU per request on its busiest
node, in both runs, gives the :class:`~.choose.ComponentTerm` the MILP places partitions with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydrodeploy.errors import HydrodeployError, RewriteError
from hydrodeploy.language import ir
from hydrodeploy.optimize.candidates import PartitionOption, Rejection, partitionable
from hydrodeploy.optimize.choose import ComponentTerm
from hydrodeploy.optimize.config import Configuration, Partitioning, derive
from hydrodeploy.optimize.costmodel import Calibration, load_point
from hydrodeploy.optimize.perfsim import SimPoint
from hydrodeploy.runtime.topology import Topology

SCREEN_LOADS = (1.0, 4.0)  # simulated loads, relative to the measured best point's clients


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


def component_costs(busy: Mapping[str, float], throughput: float, topology: Topology) -> dict[str, float]:
    """CPU seconds per request of each component's busiest node."""
    out: dict[str, float] = {}
    if throughput <= 0:
        return out
    for component, address, _ in topology.addresses():
        out[component] = max(out.get(component, 0.0), busy.get(address, 0.0) / throughput)
    return out


def structure_costs(
    base: ir.Program,
    structure: Configuration,
    calibration: Calibration,
    quota: float | None,
    clients: int,
    timeout_ms: float | None = None,
) -> StructureCosts:
    """Per-component costs of ``structure`` with every node limited to ``quota`` cores."""
    try:
        options = partitionable(base, structure)
        parts = {c: o for c, o in options.items() if isinstance(o, PartitionOption)}
        prog1, topo1 = derive(base, structure)
        split = structure.with_partitions(Partitioning(c, o.key, 2, o.rewrite) for c, o in parts.items())
        try:
            prog2, topo2 = derive(base, split)
        except RewriteError:
            parts, prog2, topo2 = {}, prog1, topo1
    except RewriteError as exc:
        raise EvaluationError(str(exc)) from None

    def run(program: ir.Program, topology: Topology) -> SimPoint:
        quotas = {a: quota for _, a, _ in topology.addresses()}
        return load_point(calibration, program, topology, quotas, clients, timeout_ms, seeds=1, loads=SCREEN_LOADS)

    p1, p2 = run(prog1, topo1), run(prog2, topo2)
    if p1.throughput <= 0 or p2.throughput <= 0:
        raise EvaluationError("no request completed in the performance simulation")
    instances = {c.name: c.instances for c in prog1.components}
    capacity = (quota or 1.0) - calibration.runtime.node
    cost1 = component_costs(p1.busy, p1.throughput, topo1)
    cost2 = component_costs(p2.busy, p2.throughput, topo2)
    terms = [
        ComponentTerm(c, instances[c], capacity, cost1.get(c, 0.0), cost2.get(c) if c in parts else None) for c in instances
    ]
    host_cost = sum(p1.busy.values()) / p1.throughput
    if not math.isnan(calibration.client_cost):
        host_cost += calibration.client_cost
    simulated = {"clients": [p1.clients, p2.clients], "unpartitioned": p1.throughput, "split": p2.throughput}
    return StructureCosts(structure, options, terms, host_cost, simulated)
