"""YAML experiment and cluster files validated by pydantic models, with located errors.

An invalid file is reported as ``file:line:col: error: key.path: what is wrong`` with the line and
a caret under the offending key or value, so that the user can fix it without reading a
traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from hydrodeploy.errors import LocatedError, Span

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


class SpecError(LocatedError):
    """A workload or cluster file that cannot be read or is not valid."""


def key_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _marks(node: yaml.Node, loc: Loc, keys: dict[Loc, yaml.Node], values: dict[Loc, yaml.Node]) -> None:
    values[loc] = node
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*loc, str(key_node.value))
            keys[key] = key_node
            _marks(value_node, key, keys, values)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _marks(item, (*loc, i), keys, values)


def _span(path: str, node: yaml.Node) -> Span:
    start, end = node.start_mark, node.end_mark
    end_col = end.column + 1 if end.line == start.line else start.column + 2
    return Span(path, start.line + 1, start.column + 1, end.line + 1, end_col)


def read_yaml(path: str | Path) -> tuple[Any, str, dict[Loc, yaml.Node], dict[Loc, yaml.Node]]:
    """The data of a YAML file, its text, and the node of every key and value by key path."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{name}: no such file", None) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{name}: cannot read: {exc}", None) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        span = Span(name, mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 2) if mark else None
        raise SpecError(f"not valid YAML: {exc.problem}", span, text) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{name}: not valid YAML: {exc}", None) from None
    keys: dict[Loc, yaml.Node] = {}
    values: dict[Loc, yaml.Node] = {}
    if root is not None:
        _marks(root, (), keys, values)
    return data, text, keys, values


def load_model(path: str | Path, model: type[M], context: dict[str, Any] | None = None) -> M:
    """Read ``path`` and validate it against ``model``; the first problem is a SpecError that
    names the key path and points at it."""
    data, text, keys, values = read_yaml(path)
    name = str(path)
    if data is None:
        data = {}
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc: Loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
        if err["type"] == "extra_forbidden":
            message = "unknown key"
            node = keys.get(loc)
        elif err["type"] == "missing":
            message = "missing required key"
            node = None
        else:
            message = str(err["msg"])
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            node = values.get(loc)
            if isinstance(node, yaml.MappingNode) and loc in keys:
                node = keys[loc]  # a problem with a whole section: point at its key
        probe = loc
        while node is None and probe:  # point at the nearest enclosing key that exists
            probe = probe[:-1]
            node = keys.get(probe) if probe else values.get(())
        if node is None:
            raise SpecError(f"{name}: {key_path(loc)}: {message}", None) from None
        raise SpecError(f"{key_path(loc)}: {message}", _span(name, node), text) from None
