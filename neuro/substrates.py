"""From a config string to a substrate object: the one place that maps names to substrates.

``open_substrate(spec, n_in, n_out, seed=..., options=...)`` with ``spec``:

- ``wave:scattering``, ``wave:saturable``, ``wave:oscillators``: the simulators in
  :mod:`simulators.wave`; ``options`` are fields of :class:`simulators.wave.WaveOptions`
  (``n_control``, ``noise``, ``drift``, ``perturb_at``, ...).
- ``serial:<port>``: a device (or ``neuro devices emulate``) behind the NeuroHIL serial
  protocol, opened with :class:`devices.SerialDevice`; driver settings in ``options["serial"]``,
  other options are checked against what the device reports (see :mod:`devices.serial.substrate`).

Everything returned implements :class:`simulators.substrate.Substrate`.  Unknown names or
options are a one-line :class:`~neuro.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses

from devices.serial.substrate import open_serial
from neuro.errors import ConfigError
from simulators.substrate import Substrate
from simulators.wave import KINDS as WAVE_KINDS
from simulators.wave import WaveOptions, WaveSubstrate

SUBSTRATE_NAMES: tuple[str, ...] = (*(f"wave:{k}" for k in WAVE_KINDS), "serial:<port>")


def open_substrate(spec: str, n_in: int, n_out: int, *, seed: int = 0, options: dict | None = None) -> Substrate:
    """Open the substrate named ``spec`` with ``n_in`` inputs and ``n_out`` outputs."""
    import difflib

    options = dict(options or {})
    family, _, name = str(spec).partition(":")
    if family == "wave" and name in WAVE_KINDS:
        fields = {f.name for f in dataclasses.fields(WaveOptions)} - {"kind", "n_in", "n_out", "seed"}
        for key in options:
            if key not in fields:
                close = difflib.get_close_matches(key, sorted(fields), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"unknown option '{key}' for substrate {spec}{hint}; valid: {', '.join(sorted(fields))}")
        if "perturb_at" in options:
            options["perturb_at"] = tuple(options["perturb_at"])
        try:
            return WaveSubstrate(WaveOptions(kind=name, n_in=int(n_in), n_out=int(n_out), seed=int(seed), **options))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"substrate {spec}: {exc}") from None
    if family == "serial":  # hardware (or the emulator) behind the NeuroHIL serial protocol
        return open_serial(spec, n_in, n_out, options)
    close = difflib.get_close_matches(str(spec), SUBSTRATE_NAMES, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(f"unknown substrate '{spec}'{hint}; valid: {', '.join(SUBSTRATE_NAMES)}")
