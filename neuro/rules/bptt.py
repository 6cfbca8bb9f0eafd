"""Surrogate-gradient backpropagation through time (BPTT).

Loss: cross-entropy of the model's class scores, ``L = -log softmax(s)_y``, averaged over
the batch.  The gradient flows back through every time step; the spike nonlinearity
uses the surrogate derivative of each layer's :class:`~simulators.surrogate.Surrogate`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from neuro.registry import RULES
from neuro.rules.base import Batch, Requirements, Rule, cross_entropy_backward


class BPTT(Rule):
    name = "bptt"
    requirements = Requirements(needs_gradients_through=True)

    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        return cross_entropy_backward(model(batch.x), batch.y)


@dataclass
class BPTTSpec:
    """``[rule]`` with ``name = "bptt"``: surrogate-gradient backpropagation through time."""

    name: str = "bptt"


@RULES.register("bptt", spec=BPTTSpec)
def build_bptt(spec: BPTTSpec, data) -> Rule:
    return BPTT()
