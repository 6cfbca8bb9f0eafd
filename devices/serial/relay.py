"""A byte-level fault injector: a pty <-> pty relay between a host and a device.

:class:`Relay` opens the device's port (a pty path, e.g. an :class:`devices.emulator.Emulator`
link) and offers a new pty of its own (``relay.port``, optionally behind a stable ``link``)
to the host.  One thread copies bytes both ways, knowing nothing of the frame layout, and
injects faults into the byte *chunks* it moves:

* each read takes ``1..max_chunk`` bytes (a random size), so chunk boundaries fall anywhere
  in a frame: inside a header, a payload, a CRC, or across two frames;
* per chunk and per direction, with the probabilities of :class:`ByteFaults`: the chunk is
  dropped; 1-3 distinct random bits of it are flipped; it is written twice; only a random prefix of
  it is written (truncated); or the relay stalls ``delay_s`` seconds before writing it;
* back-pressure: writes block until the other side has taken every byte.  While blocked
  (or stalled) the relay reads nothing from either side, like a serial adapter or a USB hub
  whose buffers are full.  A host that does not read while it writes deadlocks against this
  relay; a full-duplex host does not.

All decisions come from one seeded ``random.Random`` per direction (``seed``), so a run's
faults are reproducible up to the timing of the reads.  Every fault is counted per
direction in :attr:`counts` and kept (up to ``max_log`` records) in :attr:`fault_log`.

If the device's port vanishes (its reads fail with EIO, e.g. the emulator's disconnect
fault), the relay unplugs its host side as well (the host sees EIO and reconnects), waits
for the device path to reappear and offers a new pty at the same ``link``.

Used by the tests (``tests/test_serial_relay.py``); any pty-speaking device works behind it.
"""

from __future__ import annotations

import logging
import os
import random
import select
import time
import tty
from dataclasses import dataclass, fields
from pathlib import Path

from devices.errors import DeviceError
from devices.serial.pty_port import Pty, ServingThread, close_pty, open_pty, point_link, remove_link
from simulators.errors import SettingError

log = logging.getLogger("devices.relay")

TO_DEVICE = "to_device"
TO_HOST = "to_host"


@dataclass
class ByteFaults:
    """Per-chunk fault probabilities of one direction, and the chunk size.

    drop: the chunk is discarded.  flip: 1-3 distinct random bits of it are flipped.  duplicate: it is
    written twice.  truncate: only a random prefix (possibly empty) is written.  delay: the
    relay stalls ``delay_s`` seconds (reading and writing nothing) before writing it.
    At most one of drop/flip/duplicate/truncate hits a chunk (drawn in that order); a delay
    may come on top.  max_chunk: reads take a random 1..max_chunk bytes.
    """

    drop: float = 0.0
    flip: float = 0.0
    duplicate: float = 0.0
    truncate: float = 0.0
    delay: float = 0.0
    delay_s: float = 0.05
    max_chunk: int = 4096

    def check(self) -> None:
        for f in fields(self):
            if f.name in ("drop", "flip", "duplicate", "truncate", "delay"):
                value = getattr(self, f.name)
                if not 0.0 <= value <= 1.0:
                    raise SettingError(f"byte fault rate {f.name} must be a probability in [0, 1], got {value}")
        if self.delay_s < 0:
            raise SettingError(f"byte fault delay_s must be >= 0 seconds, got {self.delay_s}")
        if self.max_chunk < 1:
            raise SettingError(f"max_chunk must be >= 1 byte, got {self.max_chunk}")


@dataclass
class ByteFaultRecord:
    time_s: float
    direction: str
    kind: str
    size: int


def _raw_fd(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        tty.setraw(fd)
    except OSError:
        pass  # not a tty (a fifo, a socket pair in tests): bytes pass as they are
    return fd


class Relay(ServingThread):
    """Relay bytes between ``device_port`` and a new pty (``port``), injecting byte-level faults.

    faults: :class:`ByteFaults` for both directions; ``to_host`` overrides the device->host one.
    seed: seeds the two directions' random streams (``seed`` and ``seed + 1``).
    link: a stable path (symlink) to the relay's host-side pty, re-created after a replug.
    """

    thread_name = "neurohil-relay"

    def __init__(self, device_port: str | os.PathLike, *, faults: ByteFaults | None = None,
                 to_host: ByteFaults | None = None, seed: int = 0, link: str | os.PathLike | None = None,
                 max_log: int = 100_000) -> None:
        self.device_port = str(device_port)
        self.faults = {TO_DEVICE: faults or ByteFaults(), TO_HOST: to_host or faults or ByteFaults()}
        for f in self.faults.values():
            f.check()
        self.rng = {TO_DEVICE: random.Random(seed), TO_HOST: random.Random(seed + 1)}
        self.link = Path(link) if link is not None else None
        self.max_log = max_log
        self.fault_log: list[ByteFaultRecord] = []
        self.counts = {d: {"chunks": 0, "bytes_in": 0, "bytes_out": 0, "drop": 0, "flip": 0, "duplicate": 0,
                           "truncate": 0, "delay": 0} for d in (TO_DEVICE, TO_HOST)}
        self.blocked_s = {TO_DEVICE: 0.0, TO_HOST: 0.0}  # time spent blocked in writes (back-pressure)
        self.blocked_on: str | None = None  # the direction whose write is blocked right now
        self.replugs = 0
        self._master: int | None = None
        self._slave: int | None = None
        self._dev: int | None = None
        super().__init__()
        self._t0 = time.monotonic()

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> str:
        """The path a host opens (the link if given, else the pty's slave path)."""
        if self.link is not None:
            return str(self.link)
        if self._slave is None:
            raise DeviceError("relay is not running; call start() first")
        return os.ttyname(self._slave)

    def _acquire(self) -> None:
        self._dev = _raw_fd(self.device_port)
        self._plug_host()

    def _release(self) -> None:
        self._unplug_host()
        self._close_dev()

    def summary(self) -> dict[str, dict[str, int]]:
        """Per direction: chunks and bytes moved and faults injected."""
        return {d: dict(c) for d, c in self.counts.items()}

    def _plug_host(self) -> None:
        p = open_pty()
        self._master, self._slave = p.master, p.slave
        if self.link is not None:
            point_link(self.link, p.path)

    def _unplug_host(self) -> None:
        remove_link(self.link)
        if self._master is not None:
            close_pty(Pty(self._master, self._slave, ""))
        self._master = self._slave = None

    def _close_dev(self) -> None:
        if self._dev is not None:
            try:
                os.close(self._dev)
            except OSError:
                pass
            self._dev = None

    # ---------------------------------------------------------------- the loop
    def _record(self, direction: str, kind: str, size: int) -> None:
        self.counts[direction][kind] += 1
        if len(self.fault_log) < self.max_log:
            self.fault_log.append(ByteFaultRecord(round(time.monotonic() - self._t0, 4), direction, kind, size))

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                if self._dev is None or self._master is None:
                    if not self._replug():
                        return
                    continue
                try:
                    readable, _, _ = select.select([self._master, self._dev], [], [], 0.05)
                except (OSError, ValueError):
                    readable = []
                for fd in readable:
                    direction = TO_DEVICE if fd == self._master else TO_HOST
                    n = self.rng[direction].randint(1, self.faults[direction].max_chunk)
                    try:
                        data = os.read(fd, n)
                    except BlockingIOError:
                        continue
                    except OSError:
                        if direction == TO_HOST:  # the device vanished: unplug the host side too
                            self._device_lost()
                            break
                        continue  # host side: no host has the pty open right now (EIO); nothing to relay
                    if data:
                        self._forward(direction, data)
                    if self._stop.is_set() or self._dev is None:
                        break
        except _Stopped:
            return

    def _device_lost(self) -> None:
        log.info("relay: device %s vanished; unplugging the host side", self.device_port)
        self._close_dev()
        self._unplug_host()

    def _replug(self) -> bool:
        """Wait for the device path to come back; re-open it and offer a new host pty."""
        while not self._stop.wait(0.02):
            try:
                self._dev = _raw_fd(self.device_port)
            except OSError:
                continue
            self._plug_host()
            self.replugs += 1
            log.info("relay: device %s is back; host side at %s", self.device_port, self.port)
            return True
        return False

    def _forward(self, direction: str, data: bytes) -> None:
        f, rng = self.faults[direction], self.rng[direction]
        self.counts[direction]["chunks"] += 1
        self.counts[direction]["bytes_in"] += len(data)
        out = [data]
        if rng.random() < f.drop:
            self._record(direction, "drop", len(data))
            out = []
        elif rng.random() < f.flip:
            buf = bytearray(data)
            for bit in rng.sample(range(len(buf) * 8), min(rng.randint(1, 3), len(buf) * 8)):  # distinct bits
                buf[bit // 8] ^= 1 << (bit % 8)
            out = [bytes(buf)]
            self._record(direction, "flip", len(data))
        elif rng.random() < f.duplicate:
            out = [data, data]
            self._record(direction, "duplicate", len(data))
        elif rng.random() < f.truncate:
            out = [data[: rng.randrange(len(data))]]
            self._record(direction, "truncate", len(data))
        if rng.random() < f.delay:
            self._record(direction, "delay", len(data))
            if self._stop.wait(f.delay_s):
                raise _Stopped
        fd = self._dev if direction == TO_DEVICE else self._master
        for chunk in out:
            self._write_all(direction, fd, chunk)

    def _write_all(self, direction: str, fd: int | None, data: bytes) -> None:
        """Blocking write (back-pressure): return only when every byte is taken; nothing else runs meanwhile."""
        view = memoryview(data)
        t0 = None
        while view:
            if self._stop.is_set():
                raise _Stopped
            if fd is None:
                return
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                n = 0
            except OSError:
                if direction == TO_DEVICE:
                    self._device_lost()
                return  # host side gone (no reader): the bytes are lost, as on a cable
            self.counts[direction]["bytes_out"] += n
            view = view[n:]
            if view:
                if t0 is None:
                    t0 = time.monotonic()
                    self.blocked_on = direction
                try:
                    select.select([], [fd], [], 0.05)
                except (OSError, ValueError):
                    return
        if t0 is not None:
            self.blocked_s[direction] += time.monotonic() - t0
            self.blocked_on = None


class _Stopped(Exception):
    """stop() was called while the relay was blocked or stalled."""
