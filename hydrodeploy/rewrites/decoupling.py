"""The part every decoupling rewrite shares (TR §3, Appendix A): splitting a component's rules in
two, and moving one part to a new component.

The rules chosen move to a new component C2 with as many instances as the original C (instance
``i`` of C2 takes over from instance ``i`` of C, paired as in :mod:`.mechanics`); the others, C1,
stay under the original name, so every sender, built-in and client keeps addressing it. Static
relations (derived from constants and built-ins only) are copied where they are read.

Each relation C2 reads and does not derive is one of:

- **redirected** — a channel only C2 reads: its senders now send it to C2 (Redirection, §3.1);
- **forwarded** — derived by C1, an ``.input`` of C, or a channel C1 reads too: C1 sends it on to C2
  (Decoupling, A.3.1), under a new name ``<relation>_to_<C2>``;
- **relayed** — (asymmetric decoupling only) a channel both read: redirected to C2, which passes it
  to C1 in batches.

What C2 derives and C1 reads (C1 *depends* on C2) is sent back only by asymmetric decoupling.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hydrodeploy.analysis.context import LOCATION_BUILTINS, context
from hydrodeploy.analysis.independence import independence
from hydrodeploy.analysis.references import References, references
from hydrodeploy.errors import Span
from hydrodeploy.language import ir
from hydrodeploy.rewrites import mechanics as m
from hydrodeploy.rewrites.base import Decouple, NotApplicable


@dataclass(frozen=True)
class Split:
    """A component's rules divided for decoupling."""

    component: str
    name: str  # the new component
    moved: frozenset[int]
    kept: frozenset[int]
    moved_refs: References
    kept_refs: References
    forwarded: frozenset[str]
    redirected: frozenset[str]
    shared_channels: frozenset[str]  # channels both sides read
    client_inputs: frozenset[str]  # `.input` relations the moved rules read
    back: frozenset[str]  # derived by the moved rules, read by the kept ones
    # the first rule (by position) of the kept/moved side reading each relation, for messages
    spans: dict[str, Span | None]


def default_name(program: ir.Program, component: str, rules: Iterable[int]) -> str:
    """A name saying what the moved rules do: ``<component>_broadcaster`` when they only send to
    every instance of a component, ``<component>_collector`` when they count what arrives,
    otherwise ``<component>_<first relation>``."""
    block = program.block(component)
    assert block is not None
    chosen = [block.rules[i] for i in sorted(rules)]
    comps = {c.name for c in program.components}
    if chosen and all(
        r.kind is ir.RuleKind.ASYNC and r.head.dest is not None and any(a.relation in comps for a in r.positive_atoms())
        for r in chosen
    ):
        base = f"{component}_broadcaster"
    elif any(r.head.aggregates for r in chosen):
        base = f"{component}_collector"
    else:
        base = f"{component}_{chosen[0].head.relation}" if chosen else f"{component}_part"
    name = base
    n = 2
    while not m.component_name_ok(program, name):
        name = f"{base}{n}"
        n += 1
    return name


def split_keeping_c1_independent(program: ir.Program, target: Decouple, rewrite: str) -> Split | NotApplicable:
    """:func:`split`, refused when the rules that stay (C1) read anything the moved rules (C2)
    derive: the precondition functional, monotonic and state machine decoupling share."""
    s = split(program, target, rewrite)
    if isinstance(s, NotApplicable):
        return s
    dep = independence(program, target.component, s.kept, s.moved).dependence
    if dep is not None:
        return NotApplicable(
            rewrite,
            target,
            f"the rules that stay read '{dep.relation}', which the moved rules derive (C1 must be "
            "independent of C2)",
            dep.span,
        )
    return s


def fans_out(program: ir.Program, rule: ir.Rule) -> bool:
    """Whether an asynchronous rule sends each body match to every instance of a component with
    several (``vote_req@p(...) :~ client_in(...), participant(p)``). Moving every rule of a
    component is worth it only then: what stays forwards each input once, to the new component,
    in place of the several messages the original sent."""
    dest = rule.head.dest
    if rule.kind is not ir.RuleKind.ASYNC or dest is None:
        return False
    for atom in rule.atoms():
        decl = program.component(atom.relation)
        several = decl is not None and not atom.negated and decl.instances > 1
        if several and any(isinstance(t, ir.Var) and t.name == dest.target for t in atom.terms):
            return True
    return False


def split(program: ir.Program, target: Decouple, rewrite: str) -> Split | NotApplicable:
    """Validate a decoupling target and classify what the moved rules read."""
    decl = program.component(target.component)
    block = program.block(target.component)
    if decl is None or block is None:
        return NotApplicable(rewrite, target, f"no component '{target.component}' with rules")
    ctx = context(program, target.component)
    bad = [i for i in target.rules if not 0 <= i < len(ctx.rules)]
    if bad or not target.rules:
        return NotApplicable(rewrite, target, "no rules chosen to move", block.span)
    static = {i for i, r in enumerate(ctx.rules) if r.head.relation in ctx.static}
    moved = frozenset(target.rules) - static
    kept = frozenset(range(len(ctx.rules))) - moved - static
    if not moved:
        return NotApplicable(rewrite, target, "the chosen rules only derive constants; nothing to move", block.span)
    if not kept and not any(fans_out(program, ctx.rules[i]) for i in moved):
        return NotApplicable(
            rewrite,
            target,
            f"every rule of '{target.component}' would move, leaving it only forwarding its inputs, "
            "and none of them sends an input to several nodes (a relay would send as much as it does)",
            block.span,
        )
    name = target.name or default_name(program, target.component, moved)
    if target.name is not None and not m.component_name_ok(program, target.name):
        return NotApplicable(rewrite, target, f"the name '{target.name}' is already taken", block.span)
    for i in sorted(moved):
        rule = ctx.rules[i]
        for atom in rule.atoms():
            if atom.relation == "self_index":
                return NotApplicable(
                    rewrite,
                    target,
                    f"the rule for '{rule.head.relation}' reads self_index; in a new component that "
                    "would be the new instance's index, and the original one is not known there",
                    atom.span,
                )
            if atom.relation in ctx.timers:
                return NotApplicable(
                    rewrite,
                    target,
                    f"the rule for '{rule.head.relation}' reads timer '{atom.relation}', which fires in "
                    f"'{target.component}'",
                    atom.span,
                )
            if atom.relation in ctx.static and atom.relation not in ctx.portable:
                return NotApplicable(
                    rewrite,
                    target,
                    f"'{atom.relation}' depends on {'/'.join(sorted(LOCATION_BUILTINS))}, so a copy in "
                    "another component would differ",
                    atom.span,
                )
    mrefs = references(program, target.component, moved)
    krefs = references(program, target.component, kept)
    both = mrefs.derived & krefs.derived
    if both:
        rel = min(both)
        rule = next(ctx.rules[i] for i in sorted(moved) if ctx.rules[i].head.relation == rel)
        return NotApplicable(
            rewrite,
            target,
            f"'{rel}' is derived both by rules that move and by rules that stay; neither side would "
            "see all of its facts",
            rule.head.span or rule.span,
        )
    forwarded: set[str] = set()
    redirected: set[str] = set()
    shared: set[str] = set()
    client: set[str] = set()
    for rel in sorted(mrefs.inputs):
        if rel in krefs.derived:
            forwarded.add(rel)
        elif rel in ctx.inputs:
            client.add(rel)
            forwarded.add(rel)
        elif rel in krefs.references:
            shared.add(rel)
            forwarded.add(rel)
        else:
            redirected.add(rel)
            problem = m.find_unredirectable(program, rel, target.component)
            if problem is not None:
                return NotApplicable(rewrite, target, problem.reason, problem.rule.span)
    spans: dict[str, Span | None] = {}
    for i in sorted(moved | kept):
        for atom in ctx.rules[i].atoms():
            spans.setdefault(f"{'moved' if i in moved else 'kept'}:{atom.relation}", atom.span)
    return Split(
        component=target.component,
        name=name,
        moved=moved,
        kept=kept,
        moved_refs=mrefs,
        kept_refs=krefs,
        forwarded=frozenset(forwarded),
        redirected=frozenset(redirected),
        shared_channels=frozenset(shared),
        client_inputs=frozenset(client),
        back=frozenset(krefs.references & mrefs.derived),
        spans=spans,
    )


def moved_heads(program: ir.Program, s: Split) -> list[str]:
    ctx = context(program, s.component)
    return sorted({ctx.rules[i].head.relation for i in s.moved})


def build(
    program: ir.Program,
    s: Split,
    forwarded: Iterable[str],
    redirected: Iterable[str],
    persist_inputs: bool,
    comment: str,
) -> ir.Program:
    """The decoupled program: C2 declared and filled, C1 keeps the rest and forwards
    ``forwarded``, senders of ``redirected`` send to C2; with ``persist_inputs`` (monotonic
    decoupling) C2 keeps every input it receives in a persisted alias."""
    ctx = context(program, s.component)
    block = program.block(s.component)
    assert block is not None
    decl = program.component(s.component)
    assert decl is not None
    forwarded = sorted(set(forwarded))
    redirected = sorted(set(redirected))
    taken: set[str] = {s.name, m.pairing_name(s.name)}
    channel = {rel: m.forward_name(program, rel, s.name, taken) for rel in forwarded}
    taken |= set(channel.values())

    # C2: the moved rules, reading forwarded relations under their new names, `self` paired.
    moved_rules: list[ir.Rule] = []
    pairing_in_c2 = False
    for i in sorted(s.moved):
        rule = ctx.rules[i]
        for rel, ch in channel.items():
            rule = m.rename_atoms(rule, rel, ch)
        rule, paired = m.replace_self(program, s.component, s.name, rule)
        pairing_in_c2 |= paired
        moved_rules.append(rule)
    extra_c2: list[ir.Rule] = []
    persisted: list[str] = []
    if persist_inputs:
        for rel in [channel[r] for r in forwarded]:
            alias = m.unique(program, f"{rel}_persisted", taken)
            taken.add(alias)
            names = m.attribute_names(program, next(k for k, v in channel.items() if v == rel))
            terms = m.var_terms(names)
            extra_c2.append(
                ir.Rule(
                    ir.Head(alias, terms),
                    ir.RuleKind.SYNC,
                    (ir.Atom(rel, terms),),
                    comment=f"every '{rel}' ever received, kept: it was persisted where it came from",
                )
            )
            moved_rules = [m.rename_atoms(r, rel, alias) for r in moved_rules]
            persisted.append(alias)
    static_rules, static_facts = m.static_support(program, s.component, moved_rules)
    c2_rules = [*static_rules, *extra_c2, *moved_rules]

    # C1: the kept rules and the static ones they need, plus forwarding rules.
    kept_rules = [ctx.rules[i] for i in sorted(s.kept)]
    c1_static, c1_facts = m.static_support(program, s.component, kept_rules)
    hints = [ctx.rules[i] for i in sorted(s.moved)]
    forwards = [m.forward_rule(program, s.component, s.name, rel, channel[rel], hints) for rel in forwarded]
    c1_rules = [r for r in block.rules if r in c1_static or r in kept_rules] + forwards

    moved_facts = [f for f in block.facts if f.atom.relation in s.moved_refs.derived and f.atom.relation not in ctx.static]
    kept_facts = [f for f in block.facts if f in c1_facts or (f.atom.relation not in ctx.static and f not in moved_facts)]
    out = m.add_component(program, s.component, s.name, decl.count, comment)
    out = m.replace_block(out, s.component, c1_rules, kept_facts)
    out = m.replace_block(out, s.name, c2_rules, [*static_facts, *moved_facts])
    for alias in persisted:
        out = m.add_persist(out, alias)
    if pairing_in_c2:
        out = m.ensure_pairing(out, s.name, s.component, s.name)
    if forwards and decl.instances > 1:
        out = m.ensure_pairing(out, s.component, s.component, s.name)
    for rel in redirected:
        out = m.redirect(out, rel, s.component, s.name)
    return out


def describe_split(program: ir.Program, s: Split) -> tuple[str, ...]:
    lines = [f"rules moving to new component '{s.name}': {', '.join(moved_heads(program, s))}"]
    if s.forwarded:
        lines.append(f"forwarded by {s.component}: {', '.join(sorted(s.forwarded))}")
    if s.redirected:
        lines.append(f"redirected to {s.name}: {', '.join(sorted(s.redirected))}")
    return tuple(lines)
