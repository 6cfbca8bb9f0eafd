"""A fixed random projection computed optically: intensity through a scattering medium, sign recovered.

A scattering medium (LightOn's optical processing unit: a DMD, a diffuser, a camera) computes
``|R u|^2`` for a fixed complex Gaussian transmission matrix ``R [H, C]`` (entries ``CN(0, 1)``: real and
imaginary parts ``N(0, 1/2)``) and an input ``u [C]``; the camera reads intensities, so the sign and the
linearity are lost.  Launay et al. (photonic DFA co-processor, arXiv:2012.06373) recover a *linear* random
projection of the error by interfering it with a fixed reference on the same input plane.  We use the
two-shot symmetric form with a reference ``b [C]`` (here ``b = beta * 1``)::

    |R(b + e)|^2 - |R(b - e)|^2 = 4 Re( conj(R b) * (R e) )            (elementwise over the H outputs)

which is exactly linear in ``e``: the projection is ``B_opt e`` with the fixed real random matrix
``B_opt = Re( diag(conj(R b)) R ) / s`` after the normalization ``s = |b| sqrt(C / 2)``.  Then
``E[B_opt_ij^2] = (C + 3) / C^2`` (``(R b)_i`` contains ``beta R_ij`` itself: ``Re(conj(R b)_i R_ij) = beta |R_ij|^2 +
Re(conj(z) R_ij)`` with ``z ~ CN(0, beta^2 (C - 1))`` independent of ``R_ij``), close to the ``1/C`` of the digital
``B ~ N(0, 1/C)``, and ``E[B_opt_ij] = beta / s`` (a small common offset).  Every signal recovered this
way is ``(|R(b + e)|^2 - |R(b - e)|^2) / (4 s)``.  Optional camera noise: each intensity gets
``noise * I * n`` (relative, ``n ~ N(0, 1)``) before the difference.
"""

from __future__ import annotations

import math

import torch


class OpticalProjection:
    """A fixed medium ``R [H, C]`` and reference ``b = beta * 1 [C]`` (module docstring); ``seed`` draws ``R``."""

    def __init__(self, n_out: int, n_in: int, *, seed: int = 0, beta: float = 1.0, noise: float = 0.0) -> None:
        if n_out < 1 or n_in < 1 or not beta > 0 or not noise >= 0:
            raise ValueError(f"optical projection needs n_out, n_in >= 1, beta > 0, noise >= 0 "
                             f"(got {n_out}, {n_in}, {beta}, {noise})")
        g = torch.Generator().manual_seed(int(seed))
        re = torch.randn(n_out, n_in, generator=g, dtype=torch.float64)
        im = torch.randn(n_out, n_in, generator=g, dtype=torch.float64)
        self.R = torch.complex(re, im) / math.sqrt(2.0)
        self.b = torch.full((n_in,), float(beta), dtype=torch.float64)
        self.scale = float(beta) * math.sqrt(n_in) * math.sqrt(n_in / 2.0)  # |b| sqrt(C/2), |b| = beta sqrt(C)
        self.noise = float(noise)
        self.noise_rng = torch.Generator().manual_seed(int(seed) + 1)
        self.n_measurements = 0

    def intensity(self, u: torch.Tensor) -> torch.Tensor:
        """Camera image ``|R u|^2`` of real inputs ``u [batch, C]`` -> ``[batch, H]`` (float64, with noise)."""
        field = u.to(torch.float64).to(torch.complex128) @ self.R.T
        inten = field.real ** 2 + field.imag ** 2
        self.n_measurements += int(u.shape[0])
        if self.noise > 0:
            inten = inten + self.noise * inten * torch.randn(inten.shape, generator=self.noise_rng, dtype=inten.dtype)
        return inten

    def project(self, e: torch.Tensor) -> torch.Tensor:
        """The recovered projection ``(|R(b + e)|^2 - |R(b - e)|^2) / (4 s)`` of ``e [batch, C]`` (dtype of ``e``)."""
        plus, minus = self.intensity(self.b + e.detach()), self.intensity(self.b - e.detach())
        return ((plus - minus) / (4.0 * self.scale)).to(e.dtype)

    def matrix(self) -> torch.Tensor:
        """The equivalent real matrix ``B_opt = Re(diag(conj(R b)) R) / s`` ``[H, C]`` (float64), for checks."""
        rb = self.R @ self.b.to(torch.complex128)
        return (rb.conj()[:, None] * self.R).real / self.scale
