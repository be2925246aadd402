"""The part partitioning rewrites share (TR §4, Appendix B.1.1: Redirection With Partitioning).

Partitioning keeps a component's rules and splits its data: each fact a sender addresses to the
component goes to the partition chosen by the distribution policy's value for that fact.

- A component with one instance becomes a component with N instances, and senders route with
  ``@component[key]``.
- A component with several logical instances (three participants) keeps its count: each instance
  is split into N partitions in the topology, and senders route with ``@x[key]`` — "the partition
  of logical node ``x`` chosen by ``key``". A partition is its logical node for the program
  (``self``, ``self_index`` and ``<component>(addr)`` are unchanged).

The key of a fact is its value at the relation's partition expression; for ``fn(attr)`` the sender
computes ``fn`` in its body. A rule that sends to the component but whose destination cannot be
rewritten this way (routed by another key, or an address only known at run time for a component
that becomes N instances) makes the rewrite inapplicable. So does a stream of sequenced batches
(:mod:`.batching`) that the routing cannot split: one the component receives (each batch is
processed whole), or one it sends to a state machine (which would merge the partitions' batches).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hydrodeploy.analysis.context import ComponentContext, context, node_local
from hydrodeploy.analysis.policies import PartitionExpr, Policy, find_policy
from hydrodeploy.errors import RewriteError, Span
from hydrodeploy.language import ir
from hydrodeploy.rewrites import mechanics as m
from hydrodeploy.rewrites.base import (
    Applicable,
    CheckResult,
    NotApplicable,
    Partition,
    topology_for,
)
from hydrodeploy.runtime.topology import Topology


@dataclass(frozen=True)
class Obstacle:
    reason: str
    span: Span | None


def senders(program: ir.Program, component: str) -> list[tuple[str, int, ir.Rule]]:
    """(block, position, rule) of every asynchronous rule sending a relation ``component`` reads."""
    ctx = context(program, component)
    reads = {a.relation for r in ctx.rules for a in ctx.idb_atoms(r)}
    out: list[tuple[str, int, ir.Rule]] = []
    for block in program.blocks:
        for i, rule in enumerate(block.rules):
            if node_local(program, rule.head.relation):
                continue  # batching bookkeeping is routed by stream already
            if rule.kind is ir.RuleKind.ASYNC and rule.head.relation in reads and rule.head.dest is not None:
                out.append((block.component, i, rule))
    return out


def _binder(program: ir.Program, rule: ir.Rule, var: str) -> str | None:
    names = {c.name for c in program.components}
    for atom in rule.positive_atoms():
        if atom.relation in names and len(atom.terms) == 1 and isinstance(atom.terms[0], ir.Var) and atom.terms[0].name == var:
            return atom.relation
    return None


def obstacles(program: ir.Program, component: str) -> Obstacle | None:
    """Why senders or readers of ``component``'s built-ins would break, if they would."""
    decl = program.component(component)
    assert decl is not None
    single = decl.instances == 1
    ctx = context(program, component)
    stream = batch_stream_to(program, component)
    if stream is not None:
        sender, rule = stream
        return Obstacle(
            f"'{component}' processes the batches '{sender}' relays to it ('{rule.head.relation}') whole and "
            "in order; a partition would see only part of each batch",
            rule.span,
        )
    stream = unacknowledged_stream_from(program, component)
    if stream is not None:
        receiver, rule = stream
        return Obstacle(
            f"'{component}' relays what '{receiver}' reads in sequenced batches ('{rule.head.relation}', "
            f"state machine decoupling), one stream per node: '{receiver}' would process the batches "
            "of several partitions together, not each partition's alone",
            rule.span,
        )
    if single:
        for rule in ctx.rules:
            for atom in rule.atoms():
                if atom.relation in ("self", "self_index", component, f"{component}_count"):
                    return Obstacle(
                        f"'{component}' reads '{atom.relation}'; as N instances each would see its own "
                        "address or the new count",
                        atom.span,
                    )
    for block in program.blocks:
        for rule in block.rules:
            if node_local(program, rule.head.relation):
                continue
            if rule.kind is ir.RuleKind.ASYNC and rule.head.dest is not None and rule.head.dest.keys is not None:
                dest = rule.head.dest
                if dest.target == component and not single:
                    return Obstacle(f"'{rule.head.relation}' is already routed to '{component}' by key", rule.span)
                if dest.target in m.rule_vars(rule) and _binder(program, rule, dest.target) == component:
                    return Obstacle(f"'{rule.head.relation}' is already routed to partitions of '{component}'", rule.span)
            if not single:
                continue
            for atom in rule.atoms():
                if atom.relation == f"{component}_count":
                    return Obstacle(
                        f"'{component}_count' is read (in '{block.component}'); it would count partitions",
                        atom.span,
                    )
                if atom.relation == component and not _routed_binder(program, rule, atom, ctx):
                    return Obstacle(
                        f"the address of '{component}' is read (in '{block.component}') other than to send "
                        "it what it reads; as N instances it would be N addresses",
                        atom.span,
                    )
    return None


def batch_stream_to(program: ir.Program, component: str) -> tuple[str, ir.Rule] | None:
    """(sender, rule) of a rule of another component that relays sequenced batches to
    ``component`` (:mod:`.batching`), if there is one. Batch facts and headers are sent to a node,
    not routed by a key (only acknowledgements are, back to the sending partition's stream)."""
    reads = {a.relation for r in context(program, component).rules for a in r.atoms()}
    for block in program.blocks:
        if block.component == component:
            continue
        for rule in block.rules:
            dest = rule.head.dest
            if (
                rule.kind is ir.RuleKind.ASYNC
                and dest is not None
                and dest.keys is None
                and rule.head.relation in reads
                and node_local(program, rule.head.relation)
            ):
                return block.component, rule
    return None


def unacknowledged_stream_from(program: ir.Program, component: str) -> tuple[str, ir.Rule] | None:
    """(receiver, header rule) of a stream of sequenced batches that ``component`` sends and whose
    receiver does not acknowledge (:mod:`.state_machine`): the receiver runs rules ``component``
    had, on the batches as ``component`` grouped them. (An acknowledged stream, an asymmetric
    proxy's, relays only what its receiver reads of the proxy: each partition is a stream of its
    own, and the proxy's outputs wait for their own stream's acknowledgements.)"""
    rules = program.rules_of(component)
    reads = {a.relation for r in rules for a in r.atoms()}
    for rule in rules:
        head = rule.head.relation
        if rule.kind is not ir.RuleKind.ASYNC or not head.endswith("_header") or not node_local(program, head):
            continue
        if f"{head.removesuffix('_header')}_ack" in reads:
            continue
        receiver = next((b.component for b in program.blocks if any(a.relation == head for r in b.rules for a in r.atoms())), "?")
        return receiver, rule
    return None


def _routed_binder(program: ir.Program, rule: ir.Rule, atom: ir.Atom, ctx: ComponentContext) -> bool:
    """``atom`` (``component(x)``) only binds the destination of a send that routing will rewrite."""
    dest = rule.head.dest
    reads = {a.relation for r in ctx.rules for a in ctx.idb_atoms(r)}
    return (
        rule.kind is ir.RuleKind.ASYNC
        and dest is not None
        and dest.keys is None
        and rule.head.relation in reads
        and len(atom.terms) == 1
        and isinstance(atom.terms[0], ir.Var)
        and atom.terms[0].name == dest.target
    )


def route(program: ir.Program, component: str, policy: Policy) -> ir.Program | Obstacle:
    """Rewrite every sender of a relation ``component`` reads to pick the partition by ``policy``."""
    decl = program.component(component)
    assert decl is not None
    single = decl.instances == 1
    out = program
    functions = {f.name: f for f in program.functions}
    by_block: dict[str, list[tuple[int, ir.Rule]]] = {}
    for block_name, i, rule in senders(program, component):
        dest = rule.head.dest
        assert dest is not None
        bound = m.rule_vars(rule)
        var_dest = dest.target in bound and dest.keys is None
        if dest.keys is not None and dest.target not in bound:
            if dest.target != component:
                continue
            kind = "component"
        elif var_dest:
            binder = _binder(program, rule, dest.target)
            if binder is not None and binder != component:
                continue
            if single and binder != component:
                return Obstacle(
                    f"'{rule.head.relation}' is sent to an address known only at run time; '{component}' "
                    "becomes several instances and only @component[key] can pick one",
                    rule.span,
                )
            kind = "bound" if binder == component else "data"
        else:
            continue
        expr = policy.relations.get(rule.head.relation)
        if expr is None:
            continue
        new_rule = _with_key(rule, expr, functions, component, single, kind)
        if isinstance(new_rule, Obstacle):
            return new_rule
        by_block.setdefault(block_name, []).append((i, new_rule))
    for block_name, edits in by_block.items():
        block = out.block(block_name)
        assert block is not None
        rules = list(block.rules)
        for i, rule in edits:
            rules[i] = rule
        out = m.replace_block(out, block_name, rules)
    return out


def _with_key(
    rule: ir.Rule,
    expr: PartitionExpr,
    functions: dict[str, ir.FunctionDecl],
    component: str,
    single: bool,
    kind: str,
) -> ir.Rule | Obstacle:
    dest = rule.head.dest
    assert dest is not None
    term = rule.head.terms[expr.attr]
    if isinstance(term, ir.Aggregate):
        return Obstacle(f"the partition key of '{rule.head.relation}' is an aggregate", rule.head.span)
    body = list(rule.body)
    key: ir.Expr = term
    if expr.fn is not None:
        fn = functions[expr.fn.split("#")[0]]
        arg: ir.Expr = term
        if not isinstance(term, ir.Var | ir.Const):
            tmp = m.fresh_var(rule, "key_input")
            body.append(ir.Assign(ir.Var(tmp), term))
            arg = ir.Var(tmp)
        out_var = m.fresh_var(rule, "key")
        outputs: list[ir.BodyTerm] = [ir.Wildcard() for _ in fn.outputs]
        index = int(expr.fn.split("#")[1]) if "#" in expr.fn else 0
        outputs[index] = ir.Var(out_var)
        assert isinstance(arg, ir.Var | ir.Const)
        body.append(ir.Atom(fn.name, (arg, *outputs)))
        key = ir.Var(out_var)
    if single:
        if kind == "bound":
            var = dest.target
            uses = sum(
                1
                for lit in body
                for t in (lit.terms if isinstance(lit, ir.Atom) else ())
                if isinstance(t, ir.Var) and t.name == var
            )
            other = any(var in ir.expr_vars(t) for t in rule.head.terms) or any(
                not isinstance(lit, ir.Atom) and var in _lit_vars(lit) for lit in body
            )
            if uses > 1 or other:
                return Obstacle(
                    f"the address of '{component}' is used as a value in the rule sending "
                    f"'{rule.head.relation}'",
                    rule.span,
                )
            body = [
                lit
                for lit in body
                if not (isinstance(lit, ir.Atom) and lit.relation == component and len(lit.terms) == 1
                        and isinstance(lit.terms[0], ir.Var) and lit.terms[0].name == var)
            ]
        new_dest = ir.Dest(component, (key,))
    else:
        new_dest = ir.Dest(dest.target, (key,))
    head = dataclasses.replace(rule.head, dest=new_dest)
    return dataclasses.replace(rule, head=head, body=tuple(body))


def _lit_vars(lit: ir.Literal) -> frozenset[str]:
    if isinstance(lit, ir.Compare):
        return ir.expr_vars(lit.left) | ir.expr_vars(lit.right)
    if isinstance(lit, ir.Assign):
        return ir.expr_vars(lit.expr) | {lit.var.name}
    return frozenset()


# --------------------------------------------------------------------------------------------
# check and apply, shared by co-hashing and dependencies
# --------------------------------------------------------------------------------------------


def check_policy(program: ir.Program, target: Partition, name: str, dependencies: bool) -> CheckResult:
    decl = program.component(target.component)
    if decl is None:
        return NotApplicable(name, target, f"no component '{target.component}'")
    if target.partitions < 1:
        return NotApplicable(name, target, "the number of partitions must be at least 1")
    search = find_policy(program, target.component, target.key, dependencies)
    if search.policy is None:
        return NotApplicable(name, target, search.reason or "no distribution policy", search.span)
    policy = search.policy
    if not dependencies and policy.dependencies:
        return NotApplicable(name, target, "the policy found needs dependencies", None)
    if dependencies and not policy.dependencies:
        return NotApplicable(
            name,
            target,
            "co-hashing alone partitions this component (no dependency is needed)",
            None,
        )
    problem = obstacles(program, target.component)
    if problem is not None:
        return NotApplicable(name, target, problem.reason, problem.span)
    trial = route(program, target.component, policy)
    if isinstance(trial, Obstacle):
        return NotApplicable(name, target, trial.reason, trial.span)
    keys = sorted(set(policy.rule_keys.values())) or [
        _attr_name(program, rel, expr) for rel, expr in sorted(policy.relations.items())
    ]
    how = "instances" if decl.instances == 1 else f"partitions of each of its {decl.instances} instances"
    details = [f"policy: {policy.describe()}"]
    if target.key is None:
        options = {
            _attr_name(program, rel, expr)
            for rel, exprs in search.candidates.items()
            for expr in exprs
            if rel in {s[2].head.relation for s in senders(program, target.component)}
        }
        if len(options) > 1:
            details.append(f"other keys: {', '.join(sorted(options - set(keys)))}")
    return Applicable(
        name,
        target,
        f"partition '{target.component}' into {target.partitions} {how} on {', '.join(dict.fromkeys(keys))}",
        tuple(details),
    )


def _attr_name(program: ir.Program, relation: str, expr: PartitionExpr) -> str:
    names = m.attribute_names(program, relation)
    base = names[expr.attr] if expr.attr < len(names) else f"{relation}.{expr.attr}"
    return base if expr.fn is None else f"{expr.fn}({base})"


def partition(
    program: ir.Program, topology: Topology | None, target: Partition, result: Applicable | None = None, policy: Policy | None = None
) -> tuple[ir.Program, Topology]:
    """Apply a policy (the checked one, or ``policy`` given explicitly — tests use this to
    partition on a wrong key and see the equivalence checker catch it)."""
    if policy is None:
        search = find_policy(program, target.component, target.key, True)
        assert search.policy is not None
        policy = search.policy
    decl = program.component(target.component)
    assert decl is not None
    routed = route(program, target.component, policy)
    if isinstance(routed, Obstacle):
        raise RewriteError(routed.reason, routed.span, program.source)
    if decl.instances == 1:
        out = m.set_count(routed, target.component, target.partitions if target.partitions > 1 else None)
        return out, topology_for(out, topology)
    return routed, topology_for(routed, topology, {target.component: target.partitions})
