"""A benchmark client process: many closed-loop virtual clients on one event loop.

Started as ``python -m hydrodeploy.bench.client`` with a JSON :class:`ClientSpec` on stdin. Client
``client/<n>`` lives in client process ``n mod count`` (the directory routes replies there). For
each ``load`` message the process runs one measured point:

- at ``start_at`` (wall clock, the same for every client process) every virtual client sends its
  first request, built as :class:`~hydrodeploy.simulate.clients.ClientProtocol` says, to every
  instance of the input's component; each reply completes its request and the client sends the
  next one at once (closed loop). Requests are sent in batches: everything issued while handling
  the frames that arrived together (in one turn of the event loop) goes out as one frame per node;
- with ``timeout_ms`` an unanswered request is re-sent (same id) after that long;
- latencies (first send to first reply) of requests completed in the measurement window, which
  follows ``warmup`` seconds and lasts ``measure`` seconds, go into an HdrHistogram (microseconds);
  completions are also counted per ``bin_s`` bin of the window; after ``cooldown`` seconds more
  the clients stop and the process reports (``result``).

Request ids are unique across points and clients: ``(point + 1) << 44 | n << 24 | sequence``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

from hydrodeploy.language import load_program
from hydrodeploy.runtime import eventloop
from hydrodeploy.runtime.codec import Fact
from hydrodeploy.runtime.topology import client_address
from hydrodeploy.runtime.transport import ControlChannel, Directory, Groups, Message, Transport
from hydrodeploy.simulate.clients import ClientProtocol

LOWEST_US = 1
HIGHEST_US = 120_000_000
SIGNIFICANT = 3
RECORD_DRAIN_S = 10.0


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT)


@dataclass(frozen=True)
class ClientSpec:
    name: str  # "clients/<index>"
    index: int
    count: int  # client processes in the deployment
    program: str
    instances: dict[str, list[str]]
    secret: str
    control: tuple[str, int]
    listen_host: str = "127.0.0.1"
    seed: int = 0

    @staticmethod
    def from_json(data: bytes) -> ClientSpec:
        obj = json.loads(data)
        obj["control"] = (obj["control"][0], int(obj["control"][1]))
        return ClientSpec(**obj)

    def to_config(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("secret", "control", "listen_host")}


@dataclass
class _Virtual:
    number: int
    address: str
    seq: int = 0


@dataclass(frozen=True)
class LoadParams:
    point: int
    clients: tuple[int, ...]  # the client numbers this process runs
    start_at: float  # wall clock
    warmup: float
    measure: float
    cooldown: float
    bin_s: float
    payload_bytes: int = 16
    keys: int = 1000
    timeout_ms: float | None = None
    record: bool = False  # return every request and reply (tests)

    @staticmethod
    def from_message(msg: dict[str, Any]) -> LoadParams:
        fields = {k: v for k, v in msg.items() if k != "t"}
        fields["clients"] = tuple(fields["clients"])
        return LoadParams(**fields)


class _Point:
    """The state of one measured point."""

    def __init__(self, params: LoadParams, t0: float) -> None:
        self.params = params
        self.t0 = t0
        self.measure_start = t0 + params.warmup
        self.measure_end = self.measure_start + params.measure
        self.histogram = new_histogram()
        self.bins = [0] * max(1, round(params.measure / params.bin_s))
        self.issuing = True
        self.sent = 0
        self.completed = 0
        self.completed_measured = 0
        self.latency_sum_us = 0
        self.retries = 0
        self.duplicates = 0
        self.unmatched = 0
        self.outstanding: dict[int, tuple[_Virtual, float, float, Fact]] = {}  # id -> client, first, last, values
        self.done_ids: set[int] = set()
        self.requests: list[list[Any]] = []
        self.replies: list[list[Any]] = []


class ClientProcess:
    def __init__(self, spec: ClientSpec) -> None:
        self.spec = spec
        self.secret = bytes.fromhex(spec.secret)
        program = load_program(spec.program)
        self.protocol = ClientProtocol.of(program)
        self.relation = self.protocol.input.relation
        self.targets = list(spec.instances[self.protocol.input.component])
        self.transport = Transport(self.secret, spec.name, self._on_data)
        self.rng = random.Random(spec.seed * 7919 + spec.index)
        self.point: _Point | None = None
        self._out: list[Message] = []
        self._flush_scheduled = False
        self._stop = asyncio.Event()

    # ---- the closed loop ------------------------------------------------------------------------

    def _issue(self, point: _Point, client: _Virtual, now: float) -> None:
        rid = ((point.params.point + 1) << 44) | (client.number << 24) | client.seq
        client.seq += 1
        values = self.protocol.request(client.address, rid, self.rng, point.params.payload_bytes, point.params.keys)
        point.outstanding[rid] = (client, now, now, values)
        point.sent += 1
        if point.params.record:
            point.requests.append([client.address, rid, list(values), now - point.t0])
        relation = self.relation
        self._out.extend((target, relation, values) for target in self.targets)

    def _flush(self) -> None:
        if self._out:
            out, self._out = self._out, []
            self.transport.send(out)

    def _flush_soon(self) -> None:
        """Send what is waiting once the event loop has handled every frame that arrived with
        this one: the requests answered by several reply frames leave in one frame per node."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _on_data(self, sender: str, groups: Groups, size: int) -> None:
        point = self.point
        if point is None:
            return
        now = time.perf_counter()
        request_id = self.protocol.request_id
        measuring = point.measure_start <= now < point.measure_end
        for dest, relation, rows in groups:
            for row in rows:
                rid = request_id(relation, row)
                if point.params.record:
                    point.replies.append([dest, relation, list(row), now - point.t0])
                entry = point.outstanding.get(rid) if isinstance(rid, int) else None
                if entry is None or entry[0].address != dest:
                    if isinstance(rid, int) and rid in point.done_ids:
                        point.duplicates += 1
                    else:
                        point.unmatched += 1
                    continue
                del point.outstanding[rid]
                point.done_ids.add(rid)
                point.completed += 1
                client, first = entry[0], entry[1]
                if measuring:
                    latency_us = max(LOWEST_US, int((now - first) * 1e6))
                    point.histogram.record_value(min(latency_us, HIGHEST_US))
                    point.latency_sum_us += latency_us
                    point.completed_measured += 1
                    point.bins[min(len(point.bins) - 1, int((now - point.measure_start) / point.params.bin_s))] += 1
                if point.issuing:
                    self._issue(point, client, now)
        self._flush_soon()

    async def _retry(self, point: _Point, timeout_s: float) -> None:
        while point.issuing:
            await asyncio.sleep(timeout_s / 4)
            now = time.perf_counter()
            for rid, (client, first, last, values) in list(point.outstanding.items()):
                if now - last >= timeout_s:
                    point.outstanding[rid] = (client, first, now, values)
                    point.retries += 1
                    self._out.extend((target, self.relation, values) for target in self.targets)
            self._flush()

    async def run_point(self, params: LoadParams) -> dict[str, Any]:
        loop_now, wall_now = time.perf_counter(), time.time()
        t0 = loop_now + max(0.0, params.start_at - wall_now)
        point = _Point(params, t0)
        clients = [_Virtual(n, client_address(n)) for n in params.clients]
        await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
        self.point = point
        now = time.perf_counter()
        for client in clients:
            self._issue(point, client, now)
        self._flush()
        retry = None
        if params.timeout_ms is not None:
            retry = asyncio.get_running_loop().create_task(self._retry(point, params.timeout_ms / 1000.0))
        await asyncio.sleep(max(0.0, point.measure_start - time.perf_counter()))
        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, point.measure_end - time.perf_counter()))
        cpu = time.process_time() - cpu0
        await asyncio.sleep(max(0.0, point.measure_end + params.cooldown - time.perf_counter()))
        point.issuing = False
        if retry is not None:
            retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retry
        result: dict[str, Any] = {
            "t": "result",
            "name": self.spec.name,
            "point": params.point,
            "clients": len(params.clients),
            "sent": point.sent,
            "completed": point.completed,
            "completed_measured": point.completed_measured,
            "latency_sum_us": point.latency_sum_us,
            "retries": point.retries,
            "duplicates": point.duplicates,
            "unmatched": point.unmatched,
            "outstanding": len(point.outstanding),
            "bins": point.bins,
            "histogram": point.histogram.encode(),
            "cpu": cpu,
            "measure": params.measure,
        }
        if params.record:
            # wait for the replies to the requests still in flight (each client has one), so that
            # the record holds every request's answer; then a little longer for duplicates
            deadline = time.perf_counter() + RECORD_DRAIN_S
            while point.outstanding and time.perf_counter() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            result["outstanding"] = len(point.outstanding)
            result["unmatched"] = point.unmatched
            result["requests"] = point.requests
            result["replies"] = point.replies
            result["duplicates"] = point.duplicates
        return result

    # ---- control ---------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        endpoint = await self.transport.listen(self.spec.listen_host, 0)
        control = await ControlChannel.connect(self.spec.control[0], self.spec.control[1], self.secret)
        control.send({"t": "hello", "name": self.spec.name, "endpoint": list(endpoint), "pid": os.getpid()})
        print(f"{self.spec.name}: listening on {endpoint[0]}:{endpoint[1]}", flush=True)
        running: asyncio.Task[dict[str, Any]] | None = None

        async def serve() -> None:
            nonlocal running
            while True:
                msg = await control.recv()
                if msg is None:
                    print(f"{self.spec.name}: the orchestrator is gone", flush=True)
                    self._stop.set()
                    return
                if msg["t"] == "start":
                    self.transport.directory = Directory.from_wire(msg["directory"])
                    control.send({"t": "started", "name": self.spec.name})
                elif msg["t"] == "load":
                    running = loop.create_task(self.run_point(LoadParams.from_message(msg)))
                    running.add_done_callback(lambda task: _report(control, task))
                elif msg["t"] == "stop":
                    self._stop.set()
                    return

        serving = loop.create_task(serve())
        await self._stop.wait()
        if running is not None and not running.done():
            running.cancel()
        if self.point is not None:
            self.point.issuing = False
        await self.transport.close(flush_timeout=0.5)
        control.send({"t": "stopped", "name": self.spec.name})
        await control.drain()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        control.close()
        return 0


def _report(control: ControlChannel, task: asyncio.Task[dict[str, Any]]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        print(f"load failed: {exc!r}", flush=True)
        os._exit(1)  # the orchestrator reports the process and this line
    control.send(task.result())


def main() -> int:
    spec = ClientSpec.from_json(sys.stdin.buffer.read())
    return eventloop.run(ClientProcess(spec).run())


if __name__ == "__main__":
    sys.exit(main())
