"""The wire format: length-prefixed msgpack frames authenticated with the deployment's secret.

One frame on a TCP stream is::

    u32 length (big-endian, of everything after it)
    u8  kind   (DATA or CONTROL)
    32  bytes  HMAC-SHA256(secret, kind || payload)
    payload    msgpack

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
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

DATA = 1
CONTROL = 2
KINDS = frozenset({DATA, CONTROL})

TAG_BYTES = 32
HEADER = struct.Struct(">IB")  # length, kind
MIN_BODY = 1 + TAG_BYTES
MAX_FRAME = 64 * 1024 * 1024

Fact = tuple[Any, ...]
Group = tuple[str, str, list[Fact]]  # (destination address, relation, rows)


class MalformedFrame(ValueError):
    """A frame whose tag verified but whose payload does not have the shape its kind requires."""


def _tag(secret: bytes, kind: int, payload: bytes) -> bytes:
    return hmac.digest(secret, bytes((kind,)) + payload, hashlib.sha256)


def encode_frame(secret: bytes, kind: int, payload: bytes) -> bytes:
    """One complete frame around an already packed payload."""
    body_len = MIN_BODY + len(payload)
    if body_len > MAX_FRAME:
        raise ValueError(f"frame of {body_len} bytes exceeds the {MAX_FRAME}-byte limit")
    return HEADER.pack(body_len, kind) + _tag(secret, kind, payload) + payload


def encode_control(secret: bytes, message: Mapping[str, Any]) -> bytes:
    return encode_frame(secret, CONTROL, msgpack.packb(message, use_bin_type=True))


def encode_data(secret: bytes, sender: str, groups: Sequence[Group]) -> tuple[bytes, list[int]]:
    """A DATA frame, and the packed size of each group (the bytes its channel costs)."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    parts = [packer.pack_array_header(2), packer.pack(sender), packer.pack_array_header(len(groups))]
    sizes: list[int] = []
    for dest, relation, rows in groups:
        packed = packer.pack((dest, relation, rows))
        sizes.append(len(packed))
        parts.append(packed)
    return encode_frame(secret, DATA, b"".join(parts)), sizes


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
    body: Any  # DATA: (sender, groups) as parse_data returns; CONTROL: a dict
    size: int  # bytes on the wire, header included


class FrameDecoder:
    """Incremental decoder of one TCP stream. :meth:`feed` returns the frames completed so far;
    it never raises. After a bad length prefix the stream is :attr:`broken` and ignored."""

    def __init__(self, secret: bytes, stats: DecodeStats | None = None, max_frame: int = MAX_FRAME) -> None:
        self.secret = secret
        self.stats = stats if stats is not None else DecodeStats()
        self.max_frame = max_frame
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
        if not hmac.compare_digest(tag, _tag(self.secret, kind, payload)):
            self.stats.forged += 1
            return None
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
