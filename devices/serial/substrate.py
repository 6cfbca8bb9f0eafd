"""``serial:<port>`` as a substrate spec: open a :class:`SerialDevice` for a physical layer.

``open_serial(spec, n_in, n_out, options)`` opens ``spec = "serial:<port>"`` (port: a device
path, an emulator link, ``socket://host:port``), identifies the device and checks that its
sizes are the ones the model needs.

``options`` are the layer's ``model.substrate_options``.  The driver's settings go in the
sub-table ``serial`` (``timeout``, ``retries``, ``reconnect_timeout``, ``request_timeout``,
``sample_format``, ``baudrate``, ``max_rows``; see :class:`devices.serial.driver.SerialDevice`).
``request_timeout`` is the bound on one request in all (resends and a reconnect included):
a run through a bad link ends with a clear error within it, never hangs.  Every other key
describes the physics, which on a device is the device's business: each one the device
reports in its HELLO (``describe``; ``n_control`` is the length of its ``control``
parameter) must agree with it, so a config written for the in-process simulator is checked
against the hardware it now runs on; keys the device does not report are logged as unchecked.
"""

from __future__ import annotations

import logging
import math

from simulators.errors import SettingError
from simulators.substrate import SUBSTRATE_FAMILIES

PREFIX = "serial:"
DRIVER_OPTIONS = ("timeout", "retries", "reconnect_timeout", "request_timeout", "sample_format", "baudrate",
                  "max_rows")
log = logging.getLogger("devices.serial")


def _device_value(device, key: str):
    ident = device.identity
    if key == "n_control" and "control" in ident.params:
        return int(math.prod(ident.params["control"]))
    return ident.describe.get(key)


def open_serial(spec: str, n_in: int, n_out: int, options: dict | None = None):
    from devices.serial.driver import SerialDevice

    port = str(spec)[len(PREFIX):] if str(spec).startswith(PREFIX) else str(spec)
    if not port:
        raise SettingError("substrate 'serial:' needs a port, e.g. serial:/dev/ttyUSB0 or serial:/tmp/ttyNH0")
    options = dict(options or {})
    driver = options.pop("serial", {}) or {}
    if not isinstance(driver, dict):
        raise SettingError("model.substrate_options.serial must be a table of driver settings "
                           f"({', '.join(DRIVER_OPTIONS)})")
    unknown = sorted(set(driver) - set(DRIVER_OPTIONS))
    if unknown:
        raise SettingError(f"unknown serial driver option '{unknown[0]}' for {spec}; "
                           f"valid: {', '.join(DRIVER_OPTIONS)}")
    device = SerialDevice(port, **driver)
    device.open()
    try:
        if (device.n_in, device.n_out) != (int(n_in), int(n_out)):
            raise SettingError(f"device on {port} has {device.n_in} inputs and {device.n_out} outputs, the model "
                               f"needs {n_in} and {n_out}; start it with matching sizes (e.g. `neuro devices emulate "
                               f"--n-in {n_in} --n-out {n_out}`) or change the model")
        unchecked = []
        for key, want in options.items():
            have = _device_value(device, key)
            numbers = isinstance(have, (int, float)) and isinstance(want, (int, float))
            if have is None:
                unchecked.append(key)
            elif have != want and not (numbers and math.isclose(have, want)):
                raise SettingError(f"model.substrate_options.{key} = {want!r}, but the device on {port} reports "
                                   f"{have!r}; set the device up to match or change the config")
        if unchecked:
            log.warning("serial %s: the device does not report %s; not checked", port, ", ".join(sorted(unchecked)))
    except BaseException:
        device.close()
        raise
    return device


@SUBSTRATE_FAMILIES.register("serial", variants=None, variant_hint="<port>", emulatable=False)
def open_serial_family(variant: str, n_in: int, n_out: int, *, seed: int = 0, options: dict):
    """``serial:<port>``: hardware (or ``neuro devices emulate``) behind the NeuroHIL serial protocol."""
    return open_serial(PREFIX + variant, n_in, n_out, options)
