"""Addresses of component instances and how routed destinations resolve to them.

An address is an opaque string, ``"<component>/<index>"`` for instances and ``"client/<n>"`` for
external clients. A deployment may split a logical node into partitions; ``partitions`` maps the
logical address to its partitions' addresses, and ``@x[key]`` picks one by the key's stable hash.

A partition *is* its logical node for the program: it reads the logical address as ``self`` and
the logical index as ``self_index``, and ``<component>(addr)`` lists logical addresses. Only the
nodes that run (:meth:`Topology.addresses`) are the partitions. ``Topology.of(program,
partitions={"participant": 5})`` splits every instance of a component into that many partitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydrodeploy.language import ir
from hydrodeploy.runtime.values import stable_hash

CLIENT_PREFIX = "client/"
CLIENT_PROCESS_PREFIX = "clients/"  # the name a benchmark client process sends under


def instance_address(component: str, index: int) -> str:
    return f"{component}/{index}"


def client_address(n: int) -> str:
    return f"{CLIENT_PREFIX}{n}"


def partition_address(logical: str, index: int) -> str:
    return f"{logical}#{index}"


def is_client(address: Any) -> bool:
    return isinstance(address, str) and address.startswith(CLIENT_PREFIX)


def client_process_name(index: int) -> str:
    """The process that hosts clients ``index``, ``index + P``, ... of ``P`` client processes."""
    return f"{CLIENT_PROCESS_PREFIX}{index}"


def is_client_process(sender: str) -> bool:
    return sender.startswith(CLIENT_PROCESS_PREFIX)


@dataclass(frozen=True)
class Topology:
    """Which addresses exist: the instances of each component, and partitions of logical nodes."""

    instances: Mapping[str, tuple[str, ...]]
    partitions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @staticmethod
    def of(program: ir.Program, partitions: Mapping[str, int] | None = None) -> Topology:
        """One address per declared instance; with ``partitions`` (component -> N), every instance
        of those components is split into N partitions (N = 1 leaves it whole)."""
        instances = {
            c.name: tuple(instance_address(c.name, i) for i in range(c.instances)) for c in program.components
        }
        parts: dict[str, tuple[str, ...]] = {}
        for comp, n in (partitions or {}).items():
            if comp not in instances:
                raise KeyError(comp)
            if n > 1:
                for addr in instances[comp]:
                    parts[addr] = tuple(partition_address(addr, j) for j in range(n))
        return Topology(instances, parts)

    def addresses(self) -> list[tuple[str, str, int]]:
        """(component, address, index) for every node that runs: each instance, or each partition
        of a partitioned instance (with the instance's index)."""
        out: list[tuple[str, str, int]] = []
        for comp, addrs in self.instances.items():
            for i, addr in enumerate(addrs):
                out.extend((comp, node, i) for node in self.partitions.get(addr) or (addr,))
        return out

    def component_of(self, address: str) -> str:
        logical = self.logical_address(address)
        for comp, addrs in self.instances.items():
            if logical in addrs:
                return comp
        raise KeyError(address)

    def logical_address(self, address: str) -> str:
        """The instance a partition belongs to (an unpartitioned instance is its own)."""
        for logical, parts in self.partitions.items():
            if address in parts:
                return logical
        return address

    def partition_index(self, address: str) -> int:
        """Which partition of its instance a node is (0 for an instance that is not split)."""
        for parts in self.partitions.values():
            if address in parts:
                return parts.index(address)
        return 0

    def partition_counts(self) -> dict[str, int]:
        """Components whose instances are partitioned, with the number of partitions each."""
        out: dict[str, int] = {}
        for comp, addrs in self.instances.items():
            counts = {len(self.partitions[a]) for a in addrs if self.partitions.get(a)}
            if counts:
                out[comp] = max(counts)
        return out

    def route_component(self, component: str, keys: tuple[Any, ...]) -> str:
        addrs = self.instances[component]
        return addrs[stable_hash(keys) % len(addrs)]

    def route_partition(self, address: str, keys: tuple[Any, ...]) -> str:
        parts = self.partitions.get(address)
        if not parts:
            return address
        return parts[stable_hash(keys) % len(parts)]
