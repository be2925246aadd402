"""Flame graphs of folded stacks, drawn with matplotlib (Agg: no display needed).

Each box is a frame; its width is the share of samples whose stack passes through it, its
children stand on it, siblings are sorted by name (so the picture is stable). Colours are a warm
palette keyed on the frame's name, with kernel frames in orange and Python frames in yellow.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

MAX_DEPTH = 40


@dataclass
class _Node:
    name: str
    count: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def tree(folded: Mapping[str, int]) -> _Node:
    root = _Node("all")
    for stack, n in folded.items():
        root.count += n
        node = root
        for frame in stack.split(";")[:MAX_DEPTH]:
            node = node.children.setdefault(frame, _Node(frame))
            node.count += n
    return root


def _colour(name: str) -> tuple[float, float, float]:
    h = zlib.crc32(name.encode()) / 0xFFFFFFFF
    if name.startswith(("__x64", "do_", "entry_", "tcp", "ip_", "sock", "ext4", "jbd2")) or "kallsyms" in name:
        return (0.95, 0.55 + 0.2 * h, 0.2)
    if name.startswith(("_Py", "Py", "list", "dict", "set", "tuple", "long", "unicode")):
        return (0.95, 0.8 + 0.15 * h, 0.3)
    return (0.9 + 0.1 * h, 0.35 + 0.4 * h, 0.15 + 0.2 * h)


def draw(folded: Mapping[str, int], path: Path, title: str) -> Path:
    """Draw the flame graph of ``folded`` into ``path`` (PNG)."""
    root = tree(folded)
    depth = _depth(root)
    fig, ax = plt.subplots(figsize=(11, max(2.5, 0.28 * (depth + 2))), dpi=110)
    total = max(1, root.count)

    def place(node: _Node, x: float, level: int) -> None:
        width = node.count / total
        ax.add_patch(Rectangle((x, level), width, 0.95, facecolor=_colour(node.name), edgecolor="white", linewidth=0.3))
        if width > 0.04:
            chars = int(width * 160)
            label = node.name if len(node.name) <= chars else node.name[: max(1, chars - 1)] + "…"
            ax.text(x + 0.003, level + 0.45, label, fontsize=6.5, va="center", ha="left", clip_on=True)
        child_x = x
        for name in sorted(node.children):
            child = node.children[name]
            place(child, child_x, level + 1)
            child_x += child.count / total

    place(root, 0.0, 0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, depth + 1)
    ax.set_yticks([])
    ax.set_xlabel("share of samples")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _depth(node: _Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)
