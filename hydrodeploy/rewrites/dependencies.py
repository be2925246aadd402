"""Partitioning with dependencies (TR §4.2, Appendix B.2).

Precondition: a distribution policy exists that partitions consistently with the co-partition
dependencies of the component's rules — values related through shared variables, function atoms
(``hash(val, h)`` makes ``h`` a function of ``val``) and the relations' inferred functional
dependencies (:mod:`hydrodeploy.analysis.dependencies`) — where co-hashing alone finds none.

Mechanism: identical to co-hashing; a sender computes the function (``hash(val, key)``) to route a
fact partitioned on ``hash(attr)``.
"""

from __future__ import annotations

from hydrodeploy.language import ir
from hydrodeploy.rewrites.base import CheckResult, Partition, require
from hydrodeploy.rewrites.partitioning import check_policy, partition
from hydrodeploy.runtime.topology import Topology

NAME = "partitioning with dependencies"
SHORT = "dependencies"


def check(program: ir.Program, target: Partition) -> CheckResult:
    return check_policy(program, target, NAME, dependencies=True)


def apply(program: ir.Program, topology: Topology | None, target: Partition) -> tuple[ir.Program, Topology]:
    result = require(check(program, target), program)
    return partition(program, topology, target, result)
