"""Simultaneous-perturbation (SPSA) gradient estimates from forward evaluations only.

For a loss ``f(theta)`` that can only be evaluated (e.g. measured through a physical system),
draw ``K`` Rademacher directions ``delta_k`` (entries +-1) and estimate

    g = (1/K) sum_k (f(theta + eps delta_k) - f(theta - eps delta_k)) / (2 eps) * delta_k

(Spall 1992; since ``delta_i = +-1``, ``1/delta_i = delta_i``).  For smooth ``f``,
``E[g] = grad f(theta) + O(eps^2)``: the cross terms ``delta_i delta_j`` (i != j) average to
zero, and central differences cancel the even-order terms.  Cost: ``2 K`` evaluations of ``f``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def rademacher(shape, generator: torch.Generator | None = None) -> torch.Tensor:
    """Entries +-1 with probability 1/2 each."""
    return torch.randint(0, 2, tuple(shape), generator=generator).float() * 2 - 1


def spsa_gradient(f: Callable[[torch.Tensor], float], theta: torch.Tensor, eps: float, n_directions: int = 1,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """SPSA estimate of ``grad f(theta)`` and the number of evaluations of ``f`` it took (``2 K``)."""
    if eps <= 0 or n_directions < 1:
        raise ValueError(f"SPSA needs eps > 0 and n_directions >= 1 (got {eps}, {n_directions})")
    theta = theta.detach()
    g = torch.zeros_like(theta)
    for _ in range(n_directions):
        delta = rademacher(theta.shape, generator).to(theta)
        diff = float(f(theta + eps * delta)) - float(f(theta - eps * delta))
        g += diff / (2 * eps) * delta
    return g / n_directions, 2 * n_directions
