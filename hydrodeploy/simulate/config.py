"""Settings of a simulated run: the network's behaviour and the client workload."""

from __future__ import annotations

from dataclasses import dataclass

from hydrodeploy.errors import HydrodeployError


class SimulationError(HydrodeployError):
    """A simulation that cannot be set up as asked (bad settings, a program clients cannot drive)."""


@dataclass(frozen=True)
class Network:
    """Each message gets an independent delay drawn uniformly from [min, max] ms (so messages are
    reordered), and is lost with probability ``loss``. ``tick_ms`` is how long a node takes per
    tick; messages arriving within it are handled in one tick."""

    min_delay_ms: float = 0.5
    max_delay_ms: float = 5.0
    loss: float = 0.0
    tick_ms: float = 0.05

    def __post_init__(self) -> None:
        if not 0 <= self.min_delay_ms <= self.max_delay_ms:
            raise SimulationError(f"delays must satisfy 0 <= min <= max, got {self.min_delay_ms}..{self.max_delay_ms}")
        if not 0 <= self.loss < 1:
            raise SimulationError(f"loss must be in [0, 1), got {self.loss}")
        if self.tick_ms <= 0:
            raise SimulationError(f"tick_ms must be positive, got {self.tick_ms}")


@dataclass(frozen=True)
class Workload:
    """Closed-loop virtual clients: ``clients`` of them issue ``requests`` requests in total, each
    waiting for the reply to its previous request. With ``timeout_ms`` a client re-sends a request
    that got no reply in time (same id)."""

    clients: int = 4
    requests: int = 100
    timeout_ms: float | None = None
    payload_bytes: int = 16
    keys: int = 1000

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise SimulationError(f"need at least one client, got {self.clients}")
        if self.requests < 0:
            raise SimulationError(f"requests must be >= 0, got {self.requests}")
        if self.timeout_ms is not None and self.timeout_ms <= 0:
            raise SimulationError(f"timeout_ms must be positive, got {self.timeout_ms}")
        if self.payload_bytes < 1:
            raise SimulationError(f"payload_bytes must be >= 1, got {self.payload_bytes}")
