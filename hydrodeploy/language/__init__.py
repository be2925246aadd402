"""The `.ded` language: grammar, parser, frozen IR, canonical printer, static checks."""

from __future__ import annotations

from hydrodeploy.language.checks import check
from hydrodeploy.language.ir import Program
from hydrodeploy.language.parser import parse, parse_file
from hydrodeploy.language.printer import print_program


def load_program(path: str) -> Program:
    """Read, parse and statically check a `.ded` file; raise LanguageError on the first problem."""
    program = parse_file(path)
    check(program)
    return program


def load_source(source: str, path: str = "<string>") -> Program:
    """Parse and check `.ded` text."""
    program = parse(source, path)
    check(program)
    return program


__all__ = ["Program", "check", "load_program", "load_source", "parse", "parse_file", "print_program"]
