"""Elastic weight consolidation (Kirkpatrick et al. 2017) as a continual strategy.

After task ``t`` the diagonal empirical Fisher information of every trainable parameter,
``F_i = E_(x,y) [ (d/dw_i log softmax(s(x))_y)^2 ]`` over ``fisher_samples`` training samples
(one sample per backward pass; ``s`` = the rule's prediction scores), is added to the running
sum ``F`` and the weights ``w*`` are stored.  Later steps add the penalty's gradient
``ewc_lambda * F_i (w_i - w*_i)`` to the rule's pseudo-gradient (penalty
``ewc_lambda / 2 * sum_i F_i (w_i - w*_i)^2``; units of the loss per squared weight unit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuro.continual.base import STRATEGIES, ContinualRule, ContinualSpec
from neuro.errors import IncompatibleError
from neuro.rules.base import Batch, Rule


class ElasticWeightConsolidation(ContinualRule):
    strategy = "ewc"

    def __init__(self, spec: ContinualSpec, rule: Rule) -> None:
        super().__init__(spec, rule)
        self.fisher: dict[str, torch.Tensor] = {}
        self.star: dict[str, torch.Tensor] = {}

    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        metrics = dict(self.rule.step(model, batch))
        if self.fisher:
            penalty = 0.0
            for name, p in model.named_parameters():
                if name not in self.fisher or not p.requires_grad:
                    continue
                diff = p.detach() - self.star[name]
                g = self.spec.ewc_lambda * self.fisher[name] * diff
                p.grad = g if p.grad is None else p.grad + g
                penalty += 0.5 * self.spec.ewc_lambda * float((self.fisher[name] * diff * diff).sum())
            metrics["ewc_penalty"] = penalty
        return metrics

    def end_task(self, task: int, model: nn.Module, data) -> None:
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        n = min(self.spec.fisher_samples, len(data.train))
        device = next(iter(params.values())).device
        fisher = {k: torch.zeros_like(p) for k, p in params.items()}
        was_training = model.training
        model.eval()
        for i in range(n):
            x = data.train.x[i : i + 1].to(device)
            y = data.train.y[i : i + 1].to(device)
            model.zero_grad(set_to_none=True)
            scores = self.rule.predict(model, x)
            if not scores.requires_grad:
                raise IncompatibleError(
                    f"continual strategy `ewc` needs prediction scores differentiable in the weights; rule "
                    f"`{self.rule.name}` predicts without gradients: use hlop, gpm or finetune"
                )
            F.cross_entropy(scores.float(), y).backward()
            for k, p in params.items():
                if p.grad is not None:
                    fisher[k] += p.grad.detach() ** 2 / n
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        for k, f in fisher.items():
            self.fisher[k] = self.fisher[k] + f if k in self.fisher else f
            self.star[k] = params[k].detach().clone()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "fisher": {k: v.cpu() for k, v in self.fisher.items()},
                "star": {k: v.cpu() for k, v in self.star.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.fisher = {k: v.clone() for k, v in (state.get("fisher") or {}).items()}
        self.star = {k: v.clone() for k, v in (state.get("star") or {}).items()}


@STRATEGIES.register("ewc")
def build_ewc(spec: ContinualSpec, rule: Rule, seed: int = 0) -> ElasticWeightConsolidation:
    return ElasticWeightConsolidation(spec, rule)
