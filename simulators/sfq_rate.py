"""A differentiable rate model of the SFQ networks of :mod:`simulators.sfq`, and bias-current training.

Rates in GHz (pulses per ns), currents in uA, times in ns unless named ``_ps``.  The model gives
expected steady-state rates of the same circuits, assuming Poisson pulse statistics where the
circuit's behaviour depends on timing:

- synapse: ``lam_ij = p_ij r_j`` with ``p_ij = Phi((I_ij - I_50) / sigma_I)``; a float weight is
  the signed transmission probability ``w_ij = sign_ij p_ij`` in ``[-1, 1]``.
- merger (non-paralyzable dead time ``tau``, only where a neuron has >= 2 inputs of that sign):
  ``out = sum_j lam_j / (1 + (Lam - lam_j + s lam_j) tau)`` with ``Lam = sum_j lam_j``.  ``s = 1``
  for Poisson sources (then ``out = Lam / (1 + Lam tau)``, the Poisson collision formula);
  ``s = 0`` for trains whose own pulses are never closer than ``tau`` (periodic converters,
  neuron outputs: their reset time exceeds the merger dead time), which collide only with others.
  That is the first level of the exact recursion ``M(A) = sum_j lam_j (1 - tau M(A \\ j))`` for such trains;
  ``merger_depth=2`` (an option, not the default) goes one level deeper and, behind hidden layers, accounts for
  the copies of one source pulse that correlated trains carry (they arrive stagger-spaced and collide less):
  :func:`merger_rate`, :func:`coincidence_factor`.
- neuron: arrivals are excitatory with stationary probability ``q = lam+ / (lam+ + lam-)``; their
  types form a two-state Markov chain with a lag-1 correlation ``rho`` (regular trains alternate more
  than Poisson ones, and so do excitatory and inhibitory trains that carry the same input pulses;
  :func:`type_correlation`): ``types="counts"`` (default) matches the long-window count statistics of
  the trains; ``types="renewal"`` takes it from two independent renewal streams with Gamma intervals
  of the streams' interval ``CV^2`` (``rho = 1 - Lambda int S+ S- dt``), with the same covariance
  correction; it matches the measured lag-1 correlations better and agrees better with the pulse
  emulator on random networks (below), but not yet on the XOR case study (bench/RESULTS.md).  The chain
  over ``(k, type of the last arrival)`` (``k -> min(k+1, n_max)`` then fire with ``P(k')`` and
  reset to 0, or ``k -> max(k-1, n_min)``) renews at every firing, so the firing probability per
  arrival is ``f = 1 / E[N]`` with ``E[N]`` the mean number of arrivals from ``(0, E)`` to the next
  firing (absorbing-chain moments), and the rate without reset time is ``r0 = (lam+ + lam-) f``.
  The reset ``tau_r = 1 / clock`` loses the arrivals that fall in it: excitatory ones beyond the
  shortest excitatory gap (merger dead time, or ``1 / rate`` of a regular train) cost
  ``E[N | (0,E)] - (1 - P(1)) E[N | (1,E)]`` arrivals each, inhibitory ones save
  ``E[N | (-1,I)] - E[N | (0,E)]``: ``r = r0 / (1 + r0 * extra)``; exact for Poisson excitation alone.
  The firing arrival is excitatory, so the hazards in the reset are those of the chain's next
  type: ``lam+ a_e / q`` and ``lam- (1 - a_e) / (1 - q) = lam- (1 - rho)``.  Behind a merger of
  trains whose own pulses are farther apart than the reset (``s = 0``), the train that caused the
  firing is silent in the reset: excitatory hazard ``Lam - sum_j lam_j^2 / Lam``.  Regular trains
  (periodic converters, neuron outputs) also remember a lost arrival: its train is silent for a
  whole interval after it, so the streams that the chain sees after the reset lack it (the periodic
  inhibitory train whose pulse fell in the reset adds a firing: flux balance); Poisson streams
  forget it.  Arrivals lost per unit time are removed from the streams, type by type with the
  stream's memory weight ``mu = sum_j lam_j^2 / Lam^2`` (the chance that the next arrival is of the
  lost arrival's own train), else in the stationary mix, and the chain is solved on the effective
  streams (a fixed point in ``r``; see :func:`neuron_rate`, ``memory``).
- Fano factors ``F = Var N(T) / E N(T)`` travel with the rates: Poisson converters 1, periodic ones
  :data:`PERIODIC_FANO` (fitted), thinning by a synapse ``p F + 1 - p``, merging ``sum F_j lam_j /
  Lam / (1 + Lam tau)^2``, neuron outputs ``CV^2`` of the renewal interval.  So do the count
  covariances between the trains of a layer (neurons that fire on the same input pulses), by linear
  response ``C = J (C_in + diag(F r_in)) J^T``, ``J = dr_out / dr_in`` (see :func:`layer_rate`);
  they add to the merged trains' variances and give the excitatory-inhibitory covariance of each
  neuron's arrivals.
- interval ``CV^2`` (for the renewal type chain) travel with the rates too: converters 0 (periodic)
  or 1 (Poisson), thinning ``p CV^2 + 1 - p`` (exact for renewal trains), merging: the superposition's
  interval ``CV^2 = 2 Lambda int prod_j R_j dt - 1`` (:func:`superposition_cv2`) times ``1 / (1 + Lambda tau)^2``,
  neuron outputs the renewal interval's ``CV^2``.  Unlike the Fano factor of a periodic converter
  (:data:`PERIODIC_FANO`, an effective long-window value) this is the converter's own interval statistic.

Validity (``tests/test_sfq.py::test_rate_model_agrees_with_pulse_emulator``: every neuron of 5 random
networks per case, error relative to the largest input rate), renewal type chain: one layer, Poisson
inputs <= 1.02 % (the model's assumption); two layers, Poisson inputs <= 4.1 %; periodic inputs <= 3.6 %
(one layer), <= 6.3 % (two layers).  With the count type chain (the default): 1.1, 5.2, 5.5 and 7.7 %;
before the covariances, the exc-inh covariance in the chain, the reset hazards of the chain's next
type and the effective streams: 1.1, 7.8, 8.0 and 16.2 %; before the type correlation and the reset
terms: 2.0, 9.2, 22.9 and 28.1 %.  On other random networks (``bench/sfq_rate_diagnosis.py --table
--seed 7|8|9``; bench/RESULTS.md) the worst errors are 0.8-1.1, 4.6-8.6, 2.5-6.9 and 4.1-12.3 %: the
one-step chain misses the longer memory of nearly periodic trains, the lag-1 type correlation of
correlated streams is approximate, and the merger's collisions between correlated trains are those
of independent ones (``merger_depth=2`` models them, but does not lower the two-layer worst errors:
bench/RESULTS.md).  Training with the model is then refined in situ (SPSA).

Training (no :mod:`neuro` code):

- :func:`train_float` backpropagates a task loss through the rate model to float weights
  ``w in [-1, 1]`` and neuron biases (uA); :func:`float_to_sfq` converts them to routing and bias
  currents (``I = I_50 + sigma_I Phi^-1(|w|)``, clipped to the bias range);
- :func:`train_biases` backpropagates through the rate model to the bias currents of a fixed
  routing (offline training of a chip's currents);
- :func:`spsa` trains bias currents in situ from forward-only measurements of output rates
  (simultaneous-perturbation stochastic approximation), e.g. on an :class:`~simulators.sfq_substrate.SFQSubstrate`
  with hidden process variation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from simulators.errors import SettingError
from simulators.sfq import CellParams, Layer

_SQRT2 = math.sqrt(2.0)

_EFFECTIVE_ITERATIONS = 3
"""Fixed-point iterations of the effective arrival streams of :func:`neuron_rate` (``memory`` given);
the map contracts by about the arrivals lost per firing (0.15 in ``test_reset_memory_flux_balance``, <= 0.4 at
40 GHz), so 3 leave < 7 % of the first correction (0.04 % of the rate there); the agreement of the test's
networks is the same to 0.01 % with 2 and with 8 iterations."""

PERIODIC_FANO = 0.35
"""Effective Fano factor of a randomly phased periodic input converter as the neurons see it.

A periodic train's count variance stays below 1/4 however long the window (Fano factor -> 0), but a
neuron integrates over a few arrivals only, where the count of a train with a random phase
fluctuates; 0.35 is fitted (not derived): it minimizes the largest error of the rate model against
the pulse emulator on 6 random 3-4 and 6 random 3-4-2 networks with periodic inputs (rng seed 11):
largest error 2.9 % (one layer) and 5.6 % (two layers) of the largest input rate; 0.3 gives 3.2 and
6.2 %, 0.5 gives 6.9 and 7.7 %.
"""


def phi(z: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF."""
    return 0.5 * (1.0 + torch.erf(z / _SQRT2))


def transmission(bias_uA: torch.Tensor, cells: CellParams, i50_uA: torch.Tensor | float | None = None) -> torch.Tensor:
    """Synapse pass probability ``Phi((I_b - I_50) / sigma_I)``."""
    i50 = cells.i50_uA if i50_uA is None else i50_uA
    return phi((bias_uA - i50) / cells.sigma_syn_uA)


MERGER_DEPTHS = (1, 2)
"""Depths of the collision hierarchy of :func:`merger_rate` for trains without self-collisions (``s = 0``):
1 (default) is the model of 2026-12-03 (the others' output taken as Poisson), 2 the next level (closer to the
emulator's merger, but not the default of the network model: see :func:`layer_rate` and bench/RESULTS.md)."""


def merger_rate(
    lam: torch.Tensor, tau_ns: float, self_collisions: torch.Tensor | float = 0.0, depth: int = 1
) -> torch.Tensor:
    """Output rate (GHz) of a merger with dead time ``tau_ns`` (ns) fed by ``lam [..., J]`` (GHz) -> ``[...]``.

    ``self_collisions`` ``s`` (0 or 1, broadcast over ``[...]``).  ``s = 1`` (Poisson sources):
    ``Lam / (1 + Lam tau)``, the Poisson collision formula, exact (``Lam = sum_j lam_j``).

    ``s = 0``: independent stationary trains whose own pulses are more than ``2 tau`` apart (periodic converters,
    thinned by synapses; neuron outputs, approximately: their intervals exceed the reset, ``1.2 tau``).  The
    emitted pulses are at least ``tau`` apart, so at most one lies in ``(t - tau, t)``, and an arrival of train
    ``j`` at ``t`` is absorbed exactly when one does.  It cannot be ``j``'s own, and whether another train's pulse
    there was emitted depends on the ``tau`` before it, which ``j``'s previous pulse (``> 2 tau`` back) does not
    reach; so (the trains' phases independent) ``P(absorbed) = tau M(A \\ j)`` with ``M(B)`` the output rate of
    a merger of the trains ``B`` alone, and

        ``M(A) = sum_{j in A} lam_j (1 - tau M(A \\ j))``,   ``M({j}) = lam_j``,   ``M({}) = 0``

    (neglected: chains of collisions reaching back to ``j``'s previous pulse, and ``j``'s effect on the others'
    emissions through them).  This recursion over subsets is truncated at ``depth``:

    - ``depth=1`` (default; the model of 2026-12-03): ``M(A \\ j)`` by the Poisson formula on ``Lam - lam_j``, i.e.
      ``out = sum_j lam_j / (1 + (Lam - lam_j) tau)``;
    - ``depth=2``: ``M(A \\ j) = sum_{k != j} lam_k (1 - tau psi(A \\ {j, k}))`` with the closure
      ``psi(C) = Lam_C / (1 + tau (Lam_C - H_C))``, ``H_C = sum_{l in C} lam_l^2 / Lam_C`` (the Poisson
      formula without the collisions of a train with itself: exact for ``|C| <= 1``, the Poisson formula for
      many small trains, and ``tau psi < 1`` while every ``lam_l < 1 / tau``).  Exact for up to 3 trains (two
      periodic trains of one rate and a uniform relative phase: ``2 lam - 2 lam^2 tau``, against
      ``2 lam / (1 + lam tau)`` at depth 1), and the Poisson formula in the limit of many small trains
      (``Lam (1 - x + x^2 / (1 + x)) = Lam / (1 + x)``, ``x = Lam tau``).  Cost ``O(J^2)`` per merger.

    Against a Monte Carlo of the emulator's merger on independent thinned periodic trains
    (``tests/test_sfq.py::test_merger_of_periodic_trains_against_monte_carlo``): e.g. 19.4, 11.9 and 17.7 GHz:
    depth 1: 38.82, depth 2: 37.77, Monte Carlo 37.83 GHz.  The absorbed fraction ``tau M(A \\ j)`` is clamped
    to ``[0, 1]``.
    """
    return merger_trains(lam, tau_ns, self_collisions, depth).sum(-1)


def merger_trains(
    lam: torch.Tensor,
    tau_ns: float,
    self_collisions: torch.Tensor | float = 0.0,
    depth: int = 1,
    pair: torch.Tensor | None = None,
) -> torch.Tensor:
    """Emitted rate of each input train of a merger ``[..., J]`` (GHz; :func:`merger_rate` is their sum).

    ``pair [..., J, J]`` (``depth=2``, ``s = 0`` only; default 1): the mean number of train ``k``'s pulses in the
    ``tau`` before an arrival of train ``j``, relative to independent trains (``tau lam_k``): correlated trains
    (copies of one source pulse, :func:`coincidence_factor`).  It scales the pair terms of ``M(A \\ j)``:
    ``P(j absorbed) = tau sum_{k != j} c_jk lam_k (1 - tau psi(A \\ {j, k}))``.
    """
    if depth not in MERGER_DEPTHS:
        raise SettingError(f"merger depth must be one of {MERGER_DEPTHS}, got {depth!r}")
    total = lam.sum(-1, keepdim=True)
    s = torch.as_tensor(self_collisions, dtype=lam.dtype)
    if s.dim():
        s = s[..., None]
    if depth == 1:
        return lam / (1.0 + (total - lam + s * lam) * tau_ns)
    poisson = lam / (1.0 + total * tau_ns)
    sq = (lam**2).sum(-1, keepdim=True)
    lj, lk = lam[..., :, None], lam[..., None, :]  # [..., J, J]: pairs (j, k), C = A \ {j, k}
    lam_c = (total[..., None] - lj - lk).clamp_min(0.0)
    herf = (sq[..., None] - lj**2 - lk**2).clamp_min(0.0) / lam_c.clamp_min(1e-12)
    psi = lam_c / (1.0 + tau_ns * (lam_c - herf).clamp_min(0.0))
    off = 1.0 - torch.eye(lam.shape[-1], dtype=lam.dtype)
    if pair is not None:
        off = off * pair
    m_others = (off * lk * (1.0 - tau_ns * psi)).sum(-1)  # M(A \ j): [..., J]
    periodic = lam * (1.0 - tau_ns * m_others).clamp(0.0, 1.0)
    return s * poisson + (1 - s) * periodic


def poisson_merger_rate(lam_total: float, tau_ns: float) -> float:
    """The Poisson collision formula for a non-paralyzable dead time: ``lam / (1 + lam tau)``."""
    return lam_total / (1.0 + lam_total * tau_ns)


def fire_probabilities(
    bias_uA: torch.Tensor, cells: CellParams, ic_uA: torch.Tensor | float | None = None
) -> torch.Tensor:
    """``P(k) = Phi((I_n + k dI - I_c) / sigma_n)`` for ``k = n_min..n_max``: ``[..., n_max - n_min + 1]``."""
    ic = torch.as_tensor(cells.neuron_ic_uA if ic_uA is None else ic_uA, dtype=bias_uA.dtype)
    if ic.dim():
        ic = ic[..., None]
    k = torch.arange(cells.n_min, cells.n_max + 1, dtype=bias_uA.dtype)
    return phi((bias_uA[..., None] + k * cells.neuron_step_uA - ic) / cells.sigma_neu_uA)


TYPE_CHAINS = ("renewal", "counts")
"""Lag-1 correlations of the arrival types of :func:`neuron_rate` (:func:`type_correlation`): ``"renewal"`` from the
streams' interval statistics, ``"counts"`` (default; the 2026-12-03 model) from their long-window count statistics."""

_QUAD_NODES = 48
"""Gauss-Legendre nodes of the renewal integrals (:func:`renewal_overlap`, :func:`superposition_cv2`); 64 and 256
nodes give ``Lambda K`` within 1e-6 on the cases of ``tests/test_sfq.py::test_renewal_type_correlation*``."""

_CV2_MIN, _CV2_MAX = 1e-4, 50.0
"""Interval ``CV^2`` range of the Gamma renewal streams (1e-4: a practically periodic train; shapes ``1 / CV^2``)."""


class _GammaSurvival(torch.autograd.Function):
    """``Q(a, x)``, the regularized upper incomplete gamma function, with a gradient in the shape ``a`` too (torch
    has none): forward difference with step ``1e-6 a`` (relative error ~1e-6); ``dQ/dx = -x^(a-1) e^-x / Gamma(a)``."""

    @staticmethod
    def forward(ctx, a, x):
        q = torch.special.gammaincc(a, x)
        ctx.save_for_backward(a, x, q)
        return q

    @staticmethod
    def backward(ctx, grad):
        a, x, q = ctx.saved_tensors
        h = 1e-6 * a
        da = (torch.special.gammaincc(a + h, x) - q) / h
        dx = -torch.exp((a - 1) * torch.log(x.clamp_min(1e-300)) - x - torch.lgamma(a))
        return grad * da, grad * dx


@functools.lru_cache(maxsize=8)
def _gauss_legendre(n: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(n)
    return torch.tensor((x + 1) / 2, dtype=dtype), torch.tensor(w / 2, dtype=dtype)


def renewal_overlap(lam_e, lam_i, cv2_e, cv2_i):
    """``Lambda K = (lam+ + lam-) int_0^inf S+(t) S-(t) dt`` for two Gamma renewal streams (broadcasts).

    ``S+-`` are the interval survival functions, Gamma with mean ``1 / lam`` (ns; rates in GHz) and squared
    coefficient of variation ``CV^2`` (shape ``a = 1 / CV^2``, clamped to ``[1e-4, 50]``): ``S(t) = Q(a, a lam t)``.
    In ``u = Lambda t`` the integrand is 1 up to the first stream's bulk, so ``Lambda K = lo + int_lo^top S+ S- du``
    with ``lo = min_s max(0, 1 - 8 sqrt(CV_s^2)) / q_s``, ``top = min_s (1 + 12 sqrt(CV_s^2)) / q_s`` (``q_s`` the
    stream's share of ``Lambda``; the Gamma tails beyond are < 1e-9) by Gauss-Legendre (:data:`_QUAD_NODES`).
    Differentiable in the rates and ``CV^2`` (``lo``, ``top`` held).  Poisson streams: ``Lambda K = 1``; periodic
    ones: ``min(1 / q+, 1 / q-)``.
    """
    dtype = torch.as_tensor(lam_e).dtype
    tot = lam_e + lam_i
    qe = (lam_e / tot.clamp_min(1e-12)).clamp(1e-9, 1 - 1e-9)
    qi = 1 - qe
    ce = torch.as_tensor(cv2_e, dtype=dtype).clamp(_CV2_MIN, _CV2_MAX) + torch.zeros_like(qe)
    ci = torch.as_tensor(cv2_i, dtype=dtype).clamp(_CV2_MIN, _CV2_MAX) + torch.zeros_like(qe)
    with torch.no_grad():
        top = torch.minimum((1 + 12 * ce.sqrt()) / qe, (1 + 12 * ci.sqrt()) / qi)
        lo = torch.minimum((1 - 8 * ce.sqrt()).clamp_min(0) / qe, (1 - 8 * ci.sqrt()).clamp_min(0) / qi)
        lo = torch.minimum(lo, top)
    x, w = _gauss_legendre(_QUAD_NODES, dtype)
    u = lo[..., None] + (top - lo)[..., None] * x  # [..., n]
    ae, ai = (1 / ce)[..., None], (1 / ci)[..., None]
    se = _GammaSurvival.apply(ae.expand_as(u), (ae * qe[..., None] * u).clamp_min(1e-300))
    si = _GammaSurvival.apply(ai.expand_as(u), (ai * qi[..., None] * u).clamp_min(1e-300))
    return lo + (top - lo) * (se * si * w).sum(-1)


def _recurrence_survival(a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Forward-recurrence survival of a Gamma renewal train (shape ``a``) at ``s = lam t``:
    ``R = lam int_t^inf S = Q(a + 1, a s) - s Q(a, a s)`` (``dR/ds = -Q(a, a s)``)."""
    z = (a * s).clamp_min(1e-300)
    return (_GammaSurvival.apply(a + 1, z) - s * _GammaSurvival.apply(a, z)).clamp(0.0, 1.0)


_SUPERPOSITION_TRAINS = 3
"""Trains of a stream integrated one by one in :func:`superposition_cv2` (the fastest); the rest as equal trains."""


def superposition_cv2(lam: torch.Tensor, cv2: torch.Tensor | float, exact: bool = False) -> torch.Tensor:
    """Interval ``CV^2`` of the superposition of independent stationary Gamma renewal trains (differentiable).

    ``lam [..., J]`` (GHz; 0: absent), ``cv2 [..., J]`` -> ``[...]``.  The superposition's forward-recurrence
    survival is ``prod_j R_j(t)`` and its mean ``E[X^2] / (2 E[X])`` with ``E[X] = 1 / Lambda``, so
    ``CV^2 = 2 Lambda int_0^inf prod_j R_j(t) dt - 1``, ``R_j`` the trains' forward-recurrence survivals
    (:func:`_recurrence_survival`).  ``exact=False`` (the model's, for cost): the :data:`_SUPERPOSITION_TRAINS`
    fastest trains enter one by one, the others (total ``Lambda_r``) as ``n = Lambda_r^2 / sum_r lam_j^2`` equal
    trains of rate ``Lambda_r / n`` and ``CV^2 = sum_r lam_j CV_j^2 / Lambda_r`` (``prod_r R_j -> R^n``; exact for
    Poisson trains and for equal trains).  Gauss-Legendre on ``[0, min_j (2 + 15 CV_j + 15 CV_j^2) / lam_j]``, the
    range held (no gradient through it).  One train: its own ``CV^2``; Poisson trains: 1; two periodic trains of
    one rate: 1/3 (intervals uniform on one period, split by the other train's phase).
    """
    dtype = lam.dtype
    c = torch.as_tensor(cv2, dtype=dtype).clamp(_CV2_MIN, _CV2_MAX) + torch.zeros_like(lam)
    total = lam.sum(-1)
    rest_lam = rest_c = None
    if not exact and lam.shape[-1] > _SUPERPOSITION_TRAINS + 1:
        lam_top, idx = lam.topk(_SUPERPOSITION_TRAINS, dim=-1)
        c_top = c.gather(-1, idx)
        rest_lam = (total - lam_top.sum(-1)).clamp_min(0.0)
        rest_sq = ((lam**2).sum(-1) - (lam_top**2).sum(-1)).clamp_min(1e-24)
        rest_c = ((lam * c).sum(-1) - (lam_top * c_top).sum(-1)) / rest_lam.clamp_min(1e-12)
        n_rest = (rest_lam**2 / rest_sq).clamp_min(1.0)
        # the rest as one train of rate Lambda_r / n (its survival raised to the power n below)
        lam = torch.cat([lam_top, (rest_lam / n_rest)[..., None]], -1)
        c = torch.cat([c_top, rest_c.clamp(_CV2_MIN, _CV2_MAX)[..., None]], -1)
        power = torch.cat([torch.ones_like(lam_top), n_rest[..., None]], -1)
    else:
        power = torch.ones_like(lam)
    x, w = _gauss_legendre(_QUAD_NODES, dtype)
    on = lam > 1e-9
    lam_s = torch.where(on, lam, torch.ones_like(lam))
    with torch.no_grad():
        span = torch.where(on, (2 + 15 * c.sqrt() + 15 * c) / (lam_s * power), torch.full_like(lam, float("inf")))
        top = span.min(-1).values
        top = torch.where(torch.isfinite(top), top, torch.ones_like(top))
    t = top[..., None, None] * x  # [..., 1, n]
    a = (1 / c)[..., None].expand(t.shape[:-2] + (lam.shape[-1], x.shape[0]))
    R = _recurrence_survival(a, lam_s[..., None] * t)
    log_r = torch.where(on[..., None], power[..., None] * torch.log(R.clamp_min(1e-300)), torch.zeros_like(R))
    out = 2 * total * top * (torch.exp(log_r.sum(-2)) * w).sum(-1) - 1
    return torch.where(total > 1e-9, out.clamp_min(0.0), torch.ones_like(out))


def type_correlation(
    lam_e, lam_i, cv2_e, cv2_i, kappa=0.0, fano_e=None, fano_i=None, *, chain: str = "renewal"
) -> torch.Tensor:
    """Lag-1 correlation ``rho = P(E | E) - P(E | I)`` of a neuron's arrival types (broadcasts; unclamped).

    ``"renewal"``: each stream is a stationary renewal process with Gamma intervals of its interval ``CV^2``
    (``cv2_e``, ``cv2_i``), the two independent.  After an excitatory arrival the excitatory stream restarts and
    the inhibitory one is at its forward-recurrence time ``R-`` (density ``lam- S-(t)``), so
    ``1 - a_e = P(R- < X+) = lam- K`` and ``a_i = P(R+ < X-) = lam+ K`` with ``K = int_0^inf S+(t) S-(t) dt``:
    ``rho = a_e - a_i = 1 - Lambda K`` (:func:`renewal_overlap`; the chain's stationary share is then exactly
    ``q = lam+ / Lambda``).  Exact for independent renewal trains, and for superpositions of them given each
    superposition's interval survival (the superposition's ``CV^2`` is :func:`superposition_cv2`).  Correlated
    streams (count covariance rate ``C``, correlation coefficient ``kappa = C / sqrt(V+ V-)``, ``V = F lam`` with
    the Fano factors ``fano_e``, ``fano_i``; default the ``CV^2``) scale the chain's ``g = (1 + rho) / (1 - rho)``
    by the count model's factor ``(1 - kappa^2) (V+ + V-) / (V+ + V- + 2 C)`` (an approximation: the measured lag-1
    correlation of correlated streams lies between the uncorrected and the corrected value; see bench/RESULTS.md).

    ``"counts"``: ``rho = (g - 1) / (g + 1)``, ``g = F+ F- (1 - kappa^2) Lambda / (V+ + V- + 2 C)`` (the walk's
    long-window variance, see :func:`neuron_rate`; ``cv2_*`` unused).
    """
    if chain not in TYPE_CHAINS:
        raise SettingError(f"type chain must be one of {', '.join(TYPE_CHAINS)}, got {chain!r}")
    dtype = torch.as_tensor(lam_e).dtype
    fe = torch.as_tensor(cv2_e if fano_e is None else fano_e, dtype=dtype)
    fi = torch.as_tensor(cv2_i if fano_i is None else fano_i, dtype=dtype)
    kappa = torch.as_tensor(kappa, dtype=dtype)
    sd = (fe * fi * lam_e * lam_i).clamp_min(1e-20).sqrt()  # sqrt(V+ V-) (clamp: no 0 * inf gradient)
    var0 = (fe * lam_e + fi * lam_i).clamp_min(1e-12)
    var = (var0 + 2 * kappa * sd).clamp_min(1e-12)
    if chain == "counts":
        g = fe * fi * (1 - kappa**2) * (lam_e + lam_i) / var
    else:
        rho0 = 1 - renewal_overlap(lam_e, lam_i, cv2_e, cv2_i)
        g = (1 + rho0) / (1 - rho0).clamp_min(1e-12) * (1 - kappa**2) * var0 / var
    return (g - 1) / (g + 1)


@dataclass
class Coincidence:
    """Which source pulses a layer's input trains carry (the copies that make them correlated).

    A source is a train of the previous layer's inputs (a network input converter for the second layer); each of
    its pulses reaches the neurons of the previous layer at one time, so the neurons that fire on it emit copies
    at one time.  ``share [B, n, S]``: fraction of train ``k``'s pulses that are copies of source ``i``'s
    (``pi_ki``); ``fire [B, n, S]``: probability that train ``k`` carries a copy of a given pulse of source ``i``
    (``phi_ki = r_k pi_ki / x_i``); ``period_ns [B, S]``: the shortest spacing of a source's own pulses
    (``1 / x_i`` for a periodic converter, 0 for a Poisson one or a neuron output).
    """

    share: torch.Tensor
    fire: torch.Tensor
    period_ns: torch.Tensor


def coincidence_factor(co: Coincidence, cells: CellParams) -> torch.Tensor:
    """Pair factors ``c [B, n, n]`` of :func:`merger_trains` for a layer's input trains carrying copies ``co``.

    Input ``j`` of a layer reaches its mergers ``L_j = j * stagger_jtls * jtl_ps`` late, so the copies of one source
    pulse in trains ``j`` and ``k`` arrive ``L = L_j - L_k`` apart (from ``j``'s copy back to ``k``'s), at least
    ``stagger_jtls * jtl_ps`` (11.4 ps) > ``tau`` (8.2 ps): they never collide.  Given an arrival of ``j`` at ``t``
    that is a copy of source ``i``'s pulse (probability ``pi_ji``), train ``k``'s pulses in ``(t - tau, t)``
    differ from independent trains (``tau lam_k``) in two ways:

    - a periodic source has no other pulse within ``|L| + tau`` of that one when ``period_i >= |L| + tau``
      (``rho_i = 1``; else ``rho_i = 0``): ``k``'s copies of source ``i`` (rate ``pi_ki lam_k``) are absent from the
      window;
    - if ``k`` fired on that source pulse (probability ``phi_ki``) it fired nothing within the reset
      ``R = 1 / clock`` of it on either side (a firing before would have lost the pulse in the reset; after it the
      neuron is in its reset): a hole ``(-R, R)`` around ``k``'s copy, which covers ``h(L)`` of the window
      ``(L - tau, L)`` (in ``k``'s time from its copy): ``h = |(L - tau, L) & (-R, R)|`` (6.8 ps for ``L`` = 11.4 ps,
      ``k = j - 1``; 0 for ``k > j`` and for ``|j - k| >= 2`` at the default delays); the rest of ``k``'s pulses
      (rate ``lam_k (1 - pi_ki rho_i)``) are absent from it.

    ``c_jk = 1 - sum_i pi_ji [pi_ki rho_i + phi_ki (1 - pi_ki rho_i) h(L_jk) / tau]`` (clamped to ``[0, 1]``),
    the neurons' decisions on one source pulse taken independent, the rest of ``k``'s pulses as in independent
    trains.  With a stagger spacing below ``tau`` (copies that collide) no correction is made (``c = 1``).
    No gradient flows through ``c`` (as for the covariances).
    """
    share, fire, period = (z.detach() for z in (co.share, co.fire, co.period_ns))
    n = share.shape[-2]
    dtype = share.dtype
    tau = cells.merger_dead_ps / 1000.0
    step = cells.stagger_jtls * cells.jtl_ps / 1000.0
    if not step > tau:
        return torch.ones(share.shape[:-2] + (n, n), dtype=dtype)
    idx = torch.arange(n, dtype=dtype)
    lag = (idx[:, None] - idx[None, :]) * step  # L_jk (ns)
    reset = 1.0 / cells.clock_GHz
    hole = torch.minimum(lag, torch.full_like(lag, reset)) - torch.maximum(lag - tau, torch.full_like(lag, -reset))
    hole = hole.clamp_min(0.0)  # [n, n]
    rho = (period[:, None, None, :] >= lag.abs()[None, :, :, None] + tau).to(dtype)  # [B, j, k, S]
    pk = share[:, None, :, :]  # pi_ki
    inner = pk * rho + fire[:, None, :, :] * (1 - pk * rho) * (hole / tau)[None, :, :, None]
    c = 1.0 - (share[:, :, None, :] * inner).sum(-1)
    return c.clamp(0.0, 1.0)


def neuron_rate(
    lam_exc: torch.Tensor,
    lam_inh: torch.Tensor,
    bias_uA: torch.Tensor,
    cells: CellParams,
    ic_uA: torch.Tensor | float | None = None,
    exc_min_gap_ns: torch.Tensor | float = 0.0,
    fano_exc: torch.Tensor | float = 1.0,
    fano_inh: torch.Tensor | float = 1.0,
    return_fano: bool = False,
    exc_hazard_GHz: torch.Tensor | float | None = None,
    independent: bool = False,
    cov_ei_GHz: torch.Tensor | float = 0.0,
    memory: tuple | None = None,
    cv2_exc: torch.Tensor | float | None = None,
    cv2_inh: torch.Tensor | float | None = None,
    types: str = "counts",
):
    """Firing rate (GHz) of fluxon-integrating neurons (see the module docstring); broadcasts.

    ``independent=True``: the previous model (kept to reproduce earlier results): independent
    arrival types (Fano factors taken as 1) and a reset that loses only excitatory time,
    ``r = r0 / (1 + r0 max(tau_r - gap, 0))``.

    ``exc_min_gap_ns``: the shortest gap between excitatory arrivals (the merger dead time when
    they come through a merger, ``1 / clock`` or more for a periodic train or a neuron's output,
    0 for a Poisson train); only the part of the reset beyond it loses arrivals:
    ``r = r0 / (1 + r0 max(tau_r - gap, 0))``.

    ``fano_exc``, ``fano_inh``: Fano factors ``F = Var N(T) / E N(T)`` (long ``T``) of the
    excitatory and inhibitory arrival trains (1: Poisson; ``1 - p``: a periodic train thinned by a
    synapse of transmission ``p``).  The arrival types form a two-state Markov chain with the
    stationary excitatory fraction ``q`` and lag-1 correlation ``rho = (g - 1) / (g + 1)``,
    ``g = F+ F- (lam+ + lam-) / (F+ lam+ + F- lam-)``, which gives the walk ``N+ - N-`` the
    variance per arrival of independent trains with these Fano factors (conditional on the
    number of arrivals); ``rho`` is clamped to ``>= -min(q / (1 - q), (1 - q) / q)`` (a valid chain)
    and ``<= 0.9``.  ``F+ = F- = 1`` gives ``rho = 0``: independent types, the Poisson chain.
    The neuron's state is ``(k, type of the last arrival)``.

    ``cov_ei_GHz``: the count covariance rate ``C = Cov(N+(T), N-(T)) / T`` (long ``T``) of the
    excitatory and inhibitory trains (0: independent; ``layer_rate`` derives it from the covariances
    between a layer's input trains).  With ``V+- = F+- lam+-`` the walk's conditional variance per
    arrival given the number of arrivals is ``(V+ V- - C^2) / (V+ + V- + 2 C)``, so
    ``g = F+ F- (1 - kappa^2) (lam+ + lam-) / (F+ lam+ + F- lam- + 2 C)`` with the correlation
    coefficient ``kappa = C / sqrt(V+ V-)`` clamped to ``[-0.98, 0.98]``; ``C = 0`` gives the ``g`` above.

    Reset: the arrival that fired is excitatory, so in the reset the chain's next arrival is
    excitatory with ``a_e`` (not ``q``): lost excitatory arrivals ``hazard * max(tau_r - gap, 0) * a_e / q``,
    inhibitory ones ``lam- tau_r (1 - rho)`` per firing (``rho = 0``: the Poisson hazards).

    ``memory = (mu+, mu-)`` (default ``None``: the reset terms above, exact for Poisson trains):
    the arrival trains keep the memory of an arrival lost in the reset (regular trains: its train is
    silent for a whole interval after it).  The arrivals lost per unit time, ``r n+`` and ``r n-``,
    are then removed from the streams, a fraction ``mu`` of each type by type and the rest in the
    stationary mix: ``lam+' = lam+ - r (mu+ n+ + q m)``, ``lam-' = lam- - r (mu- n- + (1 - q) m)``,
    ``m = (1 - mu+) n+ + (1 - mu-) n-``, and ``r = (lam+' + lam-') f(lam+', lam-')`` with the chain
    solved on the effective streams (same Fano factors and correlation coefficient): a fixed point in
    ``r`` iterated :data:`_EFFECTIVE_ITERATIONS` times from the value above.  With no clipping at
    ``n_min``/``n_max`` this is the flux balance ``r = lam+' - lam-'`` for a neuron firing at ``k = 1``.

    ``types`` (:data:`TYPE_CHAINS`; default ``"counts"``, the ``g`` above): ``"renewal"`` takes ``rho`` from two
    independent renewal streams with Gamma intervals of interval ``CV^2`` ``cv2_exc``, ``cv2_inh`` (default:
    the Fano factors), ``rho = 1 - (lam+ + lam-) int_0^inf S+(t) S-(t) dt``, and applies the covariance through
    ``g = (1 + rho) / (1 - rho)`` times the factor ``(1 - kappa^2) (V+ + V-) / (V+ + V- + 2 C)`` of the ``g``
    above (see :func:`type_correlation`); ``"counts"``: ``rho`` from ``g`` above (the long-window walk variance; exact
    for the walk's variance but not for the short-lag alternation: measured lag-1 correlations are smaller in
    magnitude).  Both coincide for Poisson trains.  ``independent=True`` ignores ``types``.

    ``return_fano``: also return the Fano factor of the output train, ``CV^2`` of the renewal
    interval (every firing restarts the chain in ``(0, excitatory)``):
    ``CV^2 = (Var N + E N F_in) / (E N)^2 * (r / r0)^2`` with ``N`` the arrivals per interval
    (absorbing-chain moments), ``F_in = (F+ lam+ + F- lam-) / (lam+ + lam-)`` and ``(r / r0)^2``
    for the reset time added to each interval.
    """
    n = cells.n_max - cells.n_min  # counts k = n_min..n_max as indices 0..n; reset to k = 0
    m = n + 1
    zero = -cells.n_min
    lam_exc, lam_inh, bias_uA = torch.broadcast_tensors(lam_exc, lam_inh, bias_uA)
    dtype = lam_exc.dtype
    fe = torch.as_tensor(1.0 if independent else fano_exc, dtype=dtype)
    fi = torch.as_tensor(1.0 if independent else fano_inh, dtype=dtype)
    ce = fe if cv2_exc is None else torch.as_tensor(cv2_exc, dtype=dtype)
    ci = fi if cv2_inh is None else torch.as_tensor(cv2_inh, dtype=dtype)
    total = lam_exc + lam_inh
    p = fire_probabilities(bias_uA, cells, ic_uA)  # [..., m]
    idx = torch.arange(m)
    up = torch.clamp(idx + 1, max=n)
    down = torch.clamp(idx - 1, min=0)
    p_up = p[..., up]  # P(min(k+1, n)) for each k
    shape = p_up.shape[:-1]
    rows = torch.arange(2 * m)
    L, k = rows // m, rows % m
    eye = torch.eye(2 * m, dtype=dtype)
    to_up, to_down = eye[up[k]], eye[m + down[k]]  # row s: one-hot of (k+1, E) and (k-1, I)
    kappa = None

    def chain(lam_e, lam_i):
        """The type chain and its absorbing-chain moments for arrival rates (lam_e, lam_i)."""
        nonlocal kappa
        tot = lam_e + lam_i
        q = (lam_e / tot.clamp_min(1e-12)).clamp(1e-9, 1 - 1e-9)
        var = (fe * lam_e + fi * lam_i).clamp_min(1e-12)
        if independent:
            g = fe * fi * tot / var
            rho = (g - 1) / (g + 1)
        else:  # conditional variance of N+ given N+ + N- per arrival, over q (1 - q): (V+ V- - C^2) / (V+ + V- + 2 C)
            sd = (fe * fi * lam_e * lam_i).clamp_min(1e-20).sqrt()  # sqrt(V+ V-) (clamp: no 0 * inf gradient)
            if kappa is None:  # correlation coefficient, kept for the effective streams below
                kappa = (torch.as_tensor(cov_ei_GHz, dtype=dtype) / sd).clamp(-0.98, 0.98)
            var = (var + 2 * kappa * sd).clamp_min(1e-12)
            rho = type_correlation(lam_e, lam_i, ce, ci, kappa, fe, fi, chain=types)
        rho_min = -torch.minimum(q / (1 - q), (1 - q) / q)
        rho = torch.maximum(rho, rho_min).clamp(max=0.9)
        a_e = q + rho * (1 - q)  # P(next excitatory | last excitatory)
        a_i = q * (1 - rho)  # P(next excitatory | last inhibitory)
        # states s = L * m + k, L = 0: last arrival excitatory, 1: inhibitory.  Q: moves without firing.
        a_row = torch.where(L == 0, a_e[..., None], a_i[..., None])  # [..., 2m]: P(next excitatory)
        stay = a_row * (1 - p_up[..., k])  # excitatory without firing
        Q = stay[..., None] * to_up + (1 - a_row)[..., None] * to_down
        # arrivals to the next firing from each state: t = (I - Q)^-1 1 (absorbing-chain moments); every
        # firing restarts the chain in (0, E), so the firing probability per arrival is f = 1 / t(0, E)
        leak = 1e-9  # keeps I - Q invertible for a neuron that (practically) never fires
        IQ = eye - Q * (1 - leak)
        t = torch.linalg.solve(IQ, torch.ones(shape + (2 * m, 1), dtype=dtype))
        return q, rho, a_e, var, IQ, t

    q, rho, a_e, var, IQ, t = chain(lam_exc, lam_inh)
    t0, t_up, t_down = t[..., zero, 0], t[..., up[zero], 0], t[..., m + down[zero], 0]
    f = 1.0 / t0
    r0 = total * f
    # reset: arrivals in the reset after a firing are lost.  Excitatory ones (hazard lam+ beyond the gap)
    # cost t0 - (1 - P(1)) t(1, E) arrivals each, inhibitory ones (lam- tau_r) save t(-1, I) - t0 each.
    tau_r = 1.0 / cells.clock_GHz
    hazard = lam_exc if exc_hazard_GHz is None else torch.as_tensor(exc_hazard_GHz, dtype=dtype)
    # the firing arrival is excitatory: the chain's next type is E with a_e, I with 1 - a_e (not q, 1 - q), so
    # the hazards in the reset are scaled by a_e / q and (1 - a_e) / (1 - q) = 1 - rho (1 for Poisson trains)
    n_exc = hazard * torch.clamp(tau_r - torch.as_tensor(exc_min_gap_ns, dtype=dtype), min=0.0) * (a_e / q)
    n_inh = lam_inh * tau_r * (1 - rho)
    extra = (n_exc * (t0 - (1 - p_up[..., zero]) * t_up) + n_inh * (t0 - t_down)) / total.clamp_min(1e-12)
    r = r0 / (1.0 + r0 * extra).clamp_min(1e-3)
    if independent:
        r = r0 / (1.0 + r0 * torch.clamp(tau_r - torch.as_tensor(exc_min_gap_ns, dtype=dtype), min=0.0))
    elif memory is not None:
        mu_e, mu_i = (torch.as_tensor(z, dtype=dtype) for z in memory)
        mixed = (1 - mu_e) * n_exc + (1 - mu_i) * n_inh  # lost arrivals the streams replace (stationary mix)
        for _ in range(_EFFECTIVE_ITERATIONS):
            le = (lam_exc - r * (mu_e * n_exc + q * mixed)).clamp_min(0.0)
            li = (lam_inh - r * (mu_i * n_inh + (1 - q) * mixed)).clamp_min(0.0)
            _, _, _, _, IQ, t = chain(le, li)
            t0 = t[..., zero, 0]
            f = 1.0 / t0
            r = (le + li) * f
        r0 = total * f  # for the output's CV^2: (r / r0)^2, the time in the reset
    if not return_fano:
        return r
    with torch.no_grad():  # the output's Fano factor only shapes the next layer's chain: no gradient through it
        en = t0.detach()
        en2 = (2 * torch.linalg.solve(IQ.detach(), t.detach()) - t.detach())[..., zero, 0]
        var_n = (en2 - en**2).clamp_min(0.0)
        f_in = var / total.clamp_min(1e-12)
        cv2 = (var_n + en * f_in) / en**2 * (r / r0.clamp_min(1e-300)) ** 2
        fano = torch.where(f > 1e-7, cv2, torch.ones_like(cv2))
    return r, fano


@dataclass
class RateLayer:
    """Float parameters of one layer: signed transmission ``w [n_out, n_in]`` in [-1, 1] and neuron
    biases ``bias_neu [n_out]`` (uA).  ``active``: which synapses exist (default: all)."""

    w: torch.Tensor
    bias_neu: torch.Tensor
    active: torch.Tensor | None = None


def layer_rate(
    r_in: torch.Tensor,
    layer: RateLayer,
    cells: CellParams,
    *,
    poisson_inputs: bool = False,
    i50_uA=None,
    ic_uA=None,
    fano_in: torch.Tensor | float | None = None,
    return_fano: bool = False,
    independent: bool = False,
    cov_in: torch.Tensor | None = None,
    return_cov: bool = False,
    cv2_in: torch.Tensor | float | None = None,
    types: str = "counts",
    merger_depth: int = 1,
    coincidence: Coincidence | None = None,
    return_coincidence: bool = False,
    periodic_inputs: bool = False,
):
    """Output rates ``[B, n_out]`` of one layer for input rates ``r_in [B, n_in]`` (GHz).

    ``fano_in [B, n_in]`` (or a number): Fano factors of the input trains (default 1 for Poisson
    inputs, 0 for periodic ones).  ``cv2_in``: their interval ``CV^2`` (default ``fano_in``), thinned
    (``p CV^2 + 1 - p``) and superposed (:func:`superposition_cv2`) into each stream's ``CV^2`` for the
    renewal type chain (``types``, see :func:`neuron_rate`).  A synapse of transmission ``p`` thins a
    train of Fano factor ``F`` to ``p F + 1 - p``; a merger sums the trains and its dead time regularizes them,
    ``F / (1 + Lam tau)^2`` (exact for Poisson trains, whose merged output is a renewal process with
    intervals ``tau + Exp(Lam)``).  ``return_fano``: also return the output trains' Fano factors
    ``[B, n_out]`` (see :func:`neuron_rate`).

    ``cov_in [B, n_in, n_in]`` (GHz; default none): the count covariances between different input
    trains, ``C_jk = Cov(N_j(T), N_k(T)) / T`` for long ``T`` (diagonal ignored).  Trains of one
    layer's neurons are correlated because they fire on the same input pulses.  Neuron ``i``'s
    excitatory arrivals (before the merger) then have the count variance rate
    ``V+ = sum_j p_ij lam_j (p_ij F_j + 1 - p_ij) + sum_{j != k} p_ij p_ik C_jk`` (sums over its
    excitatory synapses; thinning is independent per synapse), likewise ``V-``, and the covariance
    rate ``C+- = sum_{j exc, k inh} p_ij p_ik C_jk``.  The merger scales a variance by
    ``s = out / (Lam (1 + Lam tau)^2)`` (as the Fano factor above) and ``C+-`` by ``sqrt(s+ s-)``
    (the correlation coefficient is kept); ``C+-`` enters the neuron's chain (``cov_ei_GHz`` of
    :func:`neuron_rate`).

    Reset memory: behind non-Poisson inputs (periodic converters, neuron outputs) each stream's
    memory weight is its Herfindahl share ``mu = sum_j lam_j^2 / Lam^2`` (1 for a single train; a
    merger of many trains forgets a lost arrival), passed to :func:`neuron_rate` as ``memory``.

    ``merger_depth`` (:data:`MERGER_DEPTHS`; default 1, the model of 2026-12-03): the collision hierarchy of
    :func:`merger_rate` for mergers of non-Poisson trains (``independent=True`` always uses 1).  Depth 2 matches
    the emulator's mergers closer (independent periodic trains; with :class:`Coincidence`, correlated hidden
    trains too) but is not the default: on two-layer networks it raises the worst error of the whole model,
    whose neuron stage had partly cancelled the depth-1 merger's error (bench/RESULTS.md).

    ``coincidence`` (:class:`Coincidence`, ``merger_depth=2`` only): which source pulses the input trains carry;
    the mergers' pair factors follow from it (:func:`coincidence_factor`).  ``return_coincidence``: also return
    (last) the output trains' :class:`Coincidence` over this layer's inputs as sources: ``pi_ok`` = the share of
    neuron ``o``'s merged excitatory arrivals from input ``k`` (the arrival that fires is one of them),
    ``phi_ok = r_o pi_ok / r_in_k``, ``period = 1 / r_in`` for ``periodic_inputs`` (periodic converters), else 0.

    ``return_cov``: also return the output trains' covariances ``[B, n_out, n_out]`` (zero
    diagonal), by linear response: a count fluctuation ``dN_j`` of input ``j`` moves neuron
    ``i``'s count by ``J_ij dN_j`` with ``J_ij = dr_i / dr_j`` (the model's own rate gain, through
    the merged rates and the excitatory hazard; the Fano factors held), so
    ``C_out = J (C_in + diag(F_j r_j)) J^T`` off the diagonal (no gradient through it).  The return
    is then ``(rates, fano, cov)``.
    """
    w = layer.w if layer.active is None else layer.w * layer.active
    if fano_in is None:
        fano_in = 1.0 if poisson_inputs else 0.0
    dtype = r_in.dtype
    f_in = torch.as_tensor(fano_in, dtype=dtype).expand_as(r_in)[:, None, :]
    exc = torch.relu(w)[None] * r_in[:, None, :]
    inh = torch.relu(-w)[None] * r_in[:, None, :]
    tau = cells.merger_dead_ps / 1000.0
    depth = 1 if independent else merger_depth  # the previous model keeps its merger
    correlated = cov_in is not None and not independent
    if correlated:
        cov_in = cov_in.detach().to(dtype)
        cov_in = cov_in - torch.diag_embed(torch.diagonal(cov_in, dim1=-2, dim2=-1))
    out, fano, gap, scale, pm, slopes, memories, cv2s = [], [], None, [], [], [], [], []
    pair = coincidence_factor(coincidence, cells)[:, None] if coincidence is not None and depth == 2 else None
    exc_trains = None
    renewal = types == "renewal" and not independent
    if renewal:  # interval CV^2 of the input trains (default: their Fano factors; Poisson trains: 1)
        c_in = torch.as_tensor(fano_in if cv2_in is None else cv2_in, dtype=dtype).expand_as(r_in)[:, None, :]
    for lam, sign in ((exc, 1), (inh, -1)):
        n_sign = (torch.sign(w.detach()) == sign).sum(-1)  # synapses of this sign per neuron
        s = ((n_sign > 1) & poisson_inputs).to(dtype)
        single = (n_sign <= 1).to(dtype)  # no merger: the train passes unchanged
        trains = merger_trains(lam, tau, s, depth, pair)
        merged = trains.sum(-1)
        out.append(single * lam.sum(-1) + (1 - single) * merged)
        if exc_trains is None:
            exc_trains = single[..., None] * lam + (1 - single[..., None]) * trains
        p = w.abs()[None] * (torch.sign(w.detach()) == sign)[None]
        f_syn = p * f_in + 1 - p  # thinned trains
        lam_tot = lam.sum(-1)
        v = (f_syn * lam).sum(-1)
        if correlated:
            v = v + torch.einsum("ij,bjk,ik->bi", p[0], cov_in, p[0])
        f_sum = (v / lam_tot.clamp_min(1e-12)).clamp_min(1e-3)
        f_sum = torch.where(lam_tot > 1e-12, f_sum, torch.ones_like(f_sum))
        reg = 1 / (1 + lam_tot * tau) ** 2
        fano.append(single * f_sum + (1 - single) * f_sum * reg)
        if renewal:  # interval CV^2 of the stream: the thinned trains superposed, the merger's dead time as for F
            if poisson_inputs:
                c_sup = torch.ones_like(lam_tot)
            else:
                c_sup = superposition_cv2(lam, p * c_in + 1 - p)
            cv2s.append(single * c_sup + (1 - single) * c_sup * reg)
        scale.append((single + (1 - single) * reg * merged / lam_tot.clamp_min(1e-12)).detach())
        pm.append(p[0])
        # memory of the stream (Herfindahl share of its own trains): a lost arrival's train is silent for a
        # whole interval (regular trains); Poisson converters' streams forget it (0)
        herf = (lam**2).sum(-1) / lam_tot.clamp_min(1e-12) ** 2
        memories.append(torch.zeros_like(herf) if poisson_inputs else herf.detach())
        if return_cov:  # d out / d lam_k of the merger
            if depth == 1:  # closed form: c_k - tau sum_j lam_j c_j^2 + tau (1 - s) lam_k c_k^2
                with torch.no_grad():
                    lam_d, s_d = lam.detach(), s.detach()[..., None]
                    c = 1.0 / (1.0 + (lam_d.sum(-1, keepdim=True) - (1 - s_d) * lam_d) * tau)
                    dm = c - tau * (lam_d * c**2).sum(-1, keepdim=True) + tau * (1 - s_d) * lam_d * c**2
            else:  # depth 2: one autograd pass over each merger's own inputs
                with torch.enable_grad():
                    lam_d = lam.detach().clone().requires_grad_()
                    (dm,) = torch.autograd.grad(merger_trains(lam_d, tau, s.detach(), depth, pair).sum(), lam_d)
            with torch.no_grad():
                slopes.append((single[..., None] + (1 - single[..., None]) * dm) * p[0].detach()[None])
        if gap is None:  # excitatory arrivals: merger dead time, or a single Poisson (0) / regular train
            gap = (1 - single) * tau + single * (0.0 if poisson_inputs else 1.0 / cells.clock_GHz)
            # after the merger's dead time, arrivals come at the merger's input rate, less (s = 0) the train
            # that caused the firing, whose own pulses are farther apart than the reset:
            # hazard = Lam - (1 - s) sum_j lam_j^2 / Lam
            hazard = lam_tot
            if not independent:
                hazard = lam_tot - (1 - single) * (1 - s) * (lam**2).sum(-1) / lam_tot.clamp_min(1e-12)
    cov_ei = 0.0
    if correlated:
        cov_ei = torch.einsum("ij,bjk,ik->bi", pm[0], cov_in, pm[1]) * (scale[0] * scale[1]).sqrt()
    res = neuron_rate(
        out[0], out[1], layer.bias_neu[None], cells, ic_uA, gap[None], fano[0], fano[1], return_fano or return_cov,
        hazard, independent, cov_ei, None if poisson_inputs else (memories[0], memories[1]),
        *(cv2s if cv2s else (None, None)), types,
    )
    co_out = None
    if return_coincidence:
        with torch.no_grad():
            r_det = (res[0] if isinstance(res, tuple) else res).detach()
            et = exc_trains.detach()
            share = et / et.sum(-1, keepdim=True).clamp_min(1e-12)
            fire = (r_det[..., None] * share / r_in.detach()[:, None, :].clamp_min(1e-12)).clamp(0.0, 1.0)
            period = torch.where(r_in.detach() > 0, 1.0 / r_in.detach().clamp_min(1e-12), torch.zeros_like(r_in))
            co_out = Coincidence(share, fire, period if periodic_inputs else torch.zeros_like(period))
    if not return_cov:
        if co_out is None:
            return res
        return (*res, co_out) if isinstance(res, tuple) else (res, co_out)
    r, f_out = res
    with torch.enable_grad():  # rate gains dr / d(out+, out-, hazard), each neuron's own (elementwise)
        xs = [z.detach().clone().requires_grad_() for z in (out[0], out[1], hazard)]
        det = lambda z: z.detach() if torch.is_tensor(z) else z  # noqa: E731
        r_d = neuron_rate(
            xs[0], xs[1], layer.bias_neu.detach()[None], cells, ic_uA, det(gap)[None], det(fano[0]), det(fano[1]),
            False, xs[2], independent, det(cov_ei), None if poisson_inputs else (memories[0], memories[1]),
            *(cv2s if cv2s else (None, None)), types,
        )
        ga, gb, gh = torch.autograd.grad(r_d.sum(), xs, allow_unused=True)
    with torch.no_grad():
        gh = torch.zeros_like(xs[2]) if gh is None else gh
        jac = ga[..., None] * slopes[0] + gb[..., None] * slopes[1] + gh[..., None] * pm[0].detach()[None]
        c_full = torch.diag_embed(f_in[:, 0] * r_in.detach())
        if cov_in is not None:
            c_full = c_full + cov_in
        cov = jac @ c_full @ jac.transpose(-1, -2)
        cov = cov - torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
    return (r, f_out, cov) if co_out is None else (r, f_out, cov, co_out)


def network_rate(
    x: torch.Tensor,
    layers: list[RateLayer],
    cells: CellParams,
    *,
    input_mode: str = "periodic",
    return_hidden: bool = False,
    arrivals: str = "correlated",
    types: str = "counts",
    merger_depth: int = 1,
    copies: bool = True,
):
    """Output rates ``[B, n_out]`` (GHz) of a layered network for input rates ``x [B, n_in]``.

    ``arrivals="independent"``: the previous neuron model (see :func:`neuron_rate`).  ``types``: how the
    neuron's chain gets the lag-1 correlation of its arrival types (:data:`TYPE_CHAINS`, :func:`type_correlation`;
    ``"counts"`` reproduces the model of 2026-12-03 with the default ``merger_depth=1``).  ``merger_depth``: the
    mergers' collision hierarchy (:func:`merger_rate`, :func:`layer_rate`); at 2 each hidden layer also passes which
    source pulses its trains carry to the next layer (:class:`Coincidence`, :func:`coincidence_factor`: copies of
    one pulse arrive stagger-spaced and collide less than independent trains; ``copies=False`` leaves that out).
    The interval ``CV^2`` of the
    trains travel with them for the renewal chain: input converters 0 (periodic: the converter's own intervals,
    not :data:`PERIODIC_FANO`) or 1 (Poisson), neuron outputs their renewal interval's ``CV^2`` (the Fano factor
    the layer returns).

    The Fano factors of the trains travel with the rates: input converters 0 (periodic) or 1
    (Poisson), then each layer's output trains (:func:`layer_rate`)."""
    if arrivals not in ("correlated", "independent"):
        raise SettingError(f"arrivals must be correlated or independent, got {arrivals!r}")
    if types not in TYPE_CHAINS:
        raise SettingError(f"types must be one of {', '.join(TYPE_CHAINS)}, got {types!r}")
    h, hidden = x, []
    fano = torch.full_like(x, 1.0 if input_mode == "poisson" else PERIODIC_FANO)
    cv2 = torch.full_like(x, 1.0 if input_mode == "poisson" else 0.0)  # converters' interval CV^2
    cov = co = None
    for i, layer in enumerate(layers):
        track = arrivals == "correlated" and i < len(layers) - 1  # a next layer sees the covariances
        carry = copies and track and merger_depth == 2  # and the copies of source pulses its trains carry
        res = layer_rate(
            h,
            layer,
            cells,
            poisson_inputs=(i == 0 and input_mode == "poisson"),
            fano_in=fano,
            return_fano=True,
            independent=arrivals == "independent",
            cov_in=cov if arrivals == "correlated" else None,
            return_cov=track,
            cv2_in=cv2,
            types=types,
            merger_depth=merger_depth,
            coincidence=co,
            return_coincidence=carry,
            periodic_inputs=(i == 0 and input_mode == "periodic"),
        )
        if carry:
            h, fano, cov, co = res
        else:
            h, fano, cov = res if track else (*res, None)
        cv2 = fano  # neuron outputs: the renewal interval's CV^2
        hidden.append(h)
    return (h, hidden[:-1]) if return_hidden else h


# ------------------------------------------------------------------------- conversions
def sfq_to_rate(
    layers: list[Layer], cells: CellParams, dtype=torch.float64, requires_grad: bool = False
) -> list[RateLayer]:
    """The rate-model view of SFQ layers: ``w = sign * Phi((I_b - I_50) / sigma_I)``."""
    out = []
    for layer in layers:
        bs = torch.tensor(layer.bias_syn, dtype=dtype)
        w = torch.tensor(layer.signs, dtype=dtype) * transmission(bs, cells)
        out.append(RateLayer(w, torch.tensor(layer.bias_neu, dtype=dtype), torch.tensor(layer.signs != 0, dtype=dtype)))
    return out


def float_to_sfq(layers: list[RateLayer], cells: CellParams, *, min_weight: float = 1e-3) -> list[Layer]:
    """Convert float layers (``w in [-1, 1]``, neuron biases in uA) into SFQ routing and bias currents.

    ``sign = sign(w)`` (absent where ``|w| < min_weight``); ``I_b = I_50 + sigma_I Phi^-1(|w|)``
    clipped to ``syn_range_uA``; neuron biases clipped to ``neu_range_uA``.  Weights outside
    [-1, 1] are refused.
    """
    out = []
    lo, hi = cells.syn_range_uA
    for i, layer in enumerate(layers):
        w = layer.w.detach().double() * (1 if layer.active is None else layer.active.detach().double())
        if w.abs().max() > 1 + 1e-9:
            raise SettingError(
                f"float layer {i} has weights up to {float(w.abs().max()):.3g}; SFQ synapses need "
                "weights in [-1, 1] (transmission probabilities): clamp or rescale them"
            )
        signs = torch.sign(w) * (w.abs() >= min_weight)
        p = w.abs().clamp(1e-12, 1 - 1e-12)
        bias = (cells.i50_uA + cells.sigma_syn_uA * torch.special.ndtri(p)).clamp(lo, hi)
        bias = torch.where(signs == 0, torch.full_like(bias, lo), bias)
        neu = layer.bias_neu.detach().double().clamp(*cells.neu_range_uA)
        out.append(Layer(signs.numpy().astype(np.int8), bias.numpy(), neu.numpy()))
    return out


# ------------------------------------------------------------------------------- training
def train_float(
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    widths: list[int],
    cells: CellParams,
    *,
    steps: int = 300,
    lr: float = 0.05,
    seed: int = 0,
    init: list[RateLayer] | None = None,
    input_mode: str = "periodic",
    neu_lr_uA: float = 2.0,
    arrivals: str = "correlated",
) -> list[RateLayer]:
    """Backprop through the rate model: float weights ``w in [-1, 1]`` and neuron biases (uA).

    ``loss_fn(output_rates [B, n_out]) -> scalar``.  ``widths = [n_in, ..., n_out]``.  Adam, with
    the biases stepping ``neu_lr_uA`` uA where the weights step ``lr``; weights clamped to [-1, 1].
    """
    g = torch.Generator().manual_seed(seed)
    if init is None:
        init = [
            RateLayer(
                (torch.rand(b, a, generator=g, dtype=torch.float64) * 2 - 1) * 0.9,
                torch.full((b,), cells.neuron_ic_uA - 1.5 * cells.neuron_step_uA, dtype=torch.float64),
            )
            for a, b in zip(widths, widths[1:])
        ]
    ws = [l.w.detach().clone().double().requires_grad_() for l in init]
    bs = [(l.bias_neu.detach().clone().double() / neu_lr_uA * lr).requires_grad_() for l in init]
    opt = torch.optim.Adam(ws + bs, lr=lr)
    x = x.double()
    scale = neu_lr_uA / lr
    for _ in range(int(steps)):
        layers = [RateLayer(w, b * scale) for w, b in zip(ws, bs)]
        loss = loss_fn(network_rate(x, layers, cells, input_mode=input_mode, arrivals=arrivals))
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for w, b in zip(ws, bs):
                w.clamp_(-1, 1)
                b.clamp_(cells.neu_range_uA[0] / scale, cells.neu_range_uA[1] / scale)
    return [RateLayer(w.detach().clone(), (b * scale).detach().clone()) for w, b in zip(ws, bs)]


def train_biases(
    layers: list[Layer],
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    cells: CellParams,
    *,
    steps: int = 200,
    lr_uA: float = 0.5,
    input_mode: str = "periodic",
) -> list[Layer]:
    """Offline backprop of the bias currents (uA) of a fixed routing through the rate model (Adam)."""
    syn = [torch.tensor(l.bias_syn, dtype=torch.float64, requires_grad=True) for l in layers]
    neu = [torch.tensor(l.bias_neu, dtype=torch.float64, requires_grad=True) for l in layers]
    signs = [torch.tensor(l.signs, dtype=torch.float64) for l in layers]
    opt = torch.optim.Adam(syn + neu, lr=lr_uA)
    x = x.double()
    for _ in range(int(steps)):
        rl = [RateLayer(s * transmission(b, cells), n, (s != 0).double()) for s, b, n in zip(signs, syn, neu)]
        loss = loss_fn(network_rate(x, rl, cells, input_mode=input_mode))
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for b in syn:
                b.clamp_(*cells.syn_range_uA)
            for n in neu:
                n.clamp_(*cells.neu_range_uA)
    return [Layer(l.signs, b.detach().numpy().copy(), n.detach().numpy().copy()) for l, b, n in zip(layers, syn, neu)]


@dataclass
class SPSAResult:
    params: dict
    losses: list
    n_measurements: int


def spsa(
    measure_loss: Callable[[dict], float],
    params: dict,
    ranges: dict,
    *,
    steps: int = 100,
    a_uA: float = 2.0,
    c_uA: float = 2.0,
    seed: int = 0,
    alpha: float = 0.602,
    gamma: float = 0.101,
    stability: float = 10.0,
    calibration: int = 4,
    max_step_uA: float | None = None,
) -> SPSAResult:
    """In-situ SPSA on bias currents: only forward measurements of a loss (from output rates).

    ``measure_loss(params) -> float`` writes the currents to the chip, measures and returns the
    loss; ``params``: name -> array (uA); ``ranges``: name -> (low, high).  Each step draws
    Rademacher ``delta``, measures at ``theta +/- c_k delta`` and steps
    ``theta -= a_k g_k delta`` with ``g_k = (L+ - L-) / (2 c_k)``, ``a_k = a_0 / (k + 1 + A)^alpha``,
    ``c_k = c_uA / (k + 1)^gamma``.  The gain ``a_0`` is set so that a step with the mean ``|g|`` of
    ``calibration`` extra perturbation pairs at the start moves each current by ``a_uA``; every
    step is clipped to ``max_step_uA`` per current (default ``2 a_uA``), so one lucky or noisy
    difference cannot throw the currents to the rails.
    """
    rng = np.random.default_rng(seed)
    theta = {k: np.asarray(v, dtype=np.float64).copy() for k, v in params.items()}
    clip = lambda d: {k: np.clip(v, *ranges[k]) for k, v in d.items()}  # noqa: E731
    max_step = 2.0 * a_uA if max_step_uA is None else float(max_step_uA)
    losses, n_meas = [], 0

    def gradient(ck):
        delta = {n: rng.choice([-1.0, 1.0], size=v.shape) for n, v in theta.items()}
        lp = measure_loss(clip({n: v + ck * delta[n] for n, v in theta.items()}))
        lm = measure_loss(clip({n: v - ck * delta[n] for n, v in theta.items()}))
        return (lp - lm) / (2 * ck), delta, 0.5 * (lp + lm)

    mags = []
    for _ in range(max(int(calibration), 1)):
        g, _, _ = gradient(c_uA)
        n_meas += 2
        mags.append(abs(g))
    a0 = a_uA * (1 + stability) ** alpha / max(float(np.mean(mags)), 1e-12)
    for k in range(int(steps)):
        ck = c_uA / (k + 1) ** gamma
        g, delta, loss = gradient(ck)
        n_meas += 2
        losses.append(loss)
        ak = a0 / (k + 1 + stability) ** alpha
        theta = clip({n: v - np.clip(ak * g * delta[n], -max_step, max_step) for n, v in theta.items()})
    return SPSAResult(theta, losses, n_meas)
