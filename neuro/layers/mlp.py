"""A plain (non-spiking) multilayer perceptron for forward-forward and backprop baselines.

``x [batch, F] -> ReLU layer -> normalize -> ReLU layer -> normalize -> ... -> readout``

Each hidden layer is :class:`DenseReLU`, ``h_k = relu(W_k u_{k-1} + b_k)``, and the next
layer sees ``u_k = h_k / sqrt(mean_j h_kj^2 + eps)`` (Hinton's FF layer normalization,
:func:`neuro.functional.forward_forward.length_normalize`), so a layer's goodness (the length of
``h_k``) cannot leak into the next one.  The readout is a linear map from the concatenated
normalized activities of all hidden layers to class scores, ``s = R [u_1; ...; u_L] + c``:
backprop trains it with everything else; forward-forward trains it (optionally) as a
softmax readout on detached activities of a neutral-label pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from neuro.errors import ConfigError
from neuro.functional.forward_forward import length_normalize
from neuro.layers.capabilities import Capabilities
from neuro.registry import MODEL_KINDS

INITS = ("torch", "normal_fan_out")
Init = Literal["torch", "normal_fan_out"]


class DenseReLU(nn.Module):
    """``x [batch, in] -> relu(W x + b) [batch, out]``, a differentiable software layer.

    The output is float32 (or the input's wider type) even when the matmul ran in bfloat16.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(differentiable=True, time_stepped=False, substrate="simulator:dense")

    def forward(self, x: torch.Tensor, pass_through: bool = False) -> torch.Tensor:
        """``relu(W x + b)``; with ``pass_through`` the backward treats the ReLU as the identity
        (``dL/dz = dL/da`` everywhere: forward-forward's "full-gradient" ReLU), the forward is unchanged."""
        z = self.linear(x)
        # Under bfloat16 autocast (train.precision) the matmul runs in bf16; the activity, and
        # so goodness, normalization and losses computed from it, stay at least float32.
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        if pass_through:
            return z + (torch.relu(z) - z).detach()
        return torch.relu(z)


class MLP(nn.Module):
    """ReLU layers with FF layer normalization between them and a linear readout over all layers.

    normalize: apply :func:`length_normalize` to each layer's output before the next layer
        (and before the readout).  Off gives a plain ReLU MLP.
    init: "torch" (PyTorch's default for ``nn.Linear``: uniform in ``+-1/sqrt(fan_in)``) or
        "normal_fan_out" (loeweX's FF model: hidden weights ``N(0, 1/fan_out)``, i.e. standard deviation
        ``1/sqrt(out_features)``, zero biases, and a zero readout).
    """

    def __init__(self, n_in: int, hidden: list[int], n_out: int, *, bias: bool = True, normalize: bool = True,
                 init: str = "torch") -> None:
        super().__init__()
        if not hidden:
            raise ConfigError("an MLP needs at least one hidden layer (model.hidden = [...])")
        if init not in INITS:
            raise ConfigError(f"model.init must be one of {', '.join(INITS)}, got {init!r}")
        sizes = [n_in, *hidden]
        self.layers = nn.ModuleList(DenseReLU(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:]))
        self.normalize = bool(normalize)
        self.readout = nn.Linear(sum(hidden), n_out)
        if init == "normal_fan_out":
            with torch.no_grad():
                for layer in self.layers:
                    layer.linear.weight.normal_(0.0, layer.linear.out_features ** -0.5)
                    if layer.linear.bias is not None:
                        layer.linear.bias.zero_()
                self.readout.weight.zero_()
                self.readout.bias.zero_()

    def next_input(self, h: torch.Tensor) -> torch.Tensor:
        """What the layer after a layer with activity ``h`` sees."""
        return length_normalize(h) if self.normalize else h

    def hidden_activities(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each hidden layer's ReLU activity ``h_k`` [batch, n_k] (before normalization)."""
        out = []
        u = x
        for layer in self.layers:
            h = layer(u)
            out.append(h)
            u = self.next_input(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(torch.cat([self.next_input(h) for h in self.hidden_activities(x)], dim=-1))


@dataclass
class MLPSpec:
    """``[model]`` with ``kind = "mlp"``: ReLU layers (FF layer normalization between them) and a linear readout.

    ``init``: "torch" or "normal_fan_out" (loeweX's initialization; see :class:`MLP`).
    """

    kind: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [500, 500])
    bias: bool = True
    normalize: bool = True
    init: Init = "torch"

    def check(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"model.hidden must be a non-empty list of sizes >= 1, got {self.hidden}")


@MODEL_KINDS.register("mlp", spec=MLPSpec, bf16=True)
def build_mlp(spec: MLPSpec, data) -> nn.Module:
    return MLP(data.n_features, list(spec.hidden), data.n_classes, bias=spec.bias, normalize=spec.normalize,
               init=spec.init)
