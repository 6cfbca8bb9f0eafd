"""Device emulator: NeuroHIL firmware in Python, served over a real pseudo-terminal.

:class:`Emulator` runs :class:`devices.serial.firmware.Firmware` for any substrate behind
a pty from :func:`pty.openpty` in raw mode, so the driver talks to it through the same
pyserial/termios path as to a USB-serial board.  It runs in a background thread
(``start``/``stop``, or as a context manager) or in the foreground (``serve_forever``,
used by ``neuro devices emulate``).

Disconnects are emulated the way a USB-serial adapter behaves when unplugged: the pty
master and the emulator's slave descriptor are closed (the host's reads and writes fail
with EIO, as with a vanished ``/dev/ttyUSB0``), the stable link (``link=``, like udev's
``/dev/serial/by-id/...``) is removed, and after ``down_s`` a *new* pty is opened and the
link is re-created to point at its slave.  A host that re-opens the link path reaches the
device again; the firmware state (parameters, reply cache) survives, as a board that kept
its power would.  Without ``link`` the port path changes on reconnect and hosts cannot
find it again, exactly like an unplugged device without a by-id name.

Fault injection (:class:`Faults`, all decisions from one seeded ``random.Random``):
dropped frames (either direction), one flipped bit in a frame (either direction), garbage
bytes before a reply, replies delayed beyond the host's timeout, transient device-side
errors (DEVICE_FAULT: nothing measured), and disconnects at given request counts.  Every
injected fault is appended to :attr:`Emulator.fault_log` and logged on ``devices.emulator``.
These are frame-level faults; byte-level faults independent of the framing (chunks dropped,
flipped, duplicated, truncated or delayed, with back-pressure) come from a
:class:`devices.serial.relay.Relay` placed between the host and the emulator.

The receive side is the firmware's: a :class:`~devices.serial.protocol.FrameParser` with an
inter-byte timeout (``frame_timeout``, default 0.5 s) and look-ahead, so a truncated request
or a stray header is dropped and the next valid request is answered.  The loop is full
duplex and never blocks in a write; replies for a host that does not read are held up to
``max_buffered`` bytes, then discarded.  A request whose header is valid but whose CRC fails
is answered with a REQUEST_CORRUPTED error (a NAK, ``nak=True``), so the host resends at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import select
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from devices.errors import DeviceError
from devices.serial import protocol as P
from devices.serial.firmware import Firmware
from devices.serial.pty_port import Pty, ServingThread, close_pty, open_pty, point_link, remove_link
from simulators.affine import AffineTanhSubstrate  # noqa: F401 - re-exported for users of the emulator
from simulators.errors import SettingError
from simulators.substrate import open_substrate_spec
from simulators.substrate import substrate_names as _substrate_names

log = logging.getLogger("devices.emulator")


@dataclass
class Faults:
    """Fault-injection rates (probabilities per frame) and schedule.

    drop: a request is not heard / a reply is lost.
    corrupt: one random bit is flipped in a reply frame, or in a chunk of request bytes as read
        from the wire before parsing (a small request arrives in one chunk; a large one in
        several, each exposed: noise hits bytes, not frames).
    garbage: 1-32 random bytes are sent before a reply.
    delay: a reply is held back ``delay_s`` seconds (the device looks busy past the host's
        timeout; replies stay in order, so later ones wait behind it).
    error: a FORWARD answers a retryable DEVICE_FAULT (nothing measured).
    disconnect_at: request counts (valid frames received) after which the port vanishes for
        ``down_s`` seconds; that request is executed and its reply lost with the port.
    """

    drop: float = 0.0
    corrupt: float = 0.0
    garbage: float = 0.0
    delay: float = 0.0
    delay_s: float = 0.5
    error: float = 0.0
    disconnect_at: tuple[int, ...] = ()
    down_s: float = 0.2

    def check(self) -> None:
        for name in ("drop", "corrupt", "garbage", "delay", "error"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SettingError(f"fault rate {name} must be a probability in [0, 1], got {value}")
        if self.delay_s < 0 or self.down_s < 0:
            raise SettingError("fault delay_s and down_s must be >= 0 seconds")


@dataclass
class FaultRecord:
    time_s: float
    kind: str
    seq: int | None = None


class Emulator(ServingThread):
    """Serve ``substrate`` over a pty.  ``port`` is the path hosts open (the link, if given)."""

    thread_name = "neurohil-emulator"

    def __init__(self, substrate, *, faults: Faults | None = None, seed: int = 0, link: str | os.PathLike | None = None,
                 protocol_versions: tuple[int, int] = P.SUPPORTED_VERSIONS, max_batch: int = 256,
                 kind: str | None = None, max_buffered: int = 8 << 20, frame_timeout: float = 0.5,
                 nak: bool = True) -> None:
        self.faults = faults or Faults()
        self.faults.check()
        self.rng = random.Random(seed)
        self.firmware = Firmware(substrate, kind=kind or str(substrate.describe().get("kind", "emulator")),
                                 versions=protocol_versions, max_batch=max_batch, inject_error=self._inject_error)
        self.link = Path(link) if link is not None else None
        self.max_buffered = max_buffered  # reply bytes held for a host that is not reading
        if frame_timeout <= 0:
            raise SettingError(f"frame_timeout must be > 0 seconds, got {frame_timeout}")
        self.frame_timeout = float(frame_timeout)  # inter-byte timeout: an incomplete request is dropped after it
        self.nak = nak  # answer a request that fails its CRC (valid header) with REQUEST_CORRUPTED
        self._out = bytearray()  # bytes being sent
        self._queue: deque[tuple[float, bytes]] = deque()  # (send time, reply) not yet sent
        self.fault_log: list[FaultRecord] = []
        self.requests = 0
        self.disconnects = 0
        self._parser = P.FrameParser(gap_timeout=self.frame_timeout)
        self._pty: Pty | None = None
        super().__init__()
        self._t0 = time.monotonic()
        self._pending_disconnects = sorted(self.faults.disconnect_at)

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> str:
        if self.link is not None:
            return str(self.link)
        if self._pty is None:
            raise DeviceError("emulator is not running; call start() first")
        return self._pty.path

    @property
    def slave_path(self) -> str | None:
        return self._pty.path if self._pty else None

    def _plug(self) -> None:
        self._pty = open_pty()
        self._parser = P.FrameParser(gap_timeout=self.frame_timeout)
        self._out.clear()  # whatever was in flight was lost with the old port
        self._queue.clear()
        if self.link is not None:
            point_link(self.link, self._pty.path)

    def _unplug(self) -> None:
        remove_link(self.link)
        close_pty(self._pty)
        self._pty = None

    def open(self) -> Emulator:
        """Open the pty (and link) without serving yet, so ``port`` can be announced first."""
        if self._pty is None:
            self._plug()
        return self

    def _acquire(self) -> None:
        self.open()

    def _release(self) -> None:
        self._unplug()

    def serve_forever(self, duration_s: float | None = None) -> None:
        """Serve in the calling thread until ``duration_s`` passes, :meth:`request_stop` or KeyboardInterrupt."""
        self.open()
        timer = threading.Timer(duration_s, self._stop.set) if duration_s is not None else None
        if timer is not None:
            timer.start()
        try:
            self._loop()
        finally:
            if timer is not None:
                timer.cancel()
            self._unplug()

    def fault_summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rec in self.fault_log:
            counts[rec.kind] = counts.get(rec.kind, 0) + 1
        return counts

    # ---------------------------------------------------------------- the loop
    def _record(self, kind: str, seq: int | None = None) -> None:
        rec = FaultRecord(round(time.monotonic() - self._t0, 4), kind, seq)
        self.fault_log.append(rec)
        log.info("emulator injected %s%s", kind, "" if seq is None else f" (seq {seq})")

    def _chance(self, p: float) -> bool:
        return p > 0 and self.rng.random() < p

    def _inject_error(self, frame: P.Frame) -> bool:
        if self._chance(self.faults.error):
            self._record("device error", frame.seq)
            return True
        return False

    def _flip_bit(self, data: bytes) -> bytes:
        buf = bytearray(data)
        i = self.rng.randrange(len(buf) * 8)
        buf[i // 8] ^= 1 << (i % 8)
        return bytes(buf)

    def _loop(self) -> None:
        """Full duplex, like a UART with FIFOs: keep reading requests while replies drain."""
        while not self._stop.is_set():
            pt = self._pty
            if pt is None:
                return
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:  # FIFO: a delayed reply holds back later ones
                self._out += self._queue.popleft()[1]
            wait = 0.05 if not self._queue else min(0.05, max(0.0, self._queue[0][0] - now))
            try:
                readable, writable, _ = select.select([pt.master], [pt.master] if self._out else [], [], wait)
                if writable and self._out:
                    n = os.write(pt.master, self._out)
                    del self._out[:n]
                data = os.read(pt.master, 65536) if readable else b""
            except BlockingIOError:
                continue
            except OSError:
                return  # the pty went away under us (stop())
            now = time.monotonic()
            frames = self._parser.expire(now)  # an incomplete request older than frame_timeout is dropped
            if data and self._chance(self.faults.corrupt):
                self._record("corrupted request")
                data = self._flip_bit(data)
            if data:
                frames += self._parser.feed(data, now)
            for frame in frames:
                self._serve(frame)
                if self._pty is None or self._stop.is_set():
                    break
            for msg_type, seq in self._parser.take_crc_failures():  # NAK corrupted requests: the host resends at once
                nak = self.firmware.nak(msg_type, seq) if self.nak else None
                if nak is not None and self._pty is not None:
                    self._queue.append((time.monotonic(), nak))

    def _serve(self, frame: P.Frame) -> None:
        f = self.faults
        if frame.type & P.REPLY_BIT or frame.type == P.MsgType.ERROR:
            return  # not a request (e.g. an echo); a device ignores it
        if self._chance(f.drop):
            self._record("dropped request", frame.seq)
            return
        self.requests += 1
        reply = self.firmware.handle(frame, self._parser.stats)
        if self._pending_disconnects and self.requests >= self._pending_disconnects[0]:
            self._pending_disconnects.pop(0)
            self._disconnect(frame.seq)
            return
        if self._chance(f.drop):
            self._record("dropped reply", frame.seq)
            return
        if self._chance(f.corrupt):
            self._record("corrupted reply", frame.seq)
            reply = self._flip_bit(reply)
        if self._chance(f.garbage):
            self._record("garbage bytes", frame.seq)
            reply = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 32))) + reply
        ready = time.monotonic()
        if self._chance(f.delay):
            self._record(f"reply delayed {f.delay_s:g} s", frame.seq)
            ready += f.delay_s
        if len(self._out) + sum(len(r) for _, r in self._queue) > self.max_buffered:
            self._record("reply discarded: host not reading", frame.seq)
            return
        self._queue.append((ready, reply))

    def _disconnect(self, seq: int) -> None:
        self.disconnects += 1
        self._record("disconnect", seq)
        self._unplug()
        if not self._stop.wait(self.faults.down_s):
            self._plug()
            log.info("emulator reconnected at %s", self._pty.path)


def model_substrates(model) -> list:
    """The distinct substrate objects of a model's layers (modules with a ``substrate``), in order."""
    seen: dict[int, object] = {}
    for module in model.modules():
        sub = getattr(module, "substrate", None)
        if sub is not None and id(sub) not in seen:
            seen[id(sub)] = sub
    return list(seen.values())


def emulators_for_model(model, link_dir: str | os.PathLike, *, faults: Faults | None = None, seed: int = 0,
                        max_batch: int = 256) -> list[Emulator]:
    """One started emulator per substrate of ``model`` (e.g. each block of a ``physical_mlp``
    built in-process from a config), at ``link_dir/block<k>``: the same physics, seeds and
    options the in-process run uses, now behind serial links.  Faults are seeded ``seed + k``."""
    link_dir = Path(link_dir)
    link_dir.mkdir(parents=True, exist_ok=True)
    subs = model_substrates(model)
    if not subs:
        raise SettingError("this model has no layer substrates to emulate (use a model such as physical_mlp)")
    emus: list[Emulator] = []
    try:
        for k, sub in enumerate(subs):
            f = dataclasses.replace(faults) if faults is not None else None
            emu = Emulator(sub, faults=f, seed=seed + k, link=link_dir / f"block{k}", max_batch=max_batch)
            emus.append(emu.start())
    except BaseException:
        for e in emus:
            e.stop()
        raise
    return emus


# --------------------------------------------------------------- substrates
def substrate_names() -> list[str]:
    """The substrate specs the emulator can serve (every emulatable family of the one registry)."""
    return _substrate_names(emulatable_only=True)


def make_substrate(spec: str, n_in: int, n_out: int, seed: int = 0, options: dict | None = None):
    """The substrate the emulator serves, e.g. ``affine`` or ``wave:scattering`` with its ``options``
    (built exactly as :func:`neuro.substrates.open_substrate` builds it in-process for the same seed)."""
    return open_substrate_spec(spec, n_in, n_out, seed=seed, options=options, emulatable_only=True)
