"""Model-free forward-forward (``mfff``; Momeni et al., Science 2023) for physical networks.

No derivative of a physical system is ever needed: every block ``l`` of a
:class:`~neuro.layers.physical_mlp.PhysicalMLP` gets a *local* loss computed from the
measured outputs ``y_l`` of its physical layer through its digital part ``a_l = relu(W_l y_l + b_l)``;
``y_l`` enters as a measured constant, the block input is the detached, length-normalized
``a_{l-1}``, so gradients reach only ``W_l, b_l``.

Variants (``variant``; default ``contrastive``):

- ``supervised``: Hinton's FF with the label embedded in the input.  Positive samples carry the
  true label, negative ones a uniformly drawn wrong label; per block
  ``L_l = mean softplus(theta - G(a_pos)) + mean softplus(G(a_neg) - theta)`` with goodness
  ``G`` (:mod:`neuro.functional.forward_forward`).  Prediction: the label whose embedding gives the largest
  goodness summed over the blocks (one measured pass per class), or with ``predict = "readout"``
  a linear readout trained with cross-entropy on the detached, normalized block outputs of an
  extra measured pass with the neutral label code (one pass to predict).
- ``contrastive``: pairwise contrastive, no label in the input.  With ``s_ij`` the cosine
  similarity of ``a_i`` and ``a_j`` (``i < j`` in the batch), same-class pairs are positive:
  ``L_l = mean_pos softplus(-(s - margin)/tau) + mean_neg softplus((s - margin)/tau)``.  A linear
  readout on the detached, normalized block outputs is trained with cross-entropy (local, digital)
  and gives the prediction.

When the supervised variant is worse, and why its deeper blocks learn little: with its default
goodness (``mean_squares``, logistic loss around ``theta``) it trails the contrastive variant on
vowels by 6 points and in-silico backprop by 8 (bench/RESULTS.md), and its blocks 2-3 add little
(per-block goodness accuracy 70 / 60 / 50 %).  Cause (``python -m bench.physical_phyll --diagnose``,
vowels, 30 epochs, seed 0; per-block accuracy, test accuracy): the squared-length goodness puts what a
block learned (label agrees with input or not) into the *length* of its activity, and the length
normalization between blocks deletes exactly that, so block ``l+1`` starts from a direction that
carries little of it.  It is not the physics: noise-free physics 68 / 60 / 45 % (67.5 %), the
skip concatenation 67 / 54 / 27 % (66.7 %), the pairwise loss alone 69 / 55 / 24 % (63.0 %).  A
goodness that reads the *direction* of the activity, PhyLL's ``goodness = "cosine_random"`` with
``loss = "pairwise"``, survives the normalization and fixes it: 68 / 69 / 67 % (68.3 % test, against
63.8 % with the defaults; 67.1 % with skip added).  Set those two options when using the supervised
variant; its defaults are kept for compatibility.

PhyLL options (Momeni et al. 2023, the authors' ``Acoustic/acoustics_pnn.py``; see
``examples/vowels_phyll.toml``): ``goodness = "cosine_random"`` (``G = cos(|a|, r_l)``, ``r_l`` a
fixed random unit vector per block, :func:`neuro.rules.goodness.cosine_goodness`), ``loss =
"pairwise"`` (``mean log(1 + exp(-theta (G_pos - G_neg)))`` over each sample's positive/negative
pair, instead of the logistic loss around ``theta``), and ``inner_steps`` (the trainer takes this
many optimizer steps on each batch, each with a fresh measurement and the same negative labels).

Hardware parameters inside a physical layer (``control``) are trained by simultaneous
perturbation (:func:`neuro.rules.spsa.spsa_gradient`) of that block's local loss, measured with
the same block inputs: ``2 * spsa_directions`` extra measurements of the batch per block, counted
in ``n_physical_evals``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from neuro.errors import ConfigError
from neuro.functional.forward_forward import (
    GOODNESS_KINDS,
    cosine_goodness,
    ff_loss,
    goodness,
    length_normalize,
    random_direction,
    random_wrong_labels,
    symba_loss,
)
from neuro.layers.physical_mlp import PhysicalBlock
from neuro.registry import RULES
from neuro.rules.base import Batch, Rule
from neuro.rules.physical_common import StepAccount, require_physical_mlp
from neuro.rules.spsa import spsa_gradient

VARIANTS = ("supervised", "contrastive")
MFFF_GOODNESS = (*GOODNESS_KINDS, "cosine_random")
LOSSES = ("logistic", "pairwise")


@dataclass
class MFFFSpec:
    """``[rule]`` with ``name = "mfff"`` (see neuro/rules/mfff.py for the losses).

    spsa_every: train the control inputs by SPSA every this many steps (0: never);
    spsa_eps: perturbation size (device units); spsa_directions: directions averaged per estimate.
    loss: ``logistic`` (around ``theta``) or ``pairwise`` (PhyLL; ``theta`` is the slope).
    inner_steps: optimizer steps per batch; direction_seed: seeds the ``cosine_random`` directions.
    readout_grad: the readout's cross-entropy also trains every block's digital layer through the readout's
        direct connection to it (deep supervision; default off: only the local losses do).  Still no gradient
        crosses a physical layer: each block's input is detached and its measurement a constant.
    """

    name: str = "mfff"
    variant: Literal["supervised", "contrastive"] = "contrastive"
    goodness: Literal["sum_squares", "mean_squares", "cosine_random"] = "mean_squares"
    theta: float = 2.0
    margin: float = 0.5
    tau: float = 0.1
    predict: Literal["goodness", "readout"] = "goodness"
    spsa_every: int = 1
    spsa_eps: float = 0.05
    spsa_directions: int = 1
    loss: str = "logistic"
    inner_steps: int = 1
    direction_seed: int = 0
    readout_grad: bool = False

    def check(self) -> None:
        if self.inner_steps < 1:
            raise ConfigError(f"rule.inner_steps must be >= 1, got {self.inner_steps}")
        if self.spsa_every < 0 or self.spsa_eps <= 0 or self.spsa_directions < 1 or self.tau <= 0:
            raise ConfigError("rule needs spsa_every >= 0, spsa_eps > 0, spsa_directions >= 1 and tau > 0")


def measured_constant(index: int, layer, e: torch.Tensor) -> torch.Tensor:
    """Physics for local rules: the measurement, as a constant of the autograd graph."""
    return layer(e.detach()).detach()


class MFFF(Rule):
    name = "mfff"

    def __init__(self, spec: MFFFSpec | None = None) -> None:
        self.spec = spec or MFFFSpec()
        self.steps = 0
        self.generator = torch.Generator().manual_seed(12345)
        self._directions: dict[int, torch.Tensor] = {}
        self._negatives: torch.Tensor | None = None

    @property
    def inner_steps(self) -> int:
        """Optimizer steps the trainer takes on each batch (``rule.inner_steps``)."""
        return int(self.spec.inner_steps)

    def block_goodness(self, index: int, a: torch.Tensor) -> torch.Tensor:
        """Goodness of block ``index``'s activity ``a`` (``[batch]``)."""
        if self.spec.goodness != "cosine_random":
            return goodness(a, self.spec.goodness)
        r = self._directions.get(index)
        if r is None or r.numel() != a.shape[1]:
            r = self._directions[index] = random_direction(a.shape[1], 1000 * self.spec.direction_seed + index)
        return cosine_goodness(a, r)

    def check_compatible(self, model: nn.Module) -> None:
        super().check_compatible(model)
        require_physical_mlp(self.name, model)

    @property
    def uses_readout(self) -> bool:
        return self.spec.variant == "contrastive" or self.spec.predict == "readout"

    # ---------------------------------------------------------------- losses
    def block_loss(self, a: torch.Tensor, labels: torch.Tensor, index: int = 0) -> torch.Tensor:
        """Local loss of one block's digital output ``a`` (supervised: ``[pos; neg]`` halves)."""
        s = self.spec
        if s.variant == "supervised":
            half = a.shape[0] // 2
            g = self.block_goodness(index, a)
            if s.loss == "pairwise":
                return symba_loss(g[:half], g[half:], alpha=s.theta)
            return ff_loss(g[:half], g[half:], s.theta)
        z = F.normalize(a, dim=1, eps=1e-8)
        sim = z @ z.T
        iu = torch.triu_indices(a.shape[0], a.shape[0], offset=1)
        s_ij = sim[iu[0], iu[1]]
        same = labels[iu[0]] == labels[iu[1]]
        terms = []
        if same.any():
            terms.append(F.softplus(-(s_ij[same] - s.margin) / s.tau).mean())
        if (~same).any():
            terms.append(F.softplus((s_ij[~same] - s.margin) / s.tau).mean())
        return sum(terms) if terms else a.sum() * 0.0

    def _spsa(self, block: PhysicalBlock, e: torch.Tensor, labels: torch.Tensor, h_in: torch.Tensor | None = None,
              index: int = 0) -> None:
        """Write the SPSA estimate of d L_block / d control into the control's ``.grad``."""
        layer = block.physical
        for p in layer.hardware.values():
            original = p.detach().clone()

            def loss_at(c: torch.Tensor, p=p) -> float:
                # float64 loss: SPSA divides the difference of two nearly equal losses by 2 eps, which in
                # float32 loses the digits that make data-parallel ranks agree with one process (issue 16)
                with torch.no_grad():
                    p.copy_(c)
                    y = layer(e)
                    a = block.digital(y if h_in is None else block.digital_input(y, h_in))
                    # float64 loss: SPSA divides the difference of two nearly equal losses by 2 eps, which in
                    # float32 loses the digits that make data-parallel ranks agree with one process (issue 16)
                    return float(self.block_loss(a.double(), labels, index))

            g, _ = spsa_gradient(loss_at, original, self.spec.spsa_eps, self.spec.spsa_directions, self.generator)
            with torch.no_grad():
                p.copy_(original)
            p.grad = g if p.grad is None else p.grad + g

    # ------------------------------------------------------------------ step
    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        model = require_physical_mlp(self.name, model)
        account = StepAccount(model)
        s = self.spec
        x, y = batch.x, batch.y
        if s.variant == "supervised":
            # inner steps on one batch share its negative labels (drawn on the batch's first step)
            if self.steps % s.inner_steps == 0 or self._negatives is None or self._negatives.shape != y.shape:
                self._negatives = random_wrong_labels(y, model.n_classes)
            wrong = self._negatives
            h = torch.cat([model.embed(x, y), model.embed(x, wrong)])
            labels = torch.cat([y, wrong])
        else:
            h, labels = model.embed(x), y
        do_spsa = s.spsa_every > 0 and self.steps % s.spsa_every == 0
        features = []
        losses = []
        for k, block in enumerate(model.blocks):
            h = h.detach()
            e = block.encoder(h)
            y_meas = measured_constant(k, block.physical, e)
            a = block.digital(block.digital_input(y_meas, h))
            loss = self.block_loss(a, labels, k)
            losses.append(loss)
            if do_spsa and len(block.physical.hardware):
                self._spsa(block, e, labels, h, k)
            features.append(length_normalize(a) if s.readout_grad else length_normalize(a).detach())
            h = model.between(a).detach()
        total = torch.stack(losses).sum()
        metrics = {"loss": float(total.detach())}
        if s.variant == "supervised" and s.predict == "readout":
            with torch.no_grad():  # one extra measured pass with the neutral label code
                features = [length_normalize(a) for _, a in model.block_outputs(x, None, measured_constant)]
        if self.uses_readout:
            scores = model.readout(torch.cat(features, dim=1))
            ce = F.cross_entropy(scores, y)
            total = total + ce
            metrics["readout_loss"] = float(ce.detach())
            metrics["accuracy"] = float((scores.detach().argmax(1) == y).float().mean())
        total.backward()
        self.steps += 1
        metrics.update(account.metrics(backward_factor=1))
        return metrics

    # ------------------------------------------------------------- predict
    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        model = require_physical_mlp(self.name, model)
        if self.uses_readout:
            return model(x)
        scores = torch.zeros(x.shape[0], model.n_classes)
        for c in range(model.n_classes):
            label = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
            outs = model.block_outputs(x, label)
            scores[:, c] = sum(self.block_goodness(k, a) for k, (_, a) in enumerate(outs))
        return scores

    @torch.no_grad()
    def block_accuracies(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        """Supervised variant: accuracy of predicting by each block's goodness alone (a diagnostic of
        how much each block learned; one measured pass per class)."""
        model = require_physical_mlp(self.name, model)
        per_block = None
        for c in range(model.n_classes):
            label = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
            g = torch.stack([self.block_goodness(k, a) for k, (_, a) in enumerate(model.block_outputs(x, label))])
            per_block = g[:, :, None] if per_block is None else torch.cat([per_block, g[:, :, None]], dim=2)
        return [float((per_block[k].argmax(1) == y).float().mean()) for k in range(per_block.shape[0])]

    def state_dict(self) -> dict:
        return {"steps": self.steps, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.steps = int(state["steps"])
            self.generator.set_state(state["generator"])


@RULES.register("mfff", spec=MFFFSpec)
def build_mfff(spec: MFFFSpec, data) -> Rule:
    return MFFF(spec)


__all__ = ["MFFF", "MFFFSpec", "build_mfff"]
