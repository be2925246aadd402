"""Sequenced batches between two components, and outputs held until a batch is acknowledged
(TR Appendix A.4.2 "Batching" and A.5.1 "Batch Acknowledgement"), written in `.ded`.

The *sender* numbers the ticks in which it relays facts to the *receiver*: every such tick is one
batch, numbered 0, 1, 2, ... per sending node; each relayed fact carries ``(stream, batch)``, and a
header per batch carries its size and the previous batch's number. The stream is the sender's
``self_partition``, so that the partitions of a partitioned sender are separate streams. The
receiver buffers facts until a batch is complete and the stream's previous batch was processed,
then makes the whole batch visible in one tick (one batch per stream per tick) — so it processes
what the sender relayed with the sender's grouping and order, whatever the network did.

With acknowledgements the receiver answers each processed batch, and the sender holds each of its
other outputs until the latest batch it had sent when the output was derived is acknowledged
(outputs derived before any batch go at once).

Every relation of the machinery is named ``<sender>_batch_...``; analyses treat those as
node-local bookkeeping (each partition of a sender has its own), see
:func:`hydrodeploy.analysis.context.node_local`. A sender can have several streams, each to its own
receiver (the proxy of an asymmetric decoupling relays to the component it left, and relays again
when a state machine decoupling moves some of its own rules on): each stream has its own prefix
(:func:`stream_prefix`), so that their batch numbers, sizes and acknowledgements stay apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from hydrodeploy.language import ir
from hydrodeploy.rewrites import mechanics as m

V = ir.Var


def prefix(sender: str) -> str:
    """The prefix of every relation of ``sender``'s batching machinery (and of its first stream)."""
    return f"{sender}_batch"


def stream_prefix(program: ir.Program, sender: str) -> str:
    """The prefix of the relations of a new stream from ``sender``: ``<sender>_batch`` for its
    first stream, ``<sender>_batch_2``, ``_3``, ... when ``program`` already has one, so that a
    stream never counts, numbers or acknowledges another's facts as its own (which is also a cycle
    through negation: a held output waits on ``_latest``, which reads ``_size``, which would count
    the held output relayed on the next stream)."""
    base = prefix(sender)
    names = m.used_names(program)

    def free(p: str) -> bool:
        return not any(name == p or name.startswith(p + "_") for name in names)

    if free(base):
        return base
    k = 2
    while not free(f"{base}_{k}"):
        k += 1
    return f"{base}_{k}"


@dataclass(frozen=True)
class Relayed:
    """A relation the receiver reads, relayed from the sender: ``body`` produces its facts at the
    sender (the channel itself, or the body of a rule deriving it), with values ``terms``."""

    relation: str
    terms: tuple[ir.HeadTerm, ...]
    body: tuple[ir.Literal, ...]


def _rule(head: str, terms: Sequence[ir.HeadTerm], kind: ir.RuleKind, body: Sequence[ir.Literal], dest: ir.Dest | None = None, comment: str | None = None) -> ir.Rule:
    return ir.Rule(ir.Head(head, tuple(terms), dest), kind, tuple(body), comment=comment)


def _tag(p: str, relation: str) -> str:
    """A relayed relation's name inside the batch bookkeeping (a relation that is itself
    bookkeeping of these batches, such as a projection, is not prefixed twice)."""
    return relation.removeprefix(p + "_")


def _channel(p: str, relation: str) -> str:
    """The channel that carries a relayed relation's facts to the receiver."""
    tag = _tag(p, relation)
    return f"{p}_{tag}" if tag == relation else f"{p}_relay_{tag}"


def _atom(rel: str, *terms: ir.BodyTerm, negated: bool = False) -> ir.Atom:
    return ir.Atom(rel, tuple(terms), negated=negated)


def rising(p: str, r: Relayed) -> tuple[Relayed, list[ir.Rule]]:
    """``r`` (one value per fact) relayed only when above every value the sender relayed before,
    for a receiver that only raises a carried maximum with it (see
    :func:`hydrodeploy.rewrites.asymmetric.absorbed`): a value no greater than one it was sent in
    an earlier batch, which it processed first, changes nothing there. A tick with nothing new
    relays nothing: no batch, so no acknowledgement, and the sender's outputs wait for none."""
    (value,) = r.terms
    assert isinstance(value, ir.Var)
    tag = _tag(p, r.relation)
    fresh, top, upto, most, anything = (f"{p}_{kind}_{tag}" for kind in ("fresh", "relayed_top", "relayed_upto", "relayed_max", "relayed_any"))
    k = V(m.fresh_var(_rule(fresh, (value,), ir.RuleKind.SYNC, r.body), "k"))
    rules = [
        _rule(fresh, (value,), ir.RuleKind.SYNC, (*r.body, _atom(anything, negated=True)), comment=f"'{r.relation}' the receiver has not been sent yet"),
        _rule(fresh, (value,), ir.RuleKind.SYNC, (*r.body, _atom(top, k), ir.Compare(">", value, k))),
        _rule(upto, (value,), ir.RuleKind.SYNC, (_atom(top, value),)),
        _rule(upto, (value,), ir.RuleKind.SYNC, (_atom(fresh, value),)),
        _rule(most, (ir.Aggregate("max", value),), ir.RuleKind.SYNC, (_atom(upto, value),)),
        _rule(top, (value,), ir.RuleKind.NEXT, (_atom(most, value),), comment=f"the highest '{r.relation}' relayed so far"),
        _rule(anything, (), ir.RuleKind.SYNC, (_atom(top, ir.Wildcard()),)),
    ]
    return Relayed(r.relation, r.terms, (_atom(fresh, value),)), rules


def sender_rules(
    p: str, relayed: Sequence[Relayed], to_receiver: Sequence[ir.Literal], dest_var: str
) -> list[ir.Rule]:
    """Rules for the sender of the stream with prefix ``p`` (:func:`stream_prefix`): count what is
    relayed this tick, number the batch, relay the facts and the header to the node bound to
    ``dest_var`` by ``to_receiver``."""
    n, size, prev, c, j = V("n"), V("size"), V("prev"), V("c"), V("j")
    out: list[ir.Rule] = []
    for r in relayed:
        count_rel = f"{p}_count_{_tag(p, r.relation)}"
        out.append(
            _rule(
                count_rel,
                (ir.Aggregate("count", None),),
                ir.RuleKind.SYNC,
                r.body,
                comment=f"how many '{r.relation}' facts this tick's batch relays",
            )
        )
    if len(relayed) == 1:
        out.append(_rule(f"{p}_size", (c,), ir.RuleKind.SYNC, (_atom(f"{p}_count_{_tag(p, relayed[0].relation)}", c),)))
    else:
        for r in relayed:
            out.append(
                _rule(f"{p}_part", (ir.Const(r.relation), c), ir.RuleKind.SYNC, (_atom(f"{p}_count_{_tag(p, r.relation)}", c),))
            )
        out.append(
            _rule(f"{p}_size", (ir.Aggregate("sum", c),), ir.RuleKind.SYNC, (_atom(f"{p}_part", V("r"), c),))
        )
    out += [
        _rule(f"{p}_last", (n,), ir.RuleKind.SYNC, (_atom(f"{p}_sent", n),), comment="batches sent so far: the last number (-1: none)"),
        _rule(f"{p}_prev", (ir.Aggregate("max", n),), ir.RuleKind.SYNC, (_atom(f"{p}_last", n),)),
        _rule(
            f"{p}_number",
            (n,),
            ir.RuleKind.SYNC,
            (_atom(f"{p}_size", ir.Wildcard()), _atom(f"{p}_prev", prev), ir.Assign(n, ir.BinOp("+", prev, ir.Const(1)))),
            comment="a tick that relays anything sends the next batch",
        ),
        _rule(f"{p}_sent", (n,), ir.RuleKind.NEXT, (_atom(f"{p}_number", n),)),
        _rule(f"{p}_sent", (n,), ir.RuleKind.NEXT, (_atom(f"{p}_prev", n),)),
        _rule(
            f"{p}_header",
            (j, n, size, prev),
            ir.RuleKind.ASYNC,
            (_atom(f"{p}_number", n), _atom(f"{p}_size", size), _atom(f"{p}_prev", prev), _atom("self_partition", j), *to_receiver),
            ir.Dest(dest_var),
            comment="each batch announces its size and the batch before it, on this node's stream j",
        ),
    ]
    for r in relayed:
        values = tuple(r.terms)
        out.append(
            _rule(
                _channel(p, r.relation),
                (j, n, *values),
                ir.RuleKind.ASYNC,
                (*r.body, _atom(f"{p}_number", n), _atom("self_partition", j), *to_receiver),
                ir.Dest(dest_var),
                comment=f"relay '{r.relation}' in this tick's batch",
            )
        )
    return out


def sender_facts(p: str) -> list[ir.Fact]:
    return [ir.Fact(ir.Atom(f"{p}_sent", (ir.Const(-1),)))]


def receiver_rules(
    p: str, relayed: Sequence[tuple[str, Sequence[str]]], ack_to: Sequence[ir.Literal] | None, ack_var: str
) -> list[ir.Rule]:
    """Rules for the receiver of the stream with prefix ``p``: buffer relayed facts, process
    complete batches in order (one per stream per tick) as facts of the relayed relations, and
    acknowledge them to the node bound to ``ack_var`` by ``ack_to`` (partition ``j``, the stream),
    when ``ack_to`` is given."""
    j, n, size, prev, c = V("j"), V("n"), V("size"), V("prev"), V("c")
    out: list[ir.Rule] = []
    for rel, names in relayed:
        vs = tuple(V(x) for x in names)
        buf = f"{p}_buffer_{_tag(p, rel)}"
        out += [
            _rule(buf, (j, n, *vs), ir.RuleKind.SYNC, (_atom(_channel(p, rel), j, n, *vs),), comment=f"relayed '{rel}' facts wait for their batch"),
            _rule(buf, (j, n, *vs), ir.RuleKind.NEXT, (_atom(buf, j, n, *vs), _atom(f"{p}_ready", j, n, negated=True))),
            _rule(f"{p}_arrived_{_tag(p, rel)}", (j, n, ir.Aggregate("count", None)), ir.RuleKind.SYNC, (_atom(buf, j, n, *vs),)),
        ]
    if len(relayed) == 1:
        out.append(_rule(f"{p}_arrived", (j, n, c), ir.RuleKind.SYNC, (_atom(f"{p}_arrived_{_tag(p, relayed[0][0])}", j, n, c),)))
    else:
        for rel, _ in relayed:
            out.append(
                _rule(f"{p}_arrived_part", (j, n, ir.Const(rel), c), ir.RuleKind.SYNC, (_atom(f"{p}_arrived_{_tag(p, rel)}", j, n, c),))
            )
        out.append(
            _rule(f"{p}_arrived", (j, n, ir.Aggregate("sum", c)), ir.RuleKind.SYNC, (_atom(f"{p}_arrived_part", j, n, V("r"), c),))
        )
    out += [
        _rule(f"{p}_headers", (j, n, size, prev), ir.RuleKind.SYNC, (_atom(f"{p}_header", j, n, size, prev),)),
        _rule(
            f"{p}_headers",
            (j, n, size, prev),
            ir.RuleKind.NEXT,
            (_atom(f"{p}_headers", j, n, size, prev), _atom(f"{p}_ready", j, n, negated=True)),
        ),
        _rule(
            f"{p}_ready",
            (j, n),
            ir.RuleKind.SYNC,
            (_atom(f"{p}_headers", j, n, size, ir.Const(-1)), _atom(f"{p}_arrived", j, n, size)),
            comment="a stream's first batch is ready once all its facts arrived",
        ),
        _rule(
            f"{p}_ready",
            (j, n),
            ir.RuleKind.SYNC,
            (_atom(f"{p}_headers", j, n, size, prev), _atom(f"{p}_arrived", j, n, size), _atom(f"{p}_done", j, prev)),
            comment="a later batch, once all its facts arrived and the one before it was processed",
        ),
        _rule(f"{p}_done", (j, n), ir.RuleKind.NEXT, (_atom(f"{p}_ready", j, n),)),
        _rule(f"{p}_done", (j, n), ir.RuleKind.NEXT, (_atom(f"{p}_done", j, n), _atom(f"{p}_moved", j, negated=True))),
        _rule(f"{p}_moved", (j,), ir.RuleKind.SYNC, (_atom(f"{p}_ready", j, ir.Wildcard()),)),
    ]
    for rel, names in relayed:
        vs = tuple(V(x) for x in names)
        out.append(
            _rule(
                rel,
                vs,
                ir.RuleKind.SYNC,
                (_atom(f"{p}_buffer_{_tag(p, rel)}", j, n, *vs), _atom(f"{p}_ready", j, n)),
                comment=f"'{rel}' as the sender relayed it, one whole batch at a time",
            )
        )
    if ack_to is not None:
        out.append(
            _rule(
                f"{p}_ack",
                (n,),
                ir.RuleKind.ASYNC,
                (_atom(f"{p}_ready", j, n), *ack_to),
                ir.Dest(ack_var, (j,)),
                comment="acknowledge each processed batch to the partition (stream j) that sent it",
            )
        )
    return out


def ack_rules(p: str) -> tuple[list[ir.Rule], list[ir.Fact]]:
    """Sender rules tracking the acknowledgements of the stream with prefix ``p``:
    ``<p>_acked_top(a)``, the highest acknowledged batch, and ``<p>_latest(n)``, the latest batch
    sent up to this tick."""
    n, a = V("n"), V("a")
    rules = [
        _rule(f"{p}_acked", (n,), ir.RuleKind.SYNC, (_atom(f"{p}_ack", n),)),
        _rule(f"{p}_acked", (n,), ir.RuleKind.SYNC, (_atom(f"{p}_acked_kept", n),)),
        _rule(f"{p}_acked_top", (ir.Aggregate("max", a),), ir.RuleKind.SYNC, (_atom(f"{p}_acked", a),), comment="the highest batch acknowledged (-1: none)"),
        _rule(f"{p}_acked_kept", (a,), ir.RuleKind.NEXT, (_atom(f"{p}_acked_top", a),)),
        _rule(f"{p}_latest", (n,), ir.RuleKind.SYNC, (_atom(f"{p}_number", n),), comment="the latest batch sent, as of this tick"),
        _rule(f"{p}_latest", (n,), ir.RuleKind.SYNC, (_atom(f"{p}_prev", n), _atom(f"{p}_size", ir.Wildcard(), negated=True))),
    ]
    facts = [ir.Fact(ir.Atom(f"{p}_acked", (ir.Const(-1),)))]
    return rules, facts


def _fan_out(program: ir.Program, rule: ir.Rule) -> list[ir.Atom]:
    """The body atoms of ``rule`` that only name its destinations: a component's instances
    (``replica(r)``) whose variables appear nowhere else but in the destination. A held output
    waits once per fact, not once per destination: these atoms join when it is sent."""
    dest = rule.head.dest
    assert dest is not None
    components = {c.name for c in program.components}
    out = []
    for i, lit in enumerate(rule.body):
        if not (isinstance(lit, ir.Atom) and not lit.negated and lit.relation in components):
            continue
        names = {t.name for t in lit.terms if isinstance(t, ir.Var)}
        elsewhere = m.rule_vars(dataclasses.replace(rule, body=rule.body[:i] + rule.body[i + 1 :]))
        keys = set().union(*(ir.expr_vars(k) for k in dest.keys or ()))
        if names and names <= {dest.target} and not names & (elsewhere | keys):
            out.append(lit)
    return out


def held_output(program: ir.Program, p: str, rule: ir.Rule, waiting: str) -> list[ir.Rule]:
    """``rule`` (an output of the sender of the stream with prefix ``p``) held until the batch it
    follows is acknowledged: a waiting relation keyed by that batch, carried until acknowledged,
    sent once it is."""
    dest = rule.head.dest
    assert dest is not None
    n, a = V(m.fresh_var(rule, "batch")), V(m.fresh_var(rule, "acked"))
    names: list[str] = []
    for i, t in enumerate(rule.head.terms):
        names.append(t.name if isinstance(t, ir.Var) and t.name not in names else m.fresh_var(rule, f"w{i}", names))
    fan_out = _fan_out(program, rule)
    body = tuple(lit for lit in rule.body if not any(lit is f for f in fan_out))
    cols: list[ir.HeadTerm] = [n]
    send_dest: ir.Dest
    bound = m.rule_vars(dataclasses.replace(rule, body=body))
    if dest.target in bound:
        cols.append(V(dest.target))
    keys = list(dest.keys or ())
    key_names = [m.fresh_var(rule, f"key{i}", names) for i in range(len(keys))]
    cols += keys
    cols += list(rule.head.terms)
    wait_vars: list[ir.BodyTerm] = [n]
    if dest.target in bound:
        wait_vars.append(V(dest.target))
    wait_vars += [V(k) for k in key_names]
    wait_vars += [V(x) for x in names]
    send_dest = ir.Dest(dest.target, tuple(V(k) for k in key_names) if keys else None)
    return [
        _rule(
            waiting,
            cols,
            ir.RuleKind.SYNC,
            (*body, _atom(f"{p}_latest", n)),
            comment=rule.comment or f"'{rule.head.relation}' waits until the batch before it is acknowledged",
        ),
        _rule(
            waiting,
            [V(w.name) for w in wait_vars if isinstance(w, ir.Var)],
            ir.RuleKind.NEXT,
            (_atom(waiting, *wait_vars), _atom(f"{p}_acked_top", a), ir.Compare(">", n, a)),
        ),
        _rule(
            rule.head.relation,
            [V(x) for x in names],
            ir.RuleKind.ASYNC,
            (_atom(waiting, *wait_vars), *fan_out, _atom(f"{p}_acked_top", a), ir.Compare("<=", n, a)),
            send_dest,
            comment=f"send '{rule.head.relation}' once the receiver processed everything relayed before it",
        ),
    ]
