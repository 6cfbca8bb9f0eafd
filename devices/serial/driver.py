"""``SerialDevice``: the host-side driver of the NeuroHIL serial protocol.

It is both a :class:`devices.base.Device` (open/close/reset/forward/health, context
manager) and a :class:`simulators.substrate.Substrate` (n_in, n_out, input_range,
forward, set_params, get_params, reset, describe), so a physical layer runs on it exactly
as on a simulator.

Delivery guarantees (each sample's measurement is returned exactly once, in order):

* every request gets a fresh sequence number; every read has a deadline (``timeout`` of
  silence, and at most ``max(20 timeout, 10 s)`` per attempt);
* on a timeout, a bad frame or a retryable device error the *same* frame (same seq) is
  resent, up to ``retries`` times; the device replays its cached reply for a seq it has
  answered, so a retry never measures twice;
* replies whose seq is not the one awaited (late replies to an earlier attempt, replays)
  are discarded and counted; bytes that are not a valid frame are skipped (resync);
* if the port disappears (EIO, unplugged adapter) the driver re-opens the same path until
  ``reconnect_timeout`` passes, says HELLO again with the same session id (so the device
  keeps its reply cache), re-writes the hardware parameters if the device rebooted, and
  resends the pending request.

Every fault recovered from is counted in :meth:`health` and logged on the
``devices.serial`` logger with its kind and sequence number; :attr:`events` keeps the
records.  Failures retries cannot fix raise a one-line :class:`~neuro.errors.DeviceError`.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections import Counter, deque
from dataclasses import asdict, dataclass

import numpy as np
import serial
import torch

from devices.errors import DeviceError
from devices.serial import protocol as P

log = logging.getLogger("devices.serial")


class _PortLost(Exception):
    pass


_BAD_FRAME = object()  # _await saw a frame fail its checks and no valid reply: resend at once


@dataclass
class LinkEvent:
    time_s: float
    kind: str
    request: str
    seq: int
    detail: str = ""


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class SerialDevice:
    """A NeuroHIL device on ``port``: ``/dev/ttyUSB0``, a pty path, ``socket://host:port``, ``loop://``.

    timeout: seconds of silence while awaiting a reply before resending (so a long reply on a
        slow link is not cut off while its bytes keep arriving).
    retries: resends of one request before giving up.
    reconnect_timeout: seconds to keep re-opening a vanished port.
    sample_format: ``"float32"`` or ``"int16"`` (full scale over the device's ranges).
    max_events: link events kept in :attr:`events` (counts in :meth:`health` are complete).
    """

    def __init__(self, port: str, *, timeout: float = 0.5, retries: int = 8, reconnect_timeout: float = 5.0,
                 baudrate: int = 1_000_000, sample_format: str = "float32", max_events: int = 10_000) -> None:
        if sample_format not in P.SAMPLE_FORMATS:
            raise DeviceError(f"sample_format must be one of {', '.join(P.SAMPLE_FORMATS)}, got '{sample_format}'")
        if timeout <= 0 or retries < 0 or reconnect_timeout < 0:
            raise DeviceError(f"serial {port}: timeout must be > 0 s and retries, reconnect_timeout >= 0")
        self.port = str(port)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.reconnect_timeout = float(reconnect_timeout)
        self.baudrate = baudrate
        self.sample_format = sample_format
        self.max_events = max_events
        self.identity: P.Identity | None = None
        self.written_params: dict[str, torch.Tensor] = {}
        self.events: list[LinkEvent] = []
        self.counts: Counter = Counter()
        # CRC-32 over every delivered FORWARD reply payload, in order: equal to the device's
        # ``measured_crc`` exactly when each measurement was delivered once and in order
        self.delivered_crc = 0
        self._serial = None
        self._opened = False
        self._parser = P.FrameParser()
        self._seq = 0
        self._session = int.from_bytes(os.urandom(4), "little")
        self._t0 = time.monotonic()
        self._busy_s = 0.0
        self._latencies: deque[float] = deque(maxlen=100_000)  # FORWARD round trips (s), retries included

    # ---------------------------------------------------------------- Device
    def open(self) -> None:
        """Open the port and identify the device (idempotent)."""
        if self._opened:
            return
        self._open_port()
        try:
            self.identity = self._hello()
        except BaseException:
            self._close_port()
            raise
        self._opened = True

    def close(self) -> None:
        self._opened = False
        self._close_port()

    def __enter__(self) -> SerialDevice:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def reset(self) -> None:
        self._request(P.MsgType.RESET)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Measure ``x [batch, n_in]`` (any batch; split into ``max_batch`` chunks) -> ``[batch, n_out]`` float32."""
        ident = self._ident()
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != ident.n_in:
            raise DeviceError(f"serial device {self.port} takes inputs [batch, {ident.n_in}], got {list(x.shape)}")
        xs = x.detach().to("cpu", torch.float32).numpy()
        fmt = P.SAMPLE_FORMATS[self.sample_format]
        itemsize = 4 if fmt == P.FORMAT_F32 else 2
        fits = (P.MAX_PAYLOAD - P.SAMPLE_HEAD.size) // (itemsize * max(ident.n_in, ident.n_out, 1))
        step = max(1, min(ident.max_batch, fits))  # rows per FORWARD frame
        outs = []
        t0 = time.perf_counter()
        for start in range(0, max(len(xs), 1), step):
            chunk = xs[start: start + step]
            t1 = time.perf_counter()
            reply = self._request(P.MsgType.FORWARD, P.encode_samples(chunk, fmt, ident.input_range))
            self._latencies.append(time.perf_counter() - t1)
            self.delivered_crc = zlib.crc32(reply.payload, self.delivered_crc)
            try:
                y = P.decode_samples(reply.payload, ident.output_range)
            except P.ProtocolError as exc:
                raise DeviceError(f"serial device {self.port}: malformed FORWARD reply ({exc})") from None
            if y.shape != (len(chunk), ident.n_out):
                raise DeviceError(f"serial device {self.port} answered {list(y.shape)} for a batch of {len(chunk)}; expected [{len(chunk)}, {ident.n_out}]")
            outs.append(y)
        self._busy_s += time.perf_counter() - t0
        self.counts["samples"] += len(xs)
        return torch.from_numpy(np.concatenate(outs, axis=0) if outs else np.zeros((0, ident.n_out), np.float32))

    def health(self) -> dict:
        """Device counters (HEALTH) and this link's counters and throughput."""
        dev = P.DeviceHealth.decode(self._request(P.MsgType.HEALTH).payload)
        return {"port": self.port, "device": dev.__dict__, "link": self.link_stats()}

    def link_stats(self) -> dict:
        """Counts of requests, samples, bytes and every fault kind recovered from; throughput and latency."""
        ps = self._parser.stats
        stats = {k: int(v) for k, v in self.counts.items()}
        stats.update(bad_frames=ps.bad_header + ps.bad_crc, bytes_skipped=ps.bytes_skipped)
        stats["busy_s"] = self._busy_s
        stats["samples_per_s"] = stats.get("samples", 0) / self._busy_s if self._busy_s > 0 else None
        lat = sorted(self._latencies)
        stats["forward_median_ms"] = 1e3 * lat[len(lat) // 2] if lat else None
        stats["forward_p95_ms"] = 1e3 * lat[int(0.95 * (len(lat) - 1))] if lat else None
        return stats

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """What a checkpoint keeps of the device: the hardware parameters written to it."""
        return {"port": self.port, "written_params": {k: v.clone() for k, v in self.written_params.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Re-write the checkpointed hardware parameters to the device (resume)."""
        params = dict(state.get("written_params") or {})
        if params:
            self.set_params(params)
            log.info("serial %s: rewrote %d hardware parameters from the checkpoint", self.port, len(params))

    # ---------------------------------------------------------------- report
    def report_data(self, records=None) -> dict:
        """Run-report data (drawn by ``neuro.report.serial``): the link's statistics, every event and
        every FORWARD round trip; JSON-able, so a failed run can still write it."""
        ident = self.identity
        return {"serial_link": {
            "port": self.port,
            "identity": f"{ident.kind} ({ident.firmware}), protocol v{ident.version}" if ident else None,
            "stats": self.link_stats(),
            "delivered_crc": self.delivered_crc,
            "events": [asdict(ev) for ev in self.events],
            "latencies_s": list(self._latencies),
        }}

    # ------------------------------------------------------------- Substrate
    @property
    def n_in(self) -> int:
        return self._ident().n_in

    @property
    def n_out(self) -> int:
        return self._ident().n_out

    @property
    def input_range(self) -> tuple[float, float]:
        return tuple(self._ident().input_range)

    def set_params(self, params: dict[str, torch.Tensor]) -> None:
        """Write hardware parameters; they are remembered in :attr:`written_params` (for checkpoints and reboots)."""
        arrays = {k: torch.as_tensor(v).detach().to("cpu", torch.float32).numpy() for k, v in params.items()}
        self._request(P.MsgType.SET_PARAMS, P.encode_tensors(arrays))
        self.written_params.update({k: torch.from_numpy(v.copy()) for k, v in arrays.items()})

    def get_params(self) -> dict[str, torch.Tensor]:
        reply = self._request(P.MsgType.READ_STATE)
        try:
            return {k: torch.from_numpy(v) for k, v in P.decode_tensors(reply.payload).items()}
        except P.ProtocolError as exc:
            raise DeviceError(f"serial device {self.port}: malformed READ_STATE reply ({exc})") from None

    def describe(self) -> dict:
        ident = self._ident()
        return {"kind": f"serial:{ident.kind}", "port": self.port, "firmware": ident.firmware,
                "protocol_version": ident.version, "n_in": ident.n_in, "n_out": ident.n_out,
                "input_range": list(ident.input_range), "max_batch": ident.max_batch,
                "params": ident.params, "device": ident.describe}

    # --------------------------------------------------------------- internals
    def _ident(self) -> P.Identity:
        if self.identity is None:
            raise DeviceError(f"serial device {self.port} is not open; call open() or use it in a `with` block")
        return self.identity

    def _open_port(self) -> None:
        try:
            self._serial = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=min(0.05, self.timeout),
                                                 write_timeout=max(1.0, self.timeout))
            self._serial.reset_input_buffer()
        except (serial.SerialException, OSError, ValueError) as exc:
            self._serial = None
            errno = getattr(exc, "errno", None)
            cause = os.strerror(errno) if isinstance(errno, int) else _one_line(exc)
            raise DeviceError(f"cannot open serial port {self.port}: {cause}; check the path (`neuro devices list`) and that the device is plugged in") from None
        stats, self._parser = self._parser.stats, P.FrameParser()  # bytes of a vanished connection are void
        self._parser.stats = stats

    def _close_port(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except (serial.SerialException, OSError):
                pass
            self._serial = None

    def _event(self, kind: str, request: int, seq: int, detail: str = "") -> None:
        self.counts[kind] += 1
        name = P.MsgType(request).name if request in P.MsgType._value2member_map_ else f"0x{request:02x}"
        if len(self.events) < self.max_events:
            self.events.append(LinkEvent(round(time.monotonic() - self._t0, 4), kind, name, seq, detail))
        log.warning("serial %s: %s on %s seq %d%s", self.port, kind, name, seq, f" ({detail})" if detail else "")

    def _hello(self) -> P.Identity:
        reply = self._request(P.MsgType.HELLO, P.encode_hello_request(self._session), accept_any_version=True,
                              what="HELLO")
        if reply.type == P.MsgType.ERROR:
            code, text = P.decode_error(reply.payload)
            if code == P.ErrorCode.VERSION_MISMATCH:
                raise DeviceError(f"protocol version mismatch on {self.port}: this driver speaks v{P.SUPPORTED_VERSIONS[0]}..v{P.SUPPORTED_VERSIONS[1]}, "
                                  f"the device answered v{reply.version} ({_one_line(text)}); update the driver or the firmware")
            raise DeviceError(f"device on {self.port} refused HELLO: {_one_line(text)}")
        try:
            ident = P.decode_hello_reply(reply.payload)
        except P.ProtocolError as exc:
            raise DeviceError(f"device on {self.port} sent a malformed HELLO reply ({exc})") from None
        lo, hi = P.SUPPORTED_VERSIONS
        if not lo <= ident.version <= hi:
            raise DeviceError(f"protocol version mismatch on {self.port}: this driver speaks v{lo}..v{hi}, the device chose v{ident.version}; update the driver or the firmware")
        return ident

    def _request(self, msg_type: int, payload: bytes = b"", *, accept_any_version: bool = False, what: str | None = None) -> P.Frame:
        is_hello = msg_type == P.MsgType.HELLO
        if not is_hello and not self._opened:
            raise DeviceError(f"serial device {self.port} is not open; call open() or use it in a `with` block")
        if self._serial is None:  # a previous reconnect gave up; try again
            self._reconnect("port was lost earlier")
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        frame = P.encode_frame(msg_type, seq, payload)
        attempt = 0
        recovered: list[str] = []
        self.counts["requests"] += 1
        while True:
            try:
                reply = self._await(seq, msg_type) if self._write(frame) else None
            except _PortLost as exc:
                if is_hello:  # open() or _reconnect() decide what to do
                    raise DeviceError(f"serial port {self.port} failed during HELLO: {exc}") from None
                self._event("port lost", msg_type, seq, str(exc))
                self._reconnect(str(exc))
                recovered.append("port lost")
                continue
            if reply is _BAD_FRAME:
                attempt += 1
                if attempt > self.retries:
                    raise DeviceError(f"serial link to {self.port} keeps corrupting frames ({self.retries + 1} bad replies to "
                                      f"{P.MsgType(msg_type).name}); check the cable, baud rate and grounding")
                recovered.append("bad frame")
                continue
            if reply is None:
                attempt += 1
                if attempt > self.retries:
                    raise DeviceError(
                        f"no reply from serial device {self.port} to {what or P.MsgType(msg_type).name} after {self.retries + 1} tries "
                        f"of {self.timeout:g} s; is it powered, connected and running NeuroHIL firmware (protocol v{P.PROTOCOL_VERSION})?")
                self._event("timeout", msg_type, seq, f"resend {attempt}/{self.retries}")
                recovered.append("timeout")
                self._parser.drop_partial()
                continue
            if reply.type == P.MsgType.ERROR:
                code, text = P.decode_error(reply.payload)
                if code in P.ErrorCode._value2member_map_ and P.ErrorCode(code).retryable and attempt < self.retries:
                    attempt += 1
                    self._event("device error", msg_type, seq, _one_line(text))
                    recovered.append("device error")
                    continue
                if accept_any_version:
                    return reply
                name = P.ErrorCode(code).name if code in P.ErrorCode._value2member_map_ else f"code {code}"
                raise DeviceError(f"serial device {self.port} rejected {P.MsgType(msg_type).name}: {name}: {_one_line(text)}")
            if not is_hello and reply.version != self._ident().version:
                raise DeviceError(f"protocol version mismatch on {self.port}: reply is v{reply.version}, session is v{self.identity.version}")
            if reply.type != P.reply_type(msg_type):
                raise DeviceError(f"serial device {self.port} answered {P.MsgType(msg_type).name} seq {seq} with message type 0x{reply.type:02x}")
            if recovered:
                log.info("serial %s: %s seq %d delivered after recovering from %s", self.port,
                         P.MsgType(msg_type).name, seq, ", ".join(recovered))
            return reply

    def _write(self, frame: bytes) -> bool:
        """Send one frame; False if the device did not take it within the write timeout."""
        try:
            self._serial.write(frame)
        except serial.SerialTimeoutException:
            return False
        except (serial.SerialException, OSError) as exc:
            raise _PortLost(_one_line(exc)) from None
        self.counts["bytes_out"] += len(frame)
        return True

    def _await(self, seq: int, msg_type: int):
        """The reply frame to ``seq``; ``_BAD_FRAME`` if a frame failed its checks first; None at the deadline.

        Valid frames with another seq (late replies, replays of an earlier attempt) are discarded.
        """
        start = time.monotonic()
        deadline = start + self.timeout
        hard_deadline = start + max(20 * self.timeout, 10.0)  # a device streaming bytes forever
        bad_before = self._parser.stats.bad_crc + self._parser.stats.bad_header
        while time.monotonic() < deadline:
            try:
                data = self._serial.read(self._serial.in_waiting or 1)
            except (serial.SerialException, OSError) as exc:
                raise _PortLost(_one_line(exc)) from None
            if not data:
                continue
            deadline = min(time.monotonic() + self.timeout, hard_deadline)  # the timeout is per silence, not per frame
            self.counts["bytes_in"] += len(data)
            frames = self._parser.feed(data)
            bad_now = self._parser.stats.bad_crc + self._parser.stats.bad_header
            for frame in frames:
                if frame.seq == seq and (frame.type & P.REPLY_BIT or frame.type == P.MsgType.ERROR):
                    return frame
                self._event("stale reply", frame.type & ~P.REPLY_BIT, frame.seq, f"awaiting seq {seq}; discarded")
            if bad_now > bad_before:
                self._event("bad frame", msg_type, seq, f"{bad_now - bad_before} rejected by CRC/header check; resynchronized, resending")
                return _BAD_FRAME
        return None

    def _reconnect(self, cause: str) -> None:
        """Re-open the same path until ``reconnect_timeout``; HELLO with the same session."""
        self._close_port()
        deadline = time.monotonic() + self.reconnect_timeout
        t0 = time.monotonic()
        last = cause
        old = self.identity
        while True:
            try:
                self._open_port()
                ident = self._hello()
                break
            except DeviceError as exc:
                self._close_port()
                last = str(exc)
                if time.monotonic() >= deadline:
                    raise DeviceError(f"serial device {self.port} is gone ({_one_line(cause)}) and did not come back within "
                                      f"{self.reconnect_timeout:g} s (last: {_one_line(last)})") from None
                time.sleep(0.05)
        if old is not None and (ident.n_in, ident.n_out, ident.kind) != (old.n_in, old.n_out, old.kind):
            self._close_port()
            raise DeviceError(f"a different device answered on {self.port} after reconnect ({ident.kind} {ident.n_in}->{ident.n_out}, was {old.kind} {old.n_in}->{old.n_out})")
        self.identity = ident
        self.counts["reconnects"] += 1
        log.warning("serial %s: reconnected after port loss (%s) in %.2f s", self.port, _one_line(cause), time.monotonic() - t0)
        rebooted = old is not None and ident.describe.get("boot_id") != old.describe.get("boot_id")
        if rebooted and self.written_params:
            log.warning("serial %s: device rebooted; rewriting %d hardware parameters", self.port, len(self.written_params))
            self.counts["rewrites_after_reboot"] += 1
            self.set_params(dict(self.written_params))
