"""Static checks of docs/LANGUAGE.md §Static checks.

:func:`check` runs small checks, one concern each, in a fixed order (declarations, then how
relations are derived and read, then arities, safety and stratification). The first failing check
raises one :class:`~hydrodeploy.errors.LanguageError` located at the offending token; within a
check, the problem earliest in the file is reported.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from hydrodeploy.errors import LanguageError, Span
from hydrodeploy.language import ir
from hydrodeploy.language.binding import analyze_body, function_inputs, functions_of
from hydrodeploy.language.printer import format_expr, format_literal
from hydrodeploy.language.strata import stratify

# --------------------------------------------------------------------------------------------
# Locating and reporting
# --------------------------------------------------------------------------------------------


def _error(program: ir.Program, message: str, span: Span | None) -> LanguageError:
    return LanguageError(message, span, program.source)


def _pos(span: Span | None) -> tuple[int, int]:
    return (0, 0) if span is None else (span.line, span.col)


def _line(span: Span | None) -> str:
    return "?" if span is None else str(span.line)


def _source_line(program: ir.Program, line: int) -> str | None:
    if program.source is None:
        return None
    lines = program.source.split("\n")
    return lines[line - 1] if 1 <= line <= len(lines) else None


def _word_span(span: Span, line: int, col: int, name: str) -> Span:
    return Span(span.file, line, col, line, col + len(name))


def _decl_name_span(program: ir.Program, span: Span | None, name: str) -> Span | None:
    """The span of the name right after a declaration's directive (``.component NAME``)."""
    if span is None:
        return None
    text = _source_line(program, span.line)
    if text is None:
        return span
    match = re.compile(r"\.[A-Za-z]+\s+" + re.escape(name) + r"\b").match(text, span.col - 1)
    if match is None:
        return span
    return _word_span(span, span.line, match.end() - len(name) + 1, name)


def _last_name_span(span: Span | None, name: str) -> Span | None:
    """The span of the name a declaration ends with (``.input r(a) @ COMP``)."""
    if span is None:
        return None
    return _word_span(span, span.end_line, max(span.end_col - len(name), 1), name)


def _first_name_span(span: Span | None, name: str) -> Span | None:
    """The span of the name a node starts with (a block, a head)."""
    if span is None:
        return None
    return _word_span(span, span.line, span.col, name)


def _dest_name_span(program: ir.Program, dest: ir.Dest) -> Span | None:
    """The span of the name after ``@`` in a destination."""
    if dest.span is None:
        return None
    text = _source_line(program, dest.span.line)
    match = None if text is None else re.compile(r"@\s*").match(text, dest.span.col - 1)
    if match is None:
        return dest.span
    return _word_span(dest.span, dest.span.line, match.end() + 1, dest.target)


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --------------------------------------------------------------------------------------------
# Walking the program
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Derivation:
    """A rule head or fact that derives ``relation`` in ``component``."""

    relation: str
    component: str
    kind: ir.RuleKind | None  # None for a constant fact
    span: Span | None


def _derivations(program: ir.Program) -> list[_Derivation]:
    out: list[_Derivation] = []
    for block in program.blocks:
        for fact in block.facts:
            out.append(_Derivation(fact.atom.relation, block.component, None, fact.span))
        for rule in block.rules:
            out.append(_Derivation(rule.head.relation, block.component, rule.kind, rule.head.span))
    return sorted(out, key=lambda d: _pos(d.span))


def _body_atoms(program: ir.Program) -> Iterator[tuple[str, ir.Rule, ir.Atom]]:
    """Every body atom with its component and rule, in source order."""
    items = [
        (block.component, rule, atom)
        for block in program.blocks
        for rule in block.rules
        for atom in rule.atoms()
    ]
    yield from sorted(items, key=lambda item: _pos(item[2].span))


def _rules(program: ir.Program) -> Iterator[tuple[str, ir.Rule]]:
    items = [(block.component, rule) for block in program.blocks for rule in block.rules]
    yield from sorted(items, key=lambda item: _pos(item[1].span))


def _builtin_meaning(program: ir.Program, name: str) -> str:
    if name == "self":
        return "the address of this instance"
    if name == "self_index":
        return "the index of this instance"
    if name == "self_partition":
        return "the index of this partition of the instance"
    for component in program.components:
        if name == component.name:
            return f"the addresses of the instances of component '{name}'"
        if name == f"{component.name}_count":
            return f"the number of instances of component '{component.name}'"
    return "built in"


# --------------------------------------------------------------------------------------------
# Declarations
# --------------------------------------------------------------------------------------------


def check_not_empty(program: ir.Program) -> None:
    """A program declares at least one component."""
    if not program.components:
        raise _error(
            program,
            "program declares no component; declare one with '.component name'",
            Span(program.path, 1, 1, 1, 2),
        )


@dataclass(frozen=True)
class _Named:
    name: str
    span: Span | None  # the name's own span


def _first_duplicate(program: ir.Program, what: str, items: Sequence[_Named]) -> None:
    first: dict[str, _Named] = {}
    for item in sorted(items, key=lambda i: _pos(i.span)):
        if item.name in first:
            raise _error(
                program,
                f"duplicate {what} '{item.name}' (first declared on line {_line(first[item.name].span)})",
                item.span,
            )
        first[item.name] = item


def check_duplicate_declarations(program: ir.Program) -> None:
    """Each component, input, output, persist, log, timer, function and block is declared once."""

    def names(decls: Iterable[tuple[str, Span | None]]) -> list[_Named]:
        return [_Named(name, _decl_name_span(program, span, name)) for name, span in decls]

    _first_duplicate(program, ".component", names((c.name, c.span) for c in program.components))
    _first_duplicate(program, ".input", names((i.relation, i.span) for i in program.inputs))
    _first_duplicate(program, ".output", names((o.relation, o.span) for o in program.outputs))
    _first_duplicate(program, ".persist", names((p.relation, p.span) for p in program.persists))
    _first_duplicate(program, ".log", names((lg.relation, lg.span) for lg in program.logs))
    _first_duplicate(program, ".timer", names((t.name, t.span) for t in program.timers))
    _first_duplicate(program, ".function", names((f.name, f.span) for f in program.functions))
    first: dict[str, ir.Block] = {}
    for block in sorted(program.blocks, key=lambda b: _pos(b.span)):
        if block.component in first:
            raise _error(
                program,
                f"duplicate block for component '{block.component}' (the first is on line "
                f"{_line(first[block.component].span)}); put all of a component's rules in one block",
                _first_name_span(block.span, block.component),
            )
        first[block.component] = block


@dataclass(frozen=True)
class _Decl:
    """A declaration that names a relation: its directive, name and the name's span."""

    directive: str
    name: str
    span: Span | None


def _relation_decls(program: ir.Program) -> list[_Decl]:
    decls: list[_Decl] = []
    for directive, items in (
        (".input", [(i.relation, i.span) for i in program.inputs]),
        (".output", [(o.relation, o.span) for o in program.outputs]),
        (".persist", [(p.relation, p.span) for p in program.persists]),
        (".log", [(lg.relation, lg.span) for lg in program.logs]),
        (".timer", [(t.name, t.span) for t in program.timers]),
        (".function", [(f.name, f.span) for f in program.functions]),
    ):
        decls.extend(_Decl(directive, name, _decl_name_span(program, span, name)) for name, span in items)
    return sorted(decls, key=lambda d: _pos(d.span))


# Pairs of declarations that cannot name the same relation, with the reason.
_CONFLICTS: dict[frozenset[str], str] = {
    frozenset((".input", ".output")): "clients send .input relations and receive .output relations",
    frozenset((".input", ".log")): "only :+ rules derive .log relations, and no rule derives an .input",
    frozenset((".output", ".log")): "only :~ rules derive .output relations and only :+ rules derive .log relations",
    frozenset((".timer", ".function")): "a name is either a timer or a function",
    frozenset((".timer", ".input")): "a timer's facts are made by the runtime",
    frozenset((".timer", ".output")): "a timer's facts are made by the runtime",
    frozenset((".timer", ".persist")): "a timer holds only in the ticks it fires",
    frozenset((".timer", ".log")): "a timer's facts are made by the runtime",
    frozenset((".function", ".input")): "a function is computed, never sent",
    frozenset((".function", ".output")): "a function is computed, never sent",
    frozenset((".function", ".persist")): "a function is computed, never stored",
    frozenset((".function", ".log")): "a function is computed, never stored",
}


def check_declaration_conflicts(program: ir.Program) -> None:
    """A relation is not declared in two incompatible ways (e.g. both .input and .log)."""
    seen: dict[str, list[_Decl]] = {}
    for decl in _relation_decls(program):
        for other in seen.get(decl.name, []):
            reason = _CONFLICTS.get(frozenset((decl.directive, other.directive)))
            if reason is not None:
                raise _error(
                    program,
                    f"'{decl.name}' cannot be both {other.directive} (line {_line(other.span)}) "
                    f"and {decl.directive}: {reason}",
                    decl.span,
                )
        seen.setdefault(decl.name, []).append(decl)


def check_builtin_names(program: ir.Program) -> None:
    """No component or declaration takes the name of a built-in relation."""
    names = {c.name for c in program.components}
    for component in sorted(program.components, key=lambda c: _pos(c.span)):
        span = _decl_name_span(program, component.span, component.name)
        if component.name in ("self", "self_index", "self_partition"):
            raise _error(
                program,
                f"component name '{component.name}' clashes with the built-in relation "
                f"'{component.name}' ({_builtin_meaning(program, component.name)})",
                span,
            )
        base = component.name.removesuffix("_count")
        if component.name.endswith("_count") and base in names:
            raise _error(
                program,
                f"component name '{component.name}' clashes with the built-in relation "
                f"'{component.name}' (the number of instances of component '{base}')",
                span,
            )
    builtins = ir.builtin_relations(program)
    for decl in _relation_decls(program):
        if decl.name in builtins:
            raise _error(
                program,
                f"'{decl.directive} {decl.name}' clashes with the built-in relation '{decl.name}' "
                f"({_builtin_meaning(program, decl.name)}); choose another name",
                decl.span,
            )


def _unknown_component(program: ir.Program, name: str, where: str, span: Span | None) -> LanguageError:
    known = [c.name for c in program.components]
    hint = _did_you_mean(name, known) or f" (declared components: {', '.join(known)})"
    return _error(program, f"unknown component '{name}' {where}{hint}", span)


def check_known_components(program: ir.Program) -> None:
    """Blocks, .input and .timer declarations name declared components."""
    known = {c.name for c in program.components}
    places: list[tuple[str, str, Span | None]] = []
    for i in program.inputs:
        places.append((i.component, f"in '.input {i.relation}'", _last_name_span(i.span, i.component)))
    for t in program.timers:
        places.append((t.component, f"in '.timer {t.name}'", _last_name_span(t.span, t.component)))
    for b in program.blocks:
        places.append((b.component, "for this block", _first_name_span(b.span, b.component)))
    for name, where, span in sorted(places, key=lambda p: _pos(p[2])):
        if name not in known:
            raise _unknown_component(program, name, where, span)


# --------------------------------------------------------------------------------------------
# Heads and facts
# --------------------------------------------------------------------------------------------


def _derive_verb(d: _Derivation) -> str:
    if d.kind is None:
        return "given as a fact"
    return f"derived by a '{d.kind.value}' rule"


def check_derived_relations(program: ir.Program) -> None:
    """Rule heads and facts respect what declarations say about a relation: built-ins, timers
    and functions are never derived, .input relations are never derived, .log relations only by
    ``:+`` rules, .output relations only by ``:~`` rules."""
    builtins = ir.builtin_relations(program)
    timers = {t.name: t for t in program.timers}
    functions = functions_of(program)
    inputs = {i.relation: i for i in program.inputs}
    outputs = {o.relation: o for o in program.outputs}
    logs = {lg.relation: lg for lg in program.logs}
    for d in _derivations(program):
        rel = d.relation
        span = _first_name_span(d.span, rel)
        if rel in builtins:
            raise _error(
                program,
                f"'{rel}' is a built-in relation ({_builtin_meaning(program, rel)}); "
                f"it cannot be {_derive_verb(d)}",
                span,
            )
        if rel in timers:
            raise _error(
                program,
                f"'{rel}' is a timer (line {_line(timers[rel].span)}); only the runtime makes its "
                f"facts, it cannot be {_derive_verb(d)}",
                span,
            )
        if rel in functions:
            raise _error(
                program,
                f"'{rel}' is a function (line {_line(functions[rel].span)}); it is computed by "
                f"Python and cannot be {_derive_verb(d)}",
                span,
            )
        if rel in inputs:
            raise _error(
                program,
                f"'{rel}' is an .input relation (line {_line(inputs[rel].span)}): only external "
                f"clients send it, it cannot be {_derive_verb(d)}",
                span,
            )
        if rel in logs and d.kind is not ir.RuleKind.NEXT:
            raise _error(
                program,
                f"'{rel}' is a .log relation (line {_line(logs[rel].span)}): it can only be derived "
                f"by ':+' rules (appended to the log and visible next tick), not {_derive_verb(d)}",
                span,
            )
        if rel in outputs and d.kind is not ir.RuleKind.ASYNC:
            raise _error(
                program,
                f"'{rel}' is an .output relation (line {_line(outputs[rel].span)}): it can only be "
                f"sent to a client by ':~' rules ({rel}@client(...) :~ ...), not {_derive_verb(d)}",
                span,
            )


def check_aggregates(program: ir.Program) -> None:
    """A head numbers its tuples with at most one ``index()``, and not together with other
    aggregates."""
    for _, rule in _rules(program):
        aggregates = rule.head.aggregates
        indexes = [a for a in aggregates if a.func == "index"]
        if len(indexes) > 1:
            raise _error(
                program,
                f"index() appears {len(indexes)} times in the head of '{rule.head.relation}'; "
                "a head numbers its tuples once",
                indexes[1].span,
            )
        if indexes and len(aggregates) > 1:
            second = sorted(aggregates, key=lambda a: _pos(a.span))[1]
            other = next(a for a in aggregates if a.func != "index")
            raise _error(
                program,
                f"index() cannot be combined with other aggregates ({format_expr(other)}) in the head of "
                f"'{rule.head.relation}'; compute the aggregate in another rule first",
                second.span,
            )


# --------------------------------------------------------------------------------------------
# Reading relations
# --------------------------------------------------------------------------------------------


def check_known_relations(program: ir.Program) -> None:
    """Every relation read in a body is built in, a function, an .input or timer of the
    reading component, a channel (derived by some ``:~`` rule), or derived by a rule or fact of
    the reading component."""
    builtins = ir.builtin_relations(program)
    functions = functions_of(program)
    timers = {t.name: t for t in program.timers}
    inputs = {i.relation: i for i in program.inputs}
    derivations = _derivations(program)
    sent = {d.relation for d in derivations if d.kind is ir.RuleKind.ASYNC}
    local: dict[str, dict[str, _Derivation]] = {}
    for d in derivations:
        local.setdefault(d.relation, {}).setdefault(d.component, d)
    readable = set(builtins) | set(functions) | set(timers) | set(inputs) | set(local)

    for component, _, atom in _body_atoms(program):
        rel = atom.relation
        if rel in builtins or rel in functions or rel in sent:
            continue
        if rel in timers:
            timer = timers[rel]
            if timer.component != component:
                raise _error(
                    program,
                    f"timer '{rel}' fires only in component '{timer.component}' (line "
                    f"{_line(timer.span)}), not in '{component}'",
                    atom.span,
                )
            continue
        if rel in inputs:
            decl = inputs[rel]
            if decl.component != component:
                raise _error(
                    program,
                    f"'{rel}' is an input of component '{decl.component}' (line {_line(decl.span)}); "
                    f"clients never send it to '{component}'",
                    atom.span,
                )
            continue
        if rel in local:
            if component in local[rel]:
                continue
            owner = next(iter(local[rel].values()))
            raise _error(
                program,
                f"'{rel}' is derived only locally in component '{owner.component}' (line "
                f"{_line(owner.span)}), so '{component}' never sees it; send it with an "
                f"asynchronous rule: {rel}@dest(...) :~ ...",
                atom.span,
            )
        raise _error(
            program,
            f"unknown relation '{rel}': no rule or fact derives it and it is not declared or "
            f"built in{_did_you_mean(rel, readable)}",
            atom.span,
        )


# --------------------------------------------------------------------------------------------
# Arities
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Use:
    relation: str
    arity: int
    span: Span | None


@dataclass(frozen=True)
class _Reference:
    """Where a relation's arity is fixed, and how to say so: ``message`` is formatted with
    ``n`` (the arity of the offending use) and ``args`` (``n`` arguments, spelled out)."""

    arity: int
    message: str

    def describe(self, n: int) -> str:
        return self.message.format(n=n, args=_plural(n, "argument"))


def _references(program: ir.Program) -> dict[str, _Reference]:
    """The arities fixed by built-ins and declarations (the first declaration of a name)."""
    refs: dict[str, _Reference] = {}
    for name in ir.builtin_relations(program):
        refs[name] = _Reference(
            1,
            f"built-in relation '{name}' ({_builtin_meaning(program, name)}) has 1 attribute, "
            "but it is used here with {args}",
        )
    decls: list[tuple[Span | None, str, _Reference]] = []
    for t in program.timers:
        message = (
            f"timer '{t.name}' (line {_line(t.span)}) is a nullary relation: write '{t.name}()', "
            f"not '{t.name}' with {{args}}"
        )
        decls.append((t.span, t.name, _Reference(0, message)))
    for f in program.functions:
        message = (
            f"function '{f.name}' (line {_line(f.span)}) takes {_plural(len(f.inputs), 'input')} "
            f"and {_plural(len(f.outputs), 'output')} ({', '.join((*f.inputs, *f.outputs))}), "
            "but it is used here with {args}"
        )
        decls.append((f.span, f.name, _Reference(f.arity, message)))
    for i in program.inputs:
        decls.append((i.span, i.relation, _declared(".input", i.relation, i.attrs, i.span)))
    for o in program.outputs:
        if o.attrs is not None:
            decls.append((o.span, o.relation, _declared(".output", o.relation, o.attrs, o.span)))
    for _, name, ref in sorted(decls, key=lambda d: _pos(d[0])):
        refs.setdefault(name, ref)
    return refs


def _declared(directive: str, relation: str, attrs: tuple[str, ...], span: Span | None) -> _Reference:
    return _Reference(
        len(attrs),
        f"'{relation}' is declared with {_plural(len(attrs), 'attribute')} ({', '.join(attrs)}) "
        f"by {directive} on line {_line(span)}, but it is used here with {{args}}",
    )


def _uses(program: ir.Program) -> list[_Use]:
    uses: list[_Use] = []
    for block in program.blocks:
        for fact in block.facts:
            uses.append(_Use(fact.atom.relation, fact.atom.arity, fact.span))
        for rule in block.rules:
            uses.append(_Use(rule.head.relation, rule.head.arity, rule.head.span))
            uses.extend(_Use(a.relation, a.arity, a.span) for a in rule.atoms())
    for i in program.inputs:
        uses.append(_Use(i.relation, len(i.attrs), i.span))
    for o in program.outputs:
        if o.attrs is not None:
            uses.append(_Use(o.relation, len(o.attrs), o.span))
    return sorted(uses, key=lambda u: _pos(u.span))


def check_arities(program: ir.Program) -> None:
    """Every use of a relation has one arity: rule heads, body atoms and facts in every
    component, declared .input/.output attributes, functions (inputs + outputs), timers (0) and
    built-ins (1)."""
    refs = _references(program)
    uses = _uses(program)
    for use in uses:
        if use.relation not in refs:
            refs[use.relation] = _Reference(
                use.arity,
                f"'{use.relation}' has {{args}} here but {use.arity} on line {_line(use.span)}; "
                "a relation has one arity in the whole program",
            )
        ref = refs[use.relation]
        if use.arity != ref.arity:
            raise _error(program, ref.describe(use.arity), use.span)


# --------------------------------------------------------------------------------------------
# Safety and destinations
# --------------------------------------------------------------------------------------------

_BIND_HINT = "bind it with a positive atom, a function output or an assignment"


def _var_spans(terms: Iterable[ir.Expr | ir.Wildcard | ir.Aggregate]) -> Iterator[ir.Var]:
    """The variables of some terms, left to right."""
    for term in terms:
        if isinstance(term, ir.Var):
            yield term
        elif isinstance(term, ir.BinOp):
            yield from _var_spans((term.left, term.right))
        elif isinstance(term, ir.Aggregate) and term.arg is not None:
            yield term.arg


def _stuck_error(
    program: ir.Program, lit: ir.Literal, bound: frozenset[str], functions: dict[str, ir.FunctionDecl]
) -> LanguageError:
    """The error for a body literal whose inputs are never bound."""
    text = format_literal(lit)
    if isinstance(lit, ir.Atom) and not lit.negated:
        function = functions[lit.relation]
        for name, term in zip(function.inputs, function_inputs(lit, function), strict=True):
            if isinstance(term, ir.Wildcard):
                return _error(
                    program,
                    f"input '{name}' of function '{function.name}' cannot be '_': a function "
                    "needs all its inputs",
                    term.span,
                )
            if isinstance(term, ir.Var) and term.name not in bound:
                return _error(
                    program,
                    f"unsafe: input '{name}' of function '{function.name}' is variable "
                    f"'{term.name}', which the body never binds; {_BIND_HINT}",
                    term.span,
                )
    if isinstance(lit, ir.Atom):
        terms: tuple[ir.Expr | ir.Wildcard, ...] = lit.terms
        where = f"negated atom '{text}'"
        hint = f"{_BIND_HINT}, or write '_' to match anything"
    elif isinstance(lit, ir.Compare):
        terms = (lit.left, lit.right)
        where, hint = f"comparison '{text}'", _BIND_HINT
    else:
        terms = (lit.expr,)
        where, hint = f"assignment '{text}'", _BIND_HINT
    var = next((v for v in _var_spans(terms) if v.name not in bound), None)
    span = lit.span if var is None else var.span
    name = "?" if var is None else var.name
    return _error(program, f"unsafe: variable '{name}' in {where} is not bound by the body; {hint}", span)


def _check_destination(
    program: ir.Program, rule: ir.Rule, bound: frozenset[str], components: Sequence[str]
) -> None:
    dest = rule.head.dest
    if dest is None:
        return
    target = dest.target
    span = _dest_name_span(program, dest)
    if dest.keys is None and target not in bound:
        if target in components:
            raise _error(
                program,
                f"destination '@{target}' names component '{target}', but '@x' needs a variable "
                f"bound to an address: write '@{target}[key]' to pick an instance by key, or join "
                f"'{target}(x)' in the body and send to '@x'",
                span,
            )
        example = components[0] if components else "peer"
        raise _error(
            program,
            f"unbound destination: variable '{target}' is not bound by the body; bind it to an "
            f"address, e.g. an instance of a component by joining '{example}({target})', or a "
            "client address received in a message",
            span,
        )
    if dest.keys is not None:
        if target not in bound and target not in components:
            raise _error(
                program,
                f"'{target}' in destination '@{target}[...]' is neither a declared component nor "
                f"a variable bound by the body{_did_you_mean(target, components)}",
                span,
            )
        for var in _var_spans(dest.keys):
            if var.name not in bound:
                raise _error(
                    program,
                    f"unsafe: partition key variable '{var.name}' in '@{target}[...]' is not bound "
                    f"by the body; {_BIND_HINT}",
                    var.span,
                )


def check_safety(program: ir.Program) -> None:
    """Every variable a rule reads is bound: negated atoms, comparisons, assignment right-hand
    sides, function inputs, destinations, partition keys and heads."""
    functions = functions_of(program)
    components = [c.name for c in program.components]
    for _, rule in _rules(program):
        binding = analyze_body(rule.body, functions)
        if binding.stuck:
            raise _stuck_error(program, binding.stuck[0], binding.bound, functions)
        _check_destination(program, rule, binding.bound, components)
        for var in _var_spans(rule.head.terms):
            if var.name not in binding.bound:
                inside = next(
                    (
                        f" in {a.func}({var.name})"
                        for a in rule.head.aggregates
                        if a.arg is not None and a.arg is var
                    ),
                    "",
                )
                raise _error(
                    program,
                    f"unsafe: variable '{var.name}'{inside} in the head of '{rule.head.relation}' "
                    f"is not bound by the body; {_BIND_HINT}",
                    var.span,
                )


def check_stratification(program: ir.Program) -> None:
    """No component has a cycle through negation or aggregation among its synchronous rules."""
    for component in program.components:
        stratify(program, component.name)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

CHECKS: tuple[Callable[[ir.Program], None], ...] = (
    check_not_empty,
    check_duplicate_declarations,
    check_declaration_conflicts,
    check_builtin_names,
    check_known_components,
    check_derived_relations,
    check_aggregates,
    check_known_relations,
    check_arities,
    check_safety,
    check_stratification,
)


def check(program: ir.Program) -> None:
    """Raise LanguageError at the first problem of ``program``."""
    for run in CHECKS:
        run(program)

