"""Energy-based (Hopfield-like) layered networks with symmetric weights, settled by gradient dynamics.

``model.kind = "energy"``: layers ``n_in - hidden... - n_classes``, symmetric couplings between
neighbouring layers, the Hopfield energy and settling step of :mod:`neuro.functional.energy`
(equations there).  The network's answer to an input is the output layer's state ``s_L`` after
``settle_steps`` free steps of size ``step_size`` from the all-zero state; it is used as the class
scores (argmax; the trainer's cross-entropy treats it as logits).

Parameters: ``weights[k-1] = W_k`` [n_k, n_{k-1}] and ``biases[k-1] = b_k`` [n_k] for k = 1 .. L,
initialized as in Scellier & Bengio's code: ``W_k ~ U(-a, a)``, ``a = sqrt(6 / (n_{k-1} + n_k))``
(Glorot), ``b_k = 0``.

Where settling runs (the ``substrate`` hook).  By default the dynamics run here in torch
(``substrate = None``, capabilities ``simulator:energy``, differentiable: autograd can unroll the
settling).  A physical system that relaxes to the minimum of its own energy (an analog Hopfield
circuit, an Ising machine, a resistive network) plugs in as an object with this interface::

    class SettlingSubstrate(Protocol):
        name: str                                   # e.g. "serial:/dev/ttyUSB0", shown in capabilities
        def set_params(self, weights: list[Tensor], biases: list[Tensor]) -> None: ...
        def settle(self, x: Tensor, states: list[Tensor] | None, *, steps: int, eps: float,
                   beta: float | Tensor = 0.0, target: Tensor | None = None,
                   clamp_output: bool | Tensor = False) -> list[Tensor]: ...

``settle`` drives the input ``x`` [batch, n_0] (and, for a nudged or clamped phase, the target
[batch, n_L] with strength ``beta``; ``beta`` and ``clamp_output`` may be per-sample tensors
[batch, 1] when each sample has its own phase signal), lets the device evolve for ``steps`` of its own time steps
from ``states`` (``None``: from rest, or from wherever the device is: the temporally local rules
never reset it), and returns the states it reads out (settled, or current when ``steps`` is short).
``steps`` and ``eps`` are the simulator's units; a device maps them to its own settling time.
:meth:`EnergyNet.set_substrate` installs one; the layer then reports itself non-differentiable
(contrastive rules need only the read-out states), and :meth:`EnergyNet.settle` calls
``set_params`` before settling whenever the parameters changed since the last write.
Not done: a substrate family for it in ``simulators/`` or a device driver (only the interface,
and the simulator path, which is tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from neuro.errors import ConfigError
from neuro.functional import energy as fe
from neuro.layers.capabilities import Capabilities
from neuro.registry import MODEL_KINDS


class EnergyNet(nn.Module):
    """A layered Hopfield-like network ``sizes = [n_0, n_1, ..., n_L]`` (see module docstring).

    step_size: Euler step ``eps`` of the settling dynamics (dimensionless time).
    settle_steps: free-phase steps used by :meth:`forward` (inference).
    activation: ``"hard_sigmoid"`` (states in [0, 1], Scellier's) or ``"sigmoid"`` (smooth).
    """

    def __init__(
        self,
        sizes: list[int],
        *,
        step_size: float = 0.5,
        settle_steps: int = 20,
        activation: fe.Activation = "hard_sigmoid",
    ) -> None:
        super().__init__()
        if len(sizes) < 2 or any(n < 1 for n in sizes):
            raise ConfigError(f"an energy network needs at least an input and an output layer, got sizes {sizes}")
        self.sizes = [int(n) for n in sizes]
        self.step_size, self.settle_steps, self.activation = float(step_size), int(settle_steps), activation
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(self.sizes[:-1], self.sizes[1:]):
            bound = math.sqrt(6.0 / (a + b))
            self.weights.append(nn.Parameter(torch.empty(b, a).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.zeros(b)))
        self.substrate = None
        self._written_version: tuple | None = None

    # ------------------------------------------------------------------ contract
    @property
    def capabilities(self) -> Capabilities:
        if self.substrate is not None:
            return Capabilities(
                differentiable=False,
                time_stepped=False,
                substrate=str(getattr(self.substrate, "name", "device")),
                hardware_parameters=tuple(n for n, _ in self.named_parameters()),
            )
        return Capabilities(differentiable=True, time_stepped=False, substrate="simulator:energy")

    def set_substrate(self, substrate) -> None:
        """Settle on ``substrate`` (see module docstring) instead of in torch; ``None`` goes back to the simulator."""
        for attr in ("settle", "set_params"):
            if substrate is not None and not callable(getattr(substrate, attr, None)):
                raise ConfigError(
                    f"substrate {substrate!r} has no {attr}(); an energy network's substrate needs "
                    f"settle(...) and set_params(...) (see neuro/layers/energy.py)"
                )
        self.substrate = substrate
        self._written_version = None

    @property
    def n_layers(self) -> int:
        """Number of coupled layers ``L`` (the input is not counted)."""
        return len(self.weights)

    def layer_of(self) -> dict[int, int]:
        """``id(param) -> k - 1`` for every parameter of layer ``k`` (``W_k`` and ``b_k``)."""
        out = {}
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[id(w)] = k
            out[id(b)] = k
        return out

    # ----------------------------------------------------------------- dynamics
    def zero_states(self, x: torch.Tensor) -> fe.States:
        return fe.zero_states(x, self.sizes)

    def input_drive(self, x: torch.Tensor) -> torch.Tensor:
        """``W_1 x + b_1`` [batch, n_1]: the clamped input's drive, computed once per batch."""
        return torch.addmm(self.biases[0], x, self.weights[0].t())

    def settle(
        self,
        x: torch.Tensor,
        states: fe.States | None = None,
        *,
        steps: int,
        beta=0.0,
        target: torch.Tensor | None = None,
        clamp_output=False,
        eps: float | None = None,
        input_drive: torch.Tensor | None = None,
        trace=None,
        tick=None,
    ) -> fe.States:
        """``steps`` settling steps (free, nudged with ``beta`` towards one-hot ``target``, or output clamped).

        ``states = None`` starts from zero.  ``eps`` defaults to ``step_size``.  ``trace(t, states)``
        sees the state after each step (simulator only).  ``tick = (every, fn)``: ``fn(states)`` after every
        ``every``-th step (on a substrate: ``steps / every`` separate settles of ``every`` steps).
        """
        eps = self.step_size if eps is None else float(eps)
        if self.substrate is not None:
            version = tuple(p._version for p in self.parameters())
            if version != self._written_version:
                self.substrate.set_params([w.detach() for w in self.weights], [b.detach() for b in self.biases])
                self._written_version = version
            if tick is None:
                return self.substrate.settle(
                    x, states, steps=steps, eps=eps, beta=beta, target=target, clamp_output=clamp_output
                )
            every, fn = tick
            for _ in range(steps // every):
                states = self.substrate.settle(
                    x, states, steps=every, eps=eps, beta=beta, target=target, clamp_output=clamp_output
                )
                fn(states)
            return states
        if input_drive is None:
            input_drive = self.input_drive(x)
        return fe.settle(
            x,
            states,
            list(self.weights),
            list(self.biases),
            steps=steps,
            eps=eps,
            beta=beta,
            target=target,
            clamp_output=clamp_output,
            activation=self.activation,
            input_drive=input_drive,
            trace=trace,
            tick=tick,
        )

    def energy(self, x: torch.Tensor, states: fe.States) -> torch.Tensor:
        """Per-sample energy ``E`` [batch] of ``states``."""
        return fe.energy(x, states, list(self.weights), list(self.biases), self.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores: the output state after ``settle_steps`` free steps from zero [batch, n_L]."""
        return fe.rho(self.settle(x, steps=self.settle_steps)[-1], self.activation)


@dataclass
class EnergySpec:
    """``[model]`` with ``kind = "energy"``: a layered Hopfield-like network (see :mod:`neuro.layers.energy`).

    hidden: hidden layer sizes (Scellier & Bengio's MNIST net: [500]).
    activation: "hard_sigmoid" (states in [0, 1]) or "sigmoid".
    step_size: Euler step ``eps`` of the settling dynamics (dimensionless).
    settle_steps: free-phase steps at inference (and the rules' default free phase).
    """

    kind: str = "energy"
    hidden: list[int] = field(default_factory=lambda: [500])
    activation: Literal["hard_sigmoid", "sigmoid"] = "hard_sigmoid"
    step_size: float = 0.5
    settle_steps: int = 20

    def check(self) -> None:
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"model.hidden must be a list of sizes >= 1 (may be empty), got {self.hidden}")
        if not 0.0 < self.step_size <= 1.0:
            raise ConfigError(f"model.step_size must be in (0, 1], got {self.step_size}; Scellier & Bengio use 0.5")
        if self.settle_steps < 1:
            raise ConfigError(f"model.settle_steps must be >= 1, got {self.settle_steps}")


@MODEL_KINDS.register("energy", spec=EnergySpec, bf16=False)
def build_energy(spec: EnergySpec, data) -> nn.Module:
    return EnergyNet(
        [data.n_features, *spec.hidden, data.n_classes],
        step_size=spec.step_size,
        settle_steps=spec.settle_steps,
        activation=spec.activation,
    )
