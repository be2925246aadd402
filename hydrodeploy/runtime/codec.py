"""The wire format: length-prefixed msgpack frames authenticated with the deployment's secret.

One frame on a TCP stream is::

    u32 length (big-endian, of everything after it)
    u8  kind   (DATA, CONTROL or HELLO)
    32  bytes  HMAC-SHA256(secret, kind || nonce || u64 seq || payload)
    payload    msgpack (HELLO: the 16-byte nonce itself)

Frames cannot be replayed. The end of a connection that reads frames first sends a HELLO frame
with a fresh random nonce (tagged over ``kind || nonce`` alone); the other end tags the frames it
sends on that connection with that nonce and their sequence number there (0, 1, 2, ...), which
the reader checks (:class:`Sealer`, :class:`FrameDecoder`). A frame copied from another
connection, or sent again on the same one, does not verify. A node's incoming DATA connections
greet their senders this way; control connections, read in both directions, greet each other.

A DATA payload is ``[sender, [[destination, relation, [row, ...]], ...]]``: every fact one tick
of ``sender`` sends to one endpoint, grouped by destination address and relation. A CONTROL
payload is a msgpack map with a ``"t"`` key (deployment control messages, see
:mod:`hydrodeploy.runtime.node`).

:class:`FrameDecoder` never raises on input: a frame whose tag does not verify is *forged*, one
whose payload is not what its kind requires is *malformed*, bytes left when the stream ends are
*truncated*; each is dropped and counted. A length prefix out of range cannot be resynchronised,
so the decoder marks the stream *broken* and the connection is closed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

DATA = 1
CONTROL = 2
HELLO = 3
KINDS = frozenset({DATA, CONTROL})  # the kinds that carry messages (HELLO carries a nonce)

NONCE_BYTES = 16
SEQ = struct.Struct(">Q")
TAG_BYTES = 32
HEADER = struct.Struct(">IB")  # length, kind
MIN_BODY = 1 + TAG_BYTES
MAX_FRAME = 64 * 1024 * 1024

Fact = tuple[Any, ...]
Group = tuple[str, str, list[Fact]]  # (destination address, relation, rows)


class MalformedFrame(ValueError):
    """A frame whose tag verified but whose payload does not have the shape its kind requires."""


def _tag(secret: bytes, kind: int, context: bytes, payload: bytes) -> bytes:
    return hmac.digest(secret, bytes((kind,)) + context + payload, hashlib.sha256)


def context(nonce: bytes, seq: int) -> bytes:
    """What a message frame's tag covers besides its kind and payload: where it may be read."""
    return nonce + SEQ.pack(seq)


def frame_size(payload: bytes) -> int:
    """Bytes on the wire of a frame around ``payload``."""
    return HEADER.size + TAG_BYTES + len(payload)


def encode_frame(secret: bytes, kind: int, payload: bytes, where: bytes = b"") -> bytes:
    """One complete frame around an already packed payload, tagged for ``where`` (:func:`context`)."""
    body_len = MIN_BODY + len(payload)
    if body_len > MAX_FRAME:
        raise ValueError(f"frame of {body_len} bytes exceeds the {MAX_FRAME}-byte limit")
    return HEADER.pack(body_len, kind) + _tag(secret, kind, where, payload) + payload


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def encode_hello(secret: bytes, nonce: bytes) -> bytes:
    """The greeting of a connection's reading end: tag the frames you send me with ``nonce``."""
    return encode_frame(secret, HELLO, nonce)


def pack_control(message: Mapping[str, Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]


def pack_data(sender: str, groups: Sequence[Group]) -> tuple[bytes, list[int]]:
    """A DATA payload, and the packed size of each group (the bytes its channel costs)."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    parts = [packer.pack_array_header(2), packer.pack(sender), packer.pack_array_header(len(groups))]
    sizes: list[int] = []
    for dest, relation, rows in groups:
        packed = packer.pack((dest, relation, rows))
        sizes.append(len(packed))
        parts.append(packed)
    return b"".join(parts), sizes


class Sealer:
    """Frames for one connection whose reader greeted us with ``nonce``: each tagged with the
    nonce and its sequence number on the connection."""

    def __init__(self, secret: bytes, nonce: bytes) -> None:
        self.secret = secret
        self.nonce = nonce
        self.seq = 0

    def frame(self, kind: int, payload: bytes) -> bytes:
        frame = encode_frame(self.secret, kind, payload, context(self.nonce, self.seq))
        self.seq += 1
        return frame

    def control(self, message: Mapping[str, Any]) -> bytes:
        return self.frame(CONTROL, pack_control(message))

    def data(self, sender: str, groups: Sequence[Group]) -> tuple[bytes, list[int]]:
        payload, sizes = pack_data(sender, groups)
        return self.frame(DATA, payload), sizes


def parse_data(obj: Any) -> tuple[str, list[tuple[str, str, tuple[Fact, ...]]]]:
    """Check the shape of a decoded DATA payload: every row is an array whose values are
    hashable (msgpack decodes arrays to tuples; only maps are unhashable), so it can go straight
    into a fact set."""
    if not (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], tuple)):
        raise MalformedFrame("DATA payload is not [sender, groups]")
    sender, raw_groups = obj
    groups: list[tuple[str, str, tuple[Fact, ...]]] = []
    for group in raw_groups:
        if not (
            isinstance(group, tuple)
            and len(group) == 3
            and isinstance(group[0], str)
            and isinstance(group[1], str)
            and isinstance(group[2], tuple)
        ):
            raise MalformedFrame("DATA group is not [destination, relation, rows]")
        rows = group[2]
        for row in rows:
            if type(row) is not tuple:
                raise MalformedFrame(f"row of '{group[1]}' is not an array")
        try:
            hash(rows)  # one C-level pass over every value
        except TypeError:
            raise MalformedFrame(f"a row of '{group[1]}' holds a map") from None
        groups.append((group[0], group[1], group[2]))
    return sender, groups


def parse_control(obj: Any) -> dict[str, Any]:
    if not (isinstance(obj, dict) and isinstance(obj.get("t"), str)):
        raise MalformedFrame("CONTROL payload is not a map with a 't' key")
    return obj


@dataclass
class DecodeStats:
    """What a decoder saw: good frames and bytes, and every kind of rejected input."""

    frames: int = 0
    bytes: int = 0
    forged: int = 0
    malformed: int = 0
    truncated: int = 0

    def add(self, other: DecodeStats) -> None:
        self.frames += other.frames
        self.bytes += other.bytes
        self.forged += other.forged
        self.malformed += other.malformed
        self.truncated += other.truncated

    def as_dict(self) -> dict[str, int]:
        return {
            "frames": self.frames,
            "bytes": self.bytes,
            "forged": self.forged,
            "malformed": self.malformed,
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class Frame:
    kind: int
    body: Any  # DATA: (sender, groups) as parse_data returns; CONTROL: a dict; HELLO: the nonce
    size: int  # bytes on the wire, header included


class FrameDecoder:
    """Incremental decoder of one TCP stream. :meth:`feed` returns the frames completed so far;
    it never raises. After a bad length prefix the stream is :attr:`broken` and ignored.

    ``nonce`` is what this end's HELLO asked the peer to tag its frames with (None: this end
    reads no messages, only the peer's greeting); each message frame must carry it and the next
    sequence number. ``greeting``: the peer sends one HELLO (returned as a frame whose body is its
    nonce); a second one, or one not expected, is malformed."""

    def __init__(
        self,
        secret: bytes,
        stats: DecodeStats | None = None,
        max_frame: int = MAX_FRAME,
        nonce: bytes | None = None,
        greeting: bool = False,
    ) -> None:
        self.secret = secret
        self.stats = stats if stats is not None else DecodeStats()
        self.max_frame = max_frame
        self.nonce = nonce
        self.seq = 0  # of the next message frame
        self.greeting = greeting
        self.broken = False
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        if self.broken:
            return []
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        n = len(buf)
        while n - pos >= HEADER.size:
            body_len, kind = HEADER.unpack_from(buf, pos)
            if body_len < MIN_BODY or body_len > self.max_frame:
                self.stats.malformed += 1
                self.broken = True
                buf.clear()
                return frames
            end = pos + 4 + body_len
            if end > n:
                break
            tag = bytes(buf[pos + 5 : pos + 5 + TAG_BYTES])
            payload = bytes(buf[pos + 5 + TAG_BYTES : end])
            pos = end
            frame = self._frame(kind, tag, payload, 4 + body_len)
            if frame is not None:
                frames.append(frame)
        if pos:
            del buf[:pos]
        return frames

    def close(self) -> None:
        """The stream ended: a partial frame left in the buffer is counted as truncated."""
        if self._buf and not self.broken:
            self.stats.truncated += 1
        self._buf.clear()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def _frame(self, kind: int, tag: bytes, payload: bytes, size: int) -> Frame | None:
        if kind == HELLO:
            return self._hello(tag, payload, size)
        if self.nonce is None or not hmac.compare_digest(tag, _tag(self.secret, kind, context(self.nonce, self.seq), payload)):
            self.stats.forged += 1  # another secret, another connection, or sent before
            return None
        self.seq += 1
        if kind not in KINDS:
            self.stats.malformed += 1
            return None
        try:
            obj = msgpack.unpackb(payload, use_list=False, raw=False, strict_map_key=True)
            body: Any = parse_data(obj) if kind == DATA else parse_control(obj)
        except Exception:  # any msgpack or shape error: the frame is dropped, never the node
            self.stats.malformed += 1
            return None
        self.stats.frames += 1
        self.stats.bytes += size
        return Frame(kind, body, size)

    def _hello(self, tag: bytes, payload: bytes, size: int) -> Frame | None:
        if not hmac.compare_digest(tag, _tag(self.secret, HELLO, b"", payload)):
            self.stats.forged += 1
            return None
        if not self.greeting or len(payload) != NONCE_BYTES:
            self.stats.malformed += 1
            return None
        self.greeting = False  # one greeting per connection
        self.stats.frames += 1
        self.stats.bytes += size
        return Frame(HELLO, payload, size)


def group_rows(messages: Iterable[tuple[str, str, Fact]]) -> list[Group]:
    """Group (destination, relation, values) messages, preserving first-seen order."""
    groups: dict[tuple[str, str], list[Fact]] = {}
    for dest, relation, values in messages:
        key = (dest, relation)
        rows = groups.get(key)
        if rows is None:
            groups[key] = [values]
        else:
            rows.append(values)
    return [(dest, rel, rows) for (dest, rel), rows in groups.items()]
