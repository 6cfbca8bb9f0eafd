"""``photonic_mlp``: an optical neural network of photonic SVD layers (Shen et al., Nature Photonics 2017).

Unlike ``physical_mlp`` (which embeds a label code in the input and puts a dense digital layer after every
physical one), every matrix of this network is optical; the electronics only scale each detector channel::

    h_0 = x                                   (n_features values, no label code)
    e_l = tanh(gain * h_{l-1})                encoded into the field amplitudes, in [-1, 1] sqrt(P_ref)
    y_l = detect(M_l e_l)                     photonic:<clements|reck> SVD layer M_l = U Sigma V^dagger,
                                              detected (intensity |E|^2 or homodyne Re E, per substrate_options)
    h_l = g_l * y_l + b_l                     per-channel electronic gain and offset (2 n values per layer)
    scores = h_L                              (the last layer has n_classes outputs)

The nonlinearity between layers is the encoder's tanh (an electro-optic modulator driven into saturation)
and, with intensity detection, the square law; ``substrate_options`` may add the saturable absorber.
Widths: ``layers = [n_1, ..., n_L]`` (``n_L = n_classes``); ``[4, 4, 4]`` on vowels4 is three 4x4 SVD
layers (six 4-mode meshes).

It subclasses :class:`~neuro.layers.physical_mlp.PhysicalMLP`, so the physical-network rules that only
need its forward (``insilico``, ``pat``, ``hwaware``, ``insitu``; not ``mfff``, which embeds labels) train it.
:func:`deploy_photonic` moves a trained network onto a chip with another non-ideality budget (same seeds).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from neuro.errors import ConfigError, IncompatibleError
from neuro.layers.physical import Encoding, InputEncoder, PhysicalLayer
from neuro.layers.physical_mlp import PhysicalMLP, measured
from neuro.registry import MODEL_KINDS
from neuro.substrates import open_substrate, substrate_label
from simulators.photonic import PHASE_UNIT, PhotonicSubstrate, fidelity


class ChannelAffine(nn.Module):
    """``g * y + b`` per channel (electronic gain and offset of each detector); counts MACs in ``n_macs``."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))
        self.n_macs = 0

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        self.n_macs += int(y.shape[0]) * int(y.shape[1])
        return self.gain * y + self.bias


class PhotonicBlock(nn.Module):
    def __init__(self, physical: PhysicalLayer, *, encoding: str, gain: float) -> None:
        super().__init__()
        self.encoder = InputEncoder(physical.input_range, encoding, gain)
        self.physical = physical
        self.digital = ChannelAffine(physical.n_out)

    def forward(self, h: torch.Tensor, index: int = 0, physics=measured) -> tuple[torch.Tensor, torch.Tensor]:
        y = physics(index, self.physical, self.encoder(h))
        return y, self.digital(y)


class PhotonicMLP(PhysicalMLP):
    """Photonic SVD layers with per-channel electronics (module docstring); ``substrates[l]`` any Substrate."""

    def __init__(self, n_features: int, n_classes: int, substrates: list, names: list[str], *,
                 encoding: str = "tanh", gain: float = 1.0, seed: int = 0) -> None:
        nn.Module.__init__(self)
        if not substrates or len(names) != len(substrates):
            raise ConfigError("photonic_mlp needs at least one substrate and one name per layer")
        self.n_features, self.n_classes, self.label_scale = n_features, n_classes, 0.0
        width, blocks = n_features, []
        for k, (sub, name) in enumerate(zip(substrates, names)):
            if int(sub.n_in) != width:
                raise ConfigError(f"photonic layer {k} ({name}) has n_in {sub.n_in}, but its input has {width} values")
            blocks.append(PhotonicBlock(PhysicalLayer(sub, name, seed=seed + 101 * k), encoding=encoding, gain=gain))
            width = int(sub.n_out)
        if width != n_classes:
            raise ConfigError(f"the last photonic layer has {width} outputs; it must have one per class ({n_classes}): "
                              f"end model.layers with {n_classes}")
        self.blocks = nn.ModuleList(blocks)
        self.readout = nn.Identity()

    def embed(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if label is not None:
            raise IncompatibleError("photonic_mlp takes no label code in its input (rules that embed labels, like "
                                    "`mfff` supervised, need model.kind = \"physical_mlp\")")
        return x

    def block_outputs(self, x, label=None, physics=measured, detach_between: bool = False):
        h, out = self.embed(x, label), []
        for k, block in enumerate(self.blocks):
            y, h = block(h.detach() if detach_between else h, k, physics)
            out.append((y, h))
        return out

    def features(self, outputs):
        return outputs[-1][1]

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None, physics=measured) -> torch.Tensor:
        """Class scores ``h_L`` (measured on the chip unless ``physics`` says otherwise)."""
        return self.features(self.block_outputs(x, label, physics))

    def counters(self) -> tuple[int, int]:
        evals = sum(layer.n_evals for layer in self.physical_layers())
        macs = sum(m.n_macs for m in self.modules() if isinstance(m, ChannelAffine))
        return evals, macs

    def report_data(self, records=None) -> dict:
        return {"photonic_mesh": mesh_report(self)}


def mesh_report(model: PhysicalMLP) -> dict:
    """Phases (units of pi rad) and fidelities ``|tr(U_target^dagger U_realized)|/N`` of every photonic mesh."""
    layers = []
    for k, layer in enumerate(model.physical_layers()):
        sub = layer.substrate
        if not isinstance(sub, PhotonicSubstrate):
            continue
        layer.sync_params()
        target, realized = sub.mesh_matrices(ideal=True), sub.mesh_matrices()
        params = sub.get_params()
        entry = {"layer": k, "kind": sub.options.kind, "n_in": sub.n_in, "n_out": sub.n_out,
                 "sigma": params["sigma"].tolist(), "meshes": {}}
        for mesh in ("v", "u"):
            spec = sub.options.specs()[mesh]
            entry["meshes"][mesh] = {
                "n": spec.n, "modes": spec.modes.tolist(), "cols": spec.cols.tolist(), "n_cols": spec.n_cols,
                "theta": params[f"{mesh}_theta"].tolist(), "phi": params[f"{mesh}_phi"].tolist(),
                "out": params[f"{mesh}_out"].tolist(), "fidelity": fidelity(target[mesh], realized[mesh]),
            }
        layers.append(entry)
    return {"layers": layers, "phase_unit_rad": PHASE_UNIT}


def deploy_photonic(model: PhysicalMLP, **changes) -> PhysicalMLP:
    """Move ``model`` (in place) onto photonic chips whose options differ by ``changes`` (e.g. ``phase_error``,
    ``phase_noise``, ``dac_bits``, ``crosstalk``): every photonic substrate is re-opened with the same kind,
    sizes and seed (so the same fabrication draws for the same budget) and the trained phase settings are
    written to it on the next forward.  Returns ``model``."""
    for k, layer in enumerate(model.physical_layers()):
        sub = layer.substrate
        if not isinstance(sub, PhotonicSubstrate):
            raise IncompatibleError(f"deploy_photonic: layer {k} ('{layer.where}') is not a photonic simulator")
        try:
            layer.substrate = PhotonicSubstrate(dataclasses.replace(sub.options, **changes))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"deploy_photonic: {exc}") from None
        layer._written = {}
        layer.sync_params()
    return model


# ---------------------------------------------------------------------- config
@dataclass
class PhotonicMLPSpec:
    """``[model]`` with ``kind = "photonic_mlp"``: photonic SVD layers of widths ``layers`` (last = classes).

    substrate: ``photonic:clements`` or ``photonic:reck``; substrate_options: :class:`simulators.photonic.
    PhotonicOptions` fields (``detection``, ``phase_noise``, ``phase_error``, ``dac_bits``, ``crosstalk``, ...).
    encoding/gain: :class:`~neuro.layers.physical.InputEncoder` before every layer.
    """

    kind: str = "photonic_mlp"
    substrate: str = "photonic:clements"
    layers: list[int] = field(default_factory=lambda: [4, 4, 4])
    substrate_options: dict = field(default_factory=dict)
    encoding: Encoding = "tanh"
    gain: float = 1.0
    seed: int = 0

    def check(self) -> None:
        if not self.layers or any(n < 1 for n in self.layers):
            raise ConfigError(f"model.layers must list >= 1 positive widths, got {self.layers}")
        if not str(self.substrate).startswith("photonic:"):
            raise ConfigError(f"model.substrate of photonic_mlp must be photonic:clements or photonic:reck, "
                              f"got {self.substrate!r}")


@MODEL_KINDS.register("photonic_mlp", spec=PhotonicMLPSpec, bf16=False)
def build_photonic_mlp(spec: PhotonicMLPSpec, data) -> PhotonicMLP:
    widths = [data.n_features, *spec.layers]
    subs = [open_substrate(spec.substrate, widths[k], widths[k + 1], seed=spec.seed + 1000 * k,
                           options=spec.substrate_options) for k in range(len(spec.layers))]
    names = [substrate_label(spec.substrate)] * len(subs)
    return PhotonicMLP(data.n_features, data.n_classes, subs, names, encoding=spec.encoding, gain=spec.gain,
                       seed=spec.seed)
