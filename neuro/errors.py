"""Errors a user sees.

Every error that reaches a user is a :class:`NeuroError`: its message is one line that
says what was wrong and what to do.  The CLI prints it as ``error: <message>`` and exits
with status 2, without a traceback.  Library code raises the most specific subclass.
"""


class NeuroError(Exception):
    """Base class: a problem the user can fix; the message is one actionable line."""


class ConfigError(NeuroError):
    """A configuration file or flag is wrong (unknown key, bad type, value out of range)."""


class DataError(NeuroError):
    """A data file is missing, truncated or malformed."""


class IncompatibleError(NeuroError):
    """A learning rule needs something a layer or substrate cannot provide."""


class CheckpointError(NeuroError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class DeviceError(NeuroError):
    """A hardware device (or its emulator) failed in a way retries could not fix."""


class HardwareGradientError(NeuroError, RuntimeError):
    """Someone tried to backpropagate through a layer that runs on non-differentiable hardware."""
