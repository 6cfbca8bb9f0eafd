"""A feed-forward spiking network: encoder -> LIF layers -> readout."""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch
from torch import nn

from neuro.layers.encoders import make_encoder
from neuro.layers.lif import LIFLayer
from neuro.layers.readouts import READOUTS, first_spike, membrane_max, spike_count
from simulators.lif import LIFParameters


class ModelTrace(NamedTuple):
    """Scores [batch, classes] and each layer's sequence [T, batch, n], keyed by layer name."""

    scores: torch.Tensor
    spikes: dict[str, torch.Tensor]
    membrane: dict[str, torch.Tensor]


class SpikingMLP(nn.Module):
    """``x [batch, F]`` in [0, 1] -> encoder -> LIF layers -> readout scores [batch, classes].

    Hidden layers spike.  The output layer spikes for the ``spike_count`` and
    ``first_spike`` readouts and is a leaky integrator (``spiking=False``) for
    ``membrane_max``.  All layers share ``lif`` parameters and the engine.
    """

    def __init__(
        self,
        n_in: int,
        hidden: list[int],
        n_out: int,
        *,
        time_steps: int = 20,
        lif: LIFParameters | None = None,
        encoder: str = "rate",
        readout: str = "spike_count",
        engine: str = "native",
        bias: bool = False,
    ) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"unknown readout '{readout}'; choose one of {', '.join(READOUTS)}")
        lif = lif or LIFParameters()
        self.time_steps = int(time_steps)
        self.readout = readout
        self.encoder = make_encoder(encoder, self.time_steps)
        sizes = [n_in, *hidden, n_out]
        layers = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            is_out = k == len(sizes) - 2
            params = replace(lif, spiking=False) if (is_out and readout == "membrane_max") else lif
            layers.append(LIFLayer(a, b, params, bias=bias, engine=engine))
        self.layers = nn.ModuleList(layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward_trace(self, x: torch.Tensor) -> ModelTrace:
        h = self.encode(x)
        spikes: dict[str, torch.Tensor] = {"input": h}
        membrane: dict[str, torch.Tensor] = {}
        for k, layer in enumerate(self.layers):
            trace = layer.forward_trace(h)
            name = f"layers.{k}"
            membrane[name] = trace.membrane
            if layer.params.spiking:
                spikes[name] = trace.spikes
            h = trace.spikes
        if self.readout == "membrane_max":
            scores = membrane_max(trace.membrane)
        elif self.readout == "first_spike":
            scores = first_spike(trace.spikes)
        else:
            scores = spike_count(trace.spikes)
        return ModelTrace(scores, spikes, membrane)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_trace(x).scores
