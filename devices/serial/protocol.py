"""The NeuroHIL serial protocol, version 1: frames, message types and every payload layout.

This module is the one place where the bytes on the wire are defined.  Both ends (the
driver :class:`devices.serial.driver.SerialDevice` and the firmware emulator
:mod:`devices.emulator`) encode and decode only through the functions here.

Frame
-----
All integers and floats are little-endian.  One frame is::

    offset  size  field
    0       2     magic        b"NH" (0x4E 0x48)
    2       1     version      protocol version of the sender (this module: 1)
    3       1     type         message type (table below)
    4       4     seq          uint32 sequence number; a reply carries its request's seq
    8       4     length       uint32 payload length N, at most MAX_PAYLOAD
    12      2     header_check uint16 = zlib.crc32(bytes 0..11) & 0xFFFF
    14      N     payload      layout per message type (below)
    14+N    4     crc          uint32 = zlib.crc32(bytes 0..14+N-1)

The header check lets a receiver reject a corrupted ``length`` at once instead of waiting
for bytes that never come; the CRC-32 covers the whole frame.  The magic, version and
type offsets and the HELLO and ERROR layouts are frozen across protocol versions so that
any two versions can tell each other they disagree.

Message types and payloads
--------------------------
Requests (host -> device) and their replies (type | 0x80).  ``f32`` is IEEE float32,
``u8/u16/u32`` unsigned, ``i16`` signed; ``str16`` is ``u16 n`` then n UTF-8 bytes.

====  ===========  =================================================================
type  name         payload
====  ===========  =================================================================
0x01  HELLO        ``u8 min_version, u8 max_version, u32 session`` (host's supported
                   range and a random session id; a device clears its reply cache only
                   when the session changes, so a reconnecting host keeps its replays)
0x81  HELLO reply  ``u8 version, u16 n_in, u16 n_out, f32 in_low, f32 in_high,
                   f32 out_low, f32 out_high, u16 max_batch, u32 capabilities`` then
                   UTF-8 JSON (rest of payload):
                   ``{"kind", "firmware", "params": {name: shape}, "describe": {...}}``
0x02  RESET        empty;  reply 0x82 empty
0x03  SET_PARAMS   tensor block (below);  reply 0x83 empty
0x04  READ_STATE   empty;  reply 0x84 tensor block of the hardware parameters
0x05  FORWARD      sample block (below) of ``batch x n_in`` inputs;
                   reply 0x85 sample block of ``batch x n_out`` measured outputs
0x06  HEALTH       empty;  reply 0x86 ``u32 frames_ok, u32 bad_frames, u32 bytes_skipped,
                   u32 replays, u32 errors, f32 uptime_s, f32 temperature_c`` (bad_frames:
                   rejected by header or CRC check, truncated, or dropped by the frame timeout)
0x7F  ERROR        reply to any request: ``u16 code`` then UTF-8 text (rest of payload, at
                   most MAX_ERROR_TEXT = 1024 bytes; a receiver treats it as untrusted:
                   made printable and cut before it is shown)
====  ===========  =================================================================

Sample block: ``u16 batch, u16 width, u8 format`` then ``batch*width`` values row-major.
format 0 = f32; format 1 = i16 full scale over a range ``[low, high]`` both ends know
from HELLO (inputs: ``in_low..in_high``; outputs: ``out_low..out_high``), see
:func:`quantize`: ``q = round((clip(x) - low) / (high - low) * 65535) - 32768``.
A reply uses the format of its request.

Tensor block: ``u16 count`` then per tensor ``u8 name_len, name (UTF-8), u8 ndim,
ndim x u32 dims, prod(dims) x f32`` (row-major).

Capabilities bits (HELLO reply): bit 0 = int16 sample format, bit 1 = READ_STATE,
bit 2 = reply replay by sequence number.

Error codes (:class:`ErrorCode`): 1 VERSION_MISMATCH, 2 BAD_REQUEST (payload does not
follow its layout, wrong width or shape), 3 UNKNOWN_TYPE, 4 BATCH_TOO_LARGE, 5
INPUT_OUT_OF_RANGE, 6 UNKNOWN_PARAMETER, 7 DEVICE_FAULT (transient: nothing was delivered,
e.g. an ADC overrun or a measurement that was not finite; the host resends the same
request, same seq), 8 SUBSTRATE_FAULT (the physical system refused; the text says why),
9 REQUEST_CORRUPTED (a negative acknowledgement: a request frame arrived with a valid header
and a wrong CRC; the ERROR carries the seq and the version from that header, and the host
resends at once instead of waiting for its timeout; nothing was executed).  DEVICE_FAULT
and REQUEST_CORRUPTED are retryable.  An ERROR payload shorter than 2 bytes is malformed
(the host stops with an error).

Delivery rules
--------------
A device answers every valid request exactly once per distinct (seq, request bytes): a
repeated request is answered with the cached reply bytes (at least the last 32 are kept;
a DEVICE_FAULT or REQUEST_CORRUPTED is not cached, since nothing was measured).  The cache belongs to the HELLO
session id and survives a reconnect.  A host accepts only the reply whose seq it awaits
and discards every other frame.  A FORWARD reply is never NaN or infinite: a device answers
DEVICE_FAULT instead, and a host that receives one anyway measures again (new seq).

Receiving (both ends, :class:`FrameParser`)
-------------------------------------------
A receiver scans for the magic, checks the header (a failed check or a length above
MAX_PAYLOAD rejects that magic only: the scan resumes at the next byte), waits for the
declared length, and checks the CRC (a failure again rejects only that magic).  While a
frame is incomplete, the bytes behind it are searched for a complete valid frame; one found
there means the first was truncated on the wire, which is then dropped.  An incomplete frame
is also dropped after an inter-byte timeout of silence (the emulator's ``frame_timeout``,
0.5 s; the host's ``max(4 timeout, 0.5 s)``).  So no truncated frame, stray header or garbage can stop a receiver
from answering the next valid request.

Timing and back-pressure
------------------------
Both ends are full duplex: they keep reading while their own bytes wait to be written, and
never block in a write.  A host resends a request (same seq) after ``timeout`` s without
progress (no byte of the request written, no byte of its reply received), when the reply
arrives with a valid header and a bad CRC, or on DEVICE_FAULT or REQUEST_CORRUPTED; stale
bytes cost no retry; every request ends within ``request_timeout`` s.  A request the port
does not take (back-pressure) spends no retry either: its bytes wait, and the request's
time limit bounds the wait.
"""

from __future__ import annotations

import enum
import json
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"NH"
PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1, 1)  # (min, max) this code speaks
HEADER = struct.Struct("<2sBBII")  # magic, version, type, seq, length
HEADER_CHECK = struct.Struct("<H")
CRC = struct.Struct("<I")
HEADER_SIZE = HEADER.size + HEADER_CHECK.size  # 14
OVERHEAD = HEADER_SIZE + CRC.size  # 18
MAX_PAYLOAD = 1 << 20  # 1 MiB
REPLY_BIT = 0x80

CAP_INT16 = 1 << 0
CAP_READ_STATE = 1 << 1
CAP_REPLAY = 1 << 2


class MsgType(enum.IntEnum):
    HELLO = 0x01
    RESET = 0x02
    SET_PARAMS = 0x03
    READ_STATE = 0x04
    FORWARD = 0x05
    HEALTH = 0x06
    ERROR = 0x7F


def reply_type(request: int) -> int:
    return request | REPLY_BIT


class ErrorCode(enum.IntEnum):
    VERSION_MISMATCH = 1
    BAD_REQUEST = 2
    UNKNOWN_TYPE = 3
    BATCH_TOO_LARGE = 4
    INPUT_OUT_OF_RANGE = 5
    UNKNOWN_PARAMETER = 6
    DEVICE_FAULT = 7  # transient: nothing was measured; resend the same request
    SUBSTRATE_FAULT = 8  # the physical system refused the request (text says why)
    REQUEST_CORRUPTED = 9  # NAK: a request with a valid header failed its CRC; resend at once

    @property
    def retryable(self) -> bool:
        return self in (ErrorCode.DEVICE_FAULT, ErrorCode.REQUEST_CORRUPTED)


class ProtocolError(ValueError):
    """A payload that does not follow its layout (raised by the decoders below)."""


# --------------------------------------------------------------------------- frames
@dataclass(frozen=True)
class Frame:
    version: int
    type: int
    seq: int
    payload: bytes = b""

    def encode(self) -> bytes:
        return encode_frame(self.type, self.seq, self.payload, version=self.version)


def _header_check(header: bytes) -> int:
    return zlib.crc32(header) & 0xFFFF


def encode_frame(msg_type: int, seq: int, payload: bytes = b"", *, version: int = PROTOCOL_VERSION) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds the protocol limit of {MAX_PAYLOAD}")
    header = HEADER.pack(MAGIC, version, msg_type, seq & 0xFFFFFFFF, len(payload))
    body = header + HEADER_CHECK.pack(_header_check(header)) + payload
    return body + CRC.pack(zlib.crc32(body))


@dataclass
class ParserStats:
    """Counters of one :class:`FrameParser`.

    frames: valid frames returned.  bad_header: magics whose header check (or length limit)
    failed.  bad_crc: frames with a valid header and a wrong CRC-32.  superseded: partial
    frames abandoned because a complete valid frame began inside them (the partial one was
    truncated on the wire).  expired: partial frames dropped after ``gap_timeout`` of silence.
    bytes_skipped: bytes discarded in all.
    """

    frames: int = 0
    bad_header: int = 0
    bad_crc: int = 0
    superseded: int = 0
    expired: int = 0
    bytes_skipped: int = 0

    @property
    def rejected(self) -> int:
        """Frames (or frame starts) that were discarded: header, CRC, truncation, timeout."""
        return self.bad_header + self.bad_crc + self.superseded + self.expired


class FrameParser:
    """Incremental frame parser with resynchronization, look-ahead and an inter-byte timeout.

    ``feed(data, now)`` appends bytes and returns every complete, valid frame in order.

    * Bytes before a magic are skipped.  A frame whose header check or CRC fails is rejected
      and the search restarts one byte after its magic (so a real frame hidden inside garbage
      or inside a corrupted frame is still found).
    * Look-ahead: while the frame at the front is incomplete (its header is valid and it
      declares ``N`` payload bytes that have not all arrived), the bytes after it are searched
      for a *complete* valid frame (header check and CRC-32 both pass).  If one is found, the
      front frame was truncated on the wire: it is abandoned (``stats.superseded``) and the
      later frame is returned at once.  So a truncated request, or a stray 14-byte header that
      declares 1 MiB, never holds back the frames behind it.  (A complete valid frame inside
      the payload of a frame still arriving would be taken early; for that, 48 bits of checks
      would have to pass on data bytes.)
    * Inter-byte timeout: :meth:`expire` drops whatever is buffered once ``gap_timeout``
      seconds have passed since the last byte arrived (``stats.expired``), so an incomplete
      frame never waits for bytes that will not come.  ``now`` is any monotonic clock in
      seconds (the caller's, so tests can use a simulated one).

    Work per call is linear in the new bytes (look-ahead remembers where it stopped);
    memory is bounded by ``OVERHEAD + MAX_PAYLOAD`` plus one ``feed``.  Frames that fail
    only their CRC are remembered as ``(type, seq)`` (header intact) for
    :meth:`take_crc_failures`, so a receiver can tell "my reply arrived corrupted" from
    stale noise.
    """

    def __init__(self, gap_timeout: float | None = None) -> None:
        self._buf = bytearray()
        self.stats = ParserStats()
        self.gap_timeout = gap_timeout
        self.last_rx: float | None = None  # the ``now`` of the last feed that brought bytes
        self._crc_failures: list[tuple[int, int]] = []
        self._base = 0  # absolute stream offset of _buf[0]
        self._scan = 0  # absolute offset before which look-ahead has examined every magic
        self._cands: list[tuple[int, int]] = []  # (absolute start, total size) of valid headers behind the front

    @property
    def pending(self) -> int:
        return len(self._buf)

    @property
    def pending_header(self) -> tuple[int, int, int] | None:
        """``(type, seq, length)`` of the incomplete frame at the front, if its header is valid."""
        hdr = self._header_at(0) if len(self._buf) >= HEADER_SIZE else None
        return None if hdr is None else hdr[1:]

    def take_crc_failures(self) -> list[tuple[int, int]]:
        """``(type, seq)`` of every frame rejected only by its CRC since the last call."""
        out, self._crc_failures = self._crc_failures, []
        return out

    def _consume(self, n: int, skipped: bool = True) -> None:
        if n <= 0:
            return
        if skipped:
            self.stats.bytes_skipped += n
        del self._buf[:n]
        self._base += n

    def _header_at(self, i: int) -> tuple[int, int, int, int] | None:
        """``(version, type, seq, length)`` if a valid header starts at ``_buf[i]``."""
        header = bytes(self._buf[i: i + HEADER.size])
        magic, version, msg_type, seq, length = HEADER.unpack(header)
        (check,) = HEADER_CHECK.unpack_from(self._buf, i + HEADER.size)
        if magic != MAGIC or check != _header_check(header) or length > MAX_PAYLOAD:
            return None
        return version, msg_type, seq, length

    def _crc_ok(self, i: int, total: int) -> bool:
        (crc,) = CRC.unpack_from(self._buf, i + total - CRC.size)
        return crc == zlib.crc32(memoryview(self._buf)[i: i + total - CRC.size])

    def drop_partial(self) -> int:
        """Forget a partial frame (after a read timeout): skip its magic and rescan.

        Returns the number of bytes discarded from the front.
        """
        if not self._buf:
            return 0
        before = len(self._buf)
        self._consume(1)
        self._skip_to_magic()
        return before - len(self._buf)

    def _skip_to_magic(self) -> None:
        i = self._buf.find(MAGIC)
        if i < 0:
            # keep a trailing first magic byte: it may start a frame in the next feed
            keep = 1 if self._buf[-1:] == MAGIC[:1] else 0
            i = len(self._buf) - keep
        self._consume(i)

    def _lookahead(self) -> int | None:
        """Offset (> 0) of the earliest complete valid frame behind the incomplete front frame."""
        end = len(self._buf) - HEADER_SIZE + 1  # a header needs HEADER_SIZE bytes from its start
        i = max(self._scan, self._base + 1) - self._base
        while i < end:
            i = self._buf.find(MAGIC, i, end + len(MAGIC) - 1)
            if i < 0:
                break
            hdr = self._header_at(i)
            if hdr is not None:
                self._cands.append((self._base + i, HEADER_SIZE + hdr[3] + CRC.size))
            i += 1
        self._scan = max(self._scan, self._base + max(end, 1))
        keep = []
        found = None
        for start, total in self._cands:
            rel = start - self._base
            if rel <= 0:
                continue  # at or before the front: not behind it any more
            if found is None and rel + total <= len(self._buf):
                if self._crc_ok(rel, total):
                    found = rel
                    keep.append((start, total))
                continue  # complete but invalid: forget it
            keep.append((start, total))
        self._cands = keep
        return found

    def feed(self, data: bytes, now: float | None = None) -> list[Frame]:
        if data:
            self._buf += data
            if now is not None:
                self.last_rx = now
        out: list[Frame] = []
        while True:
            self._skip_to_magic()
            if len(self._buf) < HEADER_SIZE:
                return out
            hdr = self._header_at(0)
            if hdr is None:
                self.stats.bad_header += 1
                self._consume(1)
                continue
            version, msg_type, seq, length = hdr
            total = HEADER_SIZE + length + CRC.size
            if len(self._buf) < total:
                j = self._lookahead()
                if j is None:
                    return out
                self.stats.superseded += 1  # the front frame was truncated: a whole frame began inside it
                self._consume(j)
                continue
            if not self._crc_ok(0, total):
                self.stats.bad_crc += 1
                if len(self._crc_failures) < 1024:
                    self._crc_failures.append((msg_type, seq))
                self._consume(1)
                continue
            payload = bytes(self._buf[HEADER_SIZE: HEADER_SIZE + length])
            self._consume(total, skipped=False)
            self.stats.frames += 1
            out.append(Frame(version, msg_type, seq, payload))

    def expire(self, now: float) -> list[Frame]:
        """Drop buffered bytes once ``gap_timeout`` s passed since the last byte; frames found meanwhile.

        Returns the valid frames that dropping a partial one uncovered (rare: look-ahead
        finds them first).  Does nothing without a ``gap_timeout`` or before the gap.
        """
        if not self._buf or self.gap_timeout is None or self.last_rx is None or now - self.last_rx < self.gap_timeout:
            return []
        out: list[Frame] = []
        self.stats.expired += 1
        while self._buf:
            self.drop_partial()
            out += self.feed(b"")
        return out


# ------------------------------------------------------------------------- payloads
HELLO_REQUEST = struct.Struct("<BBI")
HELLO_REPLY = struct.Struct("<BHHffffHI")
HEALTH_REPLY = struct.Struct("<IIIIIff")
ERROR_HEAD = struct.Struct("<H")
SAMPLE_HEAD = struct.Struct("<HHB")
FORMAT_F32 = 0
FORMAT_I16 = 1
SAMPLE_FORMATS = {"float32": FORMAT_F32, "int16": FORMAT_I16}


def _need(payload: bytes, n: int, what: str) -> None:
    if len(payload) < n:
        raise ProtocolError(f"{what} payload has {len(payload)} bytes, needs at least {n}")


def encode_hello_request(session: int, versions: tuple[int, int] = SUPPORTED_VERSIONS) -> bytes:
    return HELLO_REQUEST.pack(versions[0], versions[1], session & 0xFFFFFFFF)


def decode_hello_request(payload: bytes) -> tuple[int, int, int]:
    _need(payload, HELLO_REQUEST.size, "HELLO")
    return HELLO_REQUEST.unpack_from(payload)


@dataclass
class Identity:
    """What a device says about itself in its HELLO reply."""

    version: int
    n_in: int
    n_out: int
    input_range: tuple[float, float]
    output_range: tuple[float, float]
    max_batch: int
    capabilities: int
    kind: str = "unknown"
    firmware: str = "unknown"
    params: dict[str, list[int]] = field(default_factory=dict)
    describe: dict = field(default_factory=dict)


def encode_hello_reply(ident: Identity) -> bytes:
    head = HELLO_REPLY.pack(ident.version, ident.n_in, ident.n_out, *map(float, ident.input_range),
                            *map(float, ident.output_range), ident.max_batch, ident.capabilities)
    info = {"kind": ident.kind, "firmware": ident.firmware, "params": ident.params, "describe": ident.describe}
    return head + json.dumps(info, sort_keys=True).encode()


def decode_hello_reply(payload: bytes) -> Identity:
    _need(payload, HELLO_REPLY.size, "HELLO reply")
    version, n_in, n_out, low, high, out_low, out_high, max_batch, caps = HELLO_REPLY.unpack_from(payload)
    try:
        info = json.loads(payload[HELLO_REPLY.size:].decode() or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"HELLO reply info is not UTF-8 JSON ({exc})") from None
    if not isinstance(info, dict):
        raise ProtocolError("HELLO reply info is not a JSON object")
    return Identity(version, n_in, n_out, (low, high), (out_low, out_high), max_batch, caps,
                    str(info.get("kind", "unknown")),
                    str(info.get("firmware", "unknown")), dict(info.get("params", {})), dict(info.get("describe", {})))


MAX_ERROR_TEXT = 1024  # bytes of UTF-8 text a sender puts in an ERROR payload (longer text is cut)


def encode_error(code: int, text: str) -> bytes:
    return ERROR_HEAD.pack(int(code)) + text.encode()[:MAX_ERROR_TEXT]


def decode_error(payload: bytes) -> tuple[int, str]:
    _need(payload, ERROR_HEAD.size, "ERROR")
    (code,) = ERROR_HEAD.unpack_from(payload)
    return code, payload[ERROR_HEAD.size:].decode(errors="replace")


def quantize(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """float -> int16 full scale over ``[low, high]`` (values outside are clipped)."""
    u = (np.clip(x, low, high) - low) / (high - low)
    return (np.rint(u * 65535.0) - 32768.0).astype("<i2")


def dequantize(q: np.ndarray, low: float, high: float) -> np.ndarray:
    return ((q.astype(np.float64) + 32768.0) / 65535.0 * (high - low) + low).astype(np.float32)


def encode_samples(x: np.ndarray, fmt: int = FORMAT_F32, value_range: tuple[float, float] = (-1.0, 1.0)) -> bytes:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ProtocolError(f"samples must be [batch, width], got shape {list(x.shape)}")
    batch, width = x.shape
    if batch > 0xFFFF or width > 0xFFFF:
        raise ProtocolError(f"sample block {batch}x{width} exceeds 65535 in one dimension")
    if fmt == FORMAT_F32:
        data = x.astype("<f4").tobytes()
    elif fmt == FORMAT_I16:
        data = quantize(x, *value_range).tobytes()
    else:
        raise ProtocolError(f"unknown sample format {fmt}")
    return SAMPLE_HEAD.pack(batch, width, fmt) + data


def decode_samples(payload: bytes, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    _need(payload, SAMPLE_HEAD.size, "sample block")
    batch, width, fmt = SAMPLE_HEAD.unpack_from(payload)
    itemsize = {FORMAT_F32: 4, FORMAT_I16: 2}.get(fmt)
    if itemsize is None:
        raise ProtocolError(f"unknown sample format {fmt}")
    n = batch * width
    if len(payload) != SAMPLE_HEAD.size + n * itemsize:
        raise ProtocolError(f"sample block {batch}x{width} needs {n * itemsize} data bytes, "
                            f"got {len(payload) - SAMPLE_HEAD.size}")
    raw = payload[SAMPLE_HEAD.size:]
    if fmt == FORMAT_F32:
        return np.frombuffer(raw, dtype="<f4").reshape(batch, width).astype(np.float32)
    return dequantize(np.frombuffer(raw, dtype="<i2"), *value_range).reshape(batch, width)


def encode_tensors(tensors: dict[str, np.ndarray]) -> bytes:
    parts = [struct.pack("<H", len(tensors))]
    for name, value in tensors.items():
        value = np.asarray(value, dtype=np.float32)
        raw_name = name.encode()
        if not 0 < len(raw_name) < 256 or value.ndim > 255:
            raise ProtocolError(f"parameter '{name}' needs a 1..255-byte name and at most 255 dimensions")
        dims = struct.pack(f"<B{value.ndim}I", value.ndim, *value.shape)
        parts.append(struct.pack("<B", len(raw_name)) + raw_name + dims)
        parts.append(value.astype("<f4").tobytes())
    return b"".join(parts)


def decode_tensors(payload: bytes) -> dict[str, np.ndarray]:
    try:
        (count,) = struct.unpack_from("<H", payload, 0)
        pos, out = 2, {}
        for _ in range(count):
            (n,) = struct.unpack_from("<B", payload, pos)
            name = payload[pos + 1: pos + 1 + n].decode()
            pos += 1 + n
            (ndim,) = struct.unpack_from("<B", payload, pos)
            dims = struct.unpack_from(f"<{ndim}I", payload, pos + 1)
            pos += 1 + 4 * ndim
            size = int(np.prod(dims, dtype=np.int64)) * 4
            if pos + size > len(payload):
                raise ProtocolError(f"tensor '{name}' runs past the end of the payload")
            out[name] = np.frombuffer(payload[pos: pos + size], dtype="<f4").reshape(dims).astype(np.float32)
            pos += size
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed tensor block ({exc})") from None
    if pos != len(payload):
        raise ProtocolError(f"tensor block has {len(payload) - pos} trailing bytes")
    return out


@dataclass
class DeviceHealth:
    frames_ok: int
    bad_frames: int
    bytes_skipped: int
    replays: int
    errors: int
    uptime_s: float
    temperature_c: float

    def encode(self) -> bytes:
        return HEALTH_REPLY.pack(self.frames_ok, self.bad_frames, self.bytes_skipped, self.replays, self.errors,
                                 self.uptime_s, self.temperature_c)

    @classmethod
    def decode(cls, payload: bytes) -> DeviceHealth:
        _need(payload, HEALTH_REPLY.size, "HEALTH reply")
        return cls(*HEALTH_REPLY.unpack_from(payload))
