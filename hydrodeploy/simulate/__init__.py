"""Deterministic whole-system simulation of `.ded` programs."""

from __future__ import annotations

from hydrodeploy.simulate.config import Network, SimulationError, Workload
from hydrodeploy.simulate.results import LogEntry, Message, Output, RequestRecord, SimResult
from hydrodeploy.simulate.simulation import Simulation

__all__ = [
    "LogEntry",
    "Message",
    "Network",
    "Output",
    "RequestRecord",
    "SimResult",
    "Simulation",
    "SimulationError",
    "Workload",
]
