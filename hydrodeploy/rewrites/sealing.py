"""Partitioned sealing (TR Appendix B.4).

Sealing sends a set of facts together with their number, so the receiver knows when it has them
all (``p1b(acceptor, ballot, n)`` with ``n`` log entries in ``p1b_log``). When the sender is
partially partitioned, each partition holds part of the set: each sends its part and its part's
count, tagged with the index of the ordered input that triggered it (the report's ``inCommit``)
and its partition number; receivers rebuild the original count by summing the parts once every
partition's part is in (the report's ``outCountSum`` and ``outCountPartitions``).

Precondition: partial partitioning applies (:mod:`.partial`), except that some outputs send
per-partition aggregates (``count`` or ``sum`` over partitioned data); each such output is
triggered by exactly one ordered input, carries its aggregate in one attribute, and is read by
components of the program (not by clients), which learn the number of partitions.

Mechanism: partial partitioning, with the sealed outputs renamed ``<output>_part`` and extended
with ``(index, partition)``, and in every receiver rules rebuilding ``<output>`` from the parts.
"""

from __future__ import annotations

from hydrodeploy.language import ir
from hydrodeploy.rewrites.base import CheckResult, NotApplicable, Partition, require
from hydrodeploy.rewrites.partial import Plan, describe, mechanism, plan
from hydrodeploy.runtime.topology import Topology

NAME = "partitioned sealing"
SHORT = "sealing"


def check(program: ir.Program, target: Partition) -> CheckResult:
    p = plan(program, target)
    if isinstance(p, NotApplicable):
        return NotApplicable(NAME, target, p.reason, p.span)
    if not p.sealed_outputs:
        return NotApplicable(NAME, target, "no output sends a per-partition aggregate (partial partitioning applies)", None)
    return describe(program, target, p, NAME)


def apply(program: ir.Program, topology: Topology | None, target: Partition) -> tuple[ir.Program, Topology]:
    require(check(program, target), program)
    p = plan(program, target)
    assert isinstance(p, Plan)
    return mechanism(program, topology, p)
