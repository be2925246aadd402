"""Static checks of DEDALUS.md / docs/LANGUAGE.md §Static checks.

Each failing check raises one LanguageError located at the offending token.
"""

from __future__ import annotations

from hydrodeploy.language import ir
from hydrodeploy.language.strata import stratify


def check(program: ir.Program) -> None:
    """Raise LanguageError at the first problem of ``program``."""
    for component in program.components:
        stratify(program, component.name)
