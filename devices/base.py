"""The device contract: what every hardware substrate driver provides."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Device(Protocol):
    """A hardware substrate behind a driver.  Never differentiable.

    open():   connect (idempotent); raises DeviceError with the port/target and the cause.
    close():  release the connection (idempotent).
    reset():  bring the hardware to its power-on state (parameters keep their written values
              unless the device documents otherwise).
    forward(x): measure the outputs for a batch of inputs ``x [batch, n_in]`` -> ``[batch, n_out]``.
    health(): a dict of observable health figures (link errors, temperature, ...).
    """

    def open(self) -> None: ...

    def close(self) -> None: ...

    def reset(self) -> None: ...

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def health(self) -> dict: ...

    def __enter__(self): ...

    def __exit__(self, *exc) -> None: ...
