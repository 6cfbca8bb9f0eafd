"""A spiking MLP evaluated on the Loihi fixed-point twin, trainable straight-through (quantization-aware).

:class:`LoihiTwinMLP` wraps a float :class:`~neuro.layers.spiking_mlp.SpikingMLP` and the
per-layer scales of a quantization (:func:`neuro.export.loihi.quantize`).  Forward values
are the twin's (:mod:`simulators.loihi`, local time): the current float weights are
rounded to mantissas ``m = clip(round(W / q))`` at every forward, so what the model computes
is what Loihi computes.  Gradients are straight-through: each layer's spikes are

    z = z_float + (z_twin - z_float).detach()

where ``z_float`` is the float LIF (surrogate derivative) driven by the dequantized weights
``W + (q m - W).detach()`` with the fixed-point decays and threshold.  Any rule that
backpropagates (``bptt``) fine-tunes it with the ordinary trainer; the wrapped model's
weights change, and re-quantizing it with the same scales gives the deployed network.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from neuro.layers.capabilities import Capabilities
from neuro.layers.lif import run_engine
from neuro.registry import READOUTS
from simulators import loihi as fx


class LoihiTwinLayer(nn.Module):
    """One LIF layer of the wrapped model on the twin; shares the float layer's ``linear``."""

    def __init__(self, layer, spec) -> None:
        super().__init__()
        self.linear = layer.linear
        self.engine = layer.engine
        self.spec = spec
        dt = layer.params.dt
        alpha = (fx.DECAY_UNITY - spec.du - fx.DU_OFFSET) / fx.DECAY_UNITY
        beta = (fx.DECAY_UNITY - spec.dv - fx.DV_OFFSET) / fx.DECAY_UNITY
        # the float surrogate path with the fixed-point decays and threshold (exact-integrator form)
        self.float_params = replace(
            layer.params,
            tau_syn=(-dt / math.log(alpha)) if alpha > 0 else None,
            tau_mem=(-dt / math.log(beta)) if 0 < beta < 1 else layer.params.tau_mem,
            integrator="exact",
            v_th=spec.vth * (1 << fx.VTH_SHIFT) / spec.voltage_scale,
        )
        self.gain = 1.0 - beta  # gamma of the fixed-point layer
        bias = layer.linear.bias
        self.register_buffer("bias_mant", torch.zeros(layer.linear.out_features, dtype=torch.int64))
        self.bias_exp = spec.bias_exp
        if bias is not None:
            scaled = spec.voltage_scale * self.gain * bias.detach().double() / (1.0 - alpha) / 2**spec.bias_exp
            self.bias_mant = scaled.round().clamp(fx.BIAS_MANT_MIN, fx.BIAS_MANT_MAX).long()

    capabilities = Capabilities(
        differentiable=True, time_stepped=True, precision="fixed-point", substrate="simulator:loihi-twin"
    )

    def mantissas(self) -> torch.Tensor:
        q = self.spec.weight_scale
        return (self.linear.weight.detach() / q).round().clamp(fx.WEIGHT_MANT_MIN, fx.WEIGHT_MANT_MAX)

    def integer_params(self) -> fx.LoihiLayerParams:
        s = self.spec
        return fx.LoihiLayerParams(
            weights=(2 * self.mantissas()).long(),
            weight_exp=s.weight_exp,
            du=s.du,
            dv=s.dv,
            vth=s.vth,
            bias_mant=self.bias_mant,
            bias_exp=torch.tensor(self.bias_exp),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Input spikes [T, B, n_in] -> spikes [T, B, n_out]: twin values, float-surrogate gradients."""
        w = self.linear.weight
        w_q = w + (self.mantissas() * self.spec.weight_scale - w).detach()
        currents = h @ w_q.T
        if self.linear.bias is not None:
            currents = currents + self.linear.bias
        z_float = run_engine(self.engine, currents, self.float_params, None).spikes
        z_twin = fx.run_network(h.detach() != 0, [self.integer_params()], record_state=False).spikes[0]
        return z_float + (z_twin.to(z_float.dtype) - z_float).detach()


class LoihiTwinMLP(nn.Module):
    """``x [batch, F]`` -> scores, computed on the twin; wraps ``model`` with the scales of ``export.spec``."""

    def __init__(self, model, export) -> None:
        super().__init__()
        self.model = model  # owns the parameters (the twin layers share its Linear modules)
        self.spec = export.spec
        self.encoder = model.encoder
        self.readout = model.readout
        self.time_steps = model.time_steps
        self.twin_layers = nn.ModuleList(
            LoihiTwinLayer(layer, spec) for layer, spec in zip(model.layers, export.spec.layers)
        )

    def to_export(self):
        """The deployable network for the current weights (same scales as the wrapped quantization)."""
        from neuro.export.loihi import LoihiExport

        return LoihiExport(self.spec, [layer.integer_params() for layer in self.twin_layers])

    def spikes(self, h: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for layer in self.twin_layers:
            h = layer(h)
            out.append(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.spikes(self.encoder(x))[-1]
        return READOUTS.get(self.readout).obj(z, None)
