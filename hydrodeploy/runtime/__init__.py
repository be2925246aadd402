"""Per-tick evaluation of compiled components (pure: no I/O), addresses and routing."""

from __future__ import annotations

from hydrodeploy.runtime.evaluator import NodeEvaluator, NodeState, TickResult
from hydrodeploy.runtime.plan import ComponentPlan, compile_component, compile_program
from hydrodeploy.runtime.topology import Topology

__all__ = [
    "ComponentPlan",
    "NodeEvaluator",
    "NodeState",
    "TickResult",
    "Topology",
    "compile_component",
    "compile_program",
]
