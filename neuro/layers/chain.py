"""A feed-forward chain of LIF layers on spike trains: ``x [T, batch, n_in] -> [T, batch, n_out]``.

The shape an NIR graph ``Input -> (Affine|Linear -> neuron)* -> Output`` maps to (see
:mod:`neuro.export.nir`); unlike :class:`~neuro.layers.spiking_mlp.SpikingMLP` it has no
encoder and no readout: its input is already a spike train (or currents) per time step.
"""

from __future__ import annotations

import torch
from torch import nn

from neuro.layers.lif import LIFLayer
from simulators.lif import LIFTrace


class SpikingChain(nn.Module):
    """LIF layers applied in order; returns the last layer's spikes (membrane if it is an LI)."""

    def __init__(self, layers: list[LIFLayer]) -> None:
        super().__init__()
        if not layers:
            raise ValueError("SpikingChain needs at least one layer")
        self.layers = nn.ModuleList(layers)

    def forward_traces(self, x: torch.Tensor) -> list[LIFTrace]:
        """Every layer's trace (spikes and membrane [T, batch, n])."""
        traces = []
        for layer in self.layers:
            trace = layer.forward_trace(x)
            traces.append(trace)
            x = trace.spikes if layer.params.spiking else trace.membrane
        return traces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = self.forward_traces(x)[-1]
        return last.spikes if self.layers[-1].params.spiking else last.membrane
