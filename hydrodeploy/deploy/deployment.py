"""One deployment: start every process on its host, wire them together, watch them, stop them.

The orchestrator listens on a control port; every process it starts connects back, says
``hello`` with the endpoint it listens on, is put under its host's limits, and receives ``start``
with the directory of every endpoint. Control messages are framed and authenticated with the
deployment's secret like the facts themselves (:mod:`hydrodeploy.runtime.codec`).

A process that dies (or drops its control connection) while the deployment runs is a
:class:`ProcessFailure`, raised within a fraction of a second from whatever the orchestrator is
waiting on (:meth:`Deployment.guard`), with the last lines of the process's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from hydrodeploy.deploy.host import Cluster, DeployError, Host, ProcessHandle, ProcessSpec
from hydrodeploy.runtime.transport import ControlChannel, Directory, Endpoint

T = TypeVar("T")
Role = Literal["node", "clients"]
POLL_S = 0.1
REPLY_TIMEOUT_S = 30.0


class ProcessFailure(DeployError):
    """A process of the deployment ended or went silent while the deployment was running."""

    def __init__(self, name: str, role: Role, how: str, log_path: Path, tail: list[str]) -> None:
        self.name = name
        self.role = role
        self.how = how
        self.log_path = log_path
        self.tail = tail
        what = "node" if role == "node" else "client process"
        lines = "\n".join(f"  | {line}" for line in tail) or "  | (empty)"
        super().__init__(f"{what} {name} {how}; last lines of its log {log_path}:\n{lines}")


@dataclass(frozen=True)
class Member:
    """A process of the deployment: what to run, and its JSON configuration on stdin (completed
    with the ``secret``, the ``control`` endpoint and the ``listen_host``)."""

    name: str
    role: Role
    argv: tuple[str, ...]
    config: dict[str, Any]


def python_module(module: str) -> tuple[str, ...]:
    return (sys.executable, "-m", module)


@dataclass
class _Peer:
    member: Member
    host: Host
    handle: ProcessHandle | None = None
    channel: ControlChannel | None = None
    endpoint: Endpoint | None = None
    hello: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: dict[str, deque[asyncio.Future[dict[str, Any]]]] = field(default_factory=dict)
    final: dict[str, Any] | None = None

    def expect(self, kind: str) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(kind, deque()).append(fut)
        return fut

    def deliver(self, msg: dict[str, Any]) -> None:
        queue = self.waiting.get(msg["t"])
        while queue:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(msg)
                return


class Deployment:
    """Start with :meth:`start`, talk to processes with :meth:`request`, end with :meth:`stop`
    (graceful) and :meth:`close` (kills anything left and releases the cluster's resources)."""

    def __init__(self, cluster: Cluster, members: Sequence[Member], log_dir: Path, cwd: Path | None = None) -> None:
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise DeployError("two processes of a deployment have the same name")
        self.cluster = cluster
        self.members = list(members)
        self.log_dir = log_dir
        self.cwd = cwd or Path.cwd()
        self.secret = secrets.token_bytes(32)
        self.peers: dict[str, _Peer] = {}
        self.stopping = False
        self.directory: Directory | None = None
        self._server: asyncio.AbstractServer | None = None
        self._failure: asyncio.Future[ProcessFailure] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- starting -------------------------------------------------------------------------------

    def nodes(self) -> list[str]:
        return [m.name for m in self.members if m.role == "node"]

    def client_processes(self) -> list[str]:
        return [m.name for m in self.members if m.role == "clients"]

    def handle(self, name: str) -> ProcessHandle:
        handle = self.peers[name].handle
        assert handle is not None
        return handle

    async def start(self, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        self._failure = loop.create_future()
        address = self.cluster.orchestrator_address()
        self._server = await asyncio.start_server(self._accept, address, 0)
        control = (address, int(self._server.sockets[0].getsockname()[1]))
        node_hosts, client_hosts = self.cluster.hosts(self.nodes(), len(self.client_processes()))
        clients = iter(client_hosts)
        for member in self.members:
            host = node_hosts[member.name] if member.role == "node" else next(clients)
            self.peers[member.name] = _Peer(member, host)
        for peer in self.peers.values():
            config = dict(peer.member.config, secret=self.secret.hex(), control=list(control), listen_host=peer.host.address)
            log_path = self.log_dir / f"{_file_name(peer.member.name)}.log"
            spec = ProcessSpec(peer.member.name, peer.member.argv, json.dumps(config).encode(), log_path, self.cwd)
            peer.handle = peer.host.start(spec)
        self._watcher = loop.create_task(self._watch())
        hellos = [loop.create_task(p.hello.wait()) for p in self.peers.values()]
        try:
            await self.guard(asyncio.wait_for(asyncio.gather(*hellos), timeout))
        except TimeoutError:
            silent = [n for n, p in self.peers.items() if not p.hello.is_set()]
            raise DeployError(f"processes did not report within {timeout:g} s: {', '.join(silent)}") from None
        for peer in self.peers.values():
            assert peer.handle is not None
            if peer.member.role == "node":
                peer.handle.apply_limits()
        node_eps = {n: p.endpoint for n, p in self.peers.items() if p.member.role == "node" and p.endpoint}
        client_eps = tuple(self.peers[n].endpoint for n in self.client_processes())
        self.directory = Directory(node_eps, tuple(ep for ep in client_eps if ep is not None))
        started = [self._send_expect(p, {"t": "start", "directory": self.directory.to_wire()}, "started") for p in self.peers.values()]
        await self.guard(asyncio.wait_for(asyncio.gather(*started), timeout))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = ControlChannel(self.secret, reader, writer)
        try:
            await self._serve(channel)
        except asyncio.CancelledError:
            channel.close()  # the deployment is closing; the connection handler just ends

    async def _serve(self, channel: ControlChannel) -> None:
        try:
            hello = await asyncio.wait_for(channel.recv(), 30.0)
        except TimeoutError:
            hello = None
        peer = self.peers.get(str(hello.get("address") or hello.get("name"))) if hello and hello["t"] == "hello" else None
        if hello is None or peer is None or peer.channel is not None:
            channel.close()  # not a process of this deployment (wrong secret, or a stranger)
            return
        peer.channel = channel
        ep = hello["endpoint"]
        peer.endpoint = (str(ep[0]), int(ep[1]))
        peer.hello.set()
        while True:
            msg = await channel.recv()
            if msg is None:
                break
            if msg["t"] == "stopped":
                peer.final = msg.get("data")
            peer.deliver(msg)
        if not self.stopping:
            self._spawn(self._silent(peer))

    async def _silent(self, peer: _Peer) -> None:
        """A process closed its control connection: it is dying, or wedged."""
        assert peer.handle is not None
        for _ in range(20):
            if peer.handle.returncode() is not None or self.stopping:
                return  # the watcher reports the exit
            await asyncio.sleep(POLL_S)
        self._fail(peer, "closed its control connection")

    async def _watch(self) -> None:
        while not self.stopping:
            for peer in self.peers.values():
                if peer.handle is not None and peer.handle.returncode() is not None:
                    self._fail(peer, peer.handle.describe_exit())
                    return
            await asyncio.sleep(POLL_S)

    def _fail(self, peer: _Peer, how: str) -> None:
        if self.stopping or self._failure is None or self._failure.done():
            return
        assert peer.handle is not None
        tail = peer.handle.log_tail(12)
        self._failure.set_result(ProcessFailure(peer.member.name, peer.member.role, how, peer.handle.log_path, tail))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- while running --------------------------------------------------------------------------

    @property
    def failure(self) -> ProcessFailure | None:
        if self._failure is not None and self._failure.done():
            return self._failure.result()
        return None

    async def guard(self, aw: Awaitable[T]) -> T:
        """Await ``aw``, unless a process fails first: then cancel it and raise the failure."""
        assert self._failure is not None
        if self._failure.done():
            raise self._failure.result()
        task = asyncio.ensure_future(aw)
        watched: set[asyncio.Future[Any]] = {task, self._failure}
        try:
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise self._failure.result()

    def _send_expect(self, peer: _Peer, msg: dict[str, Any], reply: str) -> asyncio.Future[dict[str, Any]]:
        if peer.channel is None:
            raise DeployError(f"{peer.member.name} is not connected")
        fut = peer.expect(reply)
        peer.channel.send(msg)
        return fut

    async def request(self, name: str, msg: dict[str, Any], reply: str, timeout: float = REPLY_TIMEOUT_S) -> dict[str, Any]:
        """Send ``msg`` to one process and wait for its ``reply``-typed answer."""
        replies = await self.request_many([name], msg, reply, timeout)
        return replies[name]

    async def request_many(
        self, names: Sequence[str], msg: dict[str, Any], reply: str, timeout: float = REPLY_TIMEOUT_S
    ) -> dict[str, dict[str, Any]]:
        """Send ``msg`` to each process and wait for every answer; a process that does not answer
        within ``timeout`` seconds (wedged) is a DeployError naming it, never a hang."""
        futs = [self._send_expect(self.peers[n], msg, reply) for n in names]
        try:
            results = await self.guard(asyncio.wait_for(asyncio.gather(*futs), timeout))
        except TimeoutError:
            # the timeout cancelled every future still waiting: those are the silent processes
            silent = [n for n, f in zip(names, futs, strict=True) if f.cancelled()] or list(names)
            raise DeployError(
                f"no '{reply}' from {', '.join(silent)} within {timeout:g} s (the process is running but wedged); "
                f"its log: {self.log_dir / (_file_name(silent[0]) + '.log')}"
            ) from None
        return dict(zip(names, results, strict=True))

    async def metrics(self) -> dict[str, dict[str, Any]]:
        """Every node's counters now."""
        replies = await self.request_many(self.nodes(), {"t": "metrics"}, "metrics")
        return {name: msg["data"] for name, msg in replies.items()}

    def limit_stats(self) -> dict[str, dict[str, float]]:
        """Per node, the host's counters of its limits (CPU quota throttling)."""
        return {n: self.handle(n).cpu_stats() for n in self.nodes()}

    # ---- stopping -------------------------------------------------------------------------------

    async def stop(self, timeout: float = 3.0) -> dict[str, dict[str, Any]]:
        """Stop gracefully: client processes first, then nodes; every node flushes its log and
        reports its final counters. Processes that do not exit in time are killed."""
        self.stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
        loop = asyncio.get_running_loop()
        for role in ("clients", "node"):
            group = [p for p in self.peers.values() if p.member.role == role and p.handle is not None]
            waits = []
            for peer in group:
                if peer.channel is not None and peer.handle is not None and peer.handle.returncode() is None:
                    waits.append(peer.expect("stopped"))
                    peer.channel.send({"t": "stop"})
            if waits:
                await asyncio.wait(waits, timeout=timeout)
                await self._snapshot_unstopped(group, timeout)
            deadline = loop.time() + timeout
            for peer in group:
                assert peer.handle is not None
                while peer.handle.returncode() is None and loop.time() < deadline:
                    await asyncio.sleep(0.02)
                if peer.handle.returncode() is None:
                    peer.handle.send_signal(signal.SIGKILL)
        return {n: p.final for n, p in self.peers.items() if p.final is not None}

    async def _snapshot_unstopped(self, group: Sequence[_Peer], timeout: float) -> None:
        """A process still busy in one long tick when told to stop would be killed with its final
        counters unsent; its control thread still answers ``metrics``, so keep those instead,
        marked ``stopped_mid_tick`` (the tick in progress is not in them)."""
        busy = [
            p for p in group
            if p.final is None and p.channel is not None and p.handle is not None and p.handle.returncode() is None
        ]  # fmt: skip
        if not busy:
            return
        asked = {p.member.name: self._send_expect(p, {"t": "metrics"}, "metrics") for p in busy}
        await asyncio.wait(asked.values(), timeout=timeout)
        for peer in busy:
            fut = asked[peer.member.name]
            if peer.final is None and fut.done() and not fut.cancelled() and fut.exception() is None:
                peer.final = {**fut.result().get("data", {}), "stopped_mid_tick": True}

    def close(self) -> None:
        """Kill everything still running, close the control port, release the cluster."""
        self.stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
        for task in list(self._tasks):
            task.cancel()
        for peer in self.peers.values():
            if peer.channel is not None:
                peer.channel.close()
        if self._server is not None:
            self._server.close()
        self.cluster.close()


def _file_name(name: str) -> str:
    return name.replace("/", "-").replace(os.sep, "-")
