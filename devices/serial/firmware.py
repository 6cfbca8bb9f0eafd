"""Device-side protocol logic ("firmware"), independent of the transport.

:class:`Firmware` answers request frames for one substrate: HELLO with version
negotiation, RESET, SET_PARAMS, READ_STATE, FORWARD and HEALTH.  Requests are idempotent
by sequence number: the last ``cache_size`` replies are kept, and a request whose
sequence number *and* bytes match a cached one is answered with the cached reply bytes
(a replay), never recomputed; so a host's retry after a lost reply does not measure a
noisy or drifting device twice.  The cache survives a host reconnect (same HELLO
session id) and is cleared when a new session starts.

The emulator (:mod:`devices.emulator`) runs this behind a pty; a real board would run the
same state machine in C.
"""

from __future__ import annotations

import os
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch

from devices.serial import protocol as P


class Firmware:
    """Serve ``substrate`` (a :class:`simulators.substrate.Substrate`) over the protocol.

    ``versions``: the (min, max) protocol versions this firmware speaks.
    ``max_batch``: the largest FORWARD batch accepted (a bigger one gets BATCH_TOO_LARGE).
    ``inject_error(frame) -> bool``: optional fault hook; when it returns true a FORWARD is
    answered with a retryable DEVICE_FAULT error and nothing is measured.
    ``refuse_nonfinite``: a measurement holding NaN or infinity is not sent; the FORWARD is
    answered with DEVICE_FAULT (not cached, not counted in ``measured_crc``) so the host's
    resend measures again.  Off only to test a host against a faulty board.
    """

    def __init__(self, substrate, *, kind: str = "emulator", firmware: str = "neurohil-emu 1.0",
                 versions: tuple[int, int] = P.SUPPORTED_VERSIONS, max_batch: int = 256, cache_size: int = 32,
                 inject_error: Callable[[P.Frame], bool] | None = None, refuse_nonfinite: bool = True) -> None:
        self.substrate = substrate
        self.kind = kind
        self.firmware = firmware
        self.versions = versions
        self.max_batch = max_batch
        self.cache_size = cache_size
        self.inject_error = inject_error
        self.refuse_nonfinite = refuse_nonfinite
        self.boot_id = int.from_bytes(os.urandom(4), "little")
        self.session: int | None = None
        self.version = versions[1]
        self._cache: OrderedDict[int, tuple[int, bytes]] = OrderedDict()  # seq -> (request digest, reply)
        self._started = time.monotonic()
        self.measured_crc = 0  # CRC-32 over every measured FORWARD reply payload, in order (replays excluded)
        self.counts = {"frames_ok": 0, "replays": 0, "errors": 0, "samples_measured": 0, "forward_requests": 0,
                       "nonfinite_refused": 0}
        desc = substrate.describe()
        out_range = desc.get("output_range")
        self.output_range = tuple(float(v) for v in out_range) if out_range else (0.0, 0.0)
        self.capabilities = P.CAP_READ_STATE | P.CAP_REPLAY | (P.CAP_INT16 if out_range else 0)

    # ------------------------------------------------------------------ identity
    def identity(self) -> P.Identity:
        s = self.substrate
        params = {k: list(v.shape) for k, v in s.get_params().items()}
        describe = dict(s.describe(), boot_id=self.boot_id)
        return P.Identity(self.version, s.n_in, s.n_out, tuple(s.input_range), self.output_range, self.max_batch,
                          self.capabilities, self.kind, self.firmware, params, describe)

    # ------------------------------------------------------------------- frames
    def handle(self, frame: P.Frame, parser_stats: P.ParserStats | None = None) -> bytes:
        """The encoded reply frame to one valid request frame."""
        self.counts["frames_ok"] += 1
        if frame.type == P.MsgType.HELLO:
            return self._hello(frame)
        if frame.version != self.version:
            return self._error(frame, P.ErrorCode.VERSION_MISMATCH,
                               f"frame is protocol v{frame.version}, this session speaks v{self.version}")
        digest = zlib.crc32(bytes([frame.type]) + frame.payload)
        cached = self._cache.get(frame.seq)
        if cached is not None and cached[0] == digest:
            self.counts["replays"] += 1
            return cached[1]
        reply = self._dispatch(frame, parser_stats)
        if not _is_transient_error(reply):  # a transient fault measured nothing: a resend must measure
            self._cache[frame.seq] = (digest, reply)
            self._cache.move_to_end(frame.seq)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return reply

    def nak(self, msg_type: int, seq: int) -> bytes | None:
        """The REQUEST_CORRUPTED error for a request frame whose header was valid and CRC wrong
        (``(type, seq)`` from :meth:`FrameParser.take_crc_failures`); None for a non-request."""
        if msg_type & P.REPLY_BIT or msg_type == P.MsgType.ERROR:
            return None
        self.counts["naks"] = self.counts.get("naks", 0) + 1
        text = P.encode_error(P.ErrorCode.REQUEST_CORRUPTED, "request failed its CRC; resend")
        return P.encode_frame(P.MsgType.ERROR, seq, text, version=self.version)

    def _reply(self, frame: P.Frame, payload: bytes = b"") -> bytes:
        return P.encode_frame(P.reply_type(frame.type), frame.seq, payload, version=self.version)

    def _error(self, frame: P.Frame, code: P.ErrorCode, text: str) -> bytes:
        self.counts["errors"] += 1
        return P.encode_frame(P.MsgType.ERROR, frame.seq, P.encode_error(code, text), version=self.version)

    def _hello(self, frame: P.Frame) -> bytes:
        try:
            lo, hi, session = P.decode_hello_request(frame.payload)
        except P.ProtocolError as exc:
            return self._error(frame, P.ErrorCode.BAD_REQUEST, str(exc))
        common = min(hi, self.versions[1])
        if common < max(lo, self.versions[0]):
            self.version = self.versions[1]
            return self._error(frame, P.ErrorCode.VERSION_MISMATCH,
                               f"device speaks protocol v{self.versions[0]}..v{self.versions[1]}, host v{lo}..v{hi}")
        self.version = common
        if session != self.session:
            self._cache.clear()
            self.session = session
        return self._reply(frame, P.encode_hello_reply(self.identity()))

    def _dispatch(self, frame: P.Frame, parser_stats: P.ParserStats | None) -> bytes:
        t = frame.type
        try:
            if t == P.MsgType.RESET:
                self.substrate.reset()
                return self._reply(frame)
            if t == P.MsgType.SET_PARAMS:
                return self._set_params(frame)
            if t == P.MsgType.READ_STATE:
                params = {k: v.detach().cpu().numpy() for k, v in self.substrate.get_params().items()}
                return self._reply(frame, P.encode_tensors(params))
            if t == P.MsgType.FORWARD:
                return self._forward(frame)
            if t == P.MsgType.HEALTH:
                return self._reply(frame, self.health(parser_stats).encode())
        except P.ProtocolError as exc:
            return self._error(frame, P.ErrorCode.BAD_REQUEST, str(exc))
        except Exception as exc:  # noqa: BLE001 - the substrate refused: report it, keep serving
            text = " ".join(str(exc).split())
            return self._error(frame, P.ErrorCode.SUBSTRATE_FAULT, f"{type(exc).__name__}: {text[:400]}")
        return self._error(frame, P.ErrorCode.UNKNOWN_TYPE, f"unknown message type 0x{t:02x}")

    def _set_params(self, frame: P.Frame) -> bytes:
        tensors = P.decode_tensors(frame.payload)
        current = self.substrate.get_params()
        for name, value in tensors.items():
            if name not in current:
                return self._error(frame, P.ErrorCode.UNKNOWN_PARAMETER,
                                   f"no hardware parameter '{name}'; this device has {', '.join(current) or 'none'}")
            if tuple(value.shape) != tuple(current[name].shape):
                return self._error(frame, P.ErrorCode.BAD_REQUEST,
                                   f"parameter '{name}' has shape {list(current[name].shape)}, got {list(value.shape)}")
        self.substrate.set_params({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
        return self._reply(frame)

    def _forward(self, frame: P.Frame) -> bytes:
        s = self.substrate
        x = P.decode_samples(frame.payload, tuple(s.input_range))
        fmt = frame.payload[4]
        if x.shape[1] != s.n_in:
            return self._error(frame, P.ErrorCode.BAD_REQUEST,
                               f"FORWARD rows have {x.shape[1]} values, device takes {s.n_in}")
        if x.shape[0] > self.max_batch:
            return self._error(frame, P.ErrorCode.BATCH_TOO_LARGE,
                               f"batch {x.shape[0]} exceeds max_batch {self.max_batch}")
        low, high = s.input_range
        if x.size and (not np.isfinite(x).all() or x.min() < low or x.max() > high):
            return self._error(frame, P.ErrorCode.INPUT_OUT_OF_RANGE,
                               f"inputs span [{np.nanmin(x):.4g}, {np.nanmax(x):.4g}], "
                               f"device accepts [{low:.4g}, {high:.4g}]")
        if fmt == P.FORMAT_I16 and not self.capabilities & P.CAP_INT16:
            return self._error(frame, P.ErrorCode.BAD_REQUEST,
                               "int16 samples need an output range; this device has none")
        if self.inject_error is not None and self.inject_error(frame):
            return self._error(frame, P.ErrorCode.DEVICE_FAULT, "ADC overrun, nothing measured; resend")
        with torch.no_grad():
            y = s.forward(torch.from_numpy(x)).detach().cpu().numpy()
        if self.refuse_nonfinite and not np.isfinite(y).all():
            self.counts["nonfinite_refused"] += 1
            return self._error(frame, P.ErrorCode.DEVICE_FAULT,
                               "measurement not finite (NaN/inf), nothing sent; resend")
        self.counts["forward_requests"] += 1
        self.counts["samples_measured"] += x.shape[0]
        payload = P.encode_samples(y, fmt, self.output_range)
        self.measured_crc = zlib.crc32(payload, self.measured_crc)
        return self._reply(frame, payload)

    def health(self, parser_stats: P.ParserStats | None = None) -> P.DeviceHealth:
        ps = parser_stats or P.ParserStats()
        temp = getattr(self.substrate, "temperature_c", float("nan"))
        return P.DeviceHealth(self.counts["frames_ok"], ps.rejected, ps.bytes_skipped, self.counts["replays"],
                              self.counts["errors"], time.monotonic() - self._started, float(temp))


def _is_transient_error(reply: bytes) -> bool:
    if reply[3] != P.MsgType.ERROR:
        return False
    code, _ = P.decode_error(reply[P.HEADER_SIZE:-P.CRC.size])
    return code in (P.ErrorCode.DEVICE_FAULT, P.ErrorCode.REQUEST_CORRUPTED)
