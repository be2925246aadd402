"""Per-node profiles from the counters node processes report (:meth:`Node.metrics`), differenced
over a measurement window.

Every rate is per second of the window (the node's own monotonic clock). CPU figures are cores:
process CPU seconds per second, and for rules the thread CPU time the evaluator charges each rule
(:data:`hydrodeploy.runtime.evaluator.CPU_CLOCK`), so a node throttled by its quota is not charged
for the time it waits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from hydrodeploy.runtime.topology import is_client


@dataclass(frozen=True)
class RuleProfile:
    number: int  # position in the component's block
    head: str
    kind: str  # ":-", ":+" or ":~"
    cpu: float  # cores
    calls_per_s: float
    facts_per_s: float


@dataclass(frozen=True)
class ChannelRate:
    relation: str
    peer: str  # destination (sent) or sender (received) address
    msgs_per_s: float
    bytes_per_s: float


@dataclass(frozen=True)
class NodeProfile:
    """One node over one window."""

    address: str
    component: str
    quota: float | None  # cores; None when unthrottled
    cpu: float  # cores, as the node process measures itself
    ticks_per_s: float
    facts_in_per_s: float
    rules: tuple[RuleProfile, ...]
    sent: tuple[ChannelRate, ...]
    received: tuple[ChannelRate, ...]
    frames_out_per_s: float = 0.0
    frames_in_per_s: float = 0.0  # frames received (0 in profiles written before it was counted)
    log_records_per_s: float = 0.0
    fsyncs_per_s: float = 0.0
    fsync_wall_per_s: float = 0.0  # seconds spent waiting in fsync per second
    throttled_s: float = 0.0  # seconds throttled by the quota during the window
    # CPU of the node's parts (cores): evaluate, log, send (of its ticks), receive (what arrived)
    parts: Mapping[str, float] = field(default_factory=dict)
    cpu_sampled: float = math.nan  # cores, sampled from outside with psutil (nan: not sampled)
    # times a second the node woke from waiting with nothing to do (0 in profiles written before
    # they were counted): on a virtual machine the work right after a wakeup costs several times
    # its CPU (`python -m bench.wakeup_cost`)
    wakeups_per_s: float = 0.0

    @property
    def capacity(self) -> float:
        """Cores this node may use: its quota, or one core when unthrottled."""
        return self.quota or 1.0

    @property
    def saturation(self) -> float:
        return self.cpu / self.capacity

    @property
    def rule_cpu(self) -> float:
        return sum(r.cpu for r in self.rules)

    @property
    def msgs_in_per_s(self) -> float:
        return sum(c.msgs_per_s for c in self.received)

    @property
    def msgs_out_per_s(self) -> float:
        return sum(c.msgs_per_s for c in self.sent)

    @property
    def replies_per_s(self) -> float:
        """Messages sent to benchmark clients: each goes in a group of its own (one client each)."""
        return sum(c.msgs_per_s for c in self.sent if is_client(c.peer))

    @property
    def bytes_in_per_s(self) -> float:
        return sum(c.bytes_per_s for c in self.received)

    @property
    def bytes_out_per_s(self) -> float:
        return sum(c.bytes_per_s for c in self.sent)

    def runtime_parts(self) -> dict[str, float]:
        """The node's CPU split into the program's rules and the runtime's own work (cores):
        evaluator bookkeeping around the rules, the durable log, encoding and sending, and the
        rest (receiving, decoding and authenticating frames, the event loop)."""
        rules = self.rule_cpu
        if not self.parts:
            return {"rules": rules, "runtime": max(0.0, self.cpu - rules)}
        evaluate = self.parts.get("evaluate", 0.0)
        log = self.parts.get("log", 0.0)
        send = self.parts.get("send", 0.0)
        out = {
            "rules": rules,
            "evaluator bookkeeping": max(0.0, evaluate - rules),
            "durable log": log,
            "encode + send": send,
        }
        if "receive" not in self.parts:  # recorded before receiving was timed apart
            out["receive + decode + event loop"] = max(0.0, self.cpu - evaluate - log - send)
            return out
        receive = self.parts["receive"]
        out["receive + decode"] = receive
        out["event loop + socket reads"] = max(0.0, self.cpu - evaluate - log - send - receive)
        return out


@dataclass(frozen=True)
class WindowProfile:
    """Every node over one measurement window of a point."""

    point: int
    clients: int
    throughput: float
    wall_s: float
    host_busy: float  # busy fraction of this machine's CPUs (all cores)
    nodes: tuple[NodeProfile, ...]
    client_cpu: float = math.nan  # cores used by all client processes together (psutil)
    own_cpu: float = math.nan  # cores used by every process of the deployment and the orchestrator
    host_steal: float = math.nan  # share of this machine's CPU the hypervisor took in the window (nan: not recorded)

    def node(self, address: str) -> NodeProfile:
        for n in self.nodes:
            if n.address == address:
                return n
        raise KeyError(address)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> WindowProfile:
        nodes = []
        for n in data["nodes"]:
            fields = dict(n)
            fields["rules"] = tuple(RuleProfile(**r) for r in n["rules"])
            fields["sent"] = tuple(ChannelRate(**c) for c in n["sent"])
            fields["received"] = tuple(ChannelRate(**c) for c in n["received"])
            fields["parts"] = dict(n.get("parts") or {})
            nodes.append(NodeProfile(**fields))
        fields = {k: v for k, v in data.items() if k != "nodes"}
        return WindowProfile(nodes=tuple(nodes), **fields)


def _channels(start: list[list[Any]], end: list[list[Any]], wall: float) -> tuple[ChannelRate, ...]:
    before = {(r, p): (m, b) for r, p, m, b in start}
    out = []
    for rel, peer, m, b in end:
        m0, b0 = before.get((rel, peer), (0, 0))
        if m - m0 > 0:
            out.append(ChannelRate(str(rel), str(peer), (m - m0) / wall, (b - b0) / wall))
    return tuple(sorted(out, key=lambda c: (c.relation, c.peer)))


def node_profile(
    start: Mapping[str, Any],
    end: Mapping[str, Any],
    component: str,
    quota: float | None,
    throttled_s: float = 0.0,
    cpu_sampled: float = math.nan,
) -> NodeProfile:
    """One node's profile from two of its ``metrics`` replies."""
    wall = max(1e-9, float(end["wall"]) - float(start["wall"]))
    rules_before = {r[0]: r for r in start["rules"]}
    rules = []
    for number, head, kind, calls, facts, ns in end["rules"]:
        r0 = rules_before.get(number, [number, head, kind, 0, 0, 0])
        rules.append(
            RuleProfile(
                int(number), str(head), str(kind), (ns - r0[5]) / 1e9 / wall, (calls - r0[3]) / wall, (facts - r0[4]) / wall
            )
        )
    parts: dict[str, float] = {}
    if "tick_cpu_ns" in end and "tick_cpu_ns" in start:
        parts = {k: (end["tick_cpu_ns"][k] - start["tick_cpu_ns"].get(k, 0)) / 1e9 / wall for k in end["tick_cpu_ns"]}
    log0, log1 = start.get("log", {}), end.get("log", {})
    return NodeProfile(
        address=str(end["address"]),
        component=component,
        quota=quota,
        cpu=(float(end["cpu"]) - float(start["cpu"])) / wall,
        ticks_per_s=(end["ticks"] - start["ticks"]) / wall,
        facts_in_per_s=(end["facts_in"] - start["facts_in"]) / wall,
        rules=tuple(rules),
        sent=_channels(start["channels"]["sent"], end["channels"]["sent"], wall),
        received=_channels(start["channels"]["received"], end["channels"]["received"], wall),
        frames_out_per_s=(end["channels"]["frames_sent"] - start["channels"]["frames_sent"]) / wall,
        frames_in_per_s=((end.get("frames") or {}).get("frames", 0) - (start.get("frames") or {}).get("frames", 0)) / wall,
        log_records_per_s=(log1.get("records", 0) - log0.get("records", 0)) / wall,
        fsyncs_per_s=(log1.get("fsyncs", 0) - log0.get("fsyncs", 0)) / wall,
        fsync_wall_per_s=(log1.get("fsync_ns", 0) - log0.get("fsync_ns", 0)) / 1e9 / wall,
        throttled_s=throttled_s,
        parts=parts,
        cpu_sampled=cpu_sampled,
        wakeups_per_s=(end.get("wakeups", 0) - start.get("wakeups", 0)) / wall,
    )


def window_profile(
    point: int,
    clients: int,
    throughput: float,
    before: Mapping[str, Mapping[str, Any]],
    after: Mapping[str, Mapping[str, Any]],
    components: Mapping[str, str],
    quotas: Mapping[str, float | None],
    host_busy: float,
    throttle_before: Mapping[str, Mapping[str, float]] | None = None,
    throttle_after: Mapping[str, Mapping[str, float]] | None = None,
    sampled: Mapping[str, float] | None = None,
    client_cpu: float = math.nan,
    own_cpu: float = math.nan,
    host_steal: float = math.nan,
) -> WindowProfile:
    """Every node's profile over a window: ``before``/``after`` are the nodes' ``metrics``;
    ``components`` maps addresses to components; ``sampled`` is psutil's CPU per address."""
    nodes = []
    walls = []
    for address, end in sorted(after.items()):
        start = before.get(address)
        if start is None:
            continue
        throttled = 0.0
        if throttle_before is not None and throttle_after is not None:
            throttled = throttle_after.get(address, {}).get("throttled_s", 0.0) - throttle_before.get(address, {}).get(
                "throttled_s", 0.0
            )
        node = node_profile(
            start, end, components[address], quotas.get(address), throttled, (sampled or {}).get(address, math.nan)
        )
        nodes.append(node)
        walls.append(float(end["wall"]) - float(start["wall"]))
    wall = sum(walls) / len(walls) if walls else math.nan
    return WindowProfile(point, clients, throughput, wall, host_busy, tuple(nodes), client_cpu, own_cpu, host_steal)
