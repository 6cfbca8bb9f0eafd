"""Elastic weight consolidation (Kirkpatrick et al. 2017) as a continual strategy.

After task ``t`` the diagonal empirical Fisher information of every trainable parameter,
``F_i = E_(x,y) [ (d/dw_i log softmax(s(x))_y)^2 ]`` over ``fisher_samples`` training samples
(one sample per backward pass; ``s`` = the rule's prediction scores), is added to the running
sum ``F`` and the weights ``w*`` are stored.  Later steps add the penalty's gradient
``ewc_lambda * F_i (w_i - w*_i)`` to the rule's pseudo-gradient (penalty
``ewc_lambda / 2 * sum_i F_i (w_i - w*_i)^2``; units of the loss per squared weight unit).

Stiffness cap under plain SGD.  The penalty alone moves a weight by ``-lr * k_i (w_i - w*_i)`` per
step with stiffness ``k_i = ewc_lambda * F_i``: explicit gradient descent on a quadratic, which
oscillates with growing amplitude once ``lr * k_i > 2`` (``2 (1 + momentum)`` with momentum).  The
Fisher is summed over tasks, so a few weights cross that bound after enough tasks however small
``ewc_lambda`` is chosen (permuted MNIST, lambda 10, lr 0.01: the largest input-layer ``F_i``
reached 28 > 2 / (0.01 * 10) = 20 after six tasks, and the run diverged in task 7).  When the
workflow binds an :class:`torch.optim.SGD` optimizer, ``k_i`` is therefore capped at ``1 / lr``
(its largest group lr): a capped weight is pulled back onto ``w*_i`` in one step, the limit the
penalty is meant to approach for a weight its old tasks need most; weights below the cap are
unchanged.  The fraction of capped weights is logged as ``ewc_capped``.  Other optimizers
(Adam's steps are bounded by lr per weight) get no cap.
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
        self.max_stiffness: float | None = None  # 1 / lr under plain SGD (set by bind_optimizer)
        self._stiffness: dict[str, torch.Tensor] | None = None
        self._capped = 0.0

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        lr = max(float(g["lr"]) for g in optimizer.param_groups)
        self.max_stiffness = 1.0 / lr if isinstance(optimizer, torch.optim.SGD) and lr > 0 else None
        self._stiffness = None

    def stiffness(self) -> dict[str, torch.Tensor]:
        """``k_i = ewc_lambda * F_i``, capped at :attr:`max_stiffness` when one is bound."""
        if self._stiffness is None:
            k = {n: self.spec.ewc_lambda * f for n, f in self.fisher.items()}
            total = sum(v.numel() for v in k.values())
            if self.max_stiffness is not None and total:
                self._capped = sum(int((v > self.max_stiffness).sum()) for v in k.values()) / total
                k = {n: v.clamp(max=self.max_stiffness) for n, v in k.items()}
            else:
                self._capped = 0.0
            self._stiffness = k
        return self._stiffness

    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        metrics = dict(self.rule.step(model, batch))
        if self.fisher:
            stiffness = self.stiffness()
            penalty = 0.0
            for name, p in model.named_parameters():
                if name not in stiffness or not p.requires_grad:
                    continue
                k = stiffness[name].to(p.device)
                diff = p.detach() - self.star[name].to(p.device)
                g = k * diff
                p.grad = g if p.grad is None else p.grad + g
                penalty += 0.5 * float((k * diff * diff).sum())
            metrics["ewc_penalty"] = penalty
            metrics["ewc_capped"] = self._capped
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
        self._stiffness = None

    def state_dict(self) -> dict:
        return {**super().state_dict(), "fisher": {k: v.cpu() for k, v in self.fisher.items()},
                "star": {k: v.cpu() for k, v in self.star.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.fisher = {k: v.clone() for k, v in (state.get("fisher") or {}).items()}
        self.star = {k: v.clone() for k, v in (state.get("star") or {}).items()}
        self._stiffness = None


@STRATEGIES.register("ewc")
def build_ewc(spec: ContinualSpec, rule: Rule, seed: int = 0) -> ElasticWeightConsolidation:
    return ElasticWeightConsolidation(spec, rule)
