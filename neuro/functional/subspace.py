"""Subspace math for continual learning: Oja's subspace rule, orthogonal projection, principal angles.

Pure torch functions over explicit tensors (no modules, no hidden state).  Shapes: a subspace
is held as the rows of ``H`` [k, n] (k lateral neurons, n presynaptic inputs); activity ``x``
is [B, n] (one row per sample); a weight gradient ``G`` is [out, n] (same column space as the
layer's input).

Oja's subspace rule (Oja 1989), as used by HLOP (Xiao et al., ICLR 2024) for lateral neurons
with weights ``H``::

    y  = H x                      (lateral responses, [k])
    dH = eta * y (x - H^T y)^T    (Hebbian term y x^T, anti-Hebbian term -y y^T H)

Averaged over a batch, ``dH = eta (H C - H C H^T H)`` with ``C = E[x x^T]``; its stable fixed
points are the orthonormal bases of the top-k eigenspace of ``C`` (rows orthonormal, spanning
the principal subspace).  Rows that are *frozen* (old tasks) do not move, but they take part in
``H^T y``, so the free rows learn the principal subspace of the *residual* ``x - H_f^T H_f x``.

Projection: a linear layer's update from presynaptic activity has the form ``G = sum_b d_b x_b^T``
(``d_b`` the postsynaptic learning signal of sample or time step ``b``).  With ``x~ = P x``,
``P = I - Q^T Q`` (``Q`` orthonormal rows spanning the old subspace), the update becomes
``G~ = sum_b d_b (P x_b)^T = G P`` (``P`` is symmetric), so ``G~ Q^T = 0``: the change of the
layer's output ``G~ x`` vanishes for every ``x`` in the old subspace.
"""

from __future__ import annotations

import math

import torch


def oja_subspace_step(
    H: torch.Tensor,
    x: torch.Tensor,
    *,
    lr: float,
    momentum: torch.Tensor | None = None,
    beta: float = 0.9,
    n_frozen: int = 0,
    clip: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One batch-averaged step of Oja's subspace rule; returns ``(H_new, momentum_new)``.

    ``dH = clamp(Y^T (X - Y H) / B, -clip, clip)`` with ``Y = X H^T`` (``X`` [B, n]); rows
    ``0 .. n_frozen - 1`` get ``dH = 0`` and zero momentum (they do not move).  With a ``momentum`` buffer
    (same shape as ``H``): ``m <- beta m + (1 - beta) dH``, ``H <- H + lr m``; without, ``H <- H + lr dH``.
    Units: ``H`` is dimensionless (y has the units of x); ``lr`` is per (unit of x)^2.
    """
    if H.dim() != 2 or x.dim() != 2 or H.shape[1] != x.shape[1]:
        raise ValueError(
            f"oja_subspace_step: H [k, n] and x [B, n] must share n, got {tuple(H.shape)} and {tuple(x.shape)}")
    x = x.to(H.dtype)
    y = x @ H.t()  # [B, k]
    residual = x - y @ H  # [B, n]
    delta = (y.t() @ residual) / max(x.shape[0], 1)
    if clip:
        delta = delta.clamp(-clip, clip)
    if n_frozen:
        delta[:n_frozen] = 0.0
    if momentum is None:
        return H + lr * delta, None
    new_m = beta * momentum + (1.0 - beta) * delta
    if n_frozen:
        new_m[:n_frozen] = 0.0  # frozen rows neither move nor carry momentum
    return H + lr * new_m, new_m


def orthonormal_rows(H: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Orthonormal rows spanning the row space of ``H`` [k, n] (reduced QR; rank-deficient rows dropped).

    Directions whose singular value is below ``tol * max singular value`` are left out.
    """
    if H.numel() == 0 or H.shape[0] == 0:
        return H.new_zeros((0, H.shape[-1]))
    U, S, Vh = torch.linalg.svd(H.double(), full_matrices=False)
    keep = S > tol * S.max().clamp_min(1e-300)
    return Vh[keep].to(H.dtype)


def project_gradient(G: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """``G (I - Q^T Q)``: a weight update [out, n] with its input-side component in ``span(Q rows)`` removed.

    Exact when ``Q`` has orthonormal rows; with HLOP's raw lateral weights it is ``G - G H^T H``.
    """
    if Q.shape[0] == 0:
        return G
    return G - (G @ Q.t()) @ Q


def project_inputs(x: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """``(I - Q^T Q) x`` for activity ``x`` [..., n] (the presynaptic activity HLOP's update uses)."""
    if Q.shape[0] == 0:
        return x
    return x - (x @ Q.t()) @ Q


def principal_angles(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the row spaces of ``A`` [k, n] and ``B`` [m, n].

    ``cos theta_i`` are the singular values of ``Qa Qb^T`` with ``Qa``, ``Qb`` orthonormal bases
    (Björck & Golub 1973).  Small angles are computed from the sines (``||Qb - Qb Qa^T Qa||``
    directions) so that angles near 0 are accurate to ~1e-8 instead of ~1e-4 via ``arccos``.
    """
    Qa = torch.linalg.qr(A.double().t()).Q.t()  # [k, n]
    Qb = torch.linalg.qr(B.double().t()).Q.t()  # [m, n]
    if Qa.shape[0] < Qb.shape[0]:
        Qa, Qb = Qb, Qa
    # sines: singular values of the part of Qb outside span(Qa)
    residual = Qb - (Qb @ Qa.t()) @ Qa
    sines = torch.linalg.svdvals(residual).clamp(0.0, 1.0)
    cosines = torch.linalg.svdvals(Qb @ Qa.t()).clamp(0.0, 1.0)
    angles_sin = torch.arcsin(sines.flip(0))  # ascending
    angles_cos = torch.arccos(cosines)  # ascending already (cos descending)
    return torch.where(angles_sin < math.pi / 4, angles_sin, angles_cos)


def energy_basis(
    activity: torch.Tensor, threshold: float, basis: torch.Tensor | None = None, max_rank: int | None = None
) -> torch.Tensor:
    """GPM's basis update (Saha et al. 2021) from an activity matrix ``activity`` [N, n].

    With an existing orthonormal ``basis`` M [r, n]: the residual ``R = A - A M^T M`` is
    decomposed, ``R^T = U S V^T``, and the fewest leading directions of ``U`` are added such
    that ``||A M^T||^2 + sum_{i<=k} s_i^2 >= threshold * ||A||^2`` (the "energy" criterion).
    Without a basis this keeps the top directions holding ``threshold`` of ``||A||_F^2``.
    Returns the new orthonormal basis [r + k, n] (re-orthonormalized for numerical safety).
    """
    A = activity.double()
    n = A.shape[1]
    M = basis.double() if basis is not None and basis.shape[0] else A.new_zeros((0, n))
    total = float((A * A).sum())
    if total <= 0.0:
        return M.to(activity.dtype)
    kept = float(((A @ M.t()) ** 2).sum()) if M.shape[0] else 0.0
    if kept >= threshold * total:
        return M.to(activity.dtype)
    R = A - (A @ M.t()) @ M if M.shape[0] else A
    _, S, Vh = torch.linalg.svd(R, full_matrices=False)
    energy = kept + torch.cumsum(S**2, 0)
    k = int(torch.searchsorted(energy, torch.tensor(threshold * total, dtype=energy.dtype)).item()) + 1
    k = min(k, Vh.shape[0], n - M.shape[0])
    if max_rank is not None:
        k = max(0, min(k, max_rank - M.shape[0]))
    new = torch.cat([M, Vh[:k]], 0)
    return orthonormal_rows(new).to(activity.dtype)


__all__ = ["energy_basis", "oja_subspace_step", "orthonormal_rows", "principal_angles", "project_gradient",
           "project_inputs"]
