"""Readouts: turn the output layer's sequence [T, batch, classes] into class scores [batch, classes].

- ``spike_count``: ``sum_t z[t]`` (spikes over the window); trained with cross-entropy.
- ``membrane_max``: ``max_t v[t]`` of a non-spiking (leaky-integrator) output layer.
- ``first_spike``: minus the first spike time in steps, ``-t*``, with
  ``t* = sum_t t z[t] prod_{s<t} (1 - z[s]) + T prod_t (1 - z[t])`` (``T`` if silent).
  The product form is differentiable through the surrogate spike, so earlier spikes of the
  right class can be learned (time-to-first-spike coding).
"""

from __future__ import annotations

import torch

READOUTS = ("spike_count", "membrane_max", "first_spike")


def spike_count(spikes: torch.Tensor) -> torch.Tensor:
    return spikes.sum(0)


def membrane_max(membrane: torch.Tensor) -> torch.Tensor:
    return membrane.max(0).values


def first_spike_time(spikes: torch.Tensor) -> torch.Tensor:
    """Differentiable first spike time in steps (``T`` when a neuron never fires)."""
    T = spikes.shape[0]
    silent_before = torch.cumprod(1.0 - spikes, dim=0)
    not_yet = torch.cat([torch.ones_like(spikes[:1]), silent_before[:-1]], dim=0)
    steps = torch.arange(T, dtype=spikes.dtype, device=spikes.device).view(T, *([1] * (spikes.dim() - 1)))
    return (steps * spikes * not_yet).sum(0) + T * silent_before[-1]


def first_spike(spikes: torch.Tensor) -> torch.Tensor:
    return -first_spike_time(spikes)
