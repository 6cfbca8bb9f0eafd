"""A feed-forward spiking network: encoder -> LIF layers -> readout."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch
from torch import nn

from neuro.errors import ConfigError
from neuro.layers.encoders import make_encoder
from neuro.layers.lif import LIFLayer, lookup_engine
from neuro.registry import ENCODERS, MODEL_KINDS, READOUTS
from simulators.lif import LIFParameters
from simulators.surrogate import Surrogate, SurrogateName


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
        self._readout = READOUTS.get(readout, where="model.readout")
        lif = lif or LIFParameters()
        self.time_steps = int(time_steps)
        self.readout = readout
        self.encoder = make_encoder(encoder, self.time_steps)
        sizes = [n_in, *hidden, n_out]
        layers = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            is_out = k == len(sizes) - 2
            params = replace(lif, spiking=False) if (is_out and not self._readout.meta["output_spiking"]) else lif
            layers.append(LIFLayer(a, b, params, bias=bias, engine=engine))
        self.layers = nn.ModuleList(layers)

    def display_names(self) -> dict[str, str]:
        """Readable names of the trace keys, for reports: ``layers.0`` -> ``hidden layer 1 (256 LIF)``."""
        names = {"input": f"input spikes ({self.layers[0].linear.in_features})"}
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):
            kind = "LIF" if layer.params.spiking else "leaky integrators"
            where = "output layer" if k == last else f"hidden layer {k + 1}"
            names[f"layers.{k}"] = f"{where} ({layer.linear.out_features} {kind})"
        return names

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
        scores = self._readout.obj(trace.spikes, trace.membrane)
        return ModelTrace(scores, spikes, membrane)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_trace(x).scores


# ---------------------------------------------------------------------- config
def _lif_spec_fields() -> list[tuple]:
    """``[model.lif]`` keys: every :class:`LIFParameters` field with its type and default, except
    ``spiking`` (set per layer by the readout) and ``surrogate`` (split into a name and a slope);
    ``tau_syn = 0`` stands for "no synaptic current" (TOML has no null)."""
    hints = typing.get_type_hints(LIFParameters)
    out = []
    for f in dataclasses.fields(LIFParameters):
        if f.name in ("spiking", "surrogate"):
            continue
        tp = float if f.name == "tau_syn" else hints[f.name]
        out.append((f.name, tp, field(default=f.default)))
    default = Surrogate()
    out += [
        ("surrogate", SurrogateName, field(default=default.name)),
        ("surrogate_slope", float, field(default=default.slope)),
    ]
    return out


def _lif_to_parameters(self) -> LIFParameters:
    values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    surrogate = Surrogate(values.pop("surrogate"), values.pop("surrogate_slope"))
    tau_syn = values.pop("tau_syn")
    try:
        return LIFParameters(tau_syn=tau_syn if tau_syn > 0 else None, surrogate=surrogate, **values)
    except ValueError as exc:
        raise ConfigError(f"[model.lif] {exc}") from None


LIFSpec = dataclasses.make_dataclass(
    "LIFSpec",
    _lif_spec_fields(),
    namespace={"to_parameters": _lif_to_parameters, "__module__": __name__},
)
LIFSpec.__doc__ = """``[model.lif]``: the fields of :class:`simulators.lif.LIFParameters` (seconds, volts), with
``tau_syn = 0`` for a delta synapse and the surrogate gradient as ``surrogate`` (name) plus
``surrogate_slope`` (1/V)."""


@dataclass
class SpikingMLPSpec:
    """``[model]`` with ``kind = "spiking_mlp"``: encoder -> LIF layers -> readout.

    encoder, readout: names in :data:`neuro.registry.ENCODERS` / :data:`~neuro.registry.READOUTS`;
    engine: a LIF engine of :data:`simulators.lif.LIF_ENGINES`.
    """

    kind: str = "spiking_mlp"
    hidden: list[int] = field(default_factory=lambda: [128])
    time_steps: int = 20
    encoder: str = "rate"
    readout: str = "spike_count"
    engine: str = "native"
    bias: bool = False
    lif: LIFSpec = field(default_factory=LIFSpec)

    def check(self) -> None:
        ENCODERS.get(self.encoder, where="model.encoder")
        READOUTS.get(self.readout, where="model.readout")
        lookup_engine(self.engine)
        if self.time_steps < 1:
            raise ConfigError(f"model.time_steps must be >= 1, got {self.time_steps}")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"model.hidden sizes must be >= 1, got {self.hidden}")


@MODEL_KINDS.register("spiking_mlp", spec=SpikingMLPSpec, bf16=True)
def build_spiking_mlp(spec: SpikingMLPSpec, data) -> nn.Module:
    return SpikingMLP(
        data.n_features,
        list(spec.hidden),
        data.n_classes,
        time_steps=spec.time_steps,
        lif=spec.lif.to_parameters(),
        encoder=spec.encoder,
        readout=spec.readout,
        engine=spec.engine,
        bias=spec.bias,
    )
