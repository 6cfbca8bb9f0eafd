"""GPM-style exact projection (Saha, Garg, Roy, ICLR 2021) as a continual strategy.

After each task, the inputs each projectable layer receives on ``gpm_samples`` training samples
of that task (reduced like HLOP's activity: weighted firing rates for spike trains) form a matrix
``A`` [N, n].  Its SVD extends the stored orthonormal basis ``M`` until the basis holds
``threshold`` of ``||A||_F^2`` (:func:`neuro.functional.subspace.energy_basis`).  Later tasks'
updates are projected exactly, ``G <- G (I - M^T M)``.  Unlike HLOP it stores the SVD of
activity (a batch of data per task at its end), not a Hebbian estimate.
"""

from __future__ import annotations

import torch
from torch import nn

from neuro.continual.base import STRATEGIES, ContinualSpec, ProjectedRule, capture_inputs
from neuro.functional.subspace import energy_basis
from neuro.rules.base import Batch, Rule


class GradientProjectionMemory(ProjectedRule):
    strategy = "gpm"

    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        self.attach(model)
        metrics = self.rule.step(model, batch)
        self.project()
        return metrics

    @torch.no_grad()
    def end_task(self, task: int, model: nn.Module, data) -> None:
        layers = self.attach(model)
        n = min(self.spec.gpm_samples, len(data.train))
        device = layers[0].weight.device
        x = data.train.x[:n].to(device)
        was_training = model.training
        model.eval()
        with capture_inputs(layers, self.spec.activity) as seen:
            self.rule.predict(model, x)
        model.train(was_training)
        thresholds = self.spec.per_layer("gpm_threshold", len(layers))
        for layer, threshold in zip(layers, thresholds):
            if not seen[layer.name]:
                continue
            A = torch.cat(seen[layer.name], 0)
            level = min(1.0, threshold + self.spec.gpm_threshold_step * task)
            self.bases[layer.name] = energy_basis(A, level, self.bases.get(layer.name))


@STRATEGIES.register("gpm")
def build_gpm(spec: ContinualSpec, rule: Rule, seed: int = 0) -> GradientProjectionMemory:
    return GradientProjectionMemory(spec, rule)
