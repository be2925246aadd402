"""Helpers for tests that deploy a protocol as real node processes on loopback and drive it with
real client processes (hydrodeploy.bench), recording every request and reply."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from hydrodeploy.bench.experiment import Bench
from hydrodeploy.bench.measure import STOLEN_REMEASURES, Point, stolen
from hydrodeploy.bench.workload import ClientsSpec, WindowsSpec
from hydrodeploy.deploy.local import LocalCluster

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ROOT / "protocols"
WINDOWS = WindowsSpec(warmup_s=0.3, measure_s=1.0, cooldown_s=0.1, bin_s=0.25)


@dataclass
class Recorded:
    """Everything the clients of one point sent and received, and what the nodes reported."""

    point: Point
    requests: dict[int, tuple[str, tuple[Any, ...]]]  # id -> (client, values sent)
    replies: list[tuple[str, str, tuple[Any, ...]]]  # (client, relation, values), in arrival order
    outstanding: int
    unmatched: int
    final: dict[str, dict[str, Any]]  # per node: its counters when it stopped
    durable: dict[str, list[tuple[str, tuple[Any, ...]]]] = field(default_factory=dict)  # node -> .log facts

    def replies_by_id(self, column: int = 0) -> dict[Any, list[tuple[str, str, tuple[Any, ...]]]]:
        out: dict[Any, list[tuple[str, str, tuple[Any, ...]]]] = {}
        for reply in self.replies:
            out.setdefault(reply[2][column], []).append(reply)
        return out


def run_protocol(
    name: str,
    tmp: Path,
    clients: int = 8,
    timeout_ms: float | None = None,
    windows: WindowsSpec = WINDOWS,
    before_load: Callable[[Bench], Awaitable[None]] | None = None,
) -> Recorded:
    """Deploy ``protocols/<name>.ded`` unthrottled, run one recorded point, stop gracefully."""

    async def go() -> Recorded:
        cluster = LocalCluster(name="test")
        bench = Bench(PROTOCOLS / f"{name}.ded", cluster, tmp / "logs", client_processes=2, durable_dir=tmp / "durable")
        try:
            await bench.start()
            if before_load is not None:
                await before_load(bench)
            settings = ClientsSpec(timeout_ms=timeout_ms)
            point, raw = await bench.point(0, clients, windows, settings, record=True)
            final = await bench.stop()
        finally:
            bench.close()
        requests: dict[int, tuple[str, tuple[Any, ...]]] = {}
        replies: list[tuple[float, str, str, tuple[Any, ...]]] = []
        for r in raw:
            for client, rid, values, _ in r["requests"]:
                requests[rid] = (client, tuple(values))
            for client, relation, values, at in r["replies"]:
                replies.append((at, client, relation, tuple(values)))
        replies.sort(key=lambda x: x[0])
        durable: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
        for path in sorted((tmp / "durable").glob("*.jsonl")):
            node = path.stem.replace("-", "/", 1)
            durable[node] = [(rel, tuple(values)) for rel, values in map(json.loads, path.read_text().splitlines())]
        return Recorded(
            point=point,
            requests=requests,
            replies=[(c, rel, v) for _, c, rel, v in replies],
            outstanding=sum(int(r["outstanding"]) for r in raw),
            unmatched=sum(int(r["unmatched"]) for r in raw),
            final=final,
            durable=durable,
        )

    return asyncio.run(go())


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def wait_gone(processes: list[psutil.Process], timeout: float = 10.0) -> list[int]:
    """Pids of ``processes`` still alive (not zombies) after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in processes:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pid_in_log(log: Path) -> int | None:
    """The pid a node printed on its first log line ("<address>: pid N listening on ...")."""
    try:
        first = log.read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    parts = first.split()
    return int(parts[2]) if len(parts) > 2 and parts[1] == "pid" and parts[2].isdigit() else None


def cgroup_dirs_of(pid: int) -> list[Path]:
    base = Path("/sys/fs/cgroup/cpu/hydrodeploy")
    return sorted(base.glob(f"{pid}-*")) if base.is_dir() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def swept_counts(points: list[Point]) -> list[int]:
    """The client counts a sweep measured, in order, each once: a window the hypervisor took more
    than STOLEN of the CPU in is measured again at once (a few times at most), and those second
    measurements are checked here and left out."""
    counts = [p.clients for p in points]
    again = [i for i in range(1, len(points)) if counts[i] == counts[i - 1]]
    assert len(again) <= STOLEN_REMEASURES and all(stolen(points[i - 1]) for i in again), [(p.clients, p.host_steal) for p in points]
    return [c for i, c in enumerate(counts) if i not in again]
