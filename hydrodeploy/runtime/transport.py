"""asyncio TCP transport between the processes of one deployment.

Every process (node or benchmark client process) listens on one port and opens one outgoing
connection per peer endpoint it sends to; facts flow over outgoing connections only. Sending is
batched: :meth:`Transport.send` takes everything one tick produced and writes one DATA frame per
destination endpoint. A peer that cannot be reached loses the messages sent to it (like a lost
packet); the transport retries the connection at most every :data:`RECONNECT_S` seconds.
Backpressure goes both ways: :meth:`Transport.wait_writable` waits while a peer does not take what
was sent to it, and a receiver that has enough waiting stops reading the connection that brought
it (its handler returns True) until it releases the held connections
(:meth:`Transport.release_reading`): TCP then makes that sender wait. Holding only the connection
that delivered keeps reading fair: every other connection is still read once before it is held in
turn, so no sender's stream falls behind the others' by more than what one read holds. Connections
of benchmark client processes are released apart from the rest (the deployment's nodes): a node
behind on its clients' requests still hears its peers.

:class:`ControlChannel` is the framed, authenticated request/response channel between a process
and the orchestrator; :class:`ThreadControlChannel` is the same connection served from a thread
of its own (a node's, whose event loop can be busy in one tick for a long time).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from hydrodeploy.runtime import codec
from hydrodeploy.runtime.codec import DecodeStats, Fact, FrameDecoder
from hydrodeploy.runtime.topology import CLIENT_PREFIX, is_client_process

Endpoint = tuple[str, int]
Message = tuple[str, str, Fact]  # (destination address, relation, values)
Groups = list[tuple[str, str, tuple[Fact, ...]]]
# (sender, groups, frame bytes) -> whether to stop reading the connection that brought them
DataHandler = Callable[[str, Groups, int], bool | None]

RECONNECT_S = 0.5
HIGH_WATER = 4 * 1024 * 1024


@dataclass(frozen=True)
class Directory:
    """Where every address lives: node addresses map to their process's endpoint; client
    ``client/<n>`` lives in client process ``n mod len(clients)``."""

    nodes: Mapping[str, Endpoint]
    clients: tuple[Endpoint, ...] = ()

    def endpoint(self, address: str) -> Endpoint | None:
        ep = self.nodes.get(address)
        if ep is not None:
            return ep
        if address.startswith(CLIENT_PREFIX) and self.clients:
            suffix = address[len(CLIENT_PREFIX) :]
            if suffix.isdigit():
                return self.clients[int(suffix) % len(self.clients)]
        return None

    def to_wire(self) -> dict[str, Any]:
        return {"nodes": {a: list(ep) for a, ep in self.nodes.items()}, "clients": [list(ep) for ep in self.clients]}

    @staticmethod
    def from_wire(obj: Mapping[str, Any]) -> Directory:
        nodes = {str(a): (str(ep[0]), int(ep[1])) for a, ep in obj["nodes"].items()}
        clients = tuple((str(ep[0]), int(ep[1])) for ep in obj["clients"])
        return Directory(nodes, clients)


@dataclass
class ChannelStats:
    """Messages and bytes per channel: sent per (relation, destination address), received per
    (relation, sender). Sent bytes are exact (each group is packed separately); received bytes
    are the frame's bytes shared among its groups by row count."""

    sent: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    received: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    frames_sent: int = 0
    bytes_sent: int = 0
    dropped: int = 0  # messages to an unknown or unreachable destination
    misrouted: int = 0  # facts received for another address or an unknown relation

    def snapshot(self) -> dict[str, Any]:
        # copies first (one C call each): a node snapshots on its control thread while its event
        # loop's thread adds channels, and iterating a dict that grows raises
        sent, received = self.sent.copy(), self.received.copy()
        return {
            "sent": [[rel, dest, m, b] for (rel, dest), (m, b) in sent.items()],
            "received": [[rel, src, m, b] for (rel, src), (m, b) in received.items()],
            "frames_sent": self.frames_sent,
            "bytes_sent": self.bytes_sent,
            "dropped": self.dropped,
            "misrouted": self.misrouted,
        }


class _Incoming(asyncio.Protocol):
    def __init__(self, owner: Transport) -> None:
        self.owner = owner
        self.nonce = codec.new_nonce()
        self.decoder = FrameDecoder(owner.secret, owner.decode_stats, nonce=self.nonce)
        self.transport: asyncio.Transport | None = None
        # whether a benchmark client process sends on it: None until its first DATA frame says
        # (released with the nodes' connections until then)
        self.from_clients: bool | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.transport.write(codec.encode_hello(self.owner.secret, self.nonce))
        self.owner._incoming.add(self)

    def set_reading(self, reading: bool) -> None:
        stream = self.transport
        if stream is None or stream.is_closing() or stream.is_reading() == reading:
            return
        if reading:
            stream.resume_reading()
        else:
            stream.pause_reading()

    def data_received(self, data: bytes) -> None:
        cpu0 = time.thread_time_ns()
        self._receive(data)
        self.owner.receive_cpu_ns += time.thread_time_ns() - cpu0

    def _receive(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            if frame.kind == codec.DATA:
                sender, groups = frame.body
                if self.from_clients is None:
                    self.from_clients = is_client_process(sender)
                if self.owner.on_data(sender, groups, frame.size) and self not in self.owner._held:
                    self.owner._hold(self)
            else:
                self.owner.decode_stats.malformed += 1  # control frames do not belong here
        if self.decoder.broken and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.decoder.close()
        self.owner._incoming.discard(self)
        self.owner._held.discard(self)


class _Outgoing(asyncio.Protocol):
    """A connection this process sends DATA on. Payloads wait (unsealed) until the peer's HELLO
    gave the nonce to tag them with; the peer sends nothing else on it."""

    def __init__(self, owner: Transport, endpoint: Endpoint) -> None:
        self.owner = owner
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(owner.secret, owner.decode_stats, greeting=True)
        self.sealer: codec.Sealer | None = None
        self.queued: list[bytes] = []  # DATA payloads written before the greeting
        self.closed = False
        self.paused = False

    def write(self, payload: bytes) -> None:
        if self.sealer is not None:  # greeted: the connection is up
            assert self.transport is not None
            self.transport.write(self.sealer.frame(codec.DATA, payload))
        else:
            self.queued.append(payload)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass asyncio's
        stream.set_write_buffer_limits(high=HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            if frame.kind == codec.HELLO and self.sealer is None and self.transport is not None:
                sealer = self.sealer = codec.Sealer(self.owner.secret, frame.body)
                if self.queued:
                    self.transport.write(b"".join(sealer.frame(codec.DATA, p) for p in self.queued))
                    self.queued = []
            else:
                self.owner.decode_stats.malformed += 1  # a peer answers nothing but its greeting
        if self.decoder.broken and self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True
        self.owner._writable.clear()
        self.owner._update_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self.owner._update_writable()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.paused = False
        self.owner._lost(self)


class Transport:
    """Sends and receives DATA frames for one process (``sender`` is its address)."""

    def __init__(self, secret: bytes, sender: str, on_data: DataHandler, directory: Directory | None = None) -> None:
        self.secret = secret
        self.sender = sender
        self.on_data = on_data
        self.directory = directory or Directory({})
        self.decode_stats = DecodeStats()
        self.channels = ChannelStats()
        self.listen_endpoint: Endpoint | None = None
        self._server: asyncio.AbstractServer | None = None
        self._incoming: set[_Incoming] = set()
        self._outgoing: dict[Endpoint, _Outgoing] = {}
        self._down_until: dict[Endpoint, float] = {}
        self._writable = asyncio.Event()
        self._writable.set()
        self._held: set[_Incoming] = set()  # connections not read until released
        # CPU time of authenticating, decoding and queueing what arrived (the socket's read and
        # the event loop's turn around it are not in it)
        self.receive_cpu_ns = 0

    async def listen(self, host: str, port: int = 0) -> Endpoint:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Incoming(self), host, port)
        sock = self._server.sockets[0]
        self.listen_endpoint = (host, int(sock.getsockname()[1]))
        return self.listen_endpoint

    # ---- sending ------------------------------------------------------------------------------

    def send(self, messages: Iterable[Message]) -> int:
        """Send one tick's messages: one frame per destination endpoint. Returns frames written."""
        by_endpoint: dict[Endpoint, list[Message]] = {}
        endpoint_of = self.directory.endpoint
        dropped = 0
        for message in messages:
            ep = endpoint_of(message[0])
            if ep is None:
                dropped += 1
                continue
            bucket = by_endpoint.get(ep)
            if bucket is None:
                by_endpoint[ep] = [message]
            else:
                bucket.append(message)
        self.channels.dropped += dropped
        frames = 0
        now = time.monotonic()
        sent = self.channels.sent
        for ep, batch in by_endpoint.items():
            conn = self._connection(ep, now)
            if conn is None:
                self.channels.dropped += len(batch)
                continue
            groups = codec.group_rows(batch)
            payload, sizes = codec.pack_data(self.sender, groups)
            conn.write(payload)
            frames += 1
            self.channels.bytes_sent += codec.frame_size(payload)
            for (dest, relation, rows), size in zip(groups, sizes, strict=True):
                key = (relation, dest)
                counts = sent.get(key)
                if counts is None:
                    sent[key] = [len(rows), size]
                else:
                    counts[0] += len(rows)
                    counts[1] += size
        self.channels.frames_sent += frames
        return frames

    def _connection(self, ep: Endpoint, now: float) -> _Outgoing | None:
        conn = self._outgoing.get(ep)
        if conn is not None and not conn.closed:
            return conn
        if self._down_until.get(ep, 0.0) > now:
            return None
        conn = _Outgoing(self, ep)
        self._outgoing[ep] = conn
        task = asyncio.get_running_loop().create_task(self._connect(conn))
        task.add_done_callback(_consume)
        return conn

    async def _connect(self, conn: _Outgoing) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: conn, conn.endpoint[0], conn.endpoint[1])
        except OSError:
            self.channels.dropped += sum(1 for _ in conn.queued)
            conn.queued = []
            conn.closed = True
            self._down_until[conn.endpoint] = time.monotonic() + RECONNECT_S
            if self._outgoing.get(conn.endpoint) is conn:
                del self._outgoing[conn.endpoint]

    def _lost(self, conn: _Outgoing) -> None:
        if self._outgoing.get(conn.endpoint) is conn:
            del self._outgoing[conn.endpoint]
        self._down_until[conn.endpoint] = time.monotonic() + RECONNECT_S
        self._update_writable()

    def _update_writable(self) -> None:
        if not any(c.paused for c in self._outgoing.values()):
            self._writable.set()
            self._update_reading()

    async def wait_writable(self) -> None:
        """Return once no outgoing connection is above its high-water mark (backpressure)."""
        if not self._writable.is_set():
            await self._writable.wait()

    def _hold(self, inc: _Incoming) -> None:
        """Stop reading ``inc`` (its data handler has enough): the kernel's buffers fill and TCP
        makes its sender wait. While this process's own sends wait for a peer
        (:meth:`wait_writable`) it reads anyway: two processes each holding its reads while
        waiting to send to the other would never move again."""
        self._held.add(inc)
        inc.set_reading(not self._writable.is_set())

    def release_reading(self, clients: bool = False) -> None:
        """Read again every held connection of benchmark client processes (``clients``) or of
        everything else."""
        if not self._held:
            return
        for inc in [i for i in self._held if bool(i.from_clients) == clients]:
            self._held.discard(inc)
            inc.set_reading(True)

    def held(self, clients: bool = False) -> int:
        """How many connections of client processes (``clients``) or of the rest are held."""
        return sum(1 for inc in self._held if bool(inc.from_clients) == clients)

    def _update_reading(self) -> None:
        writable = self._writable.is_set()
        for inc in self._held:
            inc.set_reading(not writable)

    def buffered(self) -> int:
        """Bytes written but not yet handed to the kernel, over all outgoing connections."""
        total = 0
        for conn in self._outgoing.values():
            if conn.transport is not None and not conn.closed:
                total += conn.transport.get_write_buffer_size()
            total += sum(codec.frame_size(p) for p in conn.queued)
        return total

    # ---- closing ------------------------------------------------------------------------------

    async def close(self, flush_timeout: float = 2.0) -> None:
        """Stop accepting, flush what is buffered (up to ``flush_timeout``), close everything."""
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + flush_timeout
        while self.buffered() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self._outgoing.values()):
            if conn.transport is not None:
                conn.transport.close()
        for inc in list(self._incoming):
            if inc.transport is not None:
                inc.transport.close()
        self._outgoing.clear()
        await asyncio.sleep(0)


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class _Greeted:
    """Both ends' greetings on a control connection: the nonce this end reads frames with (sent
    at once), and the sealer for what it sends, once the peer's greeting arrived (messages sent
    before wait for it)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.nonce = codec.new_nonce()
        self.stats = DecodeStats()
        self.decoder = FrameDecoder(secret, self.stats, nonce=self.nonce, greeting=True)
        self.sealer: codec.Sealer | None = None
        self.unsent: list[Mapping[str, Any]] = []

    def hello(self) -> bytes:
        return codec.encode_hello(self.secret, self.nonce)

    def feed(self, data: bytes, frames: list[dict[str, Any]] | deque[dict[str, Any]]) -> bytes:
        """Queue the control messages ``data`` completes; returns what became sendable (the
        messages that waited for the peer's greeting, sealed)."""
        ready = b""
        for frame in self.decoder.feed(data):
            if frame.kind == codec.CONTROL:
                frames.append(frame.body)
            elif frame.kind == codec.HELLO:
                self.sealer = codec.Sealer(self.secret, frame.body)
                ready = b"".join(self.sealer.control(m) for m in self.unsent)
                self.unsent = []
            else:
                self.stats.malformed += 1  # a DATA frame does not belong here
        return ready

    def seal(self, message: Mapping[str, Any]) -> bytes:
        if self.sealer is None:
            self.unsent.append(message)
            return b""
        return self.sealer.control(message)


class ControlChannel:
    """One framed, authenticated CONTROL connection (process side or orchestrator side)."""

    def __init__(self, secret: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.secret = secret
        self.reader = reader
        self.writer = writer
        self.greeted = _Greeted(secret)
        self.stats = self.greeted.stats
        self.decoder = self.greeted.decoder
        self._frames: list[dict[str, Any]] = []
        writer.write(self.greeted.hello())

    @staticmethod
    async def connect(host: str, port: int, secret: bytes) -> ControlChannel:
        reader, writer = await asyncio.open_connection(host, port)
        return ControlChannel(secret, reader, writer)

    def send(self, message: Mapping[str, Any]) -> None:
        frame = self.greeted.seal(message)
        if frame and not self.writer.is_closing():
            self.writer.write(frame)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def recv(self) -> dict[str, Any] | None:
        """The next control message, or None when the connection ended (or became unusable)."""
        while not self._frames:
            if self.decoder.broken:
                return None
            try:
                data = await self.reader.read(65536)
            except ConnectionError:
                data = b""
            if not data:
                self.decoder.close()
                return None
            ready = self.greeted.feed(data, self._frames)
            if ready and not self.writer.is_closing():
                self.writer.write(ready)
        return self._frames.pop(0)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class ThreadControlChannel:
    """A CONTROL connection used with blocking calls: one thread waits in :meth:`recv` and
    answers, whatever the event loop's thread is doing; :meth:`send` may be called from any
    thread. The wire format is :class:`ControlChannel`'s."""

    def __init__(self, secret: bytes, sock: socket.socket) -> None:
        self.secret = secret
        self.sock = sock
        self.greeted = _Greeted(secret)
        self.stats = self.greeted.stats
        self.decoder = self.greeted.decoder
        self._frames: deque[dict[str, Any]] = deque()
        self._sending = threading.Lock()
        with contextlib.suppress(OSError):
            sock.sendall(self.greeted.hello())

    @staticmethod
    def connect(host: str, port: int, secret: bytes, timeout: float = 30.0) -> ThreadControlChannel:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return ThreadControlChannel(secret, sock)

    def send(self, message: Mapping[str, Any]) -> None:
        with self._sending:
            frame = self.greeted.seal(message)
            if frame:
                with contextlib.suppress(OSError):
                    self.sock.sendall(frame)

    def recv(self) -> dict[str, Any] | None:
        """The next control message, or None when the connection ended (or became unusable)."""
        while not self._frames:
            if self.decoder.broken:
                return None
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.decoder.close()
                return None
            with self._sending:  # the greeting and the messages that waited for it, in order
                ready = self.greeted.feed(data, self._frames)
                if ready:
                    with contextlib.suppress(OSError):
                        self.sock.sendall(ready)
        return self._frames.popleft()

    def close(self) -> None:
        """Close the connection; a thread blocked in :meth:`recv` gets None."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
