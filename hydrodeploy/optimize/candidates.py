"""Candidate rewrites on the bottleneck component, and the structures they combine into.

Every decoupling rewrite of the registry is tried on the rule sets ``explain`` proposes for the
bottleneck component (:func:`hydrodeploy.rewrites.explain.candidate_sets`); for each rule set the
first rewrite whose precondition holds is the candidate (the registry lists the cheapest
mechanisms first), the others are noted. Every component of a structure is checked for
partitioning; a partitionable component's count becomes a decision of the placement. Rejections
keep their reason and source location for the report.

A *structure* is the current configuration's decouplings plus a compatible subset of the
candidates (disjoint rules, each precondition still holding after the others), applied in order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType

from hydrodeploy.errors import HydrodeployError
from hydrodeploy.language import ir
from hydrodeploy.optimize.config import (
    Configuration,
    Decoupling,
    derive,
    positions_of,
    rule_identity,
    selectors,
)
from hydrodeploy.rewrites import DECOUPLING, PARTITIONING
from hydrodeploy.rewrites.base import Applicable, Decouple, NotApplicable, Partition
from hydrodeploy.rewrites.decoupling import default_name
from hydrodeploy.rewrites.explain import candidate_sets
from hydrodeploy.rewrites.mechanics import unique

MAX_COMBINED = 3  # decouplings chosen together in one step, at most


@dataclass(frozen=True)
class Rejection:
    rewrite: str
    target: str
    reason: str
    where: str = ""  # file:line:col of the cause

    def __str__(self) -> str:
        at = f" ({self.where})" if self.where else ""
        return f"{self.rewrite} of {self.target}: {self.reason}{at}"


@dataclass(frozen=True)
class DecouplingOption:
    decoupling: Decoupling
    identities: frozenset[str]  # the moved rules, across rewrites
    summary: str  # what the rewrite would do
    also: tuple[str, ...] = ()  # other rewrites whose preconditions hold for the same rules


@dataclass(frozen=True)
class PartitionOption:
    component: str
    key: str | None
    rewrite: str  # SHORT name
    summary: str


@dataclass(frozen=True)
class Candidates:
    component: str
    decouplings: list[DecouplingOption] = field(default_factory=list)
    partition: PartitionOption | None = None
    rejected: list[Rejection] = field(default_factory=list)


def _module(short: str) -> ModuleType:
    for mod in (*DECOUPLING, *PARTITIONING):
        if short == mod.SHORT:
            return mod
    raise KeyError(short)


def _where(result: NotApplicable) -> str:
    return str(result.span) if result.span is not None else ""


def partition_option(program: ir.Program, component: str) -> PartitionOption | Rejection:
    """How ``component`` can be partitioned: on the request id when a policy allows it (client
    request ids are unique, so requests spread evenly), otherwise on the policy's key; or why
    it cannot be."""
    first: NotApplicable | None = None
    for key in ("id", None):
        for mod in PARTITIONING:
            result = mod.check(program, Partition(component, key, 2))
            if isinstance(result, Applicable):
                return PartitionOption(component, key, mod.SHORT, result.summary)
            if first is None:
                first = result
    assert first is not None
    return Rejection(first.rewrite, f"'{component}'", first.reason, _where(first))


def _rule_sets(program: ir.Program, component: str) -> list[frozenset[int]]:
    """The rule sets ``explain`` tries, and every relation's sending rules together (a message
    sent by several rules is better broadcast by one new component than by several)."""
    sets = candidate_sets(program, component)
    block = program.block(component)
    if block is None:
        return sets
    by_head: dict[str, set[int]] = {}
    for i, rule in enumerate(block.rules):
        if rule.kind is ir.RuleKind.ASYNC:
            by_head.setdefault(rule.head.relation, set()).add(i)
    for group in by_head.values():
        if len(group) > 1 and frozenset(group) not in sets and len(group) < len(block.rules):
            sets.append(frozenset(group))
    return sets


def find_candidates(base: ir.Program, config: Configuration, component: str) -> Candidates:
    """Every decoupling of ``component`` whose precondition holds in ``config``'s structure,
    how ``component`` partitions, and what was rejected."""
    program, _ = derive(base, config.structure())
    base_file = base.path
    out = Candidates(component)
    if program.component(component) is None:
        return out
    taken: set[str] = set()
    for rules in _rule_sets(program, component):
        name = unique(program, default_name(program, component, rules), taken)
        target = Decouple(component, rules, name)
        chosen: tuple[ModuleType, Applicable] | None = None
        also: list[str] = []
        for mod in DECOUPLING:
            result = mod.check(program, target)
            if isinstance(result, Applicable):
                if chosen is None:
                    chosen = (mod, result)
                else:
                    also.append(mod.NAME)
            else:
                out.rejected.append(Rejection(mod.NAME, target.describe(program), result.reason, _where(result)))
        if chosen is None:
            continue
        taken.add(name)
        block = program.block(component)
        assert block is not None
        heads = tuple(dict.fromkeys(block.rules[i].head.relation for i in sorted(rules)))
        ids = frozenset(rule_identity(component, block.rules[i], base_file) for i in rules)
        decoupling = Decoupling(component, selectors(program, component, rules), name, chosen[0].SHORT, heads)
        out.decouplings.append(DecouplingOption(decoupling, ids, chosen[1].summary, tuple(also)))
    part = partition_option(program, component)
    if isinstance(part, PartitionOption):
        return Candidates(out.component, out.decouplings, part, out.rejected)
    out.rejected.append(part)
    return out


def combine(base: ir.Program, config: Configuration, options: Iterable[DecouplingOption]) -> Configuration | None:
    """``config``'s structure with ``options`` applied in order, or None when they do not
    combine (rules overlap, or a precondition no longer holds)."""
    current = config.structure()
    for option in options:
        d = option.decoupling
        try:
            program, _ = derive(base, current)
        except HydrodeployError:  # the rewrites do not apply, or gave a program that does not check
            return None
        positions = positions_of(program, d.component, option.identities, base.path)
        if len(positions) != len(option.identities):
            return None
        name = unique(program, d.name) if program.component(d.name) is not None else d.name
        result = _module(d.rewrite).check(program, Decouple(d.component, positions, name))
        if not isinstance(result, Applicable):
            return None
        current = current.with_decoupling(Decoupling(d.component, selectors(program, d.component, positions), name, d.rewrite, d.heads))
    try:
        derive(base, current)
    except HydrodeployError:
        return None
    return current


def structures(base: ir.Program, config: Configuration, candidates: Candidates, limit: int = MAX_COMBINED) -> list[tuple[tuple[int, ...], Configuration]]:
    """Every compatible combination of up to ``limit`` decoupling candidates (by index), with
    the structure it gives; the current structure (no new decoupling) first."""
    out: list[tuple[tuple[int, ...], Configuration]] = [((), config.structure())]
    options = candidates.decouplings
    for size in range(1, min(limit, len(options)) + 1):
        for combo in itertools.combinations(range(len(options)), size):
            ids = [options[i].identities for i in combo]
            if sum(len(s) for s in ids) != len(frozenset().union(*ids)):
                continue  # overlapping rules
            structure = combine(base, config, (options[i] for i in combo))
            if structure is not None:
                out.append((combo, structure))
    return out


def partitionable(base: ir.Program, structure: Configuration) -> dict[str, PartitionOption | Rejection]:
    """For every component of ``structure``, how it partitions or why not."""
    program, _ = derive(base, structure)
    return {c.name: partition_option(program, c.name) for c in program.components}
