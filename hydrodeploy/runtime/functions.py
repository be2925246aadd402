"""Resolve `.function` declarations to Python callables."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from hydrodeploy.errors import LanguageError
from hydrodeploy.language import ir


def _import(module: str, search: list[str]) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as first:
        for path in search:
            if path and path not in sys.path and os.path.isdir(path):
                sys.path.insert(0, path)
                try:
                    return importlib.import_module(module)
                except ModuleNotFoundError:
                    continue
        raise first


def resolve_functions(program: ir.Program) -> dict[str, Callable[..., Any]]:
    """Import every declared function. Modules are searched on sys.path, then next to the program
    file and in its parent directory (so ``"protocols.functions:f"`` works from a checkout)."""
    here = os.path.dirname(os.path.abspath(program.path)) if program.path and not program.path.startswith("<") else ""
    search = [os.path.dirname(here), here, os.getcwd()] if here else [os.getcwd()]
    out: dict[str, Callable[..., Any]] = {}
    for decl in program.functions:
        module_name, _, attr = decl.target.partition(":")
        try:
            module = _import(module_name, search)
        except ImportError as exc:
            raise LanguageError(f"function '{decl.name}': cannot import {module_name!r}: {exc}", decl.span, program.source) from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise LanguageError(f"function '{decl.name}': {decl.target!r} is not a callable", decl.span, program.source)
        out[decl.name] = fn
    return out
