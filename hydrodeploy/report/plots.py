"""Plots of measured points (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from hydrodeploy.bench.measure import Point


def _flagged(p: Point) -> bool:
    return p.unstable or p.client_bound or p.host_saturated


def throughput_latency(points: Sequence[Point], path: Path, title: str, subtitle: str = "") -> Path:
    """Median and p99 latency against throughput, one marker per point, labelled with its client
    count, joined in order of client count. Flagged points get a red cross."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ordered = sorted(points, key=lambda p: (p.clients, p.repeat))
    xs = [p.throughput for p in ordered]
    ax.plot(xs, [p.p50_ms for p in ordered], "o-", label="p50")
    ax.plot(xs, [p.p99_ms for p in ordered], "s--", label="p99")
    for p in ordered:
        ax.annotate(str(p.clients), (p.throughput, p.p50_ms), textcoords="offset points", xytext=(4, -10), fontsize=7)
        if _flagged(p):
            ax.plot([p.throughput], [p.p50_ms], "x", color="red", markersize=9)
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    if any(_flagged(p) for p in ordered):
        handles.append(Line2D([], [], marker="x", color="red", linestyle=""))
        labels.append("flagged: unstable, client-bound\nor host-saturated")
    ax.legend(handles, labels, fontsize=8, title="numbers: clients", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
