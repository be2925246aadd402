"""The wire codec: frames round-trip however the stream is cut; forged, replayed, truncated and
malformed frames are dropped and counted; the decoder never raises, whatever bytes it is fed."""

from __future__ import annotations

import struct

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from hydrodeploy.runtime import codec
from hydrodeploy.runtime.codec import (
    DATA,
    FrameDecoder,
    Sealer,
    context,
    encode_frame,
    encode_hello,
    new_nonce,
)

SECRET = b"k" * 32
OTHER = b"x" * 32
NONCE = b"n" * 16


def reader() -> FrameDecoder:
    """The reading end of a connection whose greeting carried NONCE."""
    return FrameDecoder(SECRET, nonce=NONCE)


def sealer(secret: bytes = SECRET, nonce: bytes = NONCE) -> Sealer:
    return Sealer(secret, nonce)


def encode_data(secret: bytes, sender: str, gs: list[codec.Group]) -> tuple[bytes, list[int]]:
    """The first DATA frame on a connection greeted with NONCE."""
    return sealer(secret).data(sender, gs)


def encode_control(secret: bytes, message: dict[str, object]) -> bytes:
    return sealer(secret).control(message)


def first(kind: int, payload: bytes) -> bytes:
    """A frame of any kind, tagged as the first one on a connection greeted with NONCE."""
    return encode_frame(SECRET, kind, payload, context(NONCE, 0))

scalars = st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(max_size=20), st.floats(allow_nan=False), st.booleans())
rows = st.lists(st.tuples(scalars, scalars), max_size=5)
groups = st.lists(st.tuples(st.text(max_size=10), st.text(min_size=1, max_size=10), rows), max_size=4)


def feed_in_chunks(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[codec.Frame]:
    frames = []
    last = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        frames += decoder.feed(data[last:cut])
        last = cut
    frames += decoder.feed(data[last:])
    return frames


@given(st.text(max_size=10), groups, st.lists(st.integers(0, 10_000), max_size=8))
def test_data_frames_round_trip_however_the_stream_is_cut(sender: str, gs: list, cuts: list[int]) -> None:
    seal = sealer()
    sent = [seal.data(sender, [(d, r, list(rs)) for d, r, rs in gs]) for _ in range(3)]
    sizes = sent[0][1]
    decoder = reader()
    frames = feed_in_chunks(decoder, b"".join(frame for frame, _ in sent), cuts)
    assert len(frames) == 3
    for f, (frame, _) in zip(frames, sent, strict=True):
        assert f.kind == DATA and f.size == len(frame)
        got_sender, got_groups = f.body
        assert got_sender == sender
        assert [(d, r, list(rs)) for d, r, rs in got_groups] == [(d, r, list(rs)) for d, r, rs in gs]
    assert len(sizes) == len(gs)
    assert decoder.stats.frames == 3 and decoder.stats.forged == decoder.stats.malformed == 0


@settings(max_examples=500)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=6))
def test_decoder_never_raises_on_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(SECRET, nonce=NONCE, greeting=True)
    frames = feed_in_chunks(decoder, data, cuts)
    decoder.close()
    assert frames == []  # without the secret nothing is accepted
    stats = decoder.stats
    assert stats.frames == 0
    assert stats.forged + stats.malformed + stats.truncated <= len(data)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from([DATA, codec.CONTROL, 0, 7, 255]))
def test_authentic_frames_with_garbage_payloads_are_malformed_not_fatal(payload: bytes, kind: int) -> None:
    good = encode_frame(SECRET, DATA, codec.pack_data("a", [("b", "r", [(1,)])])[0], context(NONCE, 1))
    decoder = reader()
    frames = decoder.feed(first(kind, payload) + good)
    assert frames[-1].body == ("a", [("b", "r", ((1,),))])
    assert decoder.stats.frames + decoder.stats.malformed == 2


def test_forged_frame_is_dropped_and_counted_and_the_stream_goes_on() -> None:
    forged, _ = encode_data(OTHER, "intruder", [("leader/0", "client_in", [("client/0", 1, "x")])])
    good, _ = encode_data(SECRET, "clients/0", [("leader/0", "client_in", [("client/0", 2, "y")])])
    decoder = reader()
    frames = decoder.feed(forged + good)
    assert [f.body[0] for f in frames] == ["clients/0"]
    assert decoder.stats.forged == 1 and decoder.stats.frames == 1


def test_tampered_payload_is_forged() -> None:
    frame = bytearray(encode_data(SECRET, "a", [("b", "r", [(1, 2)])])[0])
    frame[-1] ^= 1
    decoder = reader()
    assert decoder.feed(bytes(frame)) == []
    assert decoder.stats.forged == 1


def test_truncated_frame_is_counted_when_the_stream_ends() -> None:
    frame = encode_control(SECRET, {"t": "hello"})
    decoder = reader()
    assert decoder.feed(frame[:-3]) == []
    decoder.close()
    assert decoder.stats.truncated == 1


def test_impossible_length_breaks_the_stream() -> None:
    decoder = FrameDecoder(SECRET, max_frame=1024, nonce=NONCE)
    good = encode_control(SECRET, {"t": "x"})
    assert decoder.feed(struct.pack(">IB", 10**6, DATA) + good) == []
    assert decoder.broken and decoder.stats.malformed == 1
    assert decoder.feed(good) == []  # a broken stream is ignored until the connection closes


def test_rows_must_be_hashable_scalars() -> None:
    payload = msgpack.packb(["a", [["b", "r", [[{"k": 1}]]]]])
    decoder = reader()
    assert decoder.feed(first(DATA, payload)) == []
    assert decoder.stats.malformed == 1


def test_control_frames_need_a_type() -> None:
    decoder = reader()
    seal = sealer()
    frames = decoder.feed(seal.frame(codec.CONTROL, msgpack.packb({"x": 1})) + seal.control({"t": "ok"}))
    assert [f.body["t"] for f in frames] == ["ok"]
    assert decoder.stats.malformed == 1


def test_a_frame_sent_again_on_its_connection_is_rejected() -> None:
    seal = sealer()
    one, _ = seal.data("clients/0", [("leader/0", "client_in", [("client/0", 1, "x")])])
    two, _ = seal.data("clients/0", [("leader/0", "client_in", [("client/0", 2, "y")])])
    decoder = reader()
    frames = decoder.feed(one + one + two + two)  # each frame replayed right after itself
    assert [f.body[1][0][2] for f in frames] == [(("client/0", 1, "x"),), (("client/0", 2, "y"),)]
    assert decoder.stats.forged == 2 and decoder.stats.frames == 2


def test_a_frame_from_another_connection_is_rejected() -> None:
    captured, _ = sealer(nonce=new_nonce()).data("clients/0", [("leader/0", "client_in", [("client/0", 1, "x")])])
    decoder = reader()  # a new connection: its reader greeted with another nonce
    assert decoder.feed(captured) == []
    assert decoder.stats.forged == 1


def test_the_greeting_is_read_once_and_must_be_authentic() -> None:
    decoder = FrameDecoder(SECRET, greeting=True)  # the sending end: reads nothing but the greeting
    forged = encode_hello(OTHER, b"f" * 16)
    frames = decoder.feed(forged + encode_hello(SECRET, NONCE) + encode_hello(SECRET, b"g" * 16) + encode_data(SECRET, "a", [])[0])
    assert [(f.kind, f.body) for f in frames] == [(codec.HELLO, NONCE)]
    assert decoder.stats.forged == 2  # the forged greeting, and a message frame it cannot read
    assert decoder.stats.malformed == 1  # a second greeting
