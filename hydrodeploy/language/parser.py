"""Parse `.ded` text into the frozen IR (:mod:`hydrodeploy.language.ir`).

Syntax errors become :class:`~hydrodeploy.errors.LanguageError` with the file, line and column of
the offending token. Comments are kept: a run of comment lines directly above a declaration,
block, rule or fact (and comments on its own lines) is attached to it, so rewritten programs print
with the author's explanations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import cache
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from hydrodeploy.errors import LanguageError, Span
from hydrodeploy.language import ir

_TOKEN_NAMES = {
    "RULE_OP": "':-', ':+' or ':~'",
    "NAME": "a name",
    "INT": "an integer",
    "NUMBER_LIT": "a number",
    "STRING": "a string",
    "DURATION": "a duration such as 100ms",
    "CMP": "a comparison",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*', '/' or '%'",
    "STAR": "'*'",
    "_COMPONENT": "a directive",
    "_INPUT": "a directive",
    "_OUTPUT": "a directive",
    "_PERSIST": "a directive",
    "_LOG": "a directive",
    "_TIMER": "a directive",
    "_FUNCTION": "a directive",
}


@cache
def _lark() -> Lark:
    grammar = resources.files("hydrodeploy.language").joinpath("ded.lark").read_text("utf-8")
    return Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def _describe_expected(expected: Iterable[str]) -> str:
    names: set[str] = set()
    for terminal in expected:
        if terminal == "$END":
            names.add("end of file")
            continue
        if terminal in _TOKEN_NAMES:
            names.add(_TOKEN_NAMES[terminal])
            continue
        try:
            pattern = _lark().get_terminal(terminal).pattern
        except KeyError:
            names.add(terminal)
            continue
        text = pattern.value
        names.add("a directive" if text.startswith(".") and len(text) > 1 else f"'{text}'")
    ordered = sorted(names)
    if not ordered:
        return ""
    if len(ordered) == 1:
        return ordered[0]
    return ", ".join(ordered[:-1]) + " or " + ordered[-1]


_DIRECTIVES = (".component", ".input", ".output", ".persist", ".log", ".timer", ".function")


def _end_of_file(source: str) -> tuple[int, int]:
    """Line and column just after the last character that is not a line break."""
    lines = source.rstrip("\r\n").split("\n")
    return len(lines), len(lines[-1]) + 1


def _directive_at(source: str, token: Token) -> str:
    """The ``.word`` starting at a '.' token, if it looks like a directive ('' otherwise)."""
    pos = token.start_pos
    if pos is None:
        return ""
    match = re.compile(r"\.[A-Za-z_]+").match(source, pos)
    return "" if match is None else match.group(0)


def _token_text(token: Token) -> str:
    text = str(token)
    return "end of file" if token.type == "$END" else repr(text)


def _syntax_error(err: UnexpectedInput, path: str, source: str) -> LanguageError:
    line = max(err.line, 1) if isinstance(err.line, int) else 1
    col = max(err.column, 1) if isinstance(err.column, int) else 1
    if isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream
        ch = source[pos] if pos is not None and 0 <= pos < len(source) else "?"
        message = "unterminated string" if ch == '"' else f"unexpected character {ch!r}"
        span = Span(path, line, col, line, col + 1)
    elif isinstance(err, UnexpectedEOF):
        line, col = _end_of_file(source)
        message = "unexpected end of file"
        if err.expected:
            message += f"; expected {_describe_expected(err.expected)}"
        span = Span(path, line, col, line, col + 1)
    elif isinstance(err, UnexpectedToken):
        token = err.token
        if token.type == "$END":
            line, col = _end_of_file(source)
            message = "unexpected end of file"
        elif str(token) == "." and _directive_at(source, token) not in ("", *_DIRECTIVES):
            directive = _directive_at(source, token)
            return LanguageError(
                f"unknown directive '{directive}' (known: {', '.join(_DIRECTIVES)})",
                Span(path, line, col, line, col + len(directive)),
                source,
            )
        else:
            message = f"unexpected {_token_text(token)}"
        expected = _describe_expected(err.accepts or err.expected)
        if expected:
            message += f"; expected {expected}"
        end_col = col + max(len(str(token)), 1) if token.type != "$END" else col + 1
        span = Span(path, line, col, line, end_col)
    else:  # pragma: no cover - lark raises only the three above
        message = "syntax error"
        span = Span(path, line, col, line, col + 1)
    return LanguageError(message, span, source)


class _Comments:
    """Comments of a source file by line, and which lines hold only a comment."""

    def __init__(self, source: str) -> None:
        self.by_line: dict[int, str] = {}
        self.lines = source.split("\n")
        self.used: set[int] = set()

    def add(self, token: Token) -> None:
        text = str(token)
        text = text[1:] if text.startswith("#") else text[2:]
        self.by_line[token.line or 0] = text.strip()

    def _comment_only(self, line: int) -> bool:
        if not 1 <= line <= len(self.lines):
            return False
        stripped = self.lines[line - 1].strip()
        return stripped.startswith("#") or stripped.startswith("//")

    def take(self, start: int, end: int) -> str | None:
        """The comment lines directly above ``start`` and any comments on lines start..end."""
        taken: list[int] = []
        line = start - 1
        while line not in self.used and self._comment_only(line):
            taken.append(line)
            line -= 1
        taken.reverse()
        taken.extend(n for n in range(start, end + 1) if n in self.by_line)
        texts = [self.by_line[n] for n in taken if n in self.by_line and n not in self.used]
        self.used.update(taken)
        return "\n".join(texts) if texts else None

    def header(self, first_item_line: int | None) -> str | None:
        """Comment lines at the top of the file that are separated from the first item by a
        blank line (the file's own description)."""
        taken: list[int] = []
        line = 1
        while self._comment_only(line):
            taken.append(line)
            line += 1
        if not taken:
            return None
        if first_item_line is not None and line == first_item_line:
            return None  # directly above the first item: it belongs to that item
        self.used.update(taken)
        return "\n".join(self.by_line[n] for n in taken if n in self.by_line)


def _span(path: str, meta: Any) -> Span | None:
    if getattr(meta, "empty", True):
        return None
    return Span(path, meta.line, meta.column, meta.end_line, meta.end_column)


def _tspan(path: str, token: Token) -> Span:
    return Span(path, token.line or 1, token.column or 1, token.end_line or 1, token.end_column or 1)


class _ToIR(Transformer[Token, Any]):
    """Turns the lark parse tree into IR nodes. Top-level items are returned in source order;
    :func:`parse` groups them into a :class:`~hydrodeploy.language.ir.Program`."""

    def __init__(self, path: str, source: str, comments: _Comments) -> None:
        super().__init__()
        self.path = path
        self.source = source
        self.comments = comments

    def _error(self, message: str, span: Span | None) -> LanguageError:
        return LanguageError(message, span, self.source)

    def _comment(self, meta: Any) -> str | None:
        if getattr(meta, "empty", True):
            return None
        return self.comments.take(meta.line, meta.end_line)

    # ---- terms ---------------------------------------------------------------------------

    @v_args(meta=True)
    def var(self, meta: Any, children: list[Token]) -> ir.Var | ir.Wildcard:
        name = str(children[0])
        if name == "_":
            return ir.Wildcard(span=_span(self.path, meta))
        return ir.Var(name, span=_span(self.path, meta))

    @v_args(meta=True)
    def number(self, meta: Any, children: list[Token]) -> ir.Const:
        return ir.Const(_number(str(children[0])), span=_span(self.path, meta))

    @v_args(meta=True)
    def negative(self, meta: Any, children: list[Token]) -> ir.Const:
        return ir.Const(-_number(str(children[0])), span=_span(self.path, meta))

    @v_args(meta=True)
    def string(self, meta: Any, children: list[Token]) -> ir.Const:
        token = children[0]
        try:
            value = json.loads(str(token))
        except json.JSONDecodeError:
            raise self._error(f"invalid string literal {token!s}", _tspan(self.path, token)) from None
        return ir.Const(str(value), span=_span(self.path, meta))

    @v_args(meta=True)
    def binop(self, meta: Any, children: list[Any]) -> ir.BinOp:
        left, op, right = children
        for side in (left, right):
            if isinstance(side, ir.Wildcard):
                raise self._error("'_' cannot be used in arithmetic", side.span)
        return ir.BinOp(str(op), left, right, span=_span(self.path, meta))

    @v_args(meta=True)
    def aggregate(self, meta: Any, children: list[Any]) -> ir.Aggregate:
        name_token, arg = children
        func = str(name_token)
        span = _span(self.path, meta)
        if func not in ir.AGGREGATES:
            known = ", ".join(ir.AGGREGATES)
            raise self._error(f"unknown aggregate '{func}' (known: {known})", _tspan(self.path, name_token))
        if isinstance(arg, ir.Wildcard):
            raise self._error(f"'{func}(_)' aggregates nothing; write {func}(*) or name a variable", arg.span)
        if isinstance(arg, Token):  # '*'
            if func != "count":
                raise self._error(f"only count accepts '*', not {func}", _tspan(self.path, arg))
            return ir.Aggregate("count", None, span=span)
        if func == "index":
            if arg is not None:
                raise self._error("index() takes no argument", span)
            return ir.Aggregate("index", None, span=span)
        if arg is None:
            raise self._error(f"{func}() needs an argument", span)
        return ir.Aggregate(func, arg, span=span)

    # ---- literals ------------------------------------------------------------------------

    def body_terms(self, children: list[Any]) -> tuple[Any, ...]:
        for child in children:
            if isinstance(child, ir.BinOp):
                raise self._error(
                    "arithmetic is not allowed inside an atom; bind it first, e.g. z = x + 1",
                    child.span,
                )
        return tuple(children)

    def head_terms(self, children: list[Any]) -> tuple[Any, ...]:
        for child in children:
            if isinstance(child, ir.Wildcard):
                raise self._error("'_' cannot appear in a rule head", child.span)
        return tuple(children)

    def expr_list(self, children: list[Any]) -> tuple[Any, ...]:
        for child in children:
            if isinstance(child, ir.Wildcard):
                raise self._error("'_' cannot be a partition key", child.span)
        return tuple(children)

    def name_list(self, children: list[Token]) -> tuple[str, ...]:
        seen: set[str] = set()
        for token in children:
            if str(token) in seen:
                raise self._error(f"attribute '{token}' is listed twice", _tspan(self.path, token))
            seen.add(str(token))
        return tuple(str(t) for t in children)

    @v_args(meta=True)
    def atom(self, meta: Any, children: list[Any]) -> ir.Atom:
        name, terms = children
        return ir.Atom(str(name), terms or (), span=_span(self.path, meta))

    @v_args(meta=True)
    def negated(self, meta: Any, children: list[Any]) -> ir.Atom:
        atom: ir.Atom = children[0]
        return replace(atom, negated=True, span=_span(self.path, meta))

    @v_args(meta=True)
    def compare(self, meta: Any, children: list[Any]) -> ir.Compare:
        left, op, right = children
        for side in (left, right):
            if isinstance(side, ir.Wildcard):
                raise self._error("'_' cannot be compared", side.span)
        return ir.Compare(str(op), left, right, span=_span(self.path, meta))

    @v_args(meta=True)
    def assign(self, meta: Any, children: list[Any]) -> ir.Assign:
        var, expr = children
        if isinstance(var, ir.Wildcard) or isinstance(expr, ir.Wildcard):
            raise self._error("'_' cannot be assigned", _span(self.path, meta))
        return ir.Assign(var, expr, span=_span(self.path, meta))

    def body(self, children: list[Any]) -> tuple[Any, ...]:
        return tuple(children)

    # ---- rules ---------------------------------------------------------------------------

    @v_args(meta=True)
    def dest(self, meta: Any, children: list[Any]) -> ir.Dest:
        target, keys = children
        return ir.Dest(str(target), keys, span=_span(self.path, meta))

    @v_args(meta=True)
    def head(self, meta: Any, children: list[Any]) -> ir.Head:
        name, dest, terms = children
        return ir.Head(str(name), terms or (), dest, span=_span(self.path, meta))

    @v_args(meta=True)
    def rule(self, meta: Any, children: list[Any]) -> ir.Rule:
        head, op, body = children
        kind = ir.RuleKind(str(op))
        span = _span(self.path, meta)
        if kind is ir.RuleKind.ASYNC and head.dest is None:
            raise self._error(
                f"asynchronous rule for '{head.relation}' needs a destination: "
                f"{head.relation}@dest(...) :~ ...",
                head.span,
            )
        if kind is not ir.RuleKind.ASYNC and head.dest is not None:
            raise self._error(
                f"only asynchronous rules (:~) send to a destination; '{head.relation}@{head.dest.target}' uses {op}",
                head.dest.span,
            )
        return ir.Rule(head, kind, body, span=span, comment=self._comment(meta))

    @v_args(meta=True)
    def fact(self, meta: Any, children: list[Any]) -> ir.Fact:
        (head,) = children
        span = _span(self.path, meta)
        if head.dest is not None:
            raise self._error(
                f"a fact cannot be sent; '{head.relation}@{head.dest.target}' needs a rule body",
                head.dest.span,
            )
        for term in head.terms:
            if not isinstance(term, ir.Const):
                raise self._error(
                    f"a fact holds constants only; '{head.relation}' needs a rule body (:- ...) to use variables",
                    term.span,
                )
        atom = ir.Atom(head.relation, head.terms, span=span)
        return ir.Fact(atom, span=span, comment=self._comment(meta))

    @v_args(meta=True)
    def block(self, meta: Any, children: list[Any]) -> ir.Block:
        name, *statements = children
        comment = self.comments.take(meta.line, meta.line)
        rules = tuple(s for s in statements if isinstance(s, ir.Rule))
        facts = tuple(s for s in statements if isinstance(s, ir.Fact))
        return ir.Block(str(name), rules, facts, span=_span(self.path, meta), comment=comment)

    # ---- declarations --------------------------------------------------------------------

    @v_args(meta=True)
    def component_decl(self, meta: Any, children: list[Any]) -> ir.ComponentDecl:
        name, count = children
        n = None if count is None else int(str(count))
        if n is not None and n < 1:
            raise self._error(f"component '{name}' needs at least one instance", _tspan(self.path, count))
        return ir.ComponentDecl(str(name), n, span=_span(self.path, meta), comment=self._comment(meta))

    @v_args(meta=True)
    def input_decl(self, meta: Any, children: list[Any]) -> ir.InputDecl:
        name, attrs, component = children
        return ir.InputDecl(str(name), attrs, str(component), span=_span(self.path, meta), comment=self._comment(meta))

    @v_args(meta=True)
    def output_decl(self, meta: Any, children: list[Any]) -> ir.OutputDecl:
        name, attrs = children
        return ir.OutputDecl(str(name), attrs, span=_span(self.path, meta), comment=self._comment(meta))

    @v_args(meta=True)
    def persist_decl(self, meta: Any, children: list[Any]) -> ir.PersistDecl:
        (name,) = children
        return ir.PersistDecl(str(name), span=_span(self.path, meta), comment=self._comment(meta))

    @v_args(meta=True)
    def log_decl(self, meta: Any, children: list[Any]) -> ir.LogDecl:
        (name,) = children
        return ir.LogDecl(str(name), span=_span(self.path, meta), comment=self._comment(meta))

    @v_args(meta=True)
    def timer_decl(self, meta: Any, children: list[Any]) -> ir.TimerDecl:
        name, duration, component = children
        text = str(duration)
        ms = int(text[:-2]) if text.endswith("ms") else int(text[:-1]) * 1000
        if ms <= 0:
            raise self._error(f"timer '{name}' needs a positive period", _tspan(self.path, duration))
        return ir.TimerDecl(str(name), ms, str(component), span=_span(self.path, meta), comment=self._comment(meta))

    @v_args(meta=True)
    def function_decl(self, meta: Any, children: list[Any]) -> ir.FunctionDecl:
        name, inputs, outputs, target = children
        path = json.loads(str(target))
        if ":" not in path:
            raise self._error(
                f'function target must be "module:attribute", got {path!r}', _tspan(self.path, target)
            )
        overlap = set(inputs or ()) & set(outputs or ())
        if overlap:
            raise self._error(
                f"function '{name}' names {sorted(overlap)[0]!r} as both input and output", _span(self.path, meta)
            )
        return ir.FunctionDecl(
            str(name), inputs or (), outputs or (), path, span=_span(self.path, meta), comment=self._comment(meta)
        )

    def start(self, children: list[Any]) -> list[Any]:
        return children


def _number(text: str) -> int | float:
    if any(c in text for c in ".eE"):
        return float(text)
    return int(text)


def decode_source(data: bytes, path: str) -> str:
    """Decode a `.ded` file as UTF-8, or fail at the first undecodable byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        # Columns count characters, as everywhere else; the bytes before the bad one decode.
        col = len(before[before.rfind(b"\n") + 1 :].decode("utf-8")) + 1
        raise LanguageError(
            f"file is not valid UTF-8: byte 0x{data[exc.start]:02x} cannot be decoded",
            Span(path, line, col, line, col + 1),
            data.decode("utf-8", errors="replace"),
        ) from None


def parse(source: str, path: str = "<string>") -> ir.Program:
    """Parse `.ded` text into a Program. Raises LanguageError for syntax errors only; static
    checks are :func:`hydrodeploy.language.checks.check`."""
    comments = _Comments(source)
    try:
        tree = _lark().parse(source)
    except UnexpectedInput as err:
        raise _syntax_error(err, path, source) from None
    _scan_comments(source, comments.add)
    first_line = _first_item_line(tree)
    header = comments.header(first_line)
    try:
        items = _ToIR(path, source, comments).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, LanguageError):
            raise err.orig_exc from None
        raise
    return _assemble(items, path, source, header)


def _scan_comments(source: str, add: Callable[[Token], None]) -> None:
    """Find comments outside string literals, line by line."""
    for lineno, line in enumerate(source.split("\n"), start=1):
        in_string = False
        escaped = False
        for i, ch in enumerate(line):
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
                continue
            if ch == '"':
                in_string = True
            elif ch == "#" or line.startswith("//", i):
                add(Token("COMMENT", line[i:], line=lineno, column=i + 1))
                break


def _first_item_line(tree: Tree[Token]) -> int | None:
    for child in tree.children:
        if isinstance(child, Tree) and not child.meta.empty:
            return int(child.meta.line)
    return None


def _assemble(items: list[Any], path: str, source: str, header: str | None) -> ir.Program:
    return ir.Program(
        components=tuple(i for i in items if isinstance(i, ir.ComponentDecl)),
        inputs=tuple(i for i in items if isinstance(i, ir.InputDecl)),
        outputs=tuple(i for i in items if isinstance(i, ir.OutputDecl)),
        persists=tuple(i for i in items if isinstance(i, ir.PersistDecl)),
        logs=tuple(i for i in items if isinstance(i, ir.LogDecl)),
        timers=tuple(i for i in items if isinstance(i, ir.TimerDecl)),
        functions=tuple(i for i in items if isinstance(i, ir.FunctionDecl)),
        blocks=tuple(i for i in items if isinstance(i, ir.Block)),
        path=path,
        source=source,
        comment=header,
    )


def parse_file(path: str) -> ir.Program:
    """Read and parse a `.ded` file (syntax only)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise LanguageError(f"cannot read {path}: {exc.strerror}", None) from None
    return parse(decode_source(data, path), path)
