"""Deployment of a network trained offline onto a drifting physical system, as a trainer hook.

:class:`DeployedBaseline` holds a frozen copy of a physical network (trained elsewhere, e.g.
with ``insilico`` on the drift-free simulator) running on its own substrates that are
*the same device* as the trained model's: same seeds and options, so the same hidden
parameters at the same device time (see :mod:`simulators.wave`: drift is a function of the
device clock only).  At each epoch end it lets the frozen substrates' clocks catch up with the
trained model's (``advance_time``), evaluates the frozen network on the validation split and
adds ``deployed_val_accuracy`` to the epoch record, which
:func:`neuro.report.physical.accuracy_vs_time` plots beside the trained network's curve.
The frozen network's own evaluation takes device time too (one validation pass per epoch).
"""

from __future__ import annotations

import torch
from torch import nn

from neuro.errors import IncompatibleError
from neuro.rules.base import Rule
from neuro.trainer import batches


class DeployedBaseline:
    """Epoch hook ``hook(trainer, record)``: accuracy of a frozen network on the same drifting device."""

    def __init__(self, frozen: nn.Module, rule: Rule, key: str = "deployed_val_accuracy") -> None:
        self.frozen, self.rule, self.key = frozen, rule, key

    def sync_clocks(self, live: nn.Module) -> None:
        pairs = list(zip(live.physical_layers(), self.frozen.physical_layers()))
        if len(pairs) != len(self.frozen.physical_layers()):
            raise IncompatibleError("the deployed network must have as many physical layers as the trained one")
        for a, b in pairs:
            advance = getattr(b.substrate, "advance_time", None)
            clock_a, clock_b = getattr(a.substrate, "clock", None), getattr(b.substrate, "clock", None)
            if not callable(advance) or clock_a is None or clock_b is None:
                raise IncompatibleError(
                    "deployment on a drifting device needs substrates with a clock and advance_time (wave simulators)"
                )
            if clock_a > clock_b:
                advance(clock_a - clock_b)

    @torch.no_grad()
    def accuracy(self, split) -> float:
        self.frozen.eval()
        correct = 0.0
        for batch in batches(split.x, split.y, 1000):
            correct += float((self.rule.predict(self.frozen, batch.x).argmax(1) == batch.y).sum())
        return correct / max(len(split), 1)

    def __call__(self, trainer, record: dict) -> None:
        self.sync_clocks(trainer.model)
        record[self.key] = self.accuracy(trainer.data.val)


__all__ = ["DeployedBaseline"]
