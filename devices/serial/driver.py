"""``SerialDevice``: the host-side driver of the NeuroHIL serial protocol.

It is both a :class:`devices.base.Device` (open/close/reset/forward/health, context
manager) and a :class:`simulators.substrate.Substrate` (n_in, n_out, input_range,
forward, set_params, get_params, reset, describe), so a physical layer runs on it exactly
as on a simulator.

Delivery guarantees (each sample's measurement is returned exactly once, in order):

* every request gets a fresh sequence number; the same frame (same seq) is resent after
  ``timeout`` seconds without progress (no byte of the request written and no byte of the
  awaited reply received), when its reply arrives corrupted (valid header with this seq,
  wrong CRC), when the device says the request arrived corrupted (REQUEST_CORRUPTED) or on
  a retryable device error, up to ``retries`` times; the device replays its
  cached reply for a seq it has answered, so a retry never measures twice;
* full duplex, never blocked: the port is driven with non-blocking reads and writes from
  one loop, so replies (late ones, replays) are drained while a request is still being
  written; a link whose other end does not read cannot stall the driver in a write;
* every request ends within ``request_timeout`` seconds in all (resends, waits and a
  reconnect included): with its reply or with a one-line :class:`DeviceError`;
* stale bytes cost nothing: frames that fail their checks and are not identifiably the
  awaited reply, replies to other seqs (late replies, replays) and truncated frames are
  skipped by resynchronization and counted, without spending a retry;
* FORWARD replies holding NaN or infinity are a device fault: the samples are measured again
  (a new request) up to ``retries`` times, then a one-line error;
* if the port disappears (EIO, unplugged adapter) the driver re-opens the same path until
  ``reconnect_timeout`` passes, says HELLO again with the same session id (so the device
  keeps its reply cache), re-writes the hardware parameters if the device rebooted, and
  resends the pending request.

Every fault recovered from is counted in :meth:`link_stats` and logged on the
``devices.serial`` logger with its kind and sequence number; :attr:`events` keeps the
records.  Text that comes from the device is made printable and cut (:func:`clean_text`).
Failures retries cannot fix raise a one-line :class:`~devices.errors.DeviceError`; the link
statistics stay available afterwards (:meth:`link_stats` gives the state, the last error and
why the link stopped; :meth:`save_link_stats` writes them into a run directory).
"""

from __future__ import annotations

import json
import logging
import os
import select
import time
import zlib
from collections import Counter, deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import serial
import torch

from devices.errors import DeviceError
from devices.serial import protocol as P

log = logging.getLogger("devices.serial")

LINK_FAULT_KINDS = ("timeout", "bad frame", "stale reply", "device error", "port lost", "reconnects",
                    "request corrupted", "write stalled", "non-finite reply")
"""The fault counters of :meth:`SerialDevice.link_stats` (each a fault the link recovered from)."""


class _PortLost(Exception):
    pass


ERROR_TEXT_LIMIT = 200  # characters of device text kept in a message


@dataclass
class LinkEvent:
    time_s: float
    kind: str
    request: str
    seq: int
    detail: str = ""


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def clean_text(text: object, limit: int = ERROR_TEXT_LIMIT) -> str:
    """One printable line of at most ``limit`` characters (control characters, NULs and line
    breaks become spaces; a longer text is cut and says how much was cut)."""
    s = " ".join("".join(ch if ch.isprintable() else " " for ch in str(text)).split())
    return s if len(s) <= limit else f"{s[:limit]}... ({len(s) - limit} more characters)"


_one_line = clean_text


class SerialDevice:
    """A NeuroHIL device on ``port``: ``/dev/ttyUSB0``, a pty path, ``socket://host:port``, ``loop://``.

    timeout: seconds without progress (no request byte written, no byte of the awaited reply
        received) before the request is resent; a long reply on a slow link is not cut off
        while its bytes keep arriving.
    retries: resends of one request before giving up (also: re-measurements of a FORWARD whose
        reply held NaN or infinity).
    reconnect_timeout: seconds to keep re-opening a vanished port.
    request_timeout: the most seconds one request may take in all, resends, waits and a
        reconnect included; default ``4 (retries + 1) timeout + reconnect_timeout``.
    sample_format: ``"float32"`` or ``"int16"`` (full scale over the device's ranges).
    max_rows: the most samples per FORWARD frame (default: the device's ``max_batch``).  Smaller
        frames survive a noisy link better (a frame is lost if any of its bytes is); a device whose
        rows are measured independently gives the same results for any split.
    max_events: link events kept in :attr:`events` (counts in :meth:`link_stats` are complete).
    """

    def __init__(self, port: str, *, timeout: float = 0.5, retries: int = 8, reconnect_timeout: float = 5.0,
                 request_timeout: float | None = None, baudrate: int = 1_000_000, sample_format: str = "float32",
                 max_rows: int | None = None, max_events: int = 10_000) -> None:
        if sample_format not in P.SAMPLE_FORMATS:
            raise DeviceError(f"sample_format must be one of {', '.join(P.SAMPLE_FORMATS)}, got '{sample_format}'")
        if timeout <= 0 or retries < 0 or reconnect_timeout < 0 or (request_timeout is not None
                                                                     and request_timeout <= 0):
            raise DeviceError(f"serial {port}: timeout and request_timeout must be > 0 s and retries, "
                              "reconnect_timeout >= 0")
        self.port = str(port)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.reconnect_timeout = float(reconnect_timeout)
        self.request_timeout = (float(request_timeout) if request_timeout is not None
                                else 4 * (self.retries + 1) * self.timeout + self.reconnect_timeout)
        # inter-byte timeout of the receive side: an incomplete frame is dropped after this much silence
        # (look-ahead already skips a truncated frame as soon as a complete one follows it)
        self.frame_timeout = max(4 * self.timeout, 0.5)
        self.baudrate = baudrate
        self.sample_format = sample_format
        if max_rows is not None and int(max_rows) < 1:
            raise DeviceError(f"serial {port}: max_rows must be >= 1, got {max_rows}")
        self.max_rows = None if max_rows is None else int(max_rows)
        self.max_events = max_events
        self.identity: P.Identity | None = None
        self.written_params: dict[str, torch.Tensor] = {}
        self.events: list[LinkEvent] = []
        self.counts: Counter = Counter()
        # CRC-32 over every FORWARD reply payload received (once per request, in order), whether
        # delivered or refused as non-finite: equal to the device's ``measured_crc`` exactly when
        # each measurement crossed the link once and in order
        self.delivered_crc = 0
        self.state = "closed"  # closed | open | failed | interrupted
        self.last_error: str | None = None  # the message of the last failure (DeviceError or interruption)
        self.stopped_because: str | None = None  # why the link stopped: the failing request and the cause
        self._serial = None
        self._fd: int | None = None  # the port's descriptor when it has one (posix ports, sockets)
        self._out = bytearray()  # bytes of frames not yet taken by the port
        self._opened = False
        self._parser = P.FrameParser(gap_timeout=self.frame_timeout)
        self._seq = 0
        self._session = int.from_bytes(os.urandom(4), "little")
        self._t0 = time.monotonic()
        self._busy_s = 0.0
        self._request_max_s = 0.0
        self._rejected_seen = 0  # parser rejections already reported as "bad frame" events
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
        self.state = "open"

    def close(self) -> None:
        """Close the port; :meth:`link_stats` and :attr:`events` stay available."""
        self._opened = False
        self._close_port()
        if self.state == "open":
            self.state = "closed"

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
        step = max(1, min(ident.max_batch, fits, self.max_rows or fits))  # rows per FORWARD frame
        outs = []
        t0 = time.perf_counter()
        for start in range(0, max(len(xs), 1), step):
            chunk = xs[start: start + step]
            outs.append(self._measure(chunk, fmt))
        self._busy_s += time.perf_counter() - t0
        self.counts["samples"] += len(xs)
        return torch.from_numpy(np.concatenate(outs, axis=0) if outs else np.zeros((0, ident.n_out), np.float32))

    def _measure(self, chunk: np.ndarray, fmt: int) -> np.ndarray:
        """One FORWARD of ``chunk``; a reply holding NaN/inf is measured again (new seq) up to ``retries`` times."""
        ident = self._ident()
        payload = P.encode_samples(chunk, fmt, ident.input_range)
        for attempt in range(self.retries + 1):
            t1 = time.perf_counter()
            reply = self._request(P.MsgType.FORWARD, payload)
            self._latencies.append(time.perf_counter() - t1)
            self.delivered_crc = zlib.crc32(reply.payload, self.delivered_crc)
            try:
                y = P.decode_samples(reply.payload, ident.output_range)
            except P.ProtocolError as exc:
                raise self._fail(f"serial device {self.port}: malformed FORWARD reply ({exc})", "FORWARD",
                                 reply.seq) from None
            if y.shape != (len(chunk), ident.n_out):
                raise self._fail(f"serial device {self.port} answered {list(y.shape)} for a batch of {len(chunk)}; "
                                 f"expected [{len(chunk)}, {ident.n_out}]", "FORWARD", reply.seq)
            if np.isfinite(y).all():
                return y
            bad = int(y.size - np.isfinite(y).sum())
            self.counts["samples_refused"] += len(chunk)
            self._event("non-finite reply", P.MsgType.FORWARD, reply.seq,
                        f"{bad} of {y.size} values NaN/inf; measuring again ({attempt + 1}/{self.retries})")
        raise self._fail(f"serial device {self.port} returned NaN or infinite measurements in {self.retries + 1} "
                         "FORWARD requests in a row; the device is faulty (check its supply, ADC and firmware)",
                         "FORWARD", reply.seq)

    def health(self) -> dict:
        """Device counters (HEALTH) and this link's counters and throughput."""
        dev = P.DeviceHealth.decode(self._request(P.MsgType.HEALTH).payload)
        return {"port": self.port, "device": dev.__dict__, "link": self.link_stats()}

    def link_stats(self) -> dict:
        """JSON-able summary of the link, also after a failure or interruption.

        Counts of requests, samples, bytes and every fault kind recovered from; throughput and
        latency; ``state`` (open, closed, failed, interrupted), ``last_error`` and
        ``stopped_because`` (the request that failed and why, or None); ``request_timeout_s``
        (the bound per request) and ``request_max_s`` (the longest request so far).
        """
        ps = self._parser.stats
        stats: dict = {k: int(v) for k, v in self.counts.items()}
        stats.update(bad_frames=ps.bad_header + ps.bad_crc, truncated_frames=ps.superseded + ps.expired,
                     bytes_skipped=ps.bytes_skipped)
        stats["busy_s"] = self._busy_s
        stats["samples_per_s"] = stats.get("samples", 0) / self._busy_s if self._busy_s > 0 else None
        lat = sorted(self._latencies)
        stats["forward_median_ms"] = 1e3 * lat[len(lat) // 2] if lat else None
        stats["forward_p95_ms"] = 1e3 * lat[int(0.95 * (len(lat) - 1))] if lat else None
        stats.update(port=self.port, state=self.state, last_error=self.last_error, stopped_because=self.stopped_because,
                     delivered_crc=self.delivered_crc, timeout_s=self.timeout, retries=self.retries,
                     request_timeout_s=self.request_timeout, request_max_s=self._request_max_s,
                     events_kept=len(self.events))
        return stats

    def save_link_stats(self, run_dir) -> list[Path]:
        """Write ``serial_link_<port>.json`` (:meth:`link_stats`) and ``serial_link_<port>.jsonl``
        (every kept link event) into ``run_dir``; safe to call after a failure.  Returns the paths."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        stem = "".join(c if c.isalnum() else "_" for c in self.port).strip("_")
        events = run_dir / f"serial_link_{stem}.jsonl"
        with open(events, "w", encoding="utf-8") as fh:
            for ev in self.events:
                fh.write(json.dumps(asdict(ev)) + "\n")
        summary = run_dir / f"serial_link_{stem}.json"
        summary.write_text(json.dumps(self.link_stats(), indent=1), encoding="utf-8")
        return [summary, events]

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
            self._serial = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=min(0.02, self.timeout),
                                                 write_timeout=max(1.0, self.timeout))
            self._serial.reset_input_buffer()
        except (serial.SerialException, OSError, ValueError) as exc:
            self._serial = None
            errno = getattr(exc, "errno", None)
            cause = os.strerror(errno) if isinstance(errno, int) else _one_line(exc)
            raise DeviceError(f"cannot open serial port {self.port}: {cause}; check the path (`neuro devices list`) "
                              "and that the device is plugged in") from None
        try:
            self._fd = self._serial.fileno()  # posix ports (opened O_NONBLOCK by pyserial) and sockets
            os.set_blocking(self._fd, False)
        except (AttributeError, NotImplementedError, OSError, ValueError, serial.SerialException):
            self._fd = None  # e.g. loop://: pyserial's own calls, which do not block there
        self._out.clear()  # bytes of a vanished connection are void
        stats, self._parser = self._parser.stats, P.FrameParser(gap_timeout=self.frame_timeout)
        self._parser.stats = stats

    def _close_port(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except (serial.SerialException, OSError):
                pass
            self._serial = None
            self._fd = None

    def _event(self, kind: str, request: int, seq: int, detail: str = "") -> None:
        self.counts[kind] += 1
        name = P.MsgType(request).name if request in P.MsgType._value2member_map_ else f"0x{request:02x}"
        if len(self.events) < self.max_events:
            self.events.append(LinkEvent(round(time.monotonic() - self._t0, 4), kind, name, seq, detail))
        # one line per fault at INFO (shown with -v); runs print one summary line per epoch and keep every event
        log.info("serial %s: %s on %s seq %d%s", self.port, kind, name, seq, f" ({detail})" if detail else "")

    def _fail(self, message: str, request: str, seq: int, *, state: str = "failed") -> DeviceError:
        """Record why the link stopped (kept in :meth:`link_stats`) and return the error to raise."""
        self.state = state
        self.last_error = message
        self.stopped_because = f"{request} seq {seq}: {message}"
        self.counts["requests_failed"] += 1
        if len(self.events) < self.max_events:
            self.events.append(LinkEvent(round(time.monotonic() - self._t0, 4), "failed", request, seq, message))
        return DeviceError(message)

    def _hello(self, deadline: float | None = None) -> P.Identity:
        reply = self._request(P.MsgType.HELLO, P.encode_hello_request(self._session), accept_any_version=True,
                              what="HELLO", deadline=deadline)
        if reply.type == P.MsgType.ERROR:
            code, text = self._decode_error(reply, "HELLO")
            if code == P.ErrorCode.VERSION_MISMATCH:
                lo, hi = P.SUPPORTED_VERSIONS
                raise self._fail(f"protocol version mismatch on {self.port}: this driver speaks v{lo}..v{hi}, the "
                                 f"device answered v{reply.version} ({text}); update the driver or the firmware",
                                 "HELLO", reply.seq)
            raise self._fail(f"device on {self.port} refused HELLO: {text}", "HELLO", reply.seq)
        try:
            ident = P.decode_hello_reply(reply.payload)
        except P.ProtocolError as exc:
            raise self._fail(f"device on {self.port} sent a malformed HELLO reply ({_one_line(exc)})", "HELLO",
                             reply.seq) from None
        ident.kind, ident.firmware = _one_line(ident.kind, 64), _one_line(ident.firmware, 64)
        lo, hi = P.SUPPORTED_VERSIONS
        if not lo <= ident.version <= hi:
            raise self._fail(f"protocol version mismatch on {self.port}: this driver speaks v{lo}..v{hi}, the device "
                             f"chose v{ident.version}; update the driver or the firmware", "HELLO", reply.seq)
        return ident

    def _decode_error(self, reply: P.Frame, request: str) -> tuple[int, str]:
        """``(code, printable text)`` of an ERROR frame; a malformed one is a one-line DeviceError."""
        try:
            code, text = P.decode_error(reply.payload)
        except P.ProtocolError as exc:
            raise self._fail(f"serial device {self.port} sent a malformed ERROR reply to {request} ({exc}); "
                             "the firmware does not follow protocol v1", request, reply.seq) from None
        return code, _one_line(text)

    def _request(self, msg_type: int, payload: bytes = b"", *, accept_any_version: bool = False,
                 what: str | None = None, deadline: float | None = None) -> P.Frame:
        """Send one request and return its reply frame (see the delivery guarantees above)."""
        is_hello = msg_type == P.MsgType.HELLO
        name = what or (P.MsgType(msg_type).name if msg_type in P.MsgType._value2member_map_ else f"0x{msg_type:02x}")
        if not is_hello and not self._opened:
            raise DeviceError(f"serial device {self.port} is not open; call open() or use it in a `with` block")
        start = time.monotonic()
        bound = start + self.request_timeout if deadline is None else min(deadline, start + self.request_timeout)
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        self.counts["requests"] += 1
        try:
            if self._serial is None:  # a previous reconnect gave up; try again
                self._reconnect("port was lost earlier", bound)
            return self._exchange(msg_type, seq, P.encode_frame(msg_type, seq, payload), name, is_hello,
                                  accept_any_version, bound)
        except DeviceError as exc:
            if self.last_error != str(exc):  # not recorded yet (e.g. raised by a reconnect)
                self._fail(str(exc), name, seq)
            raise
        except BaseException as exc:  # KeyboardInterrupt, SystemExit, a bug: the evidence stays
            self._fail(f"interrupted ({type(exc).__name__}) while awaiting the reply to {name} seq {seq}", name, seq,
                       state="interrupted")
            raise
        finally:
            self._request_max_s = max(self._request_max_s, time.monotonic() - start)

    def _exchange(self, msg_type: int, seq: int, frame: bytes, name: str, is_hello: bool, accept_any_version: bool,
                  bound: float) -> P.Frame:
        attempt = 0
        recovered: list[str] = []
        start = time.monotonic()
        self._out += frame
        progress = time.monotonic()  # last time a byte of the request went out or a byte of its reply came in
        stalled_since = progress  # last write-stall event (or write progress)

        def give_up(why: str) -> DeviceError:
            return self._fail(f"no reply from serial device {self.port} to {name} {why}; is it powered, connected and "
                              f"running NeuroHIL firmware (protocol v{P.PROTOCOL_VERSION})?", name, seq)

        def resend(kind: str, detail: str) -> None:
            nonlocal attempt, progress
            attempt += 1
            if attempt > self.retries:
                if kind in ("bad frame", "request corrupted"):
                    what = "replies to" if kind == "bad frame" else "copies of"
                    raise self._fail(f"serial link to {self.port} keeps corrupting frames ({attempt} corrupted "
                                     f"{what} {name}); check the cable, baud rate and grounding", name, seq)
                if kind == "device error":
                    raise self._fail(f"serial device {self.port} failed {name} {attempt} times in a row ({detail}); "
                                     "check the device", name, seq)
                raise give_up(f"after {attempt} tries of {self.timeout:g} s")
            self._event(kind, msg_type, seq, f"{detail}; resend {attempt}/{self.retries}")
            recovered.append(kind)
            if not self._out:  # a copy still being written is the same frame: do not queue another
                self._out += frame
            progress = time.monotonic()

        while True:
            now = time.monotonic()
            if now >= bound:
                if self._out and now - progress >= self.timeout:
                    raise self._fail(f"serial port {self.port} took no byte of {name} for {now - progress:.3g} s "
                                     f"(the request's time limit, request_timeout {self.request_timeout:g} s): the "
                                     "device is not reading; check flow control and that its firmware runs", name, seq)
                raise give_up(f"within its time limit of {bound - start:.3g} s (request_timeout "
                              f"{self.request_timeout:g} s) after {attempt + 1} tries")
            try:
                wrote, data = self._pump(min(0.02, max(bound - now, 0.0)))
            except _PortLost as exc:
                if is_hello:  # open() or _reconnect() decide what to do
                    raise self._fail(f"serial port {self.port} failed during HELLO: {exc}", name, seq) from None
                self._event("port lost", msg_type, seq, str(exc))
                self._reconnect(str(exc), bound)
                recovered.append("port lost")
                self._out += frame
                progress = time.monotonic()
                continue
            now = time.monotonic()
            if wrote:
                progress = stalled_since = now
            frames = self._parser.feed(data, now) if data else []
            frames += self._parser.expire(now)
            pending = self._parser.pending_header
            if data and pending is not None and pending[1] == seq:
                progress = now  # our reply is arriving
            for reply in frames:
                if reply.seq != seq or not (reply.type & P.REPLY_BIT or reply.type == P.MsgType.ERROR):
                    self._event("stale reply", reply.type & ~P.REPLY_BIT, reply.seq, f"awaiting seq {seq}; discarded")
                    continue
                if reply.type == P.MsgType.ERROR:
                    code, text = self._decode_error(reply, name)
                    if code == P.ErrorCode.REQUEST_CORRUPTED:
                        resend("request corrupted", text)
                        continue
                    if code in P.ErrorCode._value2member_map_ and P.ErrorCode(code).retryable:
                        resend("device error", text)
                        continue
                    if accept_any_version:
                        return reply
                    code_name = P.ErrorCode(code).name if code in P.ErrorCode._value2member_map_ else f"code {code}"
                    raise self._fail(f"serial device {self.port} rejected {name}: {code_name}: {text}", name, seq)
                if not is_hello and reply.version != self._ident().version:
                    raise self._fail(f"protocol version mismatch on {self.port}: reply is v{reply.version}, session is "
                                     f"v{self.identity.version}", name, seq)
                if reply.type != P.reply_type(msg_type):
                    raise self._fail(f"serial device {self.port} answered {name} seq {seq} with message type "
                                     f"0x{reply.type:02x}", name, seq)
                if recovered:
                    log.info("serial %s: %s seq %d delivered after recovering from %s", self.port, name, seq,
                             ", ".join(recovered))
                return reply
            mine = [t for t, s in self._parser.take_crc_failures()
                    if s == seq and (t & P.REPLY_BIT or t == P.MsgType.ERROR)]
            rejected = self._parser.stats.rejected
            if rejected > self._rejected_seen:
                n, self._rejected_seen = rejected - self._rejected_seen, rejected
                if mine:
                    resend("bad frame", f"{n} rejected by CRC/header check, the reply to seq {seq} among them")
                    continue
                self._event("bad frame", msg_type, seq,
                            f"{n} rejected by CRC/header check or truncated; resynchronized")
            if now - progress >= self.timeout:
                if self._out:  # back-pressure: the port takes nothing; no frame was lost, so no retry is spent
                    if now - stalled_since >= self.timeout:
                        self._event("write stalled", msg_type, seq, f"the port took no byte for {now - progress:.3g} s")
                        stalled_since = now
                else:  # a partial reply stays in the parser: its rest may still come, and look-ahead finds a replay
                    resend("timeout", f"no reply for {self.timeout:g} s")

    def _pump(self, wait: float) -> tuple[int, bytes]:
        """Write what the port takes of the pending bytes and read what has arrived, waiting up to
        ``wait`` s for either; never blocks longer.  Returns ``(bytes written, bytes read)``."""
        if self._fd is None:  # loop:// and friends: pyserial calls, which return at once there
            try:
                wrote = 0
                if self._out:
                    wrote = self._serial.write(bytes(self._out)) or 0
                    del self._out[:wrote]
                data = self._serial.read(self._serial.in_waiting or 1)
            except serial.SerialTimeoutException:
                return 0, b""
            except (serial.SerialException, OSError) as exc:
                raise _PortLost(_one_line(exc)) from None
        else:
            fd = self._fd
            try:
                readable, writable, _ = select.select([fd], [fd] if self._out else [], [], wait)
                wrote = 0
                if writable:
                    try:
                        wrote = os.write(fd, self._out[:65536])
                    except BlockingIOError:
                        wrote = 0
                    del self._out[:wrote]
                data = b""
                if readable:
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        data = b""
                    else:
                        if not data:
                            raise _PortLost("the port reports data but returned none (device disconnected?)")
            except (OSError, ValueError) as exc:
                raise _PortLost(_one_line(exc)) from None
        self.counts["bytes_out"] += wrote
        self.counts["bytes_in"] += len(data)
        return wrote, data

    def _reconnect(self, cause: str, bound: float | None = None) -> None:
        """Re-open the same path until ``reconnect_timeout`` (and the request's bound); HELLO with the same session."""
        self._close_port()
        t0 = time.monotonic()
        deadline = t0 + self.reconnect_timeout
        if bound is not None:
            deadline = min(deadline, bound)
        last = cause
        old = self.identity
        while True:
            try:
                self._open_port()
                ident = self._hello(deadline=deadline)
                break
            except DeviceError as exc:
                self._close_port()
                last = str(exc)
                if time.monotonic() >= deadline:
                    raise DeviceError(f"serial device {self.port} is gone ({_one_line(cause)}) and did not come back "
                                      "within "
                                      f"{self.reconnect_timeout:g} s (last: {_one_line(last)})") from None
                time.sleep(0.05)
        if old is not None and (ident.n_in, ident.n_out, ident.kind) != (old.n_in, old.n_out, old.kind):
            self._close_port()
            raise DeviceError(f"a different device answered on {self.port} after reconnect ({ident.kind} "
                              f"{ident.n_in}->{ident.n_out}, was {old.kind} {old.n_in}->{old.n_out})")
        self.identity = ident
        self.counts["reconnects"] += 1
        if self.state != "open" and self._opened:
            self.state = "open"
        log.warning("serial %s: reconnected after port loss (%s) in %.2f s", self.port, _one_line(cause),
                    time.monotonic() - t0)
        rebooted = old is not None and ident.describe.get("boot_id") != old.describe.get("boot_id")
        if rebooted and self.written_params:
            log.warning("serial %s: device rebooted; rewriting %d hardware parameters", self.port,
                        len(self.written_params))
            self.counts["rewrites_after_reboot"] += 1
            self.set_params(dict(self.written_params))


def write_failure_evidence(substrates, run_dir, error: BaseException | str | None = None) -> Path:
    """Save what the serial links saw when a run failed or was interrupted.

    For every :class:`SerialDevice` among ``substrates`` (other objects are skipped), write
    its ``serial_link_<port>.json/.jsonl`` (:meth:`SerialDevice.save_link_stats`), then
    ``serial_failure.json`` in ``run_dir``: ``{"error", "error_type", "devices": [link_stats, ...]}``,
    where each device's ``state``, ``last_error`` and ``stopped_because`` say which link
    stopped and why.  Never raises for a device (the run's own error is what matters);
    returns the path of ``serial_failure.json``.  Meant for the run writer's failure path::

        except BaseException as exc:
            write_failure_evidence(model_substrates, run.path, exc); raise
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    devices = []
    for sub in substrates:
        if not isinstance(sub, SerialDevice):
            continue
        try:
            sub.save_link_stats(run_dir)
            devices.append(sub.link_stats())
        except Exception as exc:  # noqa: BLE001 - evidence is best effort
            devices.append({"port": getattr(sub, "port", "?"), "evidence_error": clean_text(exc)})
    text = None if error is None else clean_text(error, limit=2000)
    kind = None if error is None or isinstance(error, str) else type(error).__name__
    path = run_dir / "serial_failure.json"
    path.write_text(json.dumps({"error": text, "error_type": kind, "devices": devices}, indent=1), encoding="utf-8")
    return path
