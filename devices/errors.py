"""Errors of hardware drivers (serial HIL, Lava runner), independent of :mod:`neuro`."""

from __future__ import annotations

from simulators.errors import UserFacingError


class DeviceError(UserFacingError, RuntimeError):
    """A hardware device (or its emulator) failed in a way retries could not fix; one line."""
