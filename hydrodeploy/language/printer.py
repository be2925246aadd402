"""Canonical printer: IR back to `.ded` text, such that ``parse(print_program(p)) == p``.

Layout is fixed (declarations grouped by kind, then one block per component, one rule per
statement, long bodies wrapped one literal per line); comments attached to nodes are printed above
them, so a rewritten program keeps its author's explanations.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from hydrodeploy.language import ir

_WRAP = 100
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "%": 2}


def format_value(value: ir.Value) -> str:
    if isinstance(value, bool):  # bool is an int subclass; programs have no booleans
        raise TypeError("booleans are not .ded values")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".eE") else text + ".0"
    return str(value)


def format_expr(expr: ir.Expr | ir.Wildcard | ir.Aggregate, parent: int = 0, right: bool = False) -> str:
    if isinstance(expr, ir.Var):
        return expr.name
    if isinstance(expr, ir.Wildcard):
        return "_"
    if isinstance(expr, ir.Const):
        return format_value(expr.value)
    if isinstance(expr, ir.Aggregate):
        if expr.func == "index":
            return "index()"
        return f"{expr.func}({'*' if expr.arg is None else expr.arg.name})"
    prec = _PRECEDENCE[expr.op]
    text = f"{format_expr(expr.left, prec)} {expr.op} {format_expr(expr.right, prec, right=True)}"
    if prec < parent or (right and prec == parent):
        return f"({text})"
    return text


def format_atom(atom: ir.Atom) -> str:
    terms = ", ".join(format_expr(t) for t in atom.terms)
    return f"{'!' if atom.negated else ''}{atom.relation}({terms})"


def format_literal(lit: ir.Literal) -> str:
    if isinstance(lit, ir.Atom):
        return format_atom(lit)
    if isinstance(lit, ir.Compare):
        return f"{format_expr(lit.left)} {lit.op} {format_expr(lit.right)}"
    return f"{lit.var.name} = {format_expr(lit.expr)}"


def format_head(head: ir.Head) -> str:
    dest = ""
    if head.dest is not None:
        dest = "@" + head.dest.target
        if head.dest.keys is not None:
            dest += "[" + ", ".join(format_expr(k) for k in head.dest.keys) + "]"
    terms = ", ".join(format_expr(t) for t in head.terms)
    return f"{head.relation}{dest}({terms})"


def format_rule(rule: ir.Rule, indent: str = "") -> str:
    head = f"{indent}{format_head(rule.head)} {rule.kind.value}"
    literals = [format_literal(lit) for lit in rule.body]
    one_line = f"{head} {', '.join(literals)}."
    if len(one_line) <= _WRAP:
        return one_line
    inner = indent + "    "
    return head + "\n" + ",\n".join(inner + lit for lit in literals) + "."


def _comment(text: str | None, indent: str = "") -> list[str]:
    if not text:
        return []
    return [f"{indent}# {line}".rstrip() for line in text.splitlines()]


def _section(lines: list[str], items: Iterable[tuple[str | None, str]]) -> None:
    chunk: list[str] = []
    for comment, text in items:
        chunk.extend(_comment(comment))
        chunk.append(text)
    if chunk:
        if lines:
            lines.append("")
        lines.extend(chunk)


def print_program(program: ir.Program) -> str:
    lines: list[str] = []
    if program.comment:
        lines.extend(_comment(program.comment))
    _section(
        lines,
        ((c.comment, f".component {c.name}" + ("" if c.count is None else f" {c.count}")) for c in program.components),
    )
    _section(
        lines,
        ((i.comment, f".input {i.relation}({', '.join(i.attrs)}) @ {i.component}") for i in program.inputs),
    )
    _section(
        lines,
        (
            (o.comment, f".output {o.relation}" + ("" if o.attrs is None else f"({', '.join(o.attrs)})"))
            for o in program.outputs
        ),
    )
    _section(lines, ((p.comment, f".persist {p.relation}") for p in program.persists))
    _section(lines, ((lg.comment, f".log {lg.relation}") for lg in program.logs))
    _section(
        lines,
        ((t.comment, f".timer {t.name} {_duration(t.period_ms)} @ {t.component}") for t in program.timers),
    )
    _section(
        lines,
        (
            (
                f.comment,
                f".function {f.name}({', '.join(f.inputs)}) -> ({', '.join(f.outputs)}) = {json.dumps(f.target)}",
            )
            for f in program.functions
        ),
    )
    for block in program.blocks:
        if lines:
            lines.append("")
        lines.extend(_comment(block.comment))
        lines.append(f"{block.component} {{")
        for fact in block.facts:
            lines.extend(_comment(fact.comment, "  "))
            lines.append(f"  {format_atom(fact.atom)}.")
        for rule in block.rules:
            lines.extend(_comment(rule.comment, "  "))
            lines.append(format_rule(rule, "  "))
        lines.append("}")
    return "\n".join(lines) + "\n"


def _duration(ms: int) -> str:
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
