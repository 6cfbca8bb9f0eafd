"""The learning-rule contract.

A rule computes, for one batch, a *pseudo-gradient* for every trainable parameter and
writes it into ``param.grad`` (descent direction: the optimizer subtracts it).  It never
calls ``optimizer.step()``: the trainer does, so every torch optimizer, LR schedule,
gradient clipping, checkpointing and data-parallel all-reduce work the same for
backprop, forward-forward, Hebbian and contrastive rules.  Gradients arrive zeroed
(``None``); a rule may accumulate into them.

A rule declares what it needs from the layers in :class:`Requirements`;
:func:`check_compatible` compares that with each layer's :class:`Capabilities` before
the first batch and fails with one clear line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from neuro.errors import IncompatibleError
from neuro.layers.capabilities import capable_layers


class Batch(NamedTuple):
    x: torch.Tensor  # inputs [batch, F]
    y: torch.Tensor  # integer labels [batch]
    #: the samples' row numbers in their split [batch] (int64), when the trainer knows them; ``None`` otherwise.
    #: Rules that keep a state per training sample (e.g. EP's persistent particles) index it with this.
    index: torch.Tensor | None = None


@dataclass(frozen=True)
class Requirements:
    """What a rule needs from every layer it trains through.

    needs_gradients_through: backpropagation through each layer's forward (BPTT).
    needs_time_steps: time-stepped (stateful) layers.
    needs_lateral: lateral connections within layers.
    """

    needs_gradients_through: bool = False
    needs_time_steps: bool = False
    needs_lateral: bool = False


class Rule:
    """Base class of learning rules.  Subclasses set ``name``, ``requirements`` and ``step``."""

    name: str = "rule"
    requirements: Requirements = Requirements()
    #: alternatives named in the error when a layer cannot be backpropagated through
    gradient_free_alternatives: tuple[str, ...] = ("mfff", "pat")

    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        """Write pseudo-gradients into ``.grad`` of the trainable parameters; return metrics."""
        raise NotImplementedError

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Class scores [batch, classes] used for evaluation (higher is more likely)."""
        return model(x)

    def evaluate(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        """Loss (cross-entropy of the scores) and number correct on one batch, without gradients."""
        scores = self.predict(model, batch.x)
        loss = F.cross_entropy(scores, batch.y, reduction="sum")
        correct = (scores.argmax(1) == batch.y).sum()
        return {"loss_sum": float(loss), "correct": float(correct), "count": float(batch.y.numel())}

    def check_compatible(self, model: nn.Module) -> None:
        check_compatible(self, model)

    # Rules with state of their own (e.g. subspaces, running statistics) override these.
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


def cross_entropy_backward(scores: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Backpropagate ``L = mean_i -log softmax(scores_i)_{y_i}`` into ``.grad``; return loss and accuracy.

    The one supervised step of every backprop rule (``bptt``; ``insilico`` and ``pat`` through
    their physics): the rule builds ``scores`` with whatever forward it differentiates.
    """
    loss = F.cross_entropy(scores, y)
    loss.backward()
    accuracy = (scores.detach().argmax(1) == y).float().mean()
    return {"loss": float(loss.detach()), "accuracy": float(accuracy)}


def check_compatible(rule: Rule, model: nn.Module) -> None:
    """Raise :class:`IncompatibleError` if ``rule`` needs what a layer of ``model`` lacks."""
    req = rule.requirements
    layers = capable_layers(model)
    for index, (name, _module, caps) in enumerate(layers):
        if req.needs_gradients_through and not caps.differentiable:
            alternatives = " or ".join(f"`{a}`" for a in rule.gradient_free_alternatives)
            raise IncompatibleError(
                f"rule `{rule.name}` needs gradients through layer {index} ('{name}'), which runs on "
                f"{caps.substrate} and is not differentiable; use {alternatives}"
            )
        if req.needs_lateral and not caps.lateral:
            raise IncompatibleError(
                f"rule `{rule.name}` needs lateral connections, but layer {index} ('{name}') has none"
            )
    if req.needs_time_steps and not any(c.time_stepped for _, _, c in layers):
        raise IncompatibleError(
            f"rule `{rule.name}` needs time-stepped (spiking) layers, but the model has none"
        )
