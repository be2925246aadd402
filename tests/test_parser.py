"""The parser: syntax errors are located at the offending token, and comments are attached to the
items they describe and printed back."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydrodeploy.errors import LanguageError
from hydrodeploy.language import ir, parse, parse_file, print_program

HEAD = ".component c\n"


def syntax_error(source: str) -> LanguageError:
    with pytest.raises(LanguageError) as info:
        parse(source, "t.ded")
    return info.value


# --------------------------------------------------------------------------------------------
# Syntax errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "col", "message"),
    [
        # a missing '.' is reported at the next token
        (HEAD + "c {\n  h(x) :- r(x)\n  g(x) :- r(x).\n}\n", 4, 3, "unexpected 'g'; expected ',' or '.'"),
        (HEAD + "c {\n  h(x) :- r(x), $y.\n}\n", 3, 17, "unexpected character '$'"),
        (HEAD + 'c {\n  h("abc) :- r(x).\n}\n', 3, 5, "unterminated string"),
        (HEAD + "c {\n  h(x) :- r(x).\n", 3, 16, "unexpected end of file; expected '}' or a name"),
        (HEAD + "c {\n  h(x, ) :- r(x).\n}\n", 3, 8, "unexpected ')'"),
        (HEAD + "c {\n  h(x) :- r(x), x => 3.\n}\n", 3, 20, "unexpected '>'"),
        (HEAD + "c {\n  h(x) :- .\n}\n", 3, 11, "unexpected '.'"),
        (HEAD + "c {\n  h(x) :- r(x).\n}}\n", 4, 2, "unexpected '}'; expected a directive, a name or end of file"),
        (".compnent a\n", 1, 1, "unknown directive '.compnent'"),
        # a directive is a whole word
        (".components a\n", 1, 1, "unknown directive '.components'"),
        (HEAD + ".timer t 10 @ c\n", 2, 10, "unexpected '10'; expected a duration such as 100ms"),
        (HEAD + ".timer t 0ms @ c\n", 2, 10, "timer 't' needs a positive period"),
        (".component c 0\n", 1, 14, "component 'c' needs at least one instance"),
        (".component\n", 1, 11, "unexpected end of file; expected a name"),
        (HEAD + "c {\n  .component d\n}\n", 3, 3, "unexpected '.component'"),
        (HEAD + "c {\n  h(x) :- r(x + 1).\n}\n", 3, 13, "arithmetic is not allowed inside an atom"),
        (HEAD + "c {\n  h(_) :- r(x).\n}\n", 3, 5, "'_' cannot appear in a rule head"),
        (HEAD + "c {\n  h(x) :- r(x), _ < 3.\n}\n", 3, 17, "'_' cannot be compared"),
        (HEAD + "c {\n  h(avg(x)) :- r(x).\n}\n", 3, 5, "unknown aggregate 'avg'"),
        (HEAD + "c {\n  h(sum(*)) :- r(x).\n}\n", 3, 9, "only count accepts '*', not sum"),
        (HEAD + "c {\n  h(index(x)) :- r(x).\n}\n", 3, 5, "index() takes no argument"),
        (HEAD + "c {\n  h(x) :~ r(x).\n}\n", 3, 3, "asynchronous rule for 'h' needs a destination"),
        (HEAD + "c {\n  h@p(x) :- r(x, p).\n}\n", 3, 4, "only asynchronous rules (:~) send to a destination"),
        (HEAD + "c {\n  h@p(1).\n}\n", 3, 4, "a fact cannot be sent"),
        (HEAD + "c {\n  h(1, y).\n}\n", 3, 8, "a fact holds constants only"),
        (HEAD + 'c {\n  h("\\q").\n}\n', 3, 5, 'invalid string literal "\\q"'),
        (HEAD + ".input r(a, b, a) @ c\n", 2, 16, "attribute 'a' is listed twice"),
        (HEAD + '.function f(x) -> (x) = "m:f"\n', 2, 1, "function 'f' names 'x' as both input and output"),
        (HEAD + '.function f(x) -> (y) = "no_colon"\n', 2, 25, 'function target must be "module:attribute"'),
        # columns count characters, not bytes
        (HEAD + 'c {\n  h("é", x) :- r(x) r(x).\n}\n', 3, 21, "unexpected 'r'"),
        # CRLF line endings
        (HEAD.replace("\n", "\r\n") + "c {\r\n  h(x) :- r(x), $.\r\n}\r\n", 3, 17, "unexpected character '$'"),
    ],
)
def test_syntax_error_is_located(source: str, line: int, col: int, message: str) -> None:
    err = syntax_error(source)
    assert err.span is not None
    assert (err.span.file, err.span.line, err.span.col) == ("t.ded", line, col), err.render()
    assert err.message.startswith(message), err.message
    rendered = err.render().splitlines()
    assert rendered[0] == f"t.ded:{line}:{col}: error: {err.message}"
    assert rendered[2].index("^") == col + 1  # two spaces of indentation
    assert "$END" not in err.message


def test_error_caret_underlines_the_token() -> None:
    err = syntax_error(HEAD + "c {\n  h(x) :- r(x)\n  goal(x) :- r(x).\n}\n")
    assert err.render().splitlines()[1:] == ["    goal(x) :- r(x).", "    ^~~~"]


def test_file_that_is_not_utf8_is_located_by_character(tmp_path: Path) -> None:
    path = tmp_path / "bad.ded"
    path.write_bytes(b".component c\n# \xc3\xa9t\xe9\n")
    with pytest.raises(LanguageError) as info:
        parse_file(str(path))
    err = info.value
    assert err.span is not None
    assert (err.span.line, err.span.col) == (2, 5)  # '# ét' is 4 characters (5 bytes)
    assert err.message == "file is not valid UTF-8: byte 0xe9 cannot be decoded"
    lines = err.render().splitlines()
    assert lines[0] == f"{path}:2:5: error: {err.message}"
    assert lines[2] == "      ^"


def test_empty_file_parses_to_an_empty_program() -> None:
    program = parse("", "t.ded")
    assert program == ir.Program()
    assert program.comment is None


# --------------------------------------------------------------------------------------------
# Comments
# --------------------------------------------------------------------------------------------

COMMENTED = """\
# The file's own description,
# on two lines.

# The coordinator.
.component coordinator   # trailing
// Three of them.
.component participant 3

.persist seen  # what has been seen

# The coordinator's rules.
coordinator {
  # A fact.
  limit(3).

  // Remember each request.
  seen(x) :- request(x).   # inline
  seen(x) :+ seen(x).
  # A long rule
  # with a two-line comment.
  ask@p(x, "#not a comment", "// nor this") :~
      seen(x),   # about seen
      participant(p).
}
"""


def test_comments_are_attached_to_their_items() -> None:
    program = parse(COMMENTED, "t.ded")
    assert program.comment == "The file's own description,\non two lines."
    assert [c.comment for c in program.components] == ["The coordinator.\ntrailing", "Three of them."]
    assert program.persists[0].comment == "what has been seen"
    block = program.blocks[0]
    assert block.comment == "The coordinator's rules."
    assert block.facts[0].comment == "A fact."
    assert [r.comment for r in block.rules] == [
        "Remember each request.\ninline",
        None,
        "A long rule\nwith a two-line comment.\nabout seen",
    ]
    # '#' and '//' inside strings are not comments
    head = block.rules[2].head
    assert head.terms[1:] == (ir.Const("#not a comment"), ir.Const("// nor this"))


def test_comments_are_printed_above_their_items() -> None:
    text = print_program(parse(COMMENTED, "t.ded"))
    assert text.startswith("# The file's own description,\n# on two lines.\n\n")
    assert "# The coordinator.\n# trailing\n.component coordinator\n# Three of them.\n" in text
    assert "# The coordinator's rules.\ncoordinator {\n  # A fact.\n  limit(3).\n" in text
    assert "  # Remember each request.\n  # inline\n  seen(x) :- request(x).\n" in text
    assert "  # A long rule\n  # with a two-line comment.\n  # about seen\n  ask@p(" in text
    reparsed = parse(text, "t.ded")
    assert print_program(reparsed) == text


def test_comment_directly_above_the_first_item_belongs_to_it() -> None:
    program = parse("# the only component\n.component c\n", "t.ded")
    assert program.comment is None
    assert program.components[0].comment == "the only component"


def test_comment_only_file_is_the_file_description() -> None:
    program = parse("# nothing here\n// at all\n", "t.ded")
    assert program.comment == "nothing here\nat all"
    assert program.components == ()


def test_unusual_line_breaks_in_strings_do_not_shift_comments() -> None:
    # U+2028 and U+0085 are line breaks for str.splitlines but not for the grammar.
    source = '.component c\nc {\n  h("a\u2028# b\x85c") :- r(1).\n  # about g\n  g(1) :- r(1).\n}\n'
    program = parse(source, "t.ded")
    rules = program.blocks[0].rules
    assert [r.comment for r in rules] == [None, "about g"]
    assert rules[0].head.terms == (ir.Const("a\u2028# b\x85c"),)
    assert parse(print_program(program)) == program
