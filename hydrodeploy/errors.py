"""The one error root of hydrodeploy, with a subclass per phase.

User mistakes are raised as a subclass of :class:`HydrodeployError`; the CLI prints them as one
located message and exits with code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A region of a source file: 1-based line and column of its first and last character."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class HydrodeployError(Exception):
    """Root of every error hydrodeploy reports to a user."""


class LocatedError(HydrodeployError):
    """An error at a place in a source file, rendered as ``file:line:col: error: message``
    followed by the source line and a caret under the column."""

    def __init__(self, message: str, span: Span | None, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.source = source

    def render(self) -> str:
        if self.span is None:
            return f"error: {self.message}"
        head = f"{self.span}: error: {self.message}"
        if self.source is None:
            return head
        lines = self.source.split("\n")  # lines as the parser counts them
        if not 1 <= self.span.line <= len(lines):
            return head
        text = lines[self.span.line - 1].rstrip("\r").expandtabs(1)
        width = 1
        if self.span.end_line == self.span.line and self.span.end_col > self.span.col:
            width = self.span.end_col - self.span.col
        caret = " " * (self.span.col - 1) + "^" + "~" * (width - 1)
        return f"{head}\n  {text}\n  {caret}"

    def __str__(self) -> str:
        return self.render()


class LanguageError(LocatedError):
    """A `.ded` program that does not parse or fails a static check."""


class RuntimeFault(HydrodeployError):
    """A program that parsed and checked but failed while running (a Python function raised,
    a destination was not an address, ...)."""


class RewriteError(LocatedError):
    """A rewrite asked for that does not apply (its precondition fails: the message says why and
    where), or a rewrite target that names nothing in the program."""
