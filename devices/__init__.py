"""Hardware behind drivers: serial hardware-in-the-loop, the Lava/Loihi runner, the device emulator.

Every device implements the :class:`devices.base.Device` contract (open, close, reset,
forward, health; usable as a context manager).
"""


def __getattr__(name: str):
    # ``devices.SerialDevice`` without importing pyserial for users of other devices.
    if name == "SerialDevice":
        from devices.serial import SerialDevice

        return SerialDevice
    raise AttributeError(f"module 'devices' has no attribute {name!r}")
