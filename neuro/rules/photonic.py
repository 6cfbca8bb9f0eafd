"""Training photonic networks: in silico on an ideal twin, hardware-aware, and in situ (forward only).

All three minimise the cross-entropy ``L = -log softmax(s)_y`` of the scores ``s`` of a network whose
physical layers are photonic simulators (``photonic_mlp``, or ``physical_mlp`` with ``substrate =
"photonic:..."``); they differ in what they may read from the chip.

- ``hwaware`` (in silico).  Backprop through :meth:`simulators.photonic.PhotonicSubstrate.exact_forward`:
  ``twin = "ideal"`` a perfect chip (no fabrication error, DAC, crosstalk, loss: the design the phases are
  computed for, then deployed as they are onto the real chip), ``twin = "exact"`` the calibrated chip
  (static errors known).  ``phase_noise = sigma_train > 0`` makes it hardware-aware: every step draws a
  fresh Gaussian phase error ``N(0, sigma_train^2)`` (rad) per sample and phase shifter, so the loss is
  ``E_dphi[L(phi + dphi)]`` and training favours settings whose accuracy survives unknown phase errors
  (the static fabrication errors and per-shot noise of the deployed chip).  No measurement is taken.
- ``insitu`` (forward only).  The network is measured on the chip and nothing else is read: every
  trainable parameter ``w`` (phases in units of pi rad, attenuations ``sigma``, electronic gains and
  offsets) is updated by simultaneous perturbation of the measured batch loss (Spall 1992,
  :mod:`neuro.rules.spsa`), with Rademacher ``delta`` and step ``eps`` per entry:
  ``g = (L(w + eps delta) - L(w - eps delta)) / (2 eps) * delta``, averaged over ``directions``.  Cost
  ``2 * directions`` measured passes of the batch per step.  ``pretrain_epochs > 0`` first trains in silico
  on the ideal twin (as ``hwaware``; Adam, ``pretrain_lr``) on the training split, i.e. deploys designed
  phases onto the chip and then recovers in situ from the deployed state.
  The adjoint-field scheme of Hughes et al. (Optica 5, 864 (2018)) would measure exact gradients with
  three passes per step, but needs field (interferometric) monitors at every phase shifter, which this
  chip model does not expose (it reads only detector outputs); it is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from neuro.errors import ConfigError, IncompatibleError
from neuro.layers.physical import PhysicalLayer
from neuro.layers.physical_mlp import PhysicalMLP, measured
from neuro.registry import RULES
from neuro.rules.base import Batch, Rule, cross_entropy_backward
from neuro.rules.physical_common import StepAccount, require_physical_mlp
from neuro.rules.spsa import rademacher
from simulators.photonic import PhotonicSubstrate


def require_photonic(rule_name: str, model: nn.Module) -> PhysicalMLP:
    model = require_physical_mlp(rule_name, model)
    for k, layer in enumerate(model.physical_layers()):
        if not isinstance(layer.substrate, PhotonicSubstrate):
            raise IncompatibleError(f"rule `{rule_name}` trains photonic networks, but layer {k} runs on "
                                    f"{layer.where}; use substrate = \"photonic:clements\" "
                                    "(or `insilico`/`pat`/`mfff`)")
    return model


def twin_physics(ideal: bool, phase_noise: float = 0.0, generator: torch.Generator | None = None):
    """A ``physics`` callable: the differentiable simulator of each photonic layer (``ideal``: a perfect chip),
    with ``phase_noise`` rad of fresh Gaussian phase error per sample and phase shifter."""

    def physics(index: int, layer: PhysicalLayer, e: torch.Tensor) -> torch.Tensor:
        layer.sync_params()
        return layer.substrate.exact_forward(e, dict(layer.hardware.items()), ideal=ideal, phase_noise=phase_noise,
                                             generator=generator)

    return physics


@torch.no_grad()
def accuracy_with(model: PhysicalMLP, x: torch.Tensor, y: torch.Tensor, physics=measured) -> float:
    """Accuracy of ``model`` on ``(x, y)`` with the given physics (e.g. :func:`twin_physics` for the design)."""
    return float((model(x, physics=physics).argmax(1) == y).float().mean())


# ------------------------------------------------------------------ hwaware
@dataclass
class HWAwareSpec:
    """``[rule]`` with ``name = "hwaware"``: backprop through the photonic simulator (module docstring).

    twin: ``ideal`` (a perfect chip) or ``exact`` (the chip with its static errors).
    phase_noise: rad std of the phase errors sampled per sample and step (0: plain in silico).
    seed: of those draws.
    """

    name: str = "hwaware"
    twin: Literal["ideal", "exact"] = "ideal"
    phase_noise: float = 0.0
    seed: int = 0

    def check(self) -> None:
        if self.twin not in ("ideal", "exact"):
            raise ConfigError(f"rule.twin must be \"ideal\" or \"exact\", got {self.twin!r}")
        if not self.phase_noise >= 0:
            raise ConfigError(f"rule.phase_noise must be >= 0 rad, got {self.phase_noise}")


class HWAware(Rule):
    name = "hwaware"

    def __init__(self, spec: HWAwareSpec | None = None) -> None:
        self.spec = spec or HWAwareSpec()
        self.generator = torch.Generator().manual_seed(int(self.spec.seed) + 777)

    def check_compatible(self, model: nn.Module) -> None:
        super().check_compatible(model)
        require_photonic(self.name, model)

    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        model = require_photonic(self.name, model)
        account = StepAccount(model)
        physics = twin_physics(self.spec.twin == "ideal", self.spec.phase_noise, self.generator)
        metrics = cross_entropy_backward(model(batch.x, physics=physics), batch.y)
        account.extra_macs = 3 * sum(layer.simulation_macs(batch.x.shape[0]) for layer in model.physical_layers())
        return {**metrics, **account.metrics(backward_factor=2)}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.generator.set_state(state["generator"])


@RULES.register("hwaware", spec=HWAwareSpec)
def build_hwaware(spec: HWAwareSpec, data) -> Rule:
    return HWAware(spec)


# ------------------------------------------------------------------- insitu
@dataclass
class InSituSpec:
    """``[rule]`` with ``name = "insitu"``: SPSA on the measured loss (module docstring).

    eps: perturbation per entry (phases: units of pi rad; sigma, gains, offsets: their own units).
    directions: SPSA directions averaged per step.
    pretrain_epochs, pretrain_lr, pretrain_batch, pretrain_phase_noise: optional in-silico design on the ideal
    twin before the first in-situ step (0 epochs: start from the current settings).
    seed: of the perturbations and the pretraining order.
    """

    name: str = "insitu"
    eps: float = 0.02
    directions: int = 1
    pretrain_epochs: int = 0
    pretrain_lr: float = 0.01
    pretrain_batch: int = 32
    pretrain_phase_noise: float = 0.0
    seed: int = 0

    def check(self) -> None:
        if not self.eps > 0 or self.directions < 1:
            raise ConfigError(f"rule needs eps > 0 and directions >= 1 (got {self.eps}, {self.directions})")
        if (self.pretrain_epochs < 0 or not self.pretrain_lr > 0 or self.pretrain_batch < 1
                or self.pretrain_phase_noise < 0):
            raise ConfigError("rule needs pretrain_epochs >= 0, pretrain_lr > 0, pretrain_batch >= 1, "
                              "pretrain_phase_noise >= 0")


def pretrain_in_silico(model: PhysicalMLP, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, batch: int,
                       phase_noise: float = 0.0, seed: int = 0) -> None:
    """Adam with cosine decay on the cross-entropy through the ideal twin (``epochs`` passes over ``(x, y)``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    steps = max(1, epochs * ((len(y) + batch - 1) // batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(int(seed) + 31)
    physics = twin_physics(True, phase_noise, g)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for start in range(0, len(y), batch):
            idx = order[start:start + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx], physics=physics), y[idx]).backward()
            opt.step()
            sched.step()
    for layer in model.physical_layers():
        layer.sync_params()
    opt.zero_grad(set_to_none=True)


class InSitu(Rule):
    name = "insitu"

    def __init__(self, spec: InSituSpec | None = None, train=None) -> None:
        self.spec = spec or InSituSpec()
        self.train = train
        self.pretrained = self.spec.pretrain_epochs == 0
        self.generator = torch.Generator().manual_seed(int(self.spec.seed) + 4242)

    def check_compatible(self, model: nn.Module) -> None:
        super().check_compatible(model)
        require_physical_mlp(self.name, model)
        if self.spec.pretrain_epochs:
            require_photonic(self.name, model)

    @torch.no_grad()
    def _loss(self, model: PhysicalMLP, batch: Batch) -> float:
        return float(F.cross_entropy(model(batch.x), batch.y))

    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        model = require_physical_mlp(self.name, model)
        if not self.pretrained:
            if self.train is None:
                raise IncompatibleError("rule `insitu` with pretrain_epochs > 0 needs the training split (build it "
                                        "with build_insitu(spec, data))")
            s = self.spec
            pretrain_in_silico(model, self.train.x, self.train.y, epochs=s.pretrain_epochs, lr=s.pretrain_lr,
                               batch=s.pretrain_batch, phase_noise=s.pretrain_phase_noise, seed=s.seed)
            self.pretrained = True
        account = StepAccount(model)
        params = [p for p in model.parameters() if p.requires_grad]
        originals = [p.detach().clone() for p in params]
        grads = [torch.zeros_like(p) for p in params]
        eps = self.spec.eps
        diffs = []
        with torch.no_grad():
            for _ in range(self.spec.directions):
                deltas = [rademacher(p.shape, self.generator).to(p) for p in params]
                values = []
                for sign in (1.0, -1.0):
                    for p, p0, d in zip(params, originals, deltas):
                        p.copy_(p0 + sign * eps * d)
                    values.append(self._loss(model, batch))
                diff = (values[0] - values[1]) / (2 * eps)
                diffs.append(0.5 * (values[0] + values[1]))
                for gr, d in zip(grads, deltas):
                    gr.add_(diff * d / self.spec.directions)
            for p, p0 in zip(params, originals):
                p.copy_(p0)
        for p, gr in zip(params, grads):
            p.grad = gr if p.grad is None else p.grad + gr
        return {"loss": sum(diffs) / len(diffs), **account.metrics(backward_factor=0)}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "pretrained": self.pretrained}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.generator.set_state(state["generator"])
            self.pretrained = bool(state.get("pretrained", True))


@RULES.register("insitu", spec=InSituSpec)
def build_insitu(spec: InSituSpec, data) -> Rule:
    return InSitu(spec, getattr(data, "train", None))
