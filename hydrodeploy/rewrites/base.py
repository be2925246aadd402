"""What every rewrite shares: targets, check results, and the contract.

A rewrite is a module with

- ``NAME`` — how the CLI and reports call it;
- ``check(program, target) -> Applicable | NotApplicable`` — the precondition of the technical
  report, decided by :mod:`hydrodeploy.analysis`; a rejection carries the reason and the source
  span that causes it;
- ``apply(program, topology, target) -> (program', topology')`` — the mechanism; it raises
  :class:`~hydrodeploy.errors.RewriteError` when the precondition fails.

The rewritten program is a program: it prints as readable `.ded`, re-parses to an equal program
and passes the static checks. The topology says how many instances and partitions run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from hydrodeploy.errors import RewriteError, Span
from hydrodeploy.language import ir
from hydrodeploy.runtime.topology import Topology


@dataclass(frozen=True)
class Decouple:
    """Move the rules at ``rules`` (positions in ``component``'s block) to a new component
    ``name`` with as many instances as ``component``."""

    component: str
    rules: frozenset[int]
    name: str | None = None

    def describe(self, program: ir.Program) -> str:
        block = program.block(self.component)
        heads = []
        if block is not None:
            heads = sorted({block.rules[i].head.relation for i in self.rules if i < len(block.rules)})
        return f"{self.component}: {', '.join(heads)}"


@dataclass(frozen=True)
class Partition:
    """Partition ``component`` into ``partitions`` partitions (per instance), preferring the
    distribution policy whose rule keys are the variable ``key``."""

    component: str
    key: str | None
    partitions: int
    replicated: frozenset[str] = field(default_factory=frozenset)  # partial partitioning

    def describe(self, program: ir.Program) -> str:
        return f"{self.component} on {self.key or '(any key)'} x{self.partitions}"


Target = Decouple | Partition


@dataclass(frozen=True)
class Applicable:
    """The precondition holds. ``summary`` says what would happen, ``details`` how."""

    rewrite: str
    target: Target
    summary: str
    details: tuple[str, ...] = ()

    @property
    def applicable(self) -> bool:
        return True


@dataclass(frozen=True)
class NotApplicable:
    """The precondition fails: ``reason`` at ``span`` (the rule or literal responsible)."""

    rewrite: str
    target: Target
    reason: str
    span: Span | None = None

    @property
    def applicable(self) -> bool:
        return False

    def error(self, program: ir.Program) -> RewriteError:
        return RewriteError(f"{self.rewrite} does not apply: {self.reason}", self.span, program.source)


CheckResult = Applicable | NotApplicable


def require(result: CheckResult, program: ir.Program) -> Applicable:
    """The applicable result, or the rejection raised as a :class:`RewriteError`."""
    if isinstance(result, NotApplicable):
        raise result.error(program)
    return result


def topology_for(program: ir.Program, topology: Topology | None, extra: dict[str, int] | None = None) -> Topology:
    """The topology of a rewritten program: every component's instances, with the partitions
    ``topology`` had (components that still exist) plus ``extra``."""
    counts = {} if topology is None else topology.partition_counts()
    names = {c.name for c in program.components}
    counts = {c: n for c, n in counts.items() if c in names}
    counts.update(extra or {})
    return Topology.of(program, counts)


def rule_positions(program: ir.Program, component: str, selectors: Iterable[str]) -> frozenset[int]:
    """Resolve rule selectors: ``rel`` (every rule deriving or sending ``rel``), ``rel#k`` (the
    k-th such rule, from 1, in block order) or a line number of the source."""
    block = program.block(component)
    if block is None:
        raise RewriteError(f"no component '{component}'", None, program.source)
    out: set[int] = set()
    for sel in selectors:
        sel = sel.strip()
        if not sel:
            continue
        if sel.isdigit():
            line = int(sel)
            hits = [i for i, r in enumerate(block.rules) if r.span is not None and r.span.line <= line <= r.span.end_line]
            if not hits:
                raise RewriteError(f"no rule of '{component}' at line {line}", None, program.source)
            out.update(hits)
            continue
        name, _, nth = sel.partition("#")
        matches = [i for i, r in enumerate(block.rules) if r.head.relation == name]
        if not matches:
            heads = sorted({r.head.relation for r in block.rules})
            raise RewriteError(
                f"no rule of '{component}' derives '{name}' (its rules derive: {', '.join(heads)})",
                block.span,
                program.source,
            )
        if nth:
            if not nth.isdigit() or not 1 <= int(nth) <= len(matches):
                raise RewriteError(
                    f"'{sel}': '{component}' has {len(matches)} rule(s) for '{name}'", block.span, program.source
                )
            out.add(matches[int(nth) - 1])
        else:
            out.update(matches)
    return frozenset(out)
