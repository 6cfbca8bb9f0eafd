"""HLOP: Hebbian learning based orthogonal projection (Xiao, Meng, Zhang, He, Lin, ICLR 2024), for any rule.

:class:`HebbianProjection` wraps a rule.  Each projectable layer ``l`` (see
:func:`neuro.continual.base.projectable_layers`) gets ``k_l`` lateral "subspace" neurons with
weights ``H_l`` [k_l, n_l], driven by the layer's presynaptic activity ``x`` (weighted firing
rates of the spikes it receives, by default).  Per training batch:

1. the wrapped rule writes its pseudo-gradients (``.grad``) while :func:`capture_inputs`
   records what each layer received;
2. each weight's update is projected away from the subspace of the *old* tasks (the rows
   frozen at the end of earlier tasks): ``G <- G (I - Q^T Q)``, ``Q`` an orthonormal basis of
   those rows (``basis = "orthonormal"``) or the rows themselves (``"hebbian"``), which equals
   building the update from ``x~ = (I - Q^T Q) x`` (see :class:`~neuro.continual.base.ProjectedRule`);
3. the lateral weights learn by Oja's subspace rule (Hebbian ``y x^T`` plus anti-Hebbian
   ``-y y^T H``), ``hebbian_iterations`` times on the batch, with momentum and clipping
   (:func:`neuro.functional.subspace.oja_subspace_step`); the old rows stay frozen, so the new
   rows converge to the principal subspace of the residual ``x - Q^T Q x`` of the current task.

At the start of task ``t`` the layer gains new rows (``continual.subspace`` at task 0, then
``continual.increment`` per task, see :meth:`ContinualSpec.subspace_sizes`), initialized
orthonormal; at its end all rows are merged into the frozen set.  No data are stored.
"""

from __future__ import annotations

import torch
from torch import nn

from neuro.continual.base import STRATEGIES, ContinualSpec, ProjectedRule, capture_inputs
from neuro.functional.subspace import oja_subspace_step, orthonormal_rows
from neuro.rules.base import Batch, Rule


def orthonormal_init(k: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` orthonormal rows in R^n (QR of a Gaussian matrix; ``k <= n``)."""
    if k == 0:
        return torch.zeros((0, n))
    q, r = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return q.t().float().contiguous()


class HebbianProjection(ProjectedRule):
    """``HebbianProjection(rule)``: HLOP around any rule whose updates are built from presynaptic activity."""

    strategy = "hlop"

    def __init__(self, spec: ContinualSpec, rule: Rule, *, seed: int = 0) -> None:
        super().__init__(spec, rule)
        self.seed = int(seed)
        self.H: dict[str, torch.Tensor] = {}  # lateral weights [k, n]
        self.M: dict[str, torch.Tensor] = {}  # momentum of dH
        self.n_frozen: dict[str, int] = {}
        self.size_history: list[dict[str, int]] = []

    def begin_task(self, task: int, model: nn.Module, data) -> None:
        super().begin_task(task, model, data)
        layers = self.attach(model)
        sizes = self.spec.subspace_sizes(task, len(layers), [l.in_features for l in layers])
        for index, (layer, k) in enumerate(zip(layers, sizes)):
            dev = layer.weight.device
            H = self.H.get(layer.name, torch.zeros((0, layer.in_features), device=dev))
            if k > H.shape[0]:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + task * 1000 + index)
                new = orthonormal_init(k - H.shape[0], layer.in_features, g).to(dev)
                if H.shape[0]:  # start the new rows outside the frozen subspace
                    Q = orthonormal_rows(H)
                    new = new - (new @ Q.t()) @ Q
                H = torch.cat([H, new], 0)
            self.H[layer.name] = H
            M = self.M.get(layer.name, torch.zeros((0, layer.in_features), device=dev))
            grow = torch.zeros((H.shape[0] - M.shape[0], layer.in_features), device=dev)
            self.M[layer.name] = torch.cat([M, grow], 0)
            self.n_frozen.setdefault(layer.name, 0)

    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        layers = self.attach(model)
        with capture_inputs(layers, self.spec.activity) as seen:
            metrics = self.rule.step(model, batch)
        self.project()
        metrics = dict(metrics)
        lrs = self.spec.per_layer("hebbian_lr", len(layers))
        residuals = []
        with torch.no_grad():
            for layer, lr in zip(layers, lrs):
                if not seen[layer.name] or layer.name not in self.H:
                    continue
                x = torch.cat(seen[layer.name], 0).to(self.H[layer.name].device)
                H, M = self.H[layer.name], self.M[layer.name]
                for _ in range(self.spec.hebbian_iterations):
                    H, M = oja_subspace_step(H, x, lr=lr, momentum=M, beta=self.spec.hebbian_momentum,
                                             n_frozen=self.n_frozen[layer.name], clip=self.spec.hebbian_clip)
                self.H[layer.name], self.M[layer.name] = H, M
                total = float((x * x).sum())
                if total > 0:
                    residuals.append(float(((x - (x @ H.t()) @ H) ** 2).sum()) / total)
        if residuals:
            metrics["hlop_residual"] = sum(residuals) / len(residuals)
        return metrics

    def end_task(self, task: int, model: nn.Module, data) -> None:
        """Merge: every row becomes part of the protected (frozen) subspace."""
        for name, H in self.H.items():
            self.n_frozen[name] = int(H.shape[0])
            self.bases[name] = orthonormal_rows(H) if self.spec.basis == "orthonormal" else H.clone()
        self.size_history.append(self.sizes())

    def state_dict(self) -> dict:
        return {**super().state_dict(), "H": {k: v.cpu() for k, v in self.H.items()},
                "M": {k: v.cpu() for k, v in self.M.items()}, "n_frozen": dict(self.n_frozen),
                "size_history": list(self.size_history)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.H = {k: v.clone() for k, v in (state.get("H") or {}).items()}
        self.M = {k: v.clone() for k, v in (state.get("M") or {}).items()}
        self.n_frozen = dict(state.get("n_frozen") or {})
        self.size_history = list(state.get("size_history") or [])

    def to(self, device) -> HebbianProjection:
        for d in (self.H, self.M, self.bases):
            for k in d:
                d[k] = d[k].to(device)
        return self


@STRATEGIES.register("hlop")
def build_hlop(spec: ContinualSpec, rule: Rule, seed: int = 0) -> HebbianProjection:
    return HebbianProjection(spec, rule, seed=seed)
