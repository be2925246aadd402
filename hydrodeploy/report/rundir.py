"""Run directories: ``reports/<timestamp>_<name>/`` with everything a report needs.

    spec.yaml            resolved experiment + cluster + versions + git revision
    results.csv          one row per measured point, flushed (and fsynced) as each finishes
    summary.json         the best point of each iteration
    throughput_latency.png
    iterations/NN/       program.ded, topology.json, points/PPP.json (series, merged histogram,
                         per-node usage), logs/ (every process's output), durable/ (.log facts)

``reports/latest`` is a symbolic link to the newest run directory, updated when a run starts.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import time
from base64 import b64encode
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from hydrodeploy import __version__
from hydrodeploy.bench.measure import CSV_COLUMNS, Point, peak


class RunDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._csv: Any = None
        self._writer: csv.DictWriter[str] | None = None
        self._append = False  # results.csv exists already (a resumed run): append to it

    @staticmethod
    def create(root: Path, name: str, now: float | None = None) -> RunDirectory:
        root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        path = root / f"{stamp}_{name}"
        n = 2
        while True:
            try:
                path.mkdir()
                break
            except FileExistsError:
                path = root / f"{stamp}_{name}-{n}"
                n += 1
        tmp = root / f".latest-{os.getpid()}"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(path.name, tmp)
        os.replace(tmp, root / "latest")
        return RunDirectory(path)

    def iteration(self, index: int) -> Path:
        path = self.path / "iterations" / f"{index:02d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_json(self, relative: str | Path, obj: Any) -> Path:
        path = self.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")
        return path

    def write_spec(self, spec: Mapping[str, Any]) -> None:
        (self.path / "spec.yaml").write_text(yaml.safe_dump(dict(spec), sort_keys=False))

    @staticmethod
    def reopen(path: Path, keep_iterations: Iterable[int] | None = None) -> RunDirectory:
        """An existing run directory, to continue it: results.csv keeps the rows of
        ``keep_iterations`` (all when None) and new rows are appended after them."""
        run = RunDirectory(path)
        results = path / "results.csv"
        if keep_iterations is not None and results.exists():
            keep = {str(i) for i in keep_iterations}
            with open(results, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("iteration") in keep]
            with open(results, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["iteration", *CSV_COLUMNS])
                writer.writeheader()
                writer.writerows(rows)
        run._append = results.exists()
        return run

    def add_result(self, iteration: int, point: Point) -> None:
        """Append the point's row to results.csv, flushed to disk before returning."""
        if self._writer is None:
            mode = "a" if self._append else "w"
            self._csv = open(self.path / "results.csv", mode, newline="")  # noqa: SIM115 - kept open for the run
            self._writer = csv.DictWriter(self._csv, fieldnames=["iteration", *CSV_COLUMNS])
            if not self._append:
                self._writer.writeheader()
        self._writer.writerow({"iteration": iteration, **point.row()})
        self._csv.flush()
        os.fsync(self._csv.fileno())
        self.write_json(Path("iterations") / f"{iteration:02d}" / "points" / f"{point.index:03d}.json", point_record(point))

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = None
            self._writer = None


def point_record(point: Point) -> dict[str, Any]:
    """Everything measured at a point, for re-rendering reports offline."""
    record = asdict(point)
    record["histogram"] = b64encode(point.histogram).decode() if point.histogram else ""
    record["histogram_encoding"] = "HdrHistogram V2 compressed, base64 (hdrh.histogram.HdrHistogram.decode), microseconds"
    return record


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return b64encode(value).decode()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def summary(protocol: str, cluster: str, iterations: Iterable[tuple[int, int, Sequence[Point]]]) -> dict[str, Any]:
    """summary.json: per iteration (index, machines, points), its peak (:func:`peak`)."""
    out: list[dict[str, Any]] = []
    for index, machines, points in iterations:
        top = peak(points)
        out.append(
            {
                "index": index,
                "machines": machines,
                "max_throughput": round(top.throughput, 1) if top else None,
                "p50_ms": round(top.point.p50_ms, 3) if top else None,
                "p99_ms": round(top.point.p99_ms, 3) if top else None,
                "predicted_throughput": None,
                "rewrite": None,
                "kept": True,
            }
        )
    return {"protocol": protocol, "cluster": cluster, "iterations": out}


def versions() -> dict[str, Any]:
    """The software and machine a run used."""
    return {
        "hydrodeploy": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "git": git_revision(),
    }


def git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+dirty" if dirty.strip() else "")
