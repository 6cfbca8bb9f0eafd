"""Errors a user sees.

Every error that reaches a user is a :class:`simulators.errors.UserFacingError`: its message
is one line that says what was wrong and what to do.  The CLI prints it as
``error: <message>`` and exits with status 2, without a traceback.  The lower packages
(:mod:`simulators`, :mod:`devices`) define their own kinds in :mod:`simulators.errors` and
:mod:`devices.errors`; :mod:`neuro` adds the kinds below and re-exports
:class:`~devices.errors.DeviceError`.  Library code raises the most specific subclass.
"""

from devices.errors import DeviceError
from simulators.errors import IncompatibleSettingError, SettingError, UserFacingError


class NeuroError(UserFacingError):
    """Base class of :mod:`neuro`'s errors: a problem the user can fix; one actionable line."""


class ConfigError(NeuroError, SettingError):
    """A configuration file or flag is wrong (unknown key, bad type, value out of range)."""


class DataError(NeuroError):
    """A data file is missing, truncated or malformed."""


class IncompatibleError(NeuroError, IncompatibleSettingError):
    """A learning rule needs something a layer or substrate cannot provide."""


class CheckpointError(NeuroError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class HardwareGradientError(NeuroError, RuntimeError):
    """Someone tried to backpropagate through a layer that runs on non-differentiable hardware."""


__all__ = ["CheckpointError", "ConfigError", "DataError", "DeviceError", "HardwareGradientError",
           "IncompatibleError", "NeuroError", "UserFacingError"]
