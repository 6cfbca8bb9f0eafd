"""A pseudo-terminal that stands in for a serial port, and the background thread that serves one.

Shared by the device emulator (:mod:`devices.emulator`: a simulator behind a pty) and the fault-injecting
relay (:mod:`devices.serial.relay`: a pty in front of another port).

- :func:`open_pty`: a pty pair in raw mode (no echo, no line editing, 8-bit clean: what a serial port is), the
  master side non-blocking; hosts open the slave's path.
- :func:`close_pty` / :func:`point_link` / :func:`remove_link`: closing both ends, and a stable path (symlink)
  re-pointed atomically after a replug, as udev re-creates ``/dev/serial/by-id/...``.
- :class:`ServingThread`: start/stop/context-manager lifecycle of a daemon thread running ``_loop`` until
  ``_stop`` is set; subclasses say what to open before serving (``_acquire``) and close after (``_release``).
"""

from __future__ import annotations

import os
import pty
import threading
import tty
from dataclasses import dataclass
from pathlib import Path

from devices.errors import DeviceError


@dataclass
class Pty:
    master: int
    slave: int
    path: str


def open_pty() -> Pty:
    """A new raw-mode pty pair; ``path`` is the slave's device path."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return Pty(master, slave, os.ttyname(slave))


def close_pty(p: Pty | None) -> None:
    """Close both ends of ``p`` (ignoring ends already closed)."""
    if p is None:
        return
    for fd in (p.master, p.slave):
        try:
            os.close(fd)
        except OSError:
            pass


def point_link(link: Path, target: str) -> None:
    """Make ``link`` a symlink to ``target``, atomically (a host never sees the path missing)."""
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def remove_link(link: Path | None) -> None:
    if link is not None:
        link.unlink(missing_ok=True)


class ServingThread:
    """Lifecycle of a component that serves a port from a daemon thread.

    Subclasses implement ``_loop()`` (return when ``self._stop`` is set), ``_acquire()`` (open what serving
    needs; called by :meth:`start`) and ``_release()`` (close it; called by :meth:`stop`), and set
    ``thread_name``.
    """

    thread_name = "neurohil-serving"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _acquire(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        raise NotImplementedError

    def start(self):
        """Open the port and serve in a daemon thread; returns self (the port is ready)."""
        if self._thread is not None:
            return self
        self._stop.clear()
        self._acquire()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, join the thread, then release the port (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise DeviceError(f"{self.thread_name} thread did not stop within {timeout} s")
            self._thread = None
        self._release()

    def request_stop(self) -> None:
        """Ask the serving loop to end (safe from signal handlers and other threads)."""
        self._stop.set()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
