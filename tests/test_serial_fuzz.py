"""Fuzzing the receive side of the firmware (and driver): :class:`devices.serial.protocol.FrameParser`
with its look-ahead and inter-byte timeout, on a simulated clock.

Streams are random bytes mixed with the pieces that hurt a naive receiver: valid frames, frames
cut anywhere, stray headers that declare up to 1 MiB, lone magics.  Properties:

* nothing is invented: every frame returned is a contiguous piece of the stream, CRC included;
* nothing hangs past the frame timeout: ``frame_timeout`` seconds after the last byte, the
  receiver holds nothing, and the next valid request is returned as soon as it is fed;
* no timeout is even needed for a frame that follows garbage: it is returned when its last
  byte arrives (look-ahead), whatever came before it.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.serial import protocol as P

FRAME_TIMEOUT = 0.5  # the emulator's default inter-byte timeout (s)


def _header(msg_type: int, seq: int, length: int) -> bytes:
    head = P.HEADER.pack(P.MAGIC, P.PROTOCOL_VERSION, msg_type, seq, length)
    return head + P.HEADER_CHECK.pack(P._header_check(head))


frames = st.builds(lambda t, seq, payload: P.encode_frame(t, seq, payload),
                   st.integers(0, 255), st.integers(0, 2**32 - 1), st.binary(max_size=80))
cut_frames = st.builds(lambda f, k: f[: k % len(f)], frames, st.integers(0, 10**6))
stray_headers = st.builds(_header, st.integers(0, 255), st.integers(0, 2**32 - 1), st.integers(0, P.MAX_PAYLOAD))
pieces = st.one_of(st.binary(max_size=64), frames, cut_frames, stray_headers, st.just(P.MAGIC), st.just(P.MAGIC[:1]))
streams = st.lists(pieces, max_size=12).map(b"".join)
gaps = st.lists(st.sampled_from([0.0, 0.001, 0.2, 0.49, 0.5, 0.7, 3.0]), min_size=1, max_size=12)
FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def _feed_timed(parser: P.FrameParser, stream: bytes, cuts: list[int], gaps: list[float]) -> tuple[list, float]:
    """Feed ``stream`` in pieces ``cuts`` long, ``gaps`` seconds apart, expiring as the firmware loop does."""
    t, pos, out = 0.0, 0, []
    for i, n in enumerate(cuts + [len(stream)]):
        t += gaps[i % len(gaps)]
        out += parser.expire(t)
        out += parser.feed(stream[pos: pos + n], t)
        pos += n
    return out, t


@FUZZ
@given(streams, st.lists(st.integers(1, 97), max_size=16), gaps, frames)
def test_random_streams_never_hold_the_receiver_past_the_frame_timeout(stream, cuts, gaps, request):
    parser = P.FrameParser(gap_timeout=FRAME_TIMEOUT)
    out, t = _feed_timed(parser, stream, cuts, gaps)
    assert all(f.encode() in stream for f in out)  # nothing invented
    assert parser.pending <= P.OVERHEAD + P.MAX_PAYLOAD + max(cuts + [len(stream)])  # memory stays bounded
    t += FRAME_TIMEOUT * (1 + 1e-9)  # (the margin covers float rounding of the simulated clock)
    assert all(f.encode() in stream for f in parser.expire(t))
    assert parser.pending == 0  # nothing held past the frame timeout
    got = parser.feed(request, t)
    assert [f.encode() for f in got] == [request]  # the next request is answered at once


@FUZZ
@given(streams, frames, st.integers(1, 97))
def test_a_frame_after_any_garbage_is_found_when_its_last_byte_arrives(garbage, request, chunk):
    """No clock at all (no timeout can help): look-ahead alone finds the request behind a
    truncated frame, a stray header declaring up to 1 MiB, or noise."""
    parser, out = P.FrameParser(gap_timeout=None), []
    stream = garbage + request
    for i in range(0, len(stream), chunk):
        out += parser.feed(stream[i: i + chunk])
    assert out and out[-1].encode() == request and parser.pending == 0
    assert all(f.encode() in stream for f in out)


def test_look_ahead_counts_the_truncated_frame_and_keeps_the_order():
    a, c = (P.encode_frame(P.MsgType.FORWARD, seq, bytes(range(40))) for seq in (1, 3))
    b = P.encode_frame(P.MsgType.FORWARD, 2, bytes(200))
    parser = P.FrameParser()
    out = parser.feed(a + b[:25] + c)  # b lost its tail on the wire; c is whole before b's length is reached
    assert [f.seq for f in out] == [1, 3] and parser.stats.superseded == 1 and parser.pending == 0
    assert parser.stats.bytes_skipped == 25 and parser.stats.bad_crc == 0
    out = parser.feed(a + b[:25] + c + c)  # again, with a frame behind the one look-ahead finds
    assert [f.seq for f in out] == [1, 3, 3] and parser.stats.superseded == 2
    huge = _header(P.MsgType.SET_PARAMS, 9, P.MAX_PAYLOAD)
    out = parser.feed(huge + a)  # a stray header declaring 1 MiB does not hold back the frame behind it
    assert [f.seq for f in out] == [1] and parser.stats.superseded == 3


def test_expire_waits_for_the_gap_and_reports_crc_failures_of_intact_headers():
    good = P.encode_frame(P.reply_type(P.MsgType.FORWARD), 77, b"abc")
    parser = P.FrameParser(gap_timeout=0.5)
    assert parser.feed(good[:-2], now=10.0) == [] and parser.pending == len(good) - 2
    assert parser.expire(10.49) == [] and parser.pending == len(good) - 2  # before the gap: kept
    assert parser.pending_header == (P.reply_type(P.MsgType.FORWARD), 77, 3)
    assert parser.expire(10.5) == [] and parser.pending == 0 and parser.stats.expired == 1
    bad = bytearray(good)
    bad[P.HEADER_SIZE] ^= 0x01  # payload bit: header intact, CRC wrong
    assert parser.feed(bytes(bad), now=11.0) == []
    assert parser.take_crc_failures() == [(P.reply_type(P.MsgType.FORWARD), 77)] and parser.take_crc_failures() == []
