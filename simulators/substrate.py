"""The contract of a black-box substrate: what a physical layer, its emulated firmware and
its serial driver all provide, so a layer can run on any of them unchanged.

A substrate maps a batch of inputs to measured outputs.  It may have *hardware
parameters* (values written to the device, e.g. control voltages or phase settings) and
*hidden parameters* (the physics the learner may not read).  Measurements may be noisy
and the hidden parameters may drift; nothing here is differentiable.

``n_in``, ``n_out``: input and output widths.
``input_range``: ``(low, high)`` that inputs must lie in (device units).
``forward(x [batch, n_in]) -> y [batch, n_out]``: one measurement per sample (float32).
``set_params(params)``: write hardware parameters (name -> tensor); ``get_params()`` reads back.
``reset()``: power-on state of the dynamics (hardware parameters keep their written values).
``describe()``: a JSON-able dict (kind, sizes, ranges, parameter shapes) used by HELLO frames.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Substrate(Protocol):
    n_in: int
    n_out: int
    input_range: tuple[float, float]

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def set_params(self, params: dict[str, torch.Tensor]) -> None: ...

    def get_params(self) -> dict[str, torch.Tensor]: ...

    def reset(self) -> None: ...

    def describe(self) -> dict: ...
