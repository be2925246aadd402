"""Correct-by-construction rewrites of `.ded` programs (TR Appendices A and B).

Decoupling: :mod:`.mutually_independent`, :mod:`.functional`, :mod:`.monotonic`,
:mod:`.state_machine`, :mod:`.asymmetric` (shared parts in :mod:`.decoupling`, :mod:`.batching`).
Partitioning: :mod:`.cohashing`, :mod:`.dependencies`, :mod:`.partial`, :mod:`.sealing` (shared
parts in :mod:`.partitioning`). Program edits they are built from: :mod:`.mechanics`. Chains as
the CLI writes them: :mod:`.chain`; what applies where: :mod:`.explain`.

One module per rewrite, each with ``NAME``, ``check(program, target)`` and
``apply(program, topology, target)``; :data:`REGISTRY` lists them in the order ``explain`` tries
them. Decoupling targets are :class:`~.base.Decouple` (which rules move, and the new component's
name); partitioning targets are :class:`~.base.Partition` (component, key, number of partitions).
"""

from __future__ import annotations

from types import ModuleType

from hydrodeploy.rewrites import (
    asymmetric,
    cohashing,
    dependencies,
    functional,
    monotonic,
    mutually_independent,
    partial,
    sealing,
    state_machine,
)
from hydrodeploy.rewrites.base import (
    Applicable,
    CheckResult,
    Decouple,
    NotApplicable,
    Partition,
    Target,
)

DECOUPLING: tuple[ModuleType, ...] = (mutually_independent, functional, monotonic, state_machine, asymmetric)
PARTITIONING: tuple[ModuleType, ...] = (cohashing, dependencies, partial, sealing)
REGISTRY: tuple[ModuleType, ...] = DECOUPLING + PARTITIONING

__all__ = [
    "DECOUPLING",
    "PARTITIONING",
    "REGISTRY",
    "Applicable",
    "CheckResult",
    "Decouple",
    "NotApplicable",
    "Partition",
    "Target",
]
