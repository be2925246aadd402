"""Addresses of component instances and how routed destinations resolve to them.

An address is an opaque string, ``"<component>/<index>"`` for instances and ``"client/<n>"`` for
external clients. A deployment may split a logical node into partitions; ``partitions`` maps the
logical address to its partitions' addresses, and ``@x[key]`` picks one by the key's stable hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydrodeploy.language import ir
from hydrodeploy.runtime.values import stable_hash

CLIENT_PREFIX = "client/"


def instance_address(component: str, index: int) -> str:
    return f"{component}/{index}"


def client_address(n: int) -> str:
    return f"{CLIENT_PREFIX}{n}"


def is_client(address: Any) -> bool:
    return isinstance(address, str) and address.startswith(CLIENT_PREFIX)


@dataclass(frozen=True)
class Topology:
    """Which addresses exist: the instances of each component, and partitions of logical nodes."""

    instances: Mapping[str, tuple[str, ...]]
    partitions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @staticmethod
    def of(program: ir.Program) -> Topology:
        return Topology(
            {c.name: tuple(instance_address(c.name, i) for i in range(c.instances)) for c in program.components}
        )

    def addresses(self) -> list[tuple[str, str, int]]:
        """(component, address, index) for every instance."""
        return [(comp, addr, i) for comp, addrs in self.instances.items() for i, addr in enumerate(addrs)]

    def component_of(self, address: str) -> str:
        for comp, addrs in self.instances.items():
            if address in addrs:
                return comp
        raise KeyError(address)

    def route_component(self, component: str, keys: tuple[Any, ...]) -> str:
        addrs = self.instances[component]
        return addrs[stable_hash(keys) % len(addrs)]

    def route_partition(self, address: str, keys: tuple[Any, ...]) -> str:
        parts = self.partitions.get(address)
        if not parts:
            return address
        return parts[stable_hash(keys) % len(parts)]
