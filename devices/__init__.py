"""Hardware behind drivers: serial hardware-in-the-loop, the Lava/Loihi runner, the device emulator.

Every device implements the :class:`devices.base.Device` contract (open, close, reset,
forward, health; usable as a context manager).
"""
