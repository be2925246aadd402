"""Read measured points back from a run directory, so reports re-render offline."""

from __future__ import annotations

import json
from base64 import b64decode
from pathlib import Path
from typing import Any

from hydrodeploy.bench.measure import NodeUsage, Point


def point_from_record(record: dict[str, Any]) -> Point:
    fields = dict(record)
    fields.pop("histogram_encoding", None)
    fields["histogram"] = b64decode(fields.get("histogram") or "")
    fields["nodes"] = [
        NodeUsage(**{**n, "top_rules": [tuple(r) for r in n["top_rules"]]}) for n in fields.get("nodes", [])
    ]
    return Point(**fields)


def load_points(run_dir: Path, iteration: int = 0) -> list[Point]:
    """The points of one iteration, in measurement order."""
    folder = run_dir / "iterations" / f"{iteration:02d}" / "points"
    if not folder.is_dir():
        return []
    return [point_from_record(json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]
