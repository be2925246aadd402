"""Placement under the machine budget: how many partitions each component gets, by MILP.

For one structure (which decouplings), each component ``c`` with ``I_c`` logical instances has a
CPU cost per request on its busiest node, measured in the performance simulation unpartitioned
and split in two; that fits ``cost_c(k) = a_c / k + b_c`` for ``k`` partitions (``a_c``: the work
partitions share, ``b_c``: what each partition repeats). A node may use ``capacity_c`` cores.
With a binary ``z_ck`` per choice of ``k``, the mixed-integer program (``scipy.optimize.milp``,
HiGHS) is solved twice. First the highest throughput ``X*`` the budget allows::

    maximise   X
    subject to sum_k z_ck = 1                                  for every partitionable c
               X <= sum_k z_ck * capacity_c / cost_c(k)        for every partitionable c
               X <= capacity_c / cost_c(1)                     for every other c
               machines = sum_c I_c * sum_k k * z_ck  <=  budget
               (host_cost + sum_c I_c * sum_k (k - 1) * b_c * z_ck) * X
                   + node_cores * machines  <=  host_cores              (local clusters)

(``host_cost``: the CPU per request of every process unpartitioned; each partition beyond the first
repeats its ``b_c``; the products ``X * z_ck`` are linearised with one continuous variable each),
then, under the same constraints, the fewest machines that still reach ``(1 - SLACK) * X*``
(among those, the highest ``X``)::

    minimise   machines - X / (2 X*)
    subject to X >= (1 - SLACK) * X*,  and the above

A lone maximisation buys every machine that adds anything at all: for two-phase commit it spent
44 of 46 machines in the first step for the last fraction of a percent of predicted throughput,
on a model that cannot tell such differences apart; the machines left over keep the host's
cores (a local cluster) and the budget for what the next measurement shows. The latency
budget is checked on each structure's unloaded latency before it is offered to the solver.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

# Throughput given up for fewer machines. The loop cannot act on less: it treats predictions within
# 5% as equal (``loop._bucket``), keeps a step only when it gains the workload's minimum (5% by
# default), and its predictions err by more than that (the prediction backtest: mean |error| of
# 15-20% per iteration).
SLACK = 0.05
MAX_PARTITIONS = 16


@dataclass(frozen=True)
class ComponentTerm:
    name: str
    instances: int
    capacity: float  # cores a node may use for requests
    cost1: float  # CPU seconds per request of its busiest node, unpartitioned
    cost2: float | None = None  # the same with two partitions per instance (None: not partitionable)

    @property
    def partitionable(self) -> bool:
        return self.cost2 is not None

    def shares(self) -> tuple[float, float]:
        """(a, b) of cost(k) = a / k + b."""
        if self.cost2 is None:
            return 0.0, self.cost1
        a = max(0.0, 2.0 * (self.cost1 - self.cost2))
        b = max(0.0, self.cost1 - a)
        return a, b

    def cost(self, k: int) -> float:
        a, b = self.shares()
        return a / k + b

    def throughput(self, k: int) -> float:
        c = self.cost(k)
        return self.capacity / c if c > 0 else math.inf

    def repeated(self, k: int) -> float:
        """CPU per request the partitions beyond each instance's first repeat: ``I (k - 1) b``."""
        return self.instances * (k - 1) * self.shares()[1]

    def fitted(self, k: int, cost: float) -> ComponentTerm:
        """The same shape (``a / k + b``, both scaled alike) through a measured ``cost`` at ``k``."""
        factor = cost / self.cost(k)
        return replace(self, cost1=self.cost1 * factor, cost2=None if self.cost2 is None else self.cost2 * factor)


@dataclass(frozen=True)
class Placement:
    counts: dict[str, int]  # partitions per instance of each component
    throughput: float  # the linear model's maximum throughput
    machines: int
    bound: str  # what limits it: a component, "host CPU" or "machine budget"
    status: str = "optimal"
    components: list[dict[str, Any]] = field(default_factory=list)  # per component: k, cost, throughput
    maximum: float = 0.0  # the highest throughput any placement within the budget reaches (place: X*)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def place(
    terms: Sequence[ComponentTerm],
    budget: int | None,
    host_cores: float | None = None,
    host_cost: float = 0.0,
    node_cores: float = 0.0,
    max_partitions: int = MAX_PARTITIONS,
    slack: float = SLACK,
) -> Placement:
    """The fewest partitions reaching within ``slack`` of the highest throughput the budget
    allows (module docstring)."""
    fixed_machines = sum(t.instances for t in terms if not t.partitionable)
    parts = [t for t in terms if t.partitionable]
    limit = budget if budget is not None else fixed_machines + sum(t.instances * max_partitions for t in parts)
    if fixed_machines + sum(t.instances for t in parts) > limit:
        return Placement({}, 0.0, fixed_machines + sum(t.instances for t in parts), "machine budget", "infeasible")
    choices: list[tuple[ComponentTerm, int]] = []
    for t in parts:
        room = (limit - fixed_machines - sum(u.instances for u in parts if u is not t)) // t.instances + 1
        for k in range(1, max(1, min(max_partitions, room)) + 1):
            choices.append((t, k))
    caps = [t.throughput(1) for t in terms if not t.partitionable]
    upper = min(caps) if caps else math.inf
    best_each = [max(t.throughput(k) for u, k in choices if u is t) for t in parts]
    reach = min([upper, *best_each]) if (parts or caps) else math.inf  # no placement goes further
    scale = reach if math.isfinite(reach) and reach > 0 else 1.0
    host_limited = host_cores is not None and host_cost > 0
    # host CPU per request that the partitions beyond the first repeat (each ticks on its own)
    repeats = [t.repeated(k) for t, k in choices]
    n = len(choices)
    nw = n if host_limited and any(r > 0 for r in repeats) and math.isfinite(reach) else 0
    nx = 1 + n + nw  # X, z_ck, and w_ck = X * z_ck where partitions repeat work
    rows: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []
    for t in parts:
        one = np.zeros(nx)
        cap = np.zeros(nx)
        cap[0] = 1.0
        for j, (u, k) in enumerate(choices, start=1):
            if u is t:
                one[j] = 1.0
                cap[j] = -min(u.throughput(k), 1e12)
        rows.extend([one, cap])
        lo.extend([1.0, -np.inf])
        hi.extend([1.0, 0.0])
    machines_row = np.zeros(nx)
    for j, (t, k) in enumerate(choices, start=1):
        machines_row[j] = t.instances * k
    rows.append(machines_row)
    lo.append(-np.inf)
    hi.append(float(limit - fixed_machines))
    if host_limited:
        assert host_cores is not None
        host = machines_row * node_cores
        host[0] = host_cost
        host[1 + n :] = repeats[:nw]
        rows.append(host)
        lo.append(-np.inf)
        hi.append(host_cores - node_cores * fixed_machines)
        for j in range(nw):  # w_j >= X - reach * (1 - z_j): X when choice j is taken
            link = np.zeros(nx)
            link[1 + n + j] = 1.0
            link[0] = -1.0
            link[1 + j] = -reach
            rows.append(link)
            lo.append(-reach)
            hi.append(np.inf)
    bounds_hi = np.full(nx, 1.0)
    bounds_hi[0] = upper if math.isfinite(upper) else 1e12
    bounds_hi[1 + n :] = reach if nw else 0.0
    integrality = np.zeros(nx)
    integrality[1 : 1 + n] = 1
    bounds = Bounds(np.zeros(nx), bounds_hi)
    # first the highest throughput (scaled near 1 for the solver's tolerances)
    highest = np.zeros(nx)
    highest[0] = -1.0 / scale
    first = milp(highest, integrality=integrality, bounds=bounds, constraints=LinearConstraint(np.array(rows), np.array(lo), np.array(hi)))
    if not first.success or first.x is None:
        return Placement({}, 0.0, fixed_machines, "machine budget", "infeasible")
    x = first.x
    maximum = float(x[0])
    if maximum > 0 and slack > 0:
        # then the fewest machines within slack of it; X breaks ties (X / 2X* < 1 machine)
        fewest = machines_row.copy()
        fewest[0] = -0.5 / maximum
        floor = np.zeros(nx)
        floor[0] = 1.0
        second = milp(
            fewest,
            integrality=integrality,
            bounds=bounds,
            constraints=LinearConstraint(np.array([*rows, floor]), np.array([*lo, (1.0 - slack) * maximum]), np.array([*hi, np.inf])),
        )
        if second.success and second.x is not None:
            x = second.x
    counts = {t.name: 1 for t in terms}
    for j, (t, k) in enumerate(choices, start=1):
        if x[j] > 0.5:
            counts[t.name] = k
    machines = sum(t.instances * counts[t.name] for t in terms)
    throughput = float(x[0])
    per = {t.name: t.throughput(counts[t.name]) for t in terms}
    bound = min(per, key=lambda n: per[n]) if per else ""
    if host_limited:
        assert host_cores is not None
        host_x = (host_cores - node_cores * machines) / host_per_request(terms, counts, host_cost)
        if host_x <= per.get(bound, math.inf) * (1 + 1e-6):
            bound = "host CPU"
    components = [
        {"component": t.name, "instances": t.instances, "partitions": counts[t.name], "cost": t.cost(counts[t.name]),
         "throughput": per[t.name], "partitionable": t.partitionable}
        for t in terms
    ]  # fmt: skip
    return Placement(counts, throughput, machines, bound, "optimal", components, maximum)


def host_per_request(terms: Sequence[ComponentTerm], counts: Mapping[str, int], host_cost: float) -> float:
    """CPU seconds per request of every process on the host with these partition counts:
    ``host_cost`` (everything unpartitioned, clients included) plus the work each partition
    beyond an instance's first repeats, ``I_c * (k - 1) * b_c``."""
    return host_cost + sum(t.repeated(counts.get(t.name, 1)) for t in terms)


def terms_from_points(
    instances: Mapping[str, int],
    capacity: Mapping[str, float],
    cost1: Mapping[str, float],
    cost2: Mapping[str, float],
    partitionable: Mapping[str, bool],
) -> list[ComponentTerm]:
    """Component terms from simulated per-request costs (busiest node of each component)."""
    return [
        ComponentTerm(c, instances[c], capacity[c], cost1[c], cost2.get(c) if partitionable.get(c) else None)
        for c in instances
    ]


def cheapest(
    terms: Sequence[ComponentTerm],
    throughput: float,
    host_cores: float | None = None,
    host_cost: float = 0.0,
    node_cores: float = 0.0,
    max_partitions: int = 64,
) -> Placement:
    """The fewest machines whose every component sustains ``throughput`` (MILP: minimise
    ``sum_c I_c * sum_k k * z_ck`` subject to ``sum_k z_ck = 1`` and
    ``sum_k z_ck * capacity_c / cost_c(k) >= throughput``, and on a local cluster the host's cores
    with the work every partition repeats, as in :func:`place`)."""
    fixed = [t for t in terms if not t.partitionable]
    for t in fixed:
        if t.throughput(1) < throughput:
            return Placement({}, t.throughput(1), 0, t.name, "infeasible")
    parts = [t for t in terms if t.partitionable]
    choices = [(t, k) for t in parts for k in range(1, max_partitions + 1) if t.throughput(k) >= throughput]
    for t in parts:
        if not any(u is t for u, _ in choices):
            return Placement({}, t.throughput(max_partitions), 0, t.name, "infeasible")
    fixed_machines = sum(t.instances for t in fixed)
    counts = {t.name: 1 for t in terms}
    if choices:
        nx = len(choices)
        machines_row = np.array([t.instances * k for t, k in choices], dtype=float)
        rows: list[np.ndarray] = []
        lo: list[float] = []
        hi: list[float] = []
        for t in parts:
            rows.append(np.array([1.0 if u is t else 0.0 for u, _ in choices]))
            lo.append(1.0)
            hi.append(1.0)
        if host_cores is not None and host_cost > 0:  # each partition beyond the first repeats b_c (place)
            rows.append(np.array([node_cores * t.instances * k + t.repeated(k) * throughput for t, k in choices]))
            lo.append(-np.inf)
            hi.append(host_cores - node_cores * fixed_machines - host_cost * throughput)
        result = milp(
            machines_row,
            integrality=np.ones(nx),
            bounds=Bounds(np.zeros(nx), np.ones(nx)),
            constraints=LinearConstraint(np.array(rows), np.array(lo), np.array(hi)),
        )
        if not result.success or result.x is None:
            return Placement({}, 0.0, 0, "host CPU", "infeasible")
        for j, (t, k) in enumerate(choices):
            if result.x[j] > 0.5:
                counts[t.name] = k
    machines = sum(t.instances * counts[t.name] for t in terms)
    per = {t.name: t.throughput(counts[t.name]) for t in terms}
    bound = min(per, key=lambda n: per[n])
    components = [
        {"component": t.name, "instances": t.instances, "partitions": counts[t.name], "cost": t.cost(counts[t.name]),
         "throughput": per[t.name], "partitionable": t.partitionable}
        for t in terms
    ]  # fmt: skip
    return Placement(counts, per[bound], machines, bound, "optimal", components)
