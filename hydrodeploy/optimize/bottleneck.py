"""The bottleneck: the most saturated node of a measured point, with the evidence.

Saturation is a node's CPU against its quota (one core when unthrottled) and, when the cluster
states its link capacity, its network bytes against the link; client processes are not nodes and
are never the bottleneck. The evidence says what was measured: the node's CPU and quota, how long
the quota throttled it, the runner-up, its siblings (other partitions or instances of the same
component), where its CPU went (rules and the runtime's parts) and its busiest rules.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from hydrodeploy.language import ir
from hydrodeploy.profile.counters import NodeProfile, WindowProfile


@dataclass(frozen=True)
class Bottleneck:
    address: str
    component: str
    saturation: float
    cpu: float
    quota: float | None
    resource: str  # "CPU" or "network"
    rules: list[tuple[str, float]] = field(default_factory=list)  # (rule, share of the node's CPU), busiest first
    parts: dict[str, float] = field(default_factory=dict)  # share of the node's CPU per kind of work
    evidence: list[str] = field(default_factory=list)
    point: int = 0
    clients: int = 0
    throughput: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Bottleneck:
        fields = dict(data)
        fields["rules"] = [tuple(r) for r in fields.get("rules", [])]
        return Bottleneck(**fields)


def rule_label(program: ir.Program, component: str, number: int, head: str) -> str:
    block = program.block(component)
    line = ""
    if block is not None and number < len(block.rules):
        span = block.rules[number].span
        if span is not None:
            line = f", line {span.line}"
    return f"{head} (rule {number}{line})"


def _saturation(node: NodeProfile, link_bytes_per_s: float | None) -> tuple[float, str]:
    cpu = node.saturation
    if link_bytes_per_s:
        net = max(node.bytes_in_per_s, node.bytes_out_per_s) / link_bytes_per_s
        if net > cpu:
            return net, "network"
    return cpu, "CPU"


def find_bottleneck(profile: WindowProfile, program: ir.Program, link_bytes_per_s: float | None = None) -> Bottleneck:
    """The most saturated node of ``profile`` (measured running ``program``)."""
    if not profile.nodes:
        raise ValueError("no node was measured")
    ranked = sorted(profile.nodes, key=lambda n: -_saturation(n, link_bytes_per_s)[0])
    neck = ranked[0]
    saturation, resource = _saturation(neck, link_bytes_per_s)
    quota = f"its quota of {neck.quota:g} cores" if neck.quota else "one core (unthrottled)"
    evidence = [
        f"{neck.address} used {neck.cpu:.3f} cores of {quota}: {saturation:.0%} saturated "
        f"at {profile.clients} clients, {profile.throughput:,.0f} requests/s"
    ]
    if resource == "network":
        evidence.append(f"its network traffic ({max(neck.bytes_in_per_s, neck.bytes_out_per_s):,.0f} B/s) is the scarcer resource")
    if neck.throttled_s > 0:
        evidence.append(f"the quota throttled it for {neck.throttled_s:.2f} s of the {profile.wall_s:.1f} s window")
    if len(ranked) > 1:
        second = ranked[1]
        evidence.append(f"next most saturated: {second.address} at {_saturation(second, link_bytes_per_s)[0]:.0%}")
    siblings = [n for n in profile.nodes if n.component == neck.component and n.address != neck.address]
    if siblings:
        mean = statistics.fmean(_saturation(n, link_bytes_per_s)[0] for n in siblings)
        evidence.append(f"the other {len(siblings)} node(s) of component '{neck.component}' average {mean:.0%}")
    cpu = max(neck.cpu, 1e-12)
    parts = {k: v / cpu for k, v in neck.runtime_parts().items()}
    evidence.append("its CPU: " + ", ".join(f"{k} {v:.0%}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])))
    rules = sorted(
        ((rule_label(program, neck.component, r.number, r.head), r.cpu / cpu) for r in neck.rules if r.cpu > 0),
        key=lambda x: -x[1],
    )
    if rules:
        evidence.append("busiest rules: " + ", ".join(f"{name} {share:.0%}" for name, share in rules[:3]))
    neck_in = neck.msgs_in_per_s
    neck_out = neck.msgs_out_per_s
    evidence.append(f"messages: {neck_in:,.0f}/s in, {neck_out:,.0f}/s out, {neck.ticks_per_s:,.0f} ticks/s")
    return Bottleneck(
        neck.address,
        neck.component,
        saturation,
        neck.cpu,
        neck.quota,
        resource,
        rules,
        parts,
        evidence,
        profile.point,
        profile.clients,
        profile.throughput,
    )
