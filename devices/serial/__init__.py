"""Serial hardware-in-the-loop: the wire protocol (:mod:`.protocol`), the device-side state
machine (:mod:`.firmware`) and the host driver :class:`SerialDevice` (:mod:`.driver`)."""

from devices.serial.driver import SerialDevice

__all__ = ["SerialDevice"]
