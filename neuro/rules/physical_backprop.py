"""The baselines of model-free training: in-silico backprop and physics-aware training (PAT).

Both minimise the readout's cross-entropy ``L = -log softmax(s)_y`` end to end.

- ``insilico``: backprop through the *exact simulator* of each physical layer
  (``substrate.exact_forward``, noise-free, at the current hidden state).  Training uses no
  physical measurement at all; evaluation runs on the physical system.  It is an upper bound
  that exists only because the simulators expose gradients when asked explicitly; a device
  without ``exact_forward`` is refused up front.
- ``pat`` (Wright et al., Nature 2022): the forward pass is measured on the physical system,
  the backward pass goes through a differentiable twin ``f``:
  ``y = f(e, c) + stopgrad(y_measured - f(e, c))``, so the value is the measurement and
  ``dy/de = df/de``, ``dy/dc = df/dc``.  ``twin = "exact"`` uses ``exact_forward`` (with no
  measurement noise this gives exactly the in-silico gradient); ``twin = "fitted"`` learns an
  MLP ``f([e; c])`` from measurements: ``twin_samples`` random inputs in the device range
  and controls near their current values before the first step, then one MSE step on every batch the device measures
  during training (free: those measurements are taken anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from neuro import distributed
from neuro.errors import ConfigError, IncompatibleError
from neuro.layers.physical import DigitalLayer, PhysicalLayer
from neuro.layers.physical_mlp import PhysicalMLP
from neuro.registry import RULES
from neuro.rules.base import Batch, Rule
from neuro.rules.physical_common import StepAccount, cross_entropy_step, require_physical_mlp


# ------------------------------------------------------------------ insilico
@dataclass
class InSilicoSpec:
    """``[rule]`` with ``name = "insilico"``: backprop through the exact simulator (upper bound)."""

    name: str = "insilico"


def exact_physics(index: int, layer: PhysicalLayer, e: torch.Tensor) -> torch.Tensor:
    return layer.exact(e)


class InSilico(Rule):
    name = "insilico"

    def check_compatible(self, model: nn.Module) -> None:
        super().check_compatible(model)
        model = require_physical_mlp(self.name, model)
        for k, layer in enumerate(model.physical_layers()):
            if not callable(getattr(layer.substrate, "exact_forward", None)):
                raise IncompatibleError(
                    f"rule `insilico` needs an exact simulator of layer {k} ('{layer.where}'), which exposes none; "
                    'use `mfff` or `pat` with twin = "fitted"'
                )

    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        model = require_physical_mlp(self.name, model)
        account = StepAccount(model)
        metrics = cross_entropy_step(model, batch, exact_physics)
        account.extra_macs = 3 * sum(layer.simulation_macs(batch.x.shape[0]) for layer in model.physical_layers())
        return {**metrics, **account.metrics(backward_factor=2)}


@RULES.register("insilico", spec=InSilicoSpec)
def build_insilico(spec: InSilicoSpec, data) -> Rule:
    return InSilico()


# ----------------------------------------------------------------------- pat
@dataclass
class PATSpec:
    """``[rule]`` with ``name = "pat"``: measured forward, backward through a twin.

    twin: ``exact`` (the simulator's exact_forward) or ``fitted`` (an MLP learned from measurements).
    twin_hidden, twin_samples, twin_epochs, twin_lr: size, warm-up data, warm-up passes and
    learning rate of a fitted twin.
    """

    name: str = "pat"
    twin: Literal["exact", "fitted"] = "fitted"
    twin_hidden: int = 256
    twin_samples: int = 4096
    twin_epochs: int = 30
    twin_lr: float = 2e-3

    def check(self) -> None:
        if self.twin_hidden < 1 or self.twin_samples < 1 or self.twin_epochs < 0 or self.twin_lr <= 0:
            raise ConfigError("rule needs twin_hidden >= 1, twin_samples >= 1, twin_epochs >= 0 and twin_lr > 0")


class FittedTwin(nn.Module):
    """Differentiable surrogate ``f([e; c]) = W2 silu(W1 [e; c] + b1) + b2`` of one physical layer."""

    def __init__(self, n_in: int, n_control: int, n_out: int, hidden: int, seed: int) -> None:
        super().__init__()
        self.hidden = DigitalLayer(n_in + n_control, hidden, "linear", seed=seed)
        self.out = DigitalLayer(hidden, n_out, "linear", seed=seed + 1)

    def forward(self, e: torch.Tensor, control: torch.Tensor | None) -> torch.Tensor:
        if control is not None and control.numel():
            e = torch.cat([e, control.expand(e.shape[0], -1)], dim=1)
        return self.out(F.silu(self.hidden(e)))

    @property
    def n_macs(self) -> int:
        return self.hidden.n_macs + self.out.n_macs


def _control(layer: PhysicalLayer) -> torch.Tensor | None:
    return layer.hardware["control"] if "control" in layer.hardware else None


class PAT(Rule):
    name = "pat"

    def __init__(self, spec: PATSpec | None = None, seed: int = 0) -> None:
        self.spec = spec or PATSpec()
        self.seed = seed
        self.twins: nn.ModuleList | None = None
        self.twin_optim: torch.optim.Optimizer | None = None
        self._pending_state: dict | None = None
        self.warmed = False

    def check_compatible(self, model: nn.Module) -> None:
        super().check_compatible(model)
        model = require_physical_mlp(self.name, model)
        if self.spec.twin == "exact":
            for k, layer in enumerate(model.physical_layers()):
                if not callable(getattr(layer.substrate, "exact_forward", None)):
                    raise IncompatibleError(
                        f"rule `pat` with twin = \"exact\" needs an exact simulator of layer {k} ('{layer.where}'); "
                        'use twin = "fitted"'
                    )

    # ---------------------------------------------------------------- twins
    def _make_twins(self, model: PhysicalMLP) -> None:
        twins = []
        for k, layer in enumerate(model.physical_layers()):
            c = _control(layer)
            twins.append(
                FittedTwin(
                    layer.n_in, 0 if c is None else c.numel(), layer.n_out, self.spec.twin_hidden, self.seed + 31 * k
                )
            )
        self.twins = nn.ModuleList(twins)
        self.twin_optim = torch.optim.Adam(self.twins.parameters(), lr=self.spec.twin_lr)
        if self._pending_state is not None:
            self.twins.load_state_dict(self._pending_state["twins"])
            self.twin_optim.load_state_dict(self._pending_state["optim"])
            self._pending_state = None

    def _fit_step(
        self, twin: FittedTwin, e: torch.Tensor, c: torch.Tensor | None, y: torch.Tensor, sync: bool = True
    ) -> float:
        self.twin_optim.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = F.mse_loss(twin(e, c), y)
            loss.backward()
        if sync:  # DISTRIBUTED: the twins learn from every rank's shard, so they stay identical (no-op in one process)
            distributed.all_reduce_grads(twin.parameters())
        self.twin_optim.step()
        return float(loss.detach())

    def _warm_up(self, model: PhysicalMLP) -> None:
        """Fit each twin on ``twin_samples`` measurements: inputs uniform in the device range,
        controls near their current values (std 10 % of the range, a new draw every 32 samples).

        Data-parallel: rank 0 measures and fits; every rank continues from its twins and twin
        optimizer (one warm-up of device time for the whole job)."""
        if distributed.is_main():
            self._measure_and_fit(model)
        state = distributed.broadcast_object(  # DISTRIBUTED: no-op in one process
            {"twins": self.twins.state_dict(), "optim": self.twin_optim.state_dict()}
        )
        if not distributed.is_main():
            self.twins.load_state_dict(state["twins"])
            self.twin_optim.load_state_dict(state["optim"])

    def _measure_and_fit(self, model: PhysicalMLP) -> None:
        g = torch.Generator().manual_seed(self.seed + 5)
        n, chunk = self.spec.twin_samples, 32
        for layer, twin in zip(model.physical_layers(), self.twins):
            lo, hi = layer.input_range
            param = _control(layer)
            saved = None if param is None else param.detach().clone()
            data = []
            for start in range(0, n, chunk):
                m = min(chunk, n - start)
                e = lo + (hi - lo) * torch.rand(m, layer.n_in, generator=g)
                c = None
                if param is not None:
                    c = (saved + 0.1 * (hi - lo) * torch.randn(param.shape, generator=g)).clamp(lo, hi)
                    with torch.no_grad():
                        param.copy_(c)
                data.append((e, c, layer(e).detach()))
            if param is not None:
                with torch.no_grad():
                    param.copy_(saved)
            for _ in range(self.spec.twin_epochs):
                for e, c, y in data:
                    self._fit_step(twin, e, c, y, sync=False)

    # ------------------------------------------------------------------ step
    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        model = require_physical_mlp(self.name, model)
        account = StepAccount(model)
        twin_macs0 = 0
        if self.spec.twin == "fitted":
            if self.twins is None:
                self._make_twins(model)
            twin_macs0 = sum(t.n_macs for t in self.twins)
            if not self.warmed:
                self._warm_up(model)
                self.warmed = True
        fit_losses = []

        def pat_physics(index: int, layer: PhysicalLayer, e: torch.Tensor) -> torch.Tensor:
            measured = layer(e.detach()).detach()
            c = _control(layer)
            if self.spec.twin == "exact":
                predicted = layer.exact(e)
            else:
                twin = self.twins[index]
                fit_losses.append(self._fit_step(twin, e.detach(), None if c is None else c.detach(), measured))
                predicted = twin(e, c)
            return predicted + (measured - predicted).detach()

        metrics = cross_entropy_step(model, batch, pat_physics)
        if self.spec.twin == "fitted":
            metrics["twin_mse"] = sum(fit_losses) / len(fit_losses)
            # twin forward + input/weight gradients in training, plus its own fitting (counted in n_macs)
            account.extra_macs = 3 * (sum(t.n_macs for t in self.twins) - twin_macs0)
        else:
            account.extra_macs = 3 * sum(layer.simulation_macs(batch.x.shape[0]) for layer in model.physical_layers())
        return {**metrics, **account.metrics(backward_factor=2)}

    def state_dict(self) -> dict:
        if self.twins is None:
            return {}
        return {"twins": self.twins.state_dict(), "optim": self.twin_optim.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self._pending_state = state
            self.warmed = True
            self.twins = None


@RULES.register("pat", spec=PATSpec)
def build_pat(spec: PATSpec, data) -> Rule:
    return PAT(spec)
