"""Direct feedback alignment (Nokland 2016), with the random projection of the error digital or optical.

Network (``mlp``, or the digital layers of ``physical_mlp``): hidden activities ``h_k = relu(a_k)``,
``a_k = W_k u_{k-1} + b_k`` (``u_{k-1}``: the previous layer's normalized activity, or the measured physical
output for ``physical_mlp``), scores ``s = R_out [u_1; ...; u_L] + c``.  With the output error of the mean
cross-entropy ``e = (softmax(s) - onehot(y)) / batch`` (``[batch, C]``), DFA writes

    readout:   grad R_out = e^T [u_1 ... u_L],  grad c = sum_i e_i          (exact, it is the last layer)
    layer k:   delta_k = (B_k e) * relu'(a_k),  grad W_k = delta_k^T u_{k-1},  grad b_k = sum_i delta_k,i

where ``[B_1; ...; B_L] = B [sum_k n_k, C]`` is a fixed random matrix and the inputs of every layer are
detached (no error travels backwards through the network, nor through a physical layer).

``projection``: ``digital``: ``B ~ N(0, 1/C)``, seeded; ``optical``: ``B e`` is *measured* as the intensity
difference of a fixed random scattering medium, ``(|R(b + e)|^2 - |R(b - e)|^2) / (4 s)``
(:mod:`neuro.functional.optical_projection`: exactly ``B_opt e`` with ``B_opt = Re(diag(conj(R b)) R) / s``,
``E[B_opt^2] = (C + 3)/C^2``), i.e. two camera frames per batch; ``optical_noise`` adds relative camera noise.
``scale`` multiplies ``B`` (both projections).  Hardware parameters of physical layers get no update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from neuro.errors import ConfigError, IncompatibleError
from neuro.functional.optical_projection import OpticalProjection
from neuro.layers.mlp import MLP
from neuro.layers.physical_mlp import PhysicalMLP
from neuro.registry import RULES
from neuro.rules.base import Batch, Rule


@dataclass
class DFASpec:
    """``[rule]`` with ``name = "dfa"``: projection ``digital`` | ``optical`` (module docstring)."""

    name: str = "dfa"
    projection: Literal["digital", "optical"] = "digital"
    scale: float = 1.0
    optical_beta: float = 1.0
    optical_noise: float = 0.0
    seed: int = 0

    def check(self) -> None:
        if not self.scale > 0 or not self.optical_beta > 0 or not self.optical_noise >= 0:
            raise ConfigError("rule dfa needs scale > 0, optical_beta > 0 and optical_noise >= 0 "
                              f"(got {self.scale}, {self.optical_beta}, {self.optical_noise})")


def hidden_and_scores(model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Hidden activities ``h_k`` (each layer fed a detached input) and scores from detached features."""
    if isinstance(model, MLP):
        hs, u = [], x
        for layer in model.layers:
            h = layer(u.detach())
            hs.append(h)
            u = model.next_input(h)
        feats = torch.cat([model.next_input(h).detach() for h in hs], dim=1)
        return hs, model.readout(feats)
    if isinstance(model, PhysicalMLP) and type(model).forward is PhysicalMLP.forward:
        def constant(index, layer, e):
            return layer(e.detach()).detach()

        outs = model.block_outputs(x, None, constant, detach_between=True)
        hs = [h for _, h in outs]
        return hs, model.readout(model.features([(y, h.detach()) for y, h in outs]))
    raise IncompatibleError(f"rule `dfa` trains model.kind = \"mlp\" or \"physical_mlp\", got {type(model).__name__}")


class DFA(Rule):
    name = "dfa"

    def __init__(self, spec: DFASpec | None = None, n_classes: int | None = None) -> None:
        self.spec = spec or DFASpec()
        self.n_classes = n_classes
        self.B: torch.Tensor | None = None
        self.optical: OpticalProjection | None = None
        self.n_hidden: int | None = None

    def check_compatible(self, model: nn.Module) -> None:
        super().check_compatible(model)
        physical = isinstance(model, PhysicalMLP) and type(model).forward is PhysicalMLP.forward
        if not isinstance(model, MLP) and not physical:
            raise IncompatibleError(f"rule `dfa` trains model.kind = \"mlp\" or \"physical_mlp\", "
                                    f"got {type(model).__name__}")

    def _setup(self, n_hidden: int, n_classes: int) -> None:
        s = self.spec
        self.n_hidden, self.n_classes = n_hidden, n_classes
        if s.projection == "optical":
            self.optical = OpticalProjection(n_hidden, n_classes, seed=s.seed + 97, beta=s.optical_beta,
                                             noise=s.optical_noise)
        else:
            g = torch.Generator().manual_seed(s.seed + 97)
            self.B = torch.randn(n_hidden, n_classes, generator=g) / math.sqrt(n_classes)

    def project(self, e: torch.Tensor) -> torch.Tensor:
        """``scale * B e`` per sample, ``[batch, n_hidden]`` (measured optically with ``projection = "optical"``)."""
        if self.optical is not None:
            return self.spec.scale * self.optical.project(e)
        return self.spec.scale * (e @ self.B.to(e).T)

    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        hs, scores = hidden_and_scores(model, batch.x)
        widths = [h.shape[1] for h in hs]
        if self.n_hidden != sum(widths):
            self._setup(sum(widths), scores.shape[1])
        loss = F.cross_entropy(scores, batch.y)
        with torch.no_grad():
            e = (torch.softmax(scores, 1) - F.one_hot(batch.y, scores.shape[1]).to(scores)) / batch.y.numel()
            proj = self.project(e).split(widths, dim=1)
        surrogate = loss + sum((h * p).sum() for h, p in zip(hs, proj))
        surrogate.backward()
        accuracy = float((scores.detach().argmax(1) == batch.y).float().mean())
        metrics = {"loss": float(loss.detach()), "accuracy": accuracy}
        if self.optical is not None:
            metrics["n_optical_frames"] = 2.0 * batch.y.numel()
        return metrics


@RULES.register("dfa", spec=DFASpec)
def build_dfa(spec: DFASpec, data) -> Rule:
    return DFA(spec, getattr(data, "n_classes", None))
