"""What a simulated run records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    client: str
    id: int
    sent_ms: float
    done_ms: float | None = None
    replies: int = 0
    attempts: int = 1

    @property
    def latency_ms(self) -> float | None:
        return None if self.done_ms is None else self.done_ms - self.sent_ms


@dataclass(frozen=True)
class Output:
    time_ms: float
    client: str
    relation: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Message:
    send_ms: float
    deliver_ms: float | None  # None: lost, or its destination was down
    src: str
    dst: str
    relation: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class LogEntry:
    time_ms: float
    relation: str
    values: tuple[Any, ...]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in [0, 100])."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


@dataclass
class SimResult:
    requests: dict[int, RequestRecord]
    outputs: list[Output]
    messages: list[Message]
    messages_by_component: dict[str, int]
    ticks_by_node: dict[str, int]
    end_ms: float
    events: int
    unexpected_outputs: list[Output] = field(default_factory=list)

    @property
    def completed(self) -> int:
        return sum(1 for r in self.requests.values() if r.done_ms is not None)

    def latencies_ms(self) -> list[float]:
        return sorted(r.latency_ms for r in self.requests.values() if r.latency_ms is not None)

    def latency_percentiles(self, qs: tuple[float, ...] = (50, 90, 99)) -> dict[float, float]:
        lat = self.latencies_ms()
        return {q: percentile(lat, q) for q in qs}
