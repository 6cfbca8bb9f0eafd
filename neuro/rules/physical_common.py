"""What the physical-network rules (mfff, pat, insilico) share: model checks and accounting.

Accounting per training step (summed per epoch by the trainer, since the keys start with ``n_``):

- ``n_physical_evals``: samples measured on physical layers (forward passes of the physics,
  including SPSA perturbations and measurements taken to fit twins);
- ``n_digital_macs``: multiply-accumulates done digitally: forward MACs of the digital layers,
  times ``1 + backward_factor`` (local rules: 1, the weight gradient; backprop: 2, weight and
  input gradients), plus whatever the rule simulates digitally (exact simulator, twins).
"""

from __future__ import annotations

from torch import nn

from neuro.errors import IncompatibleError
from neuro.layers.physical_mlp import PhysicalMLP
from neuro.rules.base import cross_entropy_backward


def require_physical_mlp(rule_name: str, model: nn.Module) -> PhysicalMLP:
    if not isinstance(model, PhysicalMLP):
        raise IncompatibleError(
            f"rule `{rule_name}` trains physical networks (model.kind = \"physical_mlp\"), got {type(model).__name__}"
        )
    return model


class StepAccount:
    """Counts one step's physical evaluations and digital MACs from the model's counters."""

    def __init__(self, model: PhysicalMLP) -> None:
        self.model = model
        self.evals0, self.macs0 = model.counters()
        self.extra_macs = 0

    def metrics(self, backward_factor: int) -> dict[str, float]:
        evals, macs = self.model.counters()
        return {
            "n_physical_evals": float(evals - self.evals0),
            "n_digital_macs": float((macs - self.macs0) * (1 + backward_factor) + self.extra_macs),
        }


def cross_entropy_step(model: PhysicalMLP, batch, physics) -> dict[str, float]:
    """Backpropagate the readout's cross-entropy through ``physics``; return loss and accuracy."""
    return cross_entropy_backward(model(batch.x, physics=physics), batch.y)
