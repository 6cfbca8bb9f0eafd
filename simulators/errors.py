"""Errors of the lower packages (:mod:`simulators`, :mod:`devices`), independent of :mod:`neuro`.

:class:`UserFacingError` is the project-wide contract for an error a user can fix: its
message is one line that says what was wrong and what to do.  The ``neuro`` command line
prints any of them as ``error: <message>`` and exits with status 2, without a traceback.
:mod:`neuro.errors` derives its own kinds from it; the lower packages raise these, which
are also ``ValueError`` / ``RuntimeError`` for code that does not know this module.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """A problem the user can fix; the message is one actionable line."""


class SettingError(UserFacingError, ValueError):
    """A setting of a simulator or device is out of range or of the wrong kind."""


class UnknownNameError(SettingError, KeyError):
    """A name (substrate family, engine, rule, ...) that no registry holds."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class IncompatibleSettingError(UserFacingError, ValueError):
    """A combination of settings that a simulator or engine cannot express."""


class SubstrateFault(UserFacingError, RuntimeError):
    """A substrate refused a request (e.g. inputs outside its range), as a device would."""
