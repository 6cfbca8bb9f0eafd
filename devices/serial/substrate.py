"""``serial:<port>`` as a substrate spec: open a :class:`SerialDevice` for a physical layer.

``open_serial(spec, n_in, n_out, options)`` opens ``spec = "serial:<port>"`` (port: a device
path, an emulator link, ``socket://host:port``), identifies the device and checks that its
sizes are the ones the model needs.  ``options``: the driver's keyword arguments
(``timeout``, ``retries``, ``reconnect_timeout``, ``sample_format``, ``baudrate``).
"""

from __future__ import annotations

from neuro.errors import ConfigError

PREFIX = "serial:"
OPTIONS = ("timeout", "retries", "reconnect_timeout", "sample_format", "baudrate")


def open_serial(spec: str, n_in: int, n_out: int, options: dict | None = None):
    from devices.serial.driver import SerialDevice

    port = str(spec)[len(PREFIX):] if str(spec).startswith(PREFIX) else str(spec)
    if not port:
        raise ConfigError("substrate 'serial:' needs a port, e.g. serial:/dev/ttyUSB0 or serial:/tmp/ttyNH0")
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown option '{unknown[0]}' for substrate {spec}; valid: {', '.join(OPTIONS)}")
    device = SerialDevice(port, **options)
    device.open()
    if (device.n_in, device.n_out) != (int(n_in), int(n_out)):
        got = (device.n_in, device.n_out)
        device.close()
        raise ConfigError(f"device on {port} has {got[0]} inputs and {got[1]} outputs, the model needs {n_in} and {n_out}; "
                          f"start it with matching sizes (e.g. `neuro devices emulate --n-in {n_in} --n-out {n_out}`) or change the model")
    return device
