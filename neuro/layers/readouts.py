"""Readouts: turn the output layer's sequence [T, batch, classes] into class scores [batch, classes].

Each readout is registered in :data:`neuro.registry.READOUTS` as ``readout(spikes, membrane) ->
scores`` with metadata ``output_spiking`` (whether the output layer spikes; a membrane readout
makes it a leaky integrator) and ``loihi`` (whether a Loihi deployment can compute it from output
spikes alone).

- ``spike_count``: ``sum_t z[t]`` (spikes over the window); trained with cross-entropy.
- ``membrane_max``: ``max_t v[t]`` of a non-spiking (leaky-integrator) output layer.
- ``first_spike``: minus the first spike time in steps, ``-t*``, with
  ``t* = sum_t t z[t] prod_{s<t} (1 - z[s]) + T prod_t (1 - z[t])`` (``T`` if silent).
  The product form is differentiable through the surrogate spike, so earlier spikes of the
  right class can be learned (time-to-first-spike coding).
"""

from __future__ import annotations

import torch

from neuro.registry import READOUTS


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


@READOUTS.register("spike_count", output_spiking=True, loihi=True)
def spike_count_readout(spikes: torch.Tensor, membrane: torch.Tensor | None) -> torch.Tensor:
    return spike_count(spikes)


@READOUTS.register("membrane_max", output_spiking=False, loihi=False)
def membrane_max_readout(spikes: torch.Tensor | None, membrane: torch.Tensor) -> torch.Tensor:
    return membrane_max(membrane)


@READOUTS.register("first_spike", output_spiking=True, loihi=True)
def first_spike_readout(spikes: torch.Tensor, membrane: torch.Tensor | None) -> torch.Tensor:
    return first_spike(spikes)


def readout_names() -> tuple[str, ...]:
    return READOUTS.names()
