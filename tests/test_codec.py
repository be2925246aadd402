"""The wire codec: frames round-trip however the stream is cut; forged, truncated and malformed
frames are dropped and counted; the decoder never raises, whatever bytes it is fed."""

from __future__ import annotations

import struct

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from hydrodeploy.runtime import codec
from hydrodeploy.runtime.codec import DATA, FrameDecoder, encode_control, encode_data, encode_frame

SECRET = b"k" * 32
OTHER = b"x" * 32

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
    frame, sizes = encode_data(SECRET, sender, [(d, r, list(rs)) for d, r, rs in gs])
    decoder = FrameDecoder(SECRET)
    frames = feed_in_chunks(decoder, frame * 3, cuts)
    assert len(frames) == 3
    for f in frames:
        assert f.kind == DATA and f.size == len(frame)
        got_sender, got_groups = f.body
        assert got_sender == sender
        assert [(d, r, list(rs)) for d, r, rs in got_groups] == [(d, r, list(rs)) for d, r, rs in gs]
    assert len(sizes) == len(gs)
    assert decoder.stats.frames == 3 and decoder.stats.forged == decoder.stats.malformed == 0


@settings(max_examples=500)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=6))
def test_decoder_never_raises_on_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(SECRET)
    frames = feed_in_chunks(decoder, data, cuts)
    decoder.close()
    assert frames == []  # without the secret nothing is accepted
    stats = decoder.stats
    assert stats.frames == 0
    assert stats.forged + stats.malformed + stats.truncated <= len(data)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from([DATA, codec.CONTROL, 0, 7, 255]))
def test_authentic_frames_with_garbage_payloads_are_malformed_not_fatal(payload: bytes, kind: int) -> None:
    good, _ = encode_data(SECRET, "a", [("b", "r", [(1,)])])
    decoder = FrameDecoder(SECRET)
    frames = decoder.feed(encode_frame(SECRET, kind, payload) + good)
    assert frames[-1].body == ("a", [("b", "r", ((1,),))])
    assert decoder.stats.frames + decoder.stats.malformed == 2


def test_forged_frame_is_dropped_and_counted_and_the_stream_goes_on() -> None:
    forged, _ = encode_data(OTHER, "intruder", [("leader/0", "client_in", [("client/0", 1, "x")])])
    good, _ = encode_data(SECRET, "clients/0", [("leader/0", "client_in", [("client/0", 2, "y")])])
    decoder = FrameDecoder(SECRET)
    frames = decoder.feed(forged + good)
    assert [f.body[0] for f in frames] == ["clients/0"]
    assert decoder.stats.forged == 1 and decoder.stats.frames == 1


def test_tampered_payload_is_forged() -> None:
    frame = bytearray(encode_data(SECRET, "a", [("b", "r", [(1, 2)])])[0])
    frame[-1] ^= 1
    decoder = FrameDecoder(SECRET)
    assert decoder.feed(bytes(frame)) == []
    assert decoder.stats.forged == 1


def test_truncated_frame_is_counted_when_the_stream_ends() -> None:
    frame = encode_control(SECRET, {"t": "hello"})
    decoder = FrameDecoder(SECRET)
    assert decoder.feed(frame[:-3]) == []
    decoder.close()
    assert decoder.stats.truncated == 1


def test_impossible_length_breaks_the_stream() -> None:
    decoder = FrameDecoder(SECRET, max_frame=1024)
    good = encode_control(SECRET, {"t": "x"})
    assert decoder.feed(struct.pack(">IB", 10**6, DATA) + good) == []
    assert decoder.broken and decoder.stats.malformed == 1
    assert decoder.feed(good) == []  # a broken stream is ignored until the connection closes


def test_rows_must_be_hashable_scalars() -> None:
    payload = msgpack.packb(["a", [["b", "r", [[{"k": 1}]]]]])
    decoder = FrameDecoder(SECRET)
    assert decoder.feed(encode_frame(SECRET, DATA, payload)) == []
    assert decoder.stats.malformed == 1


def test_control_frames_need_a_type() -> None:
    decoder = FrameDecoder(SECRET)
    frames = decoder.feed(encode_frame(SECRET, codec.CONTROL, msgpack.packb({"x": 1})) + encode_control(SECRET, {"t": "ok"}))
    assert [f.body["t"] for f in frames] == ["ok"]
    assert decoder.stats.malformed == 1
