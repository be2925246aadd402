"""A configuration of a protocol: which decouplings, which partition counts.

A configuration is always derived from the *base* program by one chain of rewrites
(:mod:`hydrodeploy.rewrites.chain`): its decouplings in the order they were chosen, then the
partitioning of every component whose count is above one. Re-deriving from the base keeps every
configuration a checked program, lets the optimizer change partition counts chosen earlier (more
or fewer machines for a component), and makes the chain in a report the whole story.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from hydrodeploy.language import ir
from hydrodeploy.language.printer import format_rule
from hydrodeploy.rewrites.chain import Step, apply_chain
from hydrodeploy.runtime.topology import Topology


@dataclass(frozen=True)
class Decoupling:
    """Move ``rules`` (selectors ``rel#k`` of ``component``'s block, resolved in the program the
    previous decouplings produced) to a new component ``name`` with the rewrite ``rewrite``."""

    component: str
    rules: tuple[str, ...]
    name: str
    rewrite: str  # the rewrite's SHORT name
    heads: tuple[str, ...] = ()  # the relations the moved rules derive, for people

    def step(self) -> Step:
        return Step("decouple", f"{self.component}:{','.join(self.rules)}:{self.name}", self.rewrite)

    def describe(self) -> str:
        what = ", ".join(self.heads or self.rules)
        return f"{self.rewrite} decoupling of {self.component} ({what}) into {self.name}"


@dataclass(frozen=True)
class Partitioning:
    """Split every instance of ``component`` into ``count`` partitions on ``key``."""

    component: str
    key: str | None
    count: int
    rewrite: str | None = None  # the rewrite's SHORT name (None: the first whose precondition holds)

    def step(self) -> Step:
        return Step("partition", f"{self.component}:{self.key or ''}:{self.count}", self.rewrite)

    def describe(self) -> str:
        how = self.rewrite or "partitioning"
        return f"{how}: {self.component} x{self.count} on {self.key or '(any key)'}"


@dataclass(frozen=True)
class Configuration:
    decouplings: tuple[Decoupling, ...] = ()
    partitions: tuple[Partitioning, ...] = field(default=())  # counts above one only

    def steps(self) -> list[Step]:
        return [d.step() for d in self.decouplings] + [p.step() for p in self.partitions if p.count > 1]

    def structure(self) -> Configuration:
        """The same decouplings, nothing partitioned."""
        return Configuration(self.decouplings, ())

    def counts(self) -> dict[str, int]:
        return {p.component: p.count for p in self.partitions if p.count > 1}

    def with_partitions(self, partitions: Iterable[Partitioning]) -> Configuration:
        return replace(self, partitions=tuple(sorted((p for p in partitions if p.count > 1), key=lambda p: p.component)))

    def with_decoupling(self, decoupling: Decoupling) -> Configuration:
        return replace(self, decouplings=(*self.decouplings, decoupling))

    def describe(self) -> str:
        parts = [d.describe() for d in self.decouplings] + [p.describe() for p in self.partitions if p.count > 1]
        return "; ".join(parts) if parts else "the base program"

    def steps_text(self) -> str:
        """The chain as a ``--steps`` file for ``hydrodeploy rewrite``."""
        return "".join(f"{s}\n" for s in self.steps())

    def identity(self) -> str:
        """The chain with every component a decoupling made named by its place in the chain: two
        configurations alike but for the numbers that made their new names unique
        (``proposer_broadcaster3``, ``proposer_broadcaster4``) are the same configuration."""
        text = self.steps_text()
        made = sorted(enumerate(d.name for d in self.decouplings), key=lambda e: -len(e[1]))
        for index, name in made:
            text = text.replace(name, f"<new {index}>")
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "decouplings": [
                {"component": d.component, "rules": list(d.rules), "name": d.name, "rewrite": d.rewrite, "heads": list(d.heads)}
                for d in self.decouplings
            ],
            "partitions": [
                {"component": p.component, "key": p.key, "count": p.count, "rewrite": p.rewrite} for p in self.partitions
            ],
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Configuration:
        return Configuration(
            tuple(
                Decoupling(d["component"], tuple(d["rules"]), d["name"], d["rewrite"], tuple(d.get("heads", ())))
                for d in data.get("decouplings", ())
            ),
            tuple(Partitioning(p["component"], p.get("key"), int(p["count"]), p.get("rewrite")) for p in data.get("partitions", ())),
        )


@lru_cache(maxsize=256)
def _derive(base: ir.Program, path: str, steps: tuple[Step, ...]) -> tuple[ir.Program, Topology]:
    program, topology, _ = apply_chain(base, list(steps))
    return program, topology


def derive(base: ir.Program, config: Configuration) -> tuple[ir.Program, Topology]:
    """The program and topology of ``config`` (raises RewriteError when a step does not apply).
    Cached per base file: equal programs from different files differ in their rules' spans."""
    return _derive(base, base.path, tuple(config.steps()))


def machines(topology: Topology) -> int:
    return len(topology.addresses())


def rule_identity(component: str, rule: ir.Rule, base_file: str | None) -> str:
    """What a rule is across rewrites: its place in the base program when it comes from there
    (moved rules keep their source spans), otherwise its component and text (rules a rewrite
    generated)."""
    if rule.span is not None and base_file is not None and rule.span.file == base_file:
        return f"{base_file}:{rule.span.line}:{rule.span.col}"
    return f"{component}: {format_rule(rule)}"


def selectors(program: ir.Program, component: str, positions: Iterable[int]) -> tuple[str, ...]:
    """``rel#k`` selectors of rules at ``positions`` of ``component``'s block."""
    block = program.block(component)
    assert block is not None
    out = []
    for i in sorted(positions):
        head = block.rules[i].head.relation
        k = sum(1 for r in block.rules[: i + 1] if r.head.relation == head)
        out.append(f"{head}#{k}")
    return tuple(out)


def positions_of(program: ir.Program, component: str, identities: Iterable[str], base_file: str | None) -> frozenset[int]:
    """Positions in ``component``'s block of the rules with these identities."""
    wanted = set(identities)
    block = program.block(component)
    if block is None:
        return frozenset()
    return frozenset(i for i, r in enumerate(block.rules) if rule_identity(component, r, base_file) in wanted)
