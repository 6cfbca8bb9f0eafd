"""Surrogate spike functions.

A spike is the Heaviside step ``z = H(x)`` of the distance to threshold
``x = v - v_th`` (volts, or dimensionless when voltages are normalized).  Its true
derivative is zero almost everywhere, so surrogate-gradient training replaces
``dH/dx`` in the backward pass by the derivative of a smooth function ``S(x)`` that
approaches ``H`` as the slope ``k`` grows:

=============  ==========================================  ===================================
name           smooth function S(x)                        surrogate derivative S'(x)
=============  ==========================================  ===================================
fast_sigmoid   (k x / (1 + k|x|) + 1) / 2                  k / (2 (1 + k|x|)^2)
sigmoid        1 / (1 + exp(-k x))                         k s (1 - s),  s = S(x)
atan           atan(pi k x / 2) / pi + 1/2                 k / (2 (1 + (pi k x / 2)^2))
triangle       1/2 + y - y|y|/2,  y = clamp(k x, -1, 1)    k max(0, 1 - k|x|)
=============  ==========================================  ===================================

``fast_sigmoid`` is SuperSpike (Zenke & Ganguli 2018) up to its normalization,
``atan`` is the arctangent surrogate of Fang et al. 2021 (also snnTorch's ``atan``).
Each ``S`` has ``S(-inf)=0``, ``S(+inf)=1``, so ``S'`` integrates to one for every ``k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

SurrogateName = Literal["fast_sigmoid", "sigmoid", "atan", "triangle"]
SURROGATE_NAMES: tuple[str, ...] = get_args(SurrogateName)


@dataclass(frozen=True)
class Surrogate:
    """A surrogate spike function: Heaviside forward, ``S'(x)`` backward.

    ``name``: one of :data:`SURROGATE_NAMES`.  ``slope``: ``k`` in 1/volt (sharper when larger).
    """

    name: str = "fast_sigmoid"
    slope: float = 10.0

    def __post_init__(self) -> None:
        if self.name not in SURROGATE_NAMES:
            raise ValueError(
                f"unknown surrogate '{self.name}'; choose one of {', '.join(SURROGATE_NAMES)}"
            )
        if not self.slope > 0:
            raise ValueError(f"surrogate slope must be > 0, got {self.slope}")

    def smooth(self, x: torch.Tensor) -> torch.Tensor:
        """The smooth function ``S(x)`` whose derivative is the surrogate gradient."""
        k = self.slope
        if self.name == "fast_sigmoid":
            return 0.5 * (k * x / (1.0 + k * x.abs()) + 1.0)
        if self.name == "sigmoid":
            return torch.sigmoid(k * x)
        if self.name == "atan":
            return torch.atan(0.5 * math.pi * k * x) / math.pi + 0.5
        # triangle: integral of k * max(0, 1 - k|x|)  (support |x| < 1/k)
        y = (k * x).clamp(-1.0, 1.0)
        return 0.5 + y - 0.5 * y * y.abs()

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """``S'(x)``, the value used in place of ``dH/dx`` during backpropagation."""
        k = self.slope
        if self.name == "fast_sigmoid":
            return 0.5 * k / (1.0 + k * x.abs()) ** 2
        if self.name == "sigmoid":
            s = torch.sigmoid(k * x)
            return k * s * (1.0 - s)
        if self.name == "atan":
            return 0.5 * k / (1.0 + (0.5 * math.pi * k * x) ** 2)
        return k * (1.0 - k * x.abs()).clamp_min(0.0)

    def spike(self, x: torch.Tensor) -> torch.Tensor:
        """Heaviside ``H(x)`` (``x > 0`` spikes) with the surrogate derivative in backward."""
        return _SurrogateSpike.apply(x, self)


class _SurrogateSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.derivative(x), None
