"""``physical_mlp``: a deep physical network of N blocks and a digital readout.

Input: ``[x; scale * label_code]`` where ``label_code`` is the one-hot label (supervised
forward-forward embeds it, see :func:`neuro.functional.forward_forward.embed_label`) or the neutral code
``1/n_classes`` everywhere (prediction, backprop rules).  Block ``l`` (``l = 1..N``):

    e_l = encode(h_{l-1})            bounded into the device range
    y_l = physical_l(e_l; c_l)       measured (c_l: control inputs, hardware parameters)
    h_l = relu(W_l s(y_l) + b_l)     trainable digital part (s: per-sample standardization)
    h_l <- length_normalize(h_l)     before it enters block l+1 (the raw h_l carries goodness)

Scores: ``readout(concat_l length_normalize(h_l))`` (a linear layer).  How the physical part is
evaluated is a choice of the caller (``physics``): measured (default), through the exact
simulator (in-silico backprop), or measured forward with a twin's backward (PAT).

Options for the PhyLL architecture (Momeni et al. 2023, the authors' ``Acoustic/acoustics_pnn.py``),
all off by default:

- ``input_pad``: the input is ``[0 (input_pad values); x]`` and the label code is written over the
  first ``n_classes`` of them (PhyLL: 8 zeros before 12 features; default ``n_classes``);
- ``label_mode = "batch_max"``: the label value is ``max |x|`` over the batch (PhyLL) instead of
  ``label_scale``;
- ``encoding = "unit_norm"``: ``e = clip(|h| / ||h||_2, lo, hi)`` (how PhyLL drives the cavity);
- ``skip``: the digital layer sees ``[s(y_l); h_{l-1}]``, the physical output concatenated with the
  block's own input (PhyLL), so a block can use what the physics scrambled or lost;
- ``digital_activation = "linear"``, ``standardize = false``, ``between = "none"``: PhyLL's digital
  layer is linear on the raw measured output, and its output enters the next block as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from neuro.errors import ConfigError
from neuro.functional.forward_forward import embed_label, length_normalize
from neuro.layers.physical import ENCODINGS, DigitalLayer, InputEncoder, PhysicalLayer, standardize
from neuro.registry import MODEL_KINDS
from neuro.substrates import open_substrate, substrate_label

Physics = Callable[[int, PhysicalLayer, torch.Tensor], torch.Tensor]


def measured(index: int, layer: PhysicalLayer, e: torch.Tensor) -> torch.Tensor:
    """The default ``physics``: measure on the substrate (no gradient path)."""
    return layer(e)


BLOCK_ENCODINGS = (*ENCODINGS, "unit_norm")
BETWEEN = ("length_normalize", "none")


class UnitNormEncoder(nn.Module):
    """``e = clip(|h| / (||h||_2 + eps), lo, hi)``: PhyLL's drive of the acoustic cavity (no parameters)."""

    def __init__(self, input_range: tuple[float, float], eps: float = 1e-6) -> None:
        super().__init__()
        self.lo, self.hi, self.eps = float(input_range[0]), float(input_range[1]), float(eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h.abs() / (h.norm(dim=-1, keepdim=True) + self.eps)).clamp(self.lo, self.hi)


class PhysicalBlock(nn.Module):
    def __init__(
        self,
        physical: PhysicalLayer,
        n_hidden: int,
        *,
        encoding: str,
        gain: float,
        seed: int,
        skip_width: int = 0,
        activation: str = "relu",
        standardize: bool = True,
    ) -> None:
        super().__init__()
        if encoding == "unit_norm":
            self.encoder = UnitNormEncoder(physical.input_range)
        else:
            self.encoder = InputEncoder(physical.input_range, encoding, gain)
        self.physical = physical
        self.skip = skip_width > 0
        self.standardize = standardize
        self.digital = DigitalLayer(
            physical.n_out + skip_width,
            n_hidden,
            activation,
            seed=seed,
            standardize_input=standardize and not self.skip,
        )

    def digital_input(self, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """What the digital layer reads: ``y``, or ``[s(y); h]`` with ``skip`` (``s``: standardize or identity)."""
        if not self.skip:
            return y
        return torch.cat([standardize(y) if self.standardize else y, h], dim=1)

    def forward(
        self, h: torch.Tensor, index: int = 0, physics: Physics = measured
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, h')``: the physical output and the digital activity (before normalization)."""
        y = physics(index, self.physical, self.encoder(h))
        return y, self.digital(self.digital_input(y, h))


class PhysicalMLP(nn.Module):
    """N physical blocks and a readout; ``substrates[l]`` is any Substrate object for block ``l``."""

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        substrates: list,
        hidden: list[int],
        names: list[str],
        *,
        label_scale: float = 1.0,
        encoding: str = "tanh",
        gain: float = 1.0,
        seed: int = 0,
        input_pad: int = 0,
        label_mode: str = "fixed",
        skip: bool = False,
        digital_activation: str = "relu",
        standardize: bool = True,
        between: str = "length_normalize",
    ) -> None:
        super().__init__()
        if len(substrates) != len(hidden) or len(names) != len(hidden):
            raise ValueError("need one substrate, one hidden size and one name per block")
        self.n_features, self.n_classes, self.label_scale = n_features, n_classes, float(label_scale)
        self.input_pad = int(input_pad) or n_classes
        if self.input_pad < n_classes:
            raise ConfigError(
                f"model.input_pad = {input_pad} must be >= the number of classes ({n_classes}), "
                "since the label is written over the first of them"
            )
        self.label_mode, self.between_blocks = label_mode, between
        blocks, width = [], n_features + self.input_pad
        for k, (sub, n_h, name) in enumerate(zip(substrates, hidden, names)):
            if int(sub.n_in) != width:
                raise ConfigError(f"block {k} substrate {name} has n_in {sub.n_in}, but its input has {width} values")
            blocks.append(
                PhysicalBlock(
                    PhysicalLayer(sub, name, seed=seed + 101 * k),
                    n_h,
                    encoding=encoding,
                    gain=gain,
                    seed=seed + 7 + 101 * k,
                    skip_width=width if skip else 0,
                    activation=digital_activation,
                    standardize=standardize,
                )
            )
            width = n_h
        self.blocks = nn.ModuleList(blocks)
        self.readout = DigitalLayer(sum(hidden), n_classes, "linear", seed=seed + 13)

    # -- inputs
    def embed(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """``[x; label code]``; ``label=None`` or ``-1`` entries: the neutral code."""
        if label is None:
            label = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        pad = torch.zeros(x.shape[0], self.input_pad, dtype=x.dtype, device=x.device)
        scale = float(x.abs().max()) if self.label_mode == "batch_max" and x.numel() else self.label_scale
        return embed_label(torch.cat([pad, x], dim=1), label, self.n_classes, scale)

    def between(self, h_raw: torch.Tensor) -> torch.Tensor:
        """What block ``l``'s activity becomes before it enters block ``l+1`` (``between`` option)."""
        return length_normalize(h_raw) if self.between_blocks == "length_normalize" else h_raw

    # -- forward passes
    def block_outputs(
        self,
        x: torch.Tensor,
        label: torch.Tensor | None = None,
        physics: Physics = measured,
        detach_between: bool = False,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per block ``(y_l, h_l)``; ``detach_between`` cuts the graph between blocks (local rules)."""
        h = self.embed(x, label)
        out = []
        for k, block in enumerate(self.blocks):
            y, h_raw = block(h.detach() if detach_between else h, k, physics)
            out.append((y, h_raw))
            h = self.between(h_raw)
        return out

    def features(self, outputs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        return torch.cat([length_normalize(h) for _, h in outputs], dim=1)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None, physics: Physics = measured) -> torch.Tensor:
        """Class scores from the readout (neutral label code unless ``label`` is given)."""
        return self.readout(self.features(self.block_outputs(x, label, physics)))

    # -- accounting
    def physical_layers(self) -> list[PhysicalLayer]:
        return [b.physical for b in self.blocks]

    def counters(self) -> tuple[int, int]:
        """(samples measured on physical layers, forward digital MACs) since construction."""
        evals = sum(layer.n_evals for layer in self.physical_layers())
        macs = sum(m.n_macs for m in self.modules() if isinstance(m, DigitalLayer))
        return evals, macs

    def report_data(self, records=None) -> dict:
        """Report section ``accuracy_vs_time`` (drawn by :mod:`neuro.report.physical` from the epoch records)."""
        drifts = []
        for layer in self.physical_layers():
            d = layer.substrate.describe() if callable(getattr(layer.substrate, "describe", None)) else {}
            drifts.append(None if "drift" not in d else bool(d["drift"]))
        drift = True if any(drifts) else (None if None in drifts else False)
        return {"accuracy_vs_time": {"drift": drift}}


# ---------------------------------------------------------------------- config
@dataclass
class PhysicalMLPSpec:
    """``[model]`` with ``kind = "physical_mlp"``: physical blocks on substrates (see neuro/substrates.py).

    substrate: one name for all blocks (e.g. ``wave:scattering``) or ``substrates`` per block.
    physical: outputs of each physical layer (one value for all blocks, or one per block).
    hidden: digital units after each physical layer (the number of blocks is ``len(hidden)``).
    substrate_options: options of the substrate (``n_control``, ``noise``, ``drift``, ...).
    label_scale: value of the embedded one-hot label; encoding/gain: :class:`InputEncoder`.
    input_pad, label_mode, skip, digital_activation, standardize, between: the PhyLL options
    (module docstring); the defaults keep the architecture above.
    """

    kind: str = "physical_mlp"
    substrate: str = "wave:scattering"
    substrates: list[str] = field(default_factory=list)
    physical: list[int] = field(default_factory=lambda: [200])
    hidden: list[int] = field(default_factory=lambda: [100, 100, 100])
    substrate_options: dict = field(default_factory=dict)
    label_scale: float = 1.0
    encoding: Literal["tanh", "clip", "unit_norm"] = "tanh"
    gain: float = 1.0
    seed: int = 0
    input_pad: int = 0
    label_mode: str = "fixed"
    skip: bool = False
    digital_activation: str = "relu"
    standardize: bool = True
    between: str = "length_normalize"

    def check(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"model.hidden must list >= 1 positive sizes, got {self.hidden}")
        if len(self.physical) not in (1, len(self.hidden)) or any(p < 1 for p in self.physical):
            raise ConfigError(
                f"model.physical must be one positive size or one per block ({len(self.hidden)}), got {self.physical}"
            )
        if self.substrates and len(self.substrates) != len(self.hidden):
            raise ConfigError(
                f"model.substrates must name one substrate per block ({len(self.hidden)}), got {len(self.substrates)}"
            )
        for key, value, choices in (
            ("label_mode", self.label_mode, ("fixed", "batch_max")),
            ("digital_activation", self.digital_activation, ("relu", "linear")),
            ("between", self.between, BETWEEN),
        ):
            if value not in choices:
                raise ConfigError(f"model.{key} = '{value}' is not one of {', '.join(choices)}")
        if self.input_pad < 0:
            raise ConfigError(f"model.input_pad must be >= 0 (0: the number of classes), got {self.input_pad}")


@MODEL_KINDS.register("physical_mlp", spec=PhysicalMLPSpec, bf16=False)
def build_physical_mlp(spec: PhysicalMLPSpec, data, substrates: list | None = None) -> PhysicalMLP:
    """Open one substrate per block from ``spec`` (or use the given substrate objects) and build the model."""
    n = len(spec.hidden)
    names = list(spec.substrates) or [spec.substrate] * n
    sizes = list(spec.physical) * (n if len(spec.physical) == 1 else 1)
    if substrates is None:
        widths = [data.n_features + (spec.input_pad or data.n_classes), *spec.hidden[:-1]]
        substrates = [
            open_substrate(names[k], widths[k], sizes[k], seed=spec.seed + 1000 * k, options=spec.substrate_options)
            for k in range(n)
        ]
    labels = [substrate_label(nm) for nm in names]
    return PhysicalMLP(
        data.n_features,
        data.n_classes,
        substrates,
        list(spec.hidden),
        labels,
        label_scale=spec.label_scale,
        encoding=spec.encoding,
        gain=spec.gain,
        seed=spec.seed,
        input_pad=spec.input_pad,
        label_mode=spec.label_mode,
        skip=spec.skip,
        digital_activation=spec.digital_activation,
        standardize=spec.standardize,
        between=spec.between,
    )
