"""Partitioning with co-hashing (TR §4.1, Appendix B.1).

Precondition: a distribution policy exists for the relations the component references that
partitions consistently with co-hashing — the facts every rule joins, groups or anti-joins share
the values they are partitioned on (:func:`hydrodeploy.analysis.policies.find_policy` without
dependencies) — the component takes no input from external clients, and its senders can be routed.

Mechanism: Redirection With Partitioning (:mod:`.partitioning`).
"""

from __future__ import annotations

from hydrodeploy.language import ir
from hydrodeploy.rewrites.base import CheckResult, Partition, require
from hydrodeploy.rewrites.partitioning import check_policy, partition
from hydrodeploy.runtime.topology import Topology

NAME = "partitioning with co-hashing"
SHORT = "cohashing"


def check(program: ir.Program, target: Partition) -> CheckResult:
    return check_policy(program, target, NAME, dependencies=False)


def apply(program: ir.Program, topology: Topology | None, target: Partition) -> tuple[ir.Program, Topology]:
    result = require(check(program, target), program)
    return partition(program, topology, target, result)
