"""The serial wire protocol: golden bytes, payload layouts, firmware replies, and a fuzzed parser."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.emulator import AffineTanhSubstrate
from devices.serial import protocol as P
from devices.serial.firmware import Firmware


def test_crc32_is_the_standard_ieee_polynomial():
    # The CRC-32 check value of "123456789" (ITU-T V.42 / IEEE 802.3) pins the algorithm.
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_frame_layout_byte_by_byte():
    frame = P.encode_frame(0x05, 0x01020304, b"\xAA\xBB")
    header = b"NH" + b"\x01" + b"\x05" + b"\x04\x03\x02\x01" + b"\x02\x00\x00\x00"
    check = struct.pack("<H", zlib.crc32(header) & 0xFFFF)
    body = header + check + b"\xAA\xBB"
    assert frame == body + struct.pack("<I", zlib.crc32(body))
    assert len(frame) == P.OVERHEAD + 2 == 20


def test_sample_block_golden_bytes_and_int16_full_scale():
    raw = P.encode_samples(np.array([[1.0, -2.0]], np.float32))
    assert raw == bytes.fromhex("0100" "0200" "00" "0000803f" "000000c0")
    q = P.quantize(np.array([-1.0, 0.0, 1.0, 5.0]), -1.0, 1.0)
    assert q.tolist() == [-32768, 0, 32767, 32767]  # 0 -> rint(32767.5) = 32768 (even) - 32768
    raw16 = P.encode_samples(np.array([[-1.0, 1.0]]), P.FORMAT_I16, (-1.0, 1.0))
    assert raw16 == bytes.fromhex("0100" "0200" "01" "0080" "ff7f")
    x = np.linspace(-1, 1, 101, dtype=np.float32)[None]
    back = P.decode_samples(P.encode_samples(x, P.FORMAT_I16, (-1, 1)), (-1, 1))
    assert np.abs(back - x).max() <= 1.0 / 65535 + 1e-7  # half a step of 2/65535


def test_tensor_block_and_hello_round_trip():
    tensors = {"W": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([0.5], np.float32)}
    raw = P.encode_tensors(tensors)
    # u16 count=2 | u8 1 'W' u8 2 u32 2 u32 3 6xf32 | u8 1 'b' u8 1 u32 1 f32
    assert raw[:2] == b"\x02\x00" and raw[2:5] == b"\x01W\x02" and struct.unpack_from("<II", raw, 5) == (2, 3)
    assert len(raw) == 2 + (1 + 1 + 1 + 8 + 24) + (1 + 1 + 1 + 4 + 4)
    back = P.decode_tensors(raw)
    assert set(back) == {"W", "b"} and np.array_equal(back["W"], tensors["W"]) and back["b"].tolist() == [0.5]
    with pytest.raises(P.ProtocolError):
        P.decode_tensors(raw[:-1])
    ident = P.Identity(1, 8, 4, (-1.0, 1.0), (-2.0, 2.0), 64, P.CAP_INT16, "affine", "fw 1", {"W": [4, 8]}, {"x": 1})
    assert P.decode_hello_reply(P.encode_hello_reply(ident)) == ident


# ----------------------------------------------------------------------- firmware
def _request(fw, msg_type, seq, payload=b"", version=P.PROTOCOL_VERSION):
    [reply] = P.FrameParser().feed(fw.handle(P.Frame(version, msg_type, seq, payload)))
    assert reply.seq == seq
    return reply


def _hello(fw, session=7, versions=(1, 1)):
    return _request(fw, P.MsgType.HELLO, 1, P.encode_hello_request(session, versions))


def test_firmware_replays_a_retried_forward_instead_of_measuring_again():
    sub = AffineTanhSubstrate(3, 2, seed=0, drift=0.5)  # every measurement shifts outputs by 0.5
    fw = Firmware(sub)
    assert _hello(fw).type == P.reply_type(P.MsgType.HELLO)
    x = P.encode_samples(np.zeros((1, 3), np.float32))
    first = _request(fw, P.MsgType.FORWARD, 10, x)
    again = _request(fw, P.MsgType.FORWARD, 10, x)  # the host's retry: same seq, same bytes
    assert again == first and fw.counts["samples_measured"] == 1 and fw.counts["replays"] == 1
    later = _request(fw, P.MsgType.FORWARD, 11, x)  # a new request is measured: drift by 0.5
    y0, y1 = P.decode_samples(first.payload), P.decode_samples(later.payload)
    assert np.allclose(y1 - y0, 0.5, atol=1e-6)
    # a reconnect with the same session keeps the cache; a new session clears it
    _hello(fw, session=7)
    assert _request(fw, P.MsgType.FORWARD, 10, x) == first
    _hello(fw, session=8)
    assert _request(fw, P.MsgType.FORWARD, 10, x) != first and fw.counts["samples_measured"] == 3


def test_firmware_errors_name_the_problem():
    fw = Firmware(AffineTanhSubstrate(3, 2), max_batch=4)
    _hello(fw)
    cases = [
        (P.MsgType.FORWARD, P.encode_samples(np.full((1, 3), 2.0, np.float32)), P.ErrorCode.INPUT_OUT_OF_RANGE,
         "accepts [-1, 1]"),
        (P.MsgType.FORWARD, P.encode_samples(np.zeros((5, 3), np.float32)), P.ErrorCode.BATCH_TOO_LARGE, "max_batch 4"),
        (P.MsgType.FORWARD, P.encode_samples(np.zeros((1, 2), np.float32)), P.ErrorCode.BAD_REQUEST, "takes 3"),
        (P.MsgType.SET_PARAMS, P.encode_tensors({"gain": np.ones(1)}), P.ErrorCode.UNKNOWN_PARAMETER, "has W, b"),
        (P.MsgType.SET_PARAMS, P.encode_tensors({"W": np.ones(3)}), P.ErrorCode.BAD_REQUEST, "shape [2, 3]"),
        (0x33, b"", P.ErrorCode.UNKNOWN_TYPE, "0x33"),
    ]
    for seq, (t, payload, code, text) in enumerate(cases, start=2):
        reply = _request(fw, t, seq, payload)
        assert reply.type == P.MsgType.ERROR
        got_code, got_text = P.decode_error(reply.payload)
        assert got_code == code and text in got_text, (got_code, got_text)


def test_version_negotiation_picks_the_highest_common_version_or_refuses():
    fw = Firmware(AffineTanhSubstrate(3, 2), versions=(1, 3))
    reply = _hello(fw, versions=(1, 2))
    assert P.decode_hello_reply(reply.payload).version == 2 and reply.version == 2
    old = Firmware(AffineTanhSubstrate(3, 2), versions=(2, 2))
    reply = _hello(old, versions=(1, 1))
    code, text = P.decode_error(reply.payload)
    assert reply.type == P.MsgType.ERROR and code == P.ErrorCode.VERSION_MISMATCH and "v2..v2" in text


# --------------------------------------------------------------------- parser fuzz
def _frames_in(stream: bytes, frames) -> bool:
    return all(f.encode() in stream for f in frames)


def _drain(parser: P.FrameParser, frames: list) -> list:
    while parser.pending:  # what the driver does after a read timeout
        parser.drop_partial()
        frames += parser.feed(b"")
    return frames


frame_st = st.builds(
    lambda t, seq, payload: P.encode_frame(t, seq, payload),
    st.integers(0, 255), st.integers(0, 2**32 - 1), st.binary(max_size=64),
)
FUZZ = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096), st.lists(st.integers(1, 64), max_size=16))
def test_parser_on_random_bytes_never_crashes_and_only_accepts_valid_frames(data, cuts):
    parser, out, pos = P.FrameParser(), [], 0
    for n in cuts + [len(data)]:
        out += parser.feed(data[pos: pos + n])
        pos += n
    out = _drain(parser, out)
    assert _frames_in(data, out)  # each accepted frame's bytes, CRC included, are in the stream verbatim
    assert parser.pending == 0


@FUZZ
@given(st.lists(st.tuples(st.binary(max_size=40), frame_st), min_size=1, max_size=8), st.binary(max_size=40),
       st.integers(1, 97))
def test_parser_resynchronizes_after_garbage_and_finds_every_frame(pairs, tail, chunk):
    stream = b"".join(g + f for g, f in pairs) + tail
    parser, out = P.FrameParser(), []
    for i in range(0, len(stream), chunk):
        out += parser.feed(stream[i: i + chunk])
    out = _drain(parser, out)
    got = iter(f.encode() for f in out)
    assert all(any(g == f for g in got) for _, f in pairs)  # every real frame, in order
    assert _frames_in(stream, out)


@FUZZ
@given(frame_st, st.lists(st.integers(0, 10**6), min_size=1, max_size=3, unique=True))
def test_parser_rejects_every_frame_with_up_to_three_flipped_bits(frame, positions):
    bits = {p % (len(frame) * 8) for p in positions}
    buf = bytearray(frame)
    for b in bits:
        buf[b // 8] ^= 1 << (b % 8)
    parser = P.FrameParser()
    out = _drain(parser, parser.feed(bytes(buf)))
    # CRC-32 (Hamming distance 4 at these lengths) detects every 1..3-bit error of header+payload
    assert out == [] and parser.stats.frames == 0


@FUZZ
@given(frame_st, st.binary(min_size=1, max_size=8), st.integers(0, 200))
def test_parser_never_accepts_a_frame_with_replaced_bytes(frame, junk, at):
    at %= len(frame)
    mutated = frame[:at] + junk + frame[at + len(junk):]
    parser = P.FrameParser()
    out = _drain(parser, parser.feed(mutated))
    if mutated != frame:
        assert all(f.encode() != frame for f in out) or frame in mutated
    assert _frames_in(mutated, out)


def test_parser_rejects_a_corrupted_length_at_once_and_recovers_the_next_frame():
    good = P.encode_frame(P.reply_type(P.MsgType.FORWARD), 9, b"x" * 10)
    bad = bytearray(P.encode_frame(P.reply_type(P.MsgType.FORWARD), 8, b"y" * 10))
    bad[9] ^= 0x10  # length 10 -> 4106: without a header check the parser would wait for 4 KiB
    parser = P.FrameParser()
    out = parser.feed(bytes(bad) + good)
    assert [f.seq for f in out] == [9] and parser.stats.bad_header == 1 and parser.pending == 0


def test_oversized_payload_is_refused():
    with pytest.raises(P.ProtocolError, match="exceeds"):
        P.encode_frame(1, 1, b"\0" * (P.MAX_PAYLOAD + 1))
