"""Shared by the network benchmarks: deploy a program on a local cluster and find its maximum
throughput over a sweep of client counts."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hydrodeploy.bench.experiment import Bench, Observer, sweep
from hydrodeploy.bench.measure import Plateau, Point
from hydrodeploy.bench.workload import ClientsSpec, WindowsSpec
from hydrodeploy.deploy.local import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
WINDOWS = WindowsSpec(warmup_s=2.0, measure_s=4.0, cooldown_s=0.3, bin_s=0.5)
COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass
class Measured:
    best: Point
    points: list[Point]
    warnings: list[str]


class _Quiet(Observer):
    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose

    def point_done(self, point: Point) -> None:
        if self.verbose:
            neck = point.bottleneck
            where = f"{neck.address} {neck.cpu:.2f} cpu" if neck else ""
            print(f"    {point.clients:>4} clients {point.throughput:>9,.0f} req/s  p50 {point.p50_ms:6.2f} ms  {where}", flush=True)


def max_throughput(
    protocol: str,
    cpus: float | None = None,
    counts: tuple[int, ...] = COUNTS,
    windows: WindowsSpec = WINDOWS,
    timeout_ms: float | None = None,
    engine: str | None = None,
    client_processes: int = 2,
    verbose: bool = False,
) -> Measured:
    """Sweep ``counts`` closed-loop clients until throughput gains under 5% for two steps."""

    async def go(tmp: Path) -> Measured:
        cluster = LocalCluster(name="bench", cpus=cpus)
        bench = Bench(ROOT / protocol, cluster, tmp / "logs", client_processes=client_processes, engine=engine)
        try:
            await bench.start()
            result = await sweep(
                bench, windows, counts, 1, ClientsSpec(timeout_ms=timeout_ms), Plateau(0.05, 2, None), _Quiet(verbose)
            )
            await bench.stop()
        finally:
            bench.close()
        top = result.peak()
        assert top is not None
        return Measured(top.point, result.points, cluster.warnings)

    with tempfile.TemporaryDirectory(prefix="hydrodeploy-bench-") as tmp:
        return asyncio.run(go(Path(tmp)))
