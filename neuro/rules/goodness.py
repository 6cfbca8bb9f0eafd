"""Forward-forward goodness and its logistic loss (Hinton 2022), shared by FF-family rules.

For a layer's activity ``h [batch, n]``:

- goodness ``G(h) = sum_j h_j^2`` (``"sum_squares"``) or ``mean_j h_j^2`` (``"mean_squares"``);
- the probability that a sample is positive is ``p = sigmoid(G - theta)`` (or
  ``sigmoid(theta - G)`` for the *negative* form, where positive data should have low goodness);
- the per-layer loss over a positive batch and a negative batch is
  ``L = mean(softplus(theta - G_pos)) + mean(softplus(G_neg - theta))``
  (``softplus(-u) = -log sigmoid(u)``, the logistic loss); the negative form swaps the signs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GOODNESS_KINDS = ("sum_squares", "mean_squares")


def goodness(h: torch.Tensor, kind: str = "sum_squares") -> torch.Tensor:
    """Goodness per sample, ``[batch]``; ``h`` is ``[batch, n]`` (flatten other dims first)."""
    sq = h.pow(2)
    if kind == "sum_squares":
        return sq.sum(dim=-1)
    if kind == "mean_squares":
        return sq.mean(dim=-1)
    raise ValueError(f"unknown goodness '{kind}'; choose one of {', '.join(GOODNESS_KINDS)}")


def ff_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, theta: float, negative_form: bool = False) -> torch.Tensor:
    """Logistic FF loss (scalar) for positive and negative goodness values around threshold ``theta``."""
    if negative_form:
        return F.softplus(g_pos - theta).mean() + F.softplus(theta - g_neg).mean()
    return F.softplus(theta - g_pos).mean() + F.softplus(g_neg - theta).mean()


def embed_label(x: torch.Tensor, label: torch.Tensor, n_classes: int, scale: float = 1.0) -> torch.Tensor:
    """Hinton's label embedding: overwrite the first ``n_classes`` features with ``scale * one_hot(label)``.

    ``label = -1`` gives the neutral embedding (all ``scale / n_classes``), used for
    label-free passes such as a softmax readout.
    """
    out = x.clone()
    onehot = torch.zeros(x.shape[0], n_classes, dtype=x.dtype, device=x.device)
    neutral = label < 0
    onehot[~neutral] = F.one_hot(label[~neutral], n_classes).to(x.dtype)
    onehot[neutral] = 1.0 / n_classes
    out[:, :n_classes] = scale * onehot
    return out
