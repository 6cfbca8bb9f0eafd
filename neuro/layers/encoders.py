"""Spike encoders: static features ``x [batch, F]`` in [0, 1] to sequences ``[T, batch, F]``.

- :class:`RateEncoder` (Poisson/Bernoulli): at each step a feature spikes with probability
  ``gain * x`` (clamped to [0, 1]); the expected rate is ``gain * x / dt`` spikes per second.
- :class:`LatencyEncoder`: one spike per feature at step ``round((1 - x) (T - 1))``;
  stronger features fire earlier, features ``<= threshold`` never fire.
- :class:`DirectEncoder`: the value itself is injected as an input current at every step.

Each encoder class is registered in :data:`neuro.registry.ENCODERS` (``cls(time_steps)``).

Randomness (rate coding) comes from the torch generator passed in or the global one,
whose state the trainer checkpoints, so resumed runs draw the same spikes.
"""

from __future__ import annotations

import torch
from torch import nn

from neuro.functional import sharding
from neuro.registry import ENCODERS


@ENCODERS.register("rate")
class RateEncoder(nn.Module):
    def __init__(self, time_steps: int, gain: float = 1.0) -> None:
        super().__init__()
        self.time_steps, self.gain = int(time_steps), float(gain)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        prob = (self.gain * x).clamp(0.0, 1.0)
        # drawn per sample independently of data-parallel sharding (batch dimension 1; neuro/functional/sharding.py)
        u = sharding.rand((self.time_steps, *x.shape), 1, generator=generator, device=x.device, dtype=x.dtype)
        return (u < prob).to(x.dtype)


@ENCODERS.register("latency")
class LatencyEncoder(nn.Module):
    def __init__(self, time_steps: int, threshold: float = 0.0) -> None:
        super().__init__()
        self.time_steps, self.threshold = int(time_steps), float(threshold)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        T = self.time_steps
        step = torch.round((1.0 - x.clamp(0.0, 1.0)) * (T - 1)).long()
        out = torch.zeros((T, *x.shape), device=x.device, dtype=x.dtype)
        out.scatter_(0, step.unsqueeze(0), (x > self.threshold).to(x.dtype).unsqueeze(0))
        return out


@ENCODERS.register("direct")
class DirectEncoder(nn.Module):
    def __init__(self, time_steps: int) -> None:
        super().__init__()
        self.time_steps = int(time_steps)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x.unsqueeze(0).expand(self.time_steps, *x.shape)


def make_encoder(name: str, time_steps: int) -> nn.Module:
    """The encoder registered as ``name`` (see :data:`neuro.registry.ENCODERS`) over ``time_steps`` steps."""
    return ENCODERS.get(name, where="model.encoder").obj(time_steps)
