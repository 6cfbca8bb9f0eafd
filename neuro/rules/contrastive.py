"""Contrastive learning of energy-based networks: equilibrium propagation (``ep``) and contrastive Hebbian
learning (``chl``), in the standard two-phase form and in the flexible forms of Williams, Bredenberg &
Lajoie ("Flexible Phase Dynamics for Bio-Plausible Contrastive Learning", ICML 2023).

Model: :class:`neuro.layers.energy.EnergyNet` (``model.kind = "energy"``); energy, settling and the
update terms are in :mod:`neuro.functional.energy` (equations there).  Notation: ``dE(s)`` is the
batch-mean derivative of the energy with respect to all ``W_k, b_k`` at state ``s``.

Phases.  A *positive* phase moves the output towards the target, a *negative* phase does not:

| rule, nudging | positive phase | negative phase | scale ``c`` |
|---|---|---|---|
| ep, positive | nudged, ``+beta`` | free | ``1/beta`` |
| ep, negative | nudged, ``-beta`` | free | ``-1/beta`` |
| ep, random_sign | nudged, ``+-beta`` (sign drawn per batch, Scellier & Bengio) | free | ``+-1/beta`` |
| ep, symmetric | nudged, ``+beta`` | nudged, ``-beta`` (Laborieux et al. 2021) | ``1/(2 beta)`` |
| chl | output clamped to the target | free | 1 |

``phases = "two_phase"`` (standard): settle freely ``free_steps`` from zero to ``s^0``; from there
settle ``nudged_steps`` in the positive phase (and, for symmetric nudging, separately in the
negative one); the pseudo-gradient is ``g = c [dE(s^+) - dE(s^-)]`` with ``s^- = s^0`` unless
nudging is symmetric.  The free end state is *stored* until the positive phase ends.

``phases = "temporally_local"`` (nothing stored): settle freely ``settle_first`` steps (no learning:
the input has just appeared), then run ``phases_per_batch`` phases alternating negative, positive,
negative, ... each ``phase_length`` time units long, on *one continuing state* (a phase starts where
the previous one ended).  Every time unit (a *tick* of ``substeps`` settling steps) adds the local
update of the current state, signed by the global phase signal ``sigma`` (+1 positive, -1 negative)::

    g += (2 / phases_per_batch) * sigma * (c / phase_length) * h * dE(s_t)

(``h`` = 1, or the fraction of a last partial tick).  When each phase settles quickly compared
with its length, a negative and a positive phase add up to the two-phase update exactly; with
transients (few substeps) the update is a time average over the trajectory (Williams et al.).

``phases = "non_periodic"``: like temporally local, but each phase's type is drawn at random
(positive with probability ``p_positive``) and its length from ``phase_distribution`` with mean
``phase_length``: ``fixed``; ``geometric`` (integer lengths ``1, 2, ...``, ``P(n) = q (1-q)^(n-1)``,
``q = 1 / phase_length``); ``exponential`` (real lengths; a fractional last tick takes steps of
``h eps`` and counts ``h``).  Positive ticks are weighted ``1 / (2 p_positive)`` and negative ones
``1 / (2 (1 - p_positive))``, so the *expected* update per batch equals the two-phase update (tested
statistically).  Phase types and lengths come from torch's global generator (seeded by
``run.seed``, saved in checkpoints).

Duration balancing (``balance = "duration"``, non_periodic).  With random phase *types* the plain
estimator contains ``c (T+ w+ - T- w-) dE(s)``: the realized positive and negative durations ``T+``,
``T-`` of the window (the batch's presentation) differ, and what multiplies the difference is the whole
Hebbian correlation ``rho rho^T`` (O(1)), not its O(beta) contrast; its mean is 0 but its spread is many
times the update (bench/RESULTS.md, issue 15).  The balanced form weights each tick by its phase type's
*realized* duration in the window::

    g = (c / P2) [ (1/T+) sum_{t positive} h_t dE(s_t)  -  (1/T-) sum_{t negative} h_t dE(s_t) ]     if T+, T- > 0
    g = 0                                                                                         otherwise

``P2 = 1 - p^n - (1-p)^n`` is the probability that a window of ``n = phases_per_batch`` phases has both
types (``p = p_positive``).  Each synapse keeps two phase-gated running sums of ``rho rho^T`` and a global
clock counts ``T+`` and ``T-``; the update is their difference at the window's end: still temporally
local (only the current state enters, no end state of a phase is stored).  Properties: when the phases
settle quickly compared with their length, ``g = c [dE(s^+) - dE(s^-)] / P2`` whenever both types occur, so
the Hebbian term cancels exactly and ``E[g]`` equals the two-phase update (tested); its only noise is the
Bernoulli(``P2``) presence of both types.  With transients (few substeps) ``g`` is a ratio of time averages:
its mean can differ from the plain estimator's by O(Var(T)/E[T]^2) times the transient part of the
update (the plain estimator is exactly unbiased for the time-averaged update, the balanced one only when
settled).  With ``phase_signal = "per_sample"`` every sample has its own ``T+``, ``T-``.

Persistent particles (``persistent = true``): one free-phase state per training sample, a buffer
[n_train, n_1 + ... + n_L] indexed by :attr:`neuro.rules.base.Batch.index` (the sample's row in the
training split).  The free phase (two_phase; ``settle_first`` in the flexible forms) starts from the
sample's stored state instead of zero and its end state is stored back, as in Scellier & Bengio's code: over
the epochs a sample's free state gets ``epochs x free_steps`` steps, so 20 steps per batch act like a
well-settled free phase.  The particle is only a warm start of the dynamics (it never enters the update
except through where the settling starts).  Evaluation settles ``model.settle_steps`` steps from zero.
The buffer is saved in checkpoints (float, 4 bytes per unit and sample: 102 MB for MNIST 784-500-10).

Implementation note: the local updates are summed into ``.grad`` tick by tick (for the first layer,
whose presynaptic activity is the clamped input, as ``sum_t c_t rho(s_1,t)`` followed by one
product with ``x``: the same sum, fewer operations); the trainer applies it once per batch.  With a
global phase signal each phase's whole ticks are one settling call whose per-tick hook (``tick`` of
:meth:`neuro.layers.energy.EnergyNet.settle`) adds the tick's term, so a tick costs no set-up of its own.

Per-layer learning rates: ``layer_scales = [a_1, ..., a_L]`` multiplies layer ``k``'s pseudo-gradient
by ``a_k``; with ``[optim] name = "sgd", lr = 1`` that is SGD with per-layer rates ``a_k``
(Scellier & Bengio's MNIST: ``[0.1, 0.05]``).

Diagnostics (``diag_every = N > 0``: every N-th batch, on that batch, simulator only, in float64 on a copy
of the network): the true
gradient ``dL/dtheta`` of ``L = mean C(s*)`` at the free fixed point (``diag_steps`` settling steps)
by recurrent backprop (:func:`neuro.functional.energy.fixed_point_gradient`), and its cosine with
(a) the update this rule just wrote (``cos_true``), (b) two-phase EP with one-sided and symmetric
nudging for each ``beta`` in ``diag_betas`` on settled phases (``cos_ep_b<beta>``,
``cos_sym_b<beta>``), (c) CHL (``cos_chl``) -- left out, with ``diag_zero_gradient = 1``, on a batch whose
outputs all sit exactly on their targets (saturated hard sigmoids: loss and gradient exactly 0); and the
settling convergence of each phase (the
max-norm change of the state per step, and the total energy ``F``).  The run report plots them.

Metrics per batch: ``loss`` (mean cost ``C`` of the free state), ``accuracy`` (argmax of the free
output), ``update_norm``; the diagnostics' entries on the batches that compute them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from neuro.errors import ConfigError, IncompatibleError
from neuro.functional import energy as fe
from neuro.layers.energy import EnergyNet
from neuro.registry import RULES
from neuro.rules.base import Batch, Requirements, Rule
from neuro.rules.base import check_compatible as base_check_compatible

PhaseForm = Literal["two_phase", "temporally_local", "non_periodic"]
Nudging = Literal["positive", "negative", "random_sign", "symmetric"]
LengthDistribution = Literal["fixed", "geometric", "exponential"]
PhaseSignal = Literal["global", "per_sample"]
Balance = Literal["none", "duration"]


# ------------------------------------------------------------------------ specs
@dataclass
class ContrastiveSpec:
    """Options shared by ``ep`` and ``chl`` (see :mod:`neuro.rules.contrastive`).

    phases: "two_phase", "temporally_local" or "non_periodic".
    free_steps: steps of the free phase from zero (two_phase); 0 means model.settle_steps.
    nudged_steps: steps of the nudged / clamped phase (two_phase).
    settle_first: free steps without learning before the learning phases (flexible forms);
        -1 means the free phase's length.
    phase_length: (mean) length of a learning phase in ticks (flexible forms).
    phase_distribution: "fixed", "geometric" or "exponential" phase lengths (non_periodic).
    phases_per_batch: learning phases per batch (flexible forms; even for temporally_local).
    p_positive: probability that a phase is positive (non_periodic).
    substeps: settling steps per tick, i.e. between two reads of the state (flexible forms).
    phase_signal: "global" (one phase process for the whole batch) or "per_sample" (each sample of
        the batch, a separate presentation to its own copy of the network, has its own; non_periodic).
    balance: "none" (each tick weighted by the phase type's *expected* duration) or "duration" (by its
        *realized* duration in the batch's window; non_periodic; see the module docstring).
    persistent: keep one free-phase state per training sample ("persistent particles", Scellier &
        Bengio's code): the free phase (two_phase) or the free settling before the learning phases
        (flexible forms) starts from the sample's stored state instead of zero, and its end state is stored
        back.  Evaluation still settles ``model.settle_steps`` from zero.
    layer_scales: per-layer multipliers of the pseudo-gradient (empty: all 1).
    diag_every: compute the diagnostics every this many batches (0: never).
    diag_betas: the betas of the cosine-versus-beta diagnostic.
    diag_steps: settling steps of the diagnostics' (settled) phases.
    """

    name: str = "contrastive"
    phases: PhaseForm = "two_phase"
    free_steps: int = 0
    nudged_steps: int = 4
    settle_first: int = -1
    phase_length: float = 4.0
    phase_distribution: LengthDistribution = "fixed"
    phases_per_batch: int = 2
    p_positive: float = 0.5
    substeps: int = 1
    phase_signal: PhaseSignal = "global"
    balance: Balance = "none"
    persistent: bool = False
    layer_scales: list[float] = field(default_factory=list)
    diag_every: int = 0
    diag_betas: list[float] = field(default_factory=lambda: [0.01, 0.03, 0.1, 0.3, 1.0])
    diag_steps: int = 200

    def check(self) -> None:
        where = f"rule ({self.name})"
        if self.free_steps < 0 or self.nudged_steps < 1:
            raise ConfigError(
                f"{where}: free_steps must be >= 0 (0: model.settle_steps) and nudged_steps >= 1, "
                f"got {self.free_steps}, {self.nudged_steps}"
            )
        if self.settle_first < -1:
            raise ConfigError(
                f"rule.settle_first must be >= 0, or -1 for the free phase's length; got {self.settle_first}"
            )
        if not self.phase_length > 0 or (self.phase_distribution == "geometric" and self.phase_length < 1):
            raise ConfigError(f"rule.phase_length must be > 0 (>= 1 for geometric lengths), got {self.phase_length}")
        if self.phases_per_batch < 1 or (self.phases == "temporally_local" and self.phases_per_batch % 2):
            raise ConfigError(
                f"rule.phases_per_batch must be >= 1 (and even for temporally_local: negative and positive "
                f"phases alternate), got {self.phases_per_batch}"
            )
        if not 0.0 < self.p_positive < 1.0:
            raise ConfigError(f"rule.p_positive must be in (0, 1), got {self.p_positive}")
        if self.phase_signal == "per_sample" and self.phases != "non_periodic":
            raise ConfigError(
                "rule.phase_signal = 'per_sample' is for phases = 'non_periodic' (the other forms have "
                "the same phases for every sample); use phase_signal = 'global'"
            )
        if (
            self.phase_signal == "per_sample"
            and self.phase_distribution == "fixed"
            and self.phase_length != round(self.phase_length)
        ):
            raise ConfigError(
                f"rule.phase_length must be a whole number of ticks for per-sample fixed phases, "
                f"got {self.phase_length}"
            )
        if self.balance != "none" and self.phases != "non_periodic":
            raise ConfigError(
                f"rule.balance = {self.balance!r} is for phases = 'non_periodic' (the other forms have fixed, "
                f"alternating phases); use balance = 'none'"
            )
        if self.substeps < 1:
            raise ConfigError(f"rule.substeps must be >= 1, got {self.substeps}")
        if any(not a > 0 for a in self.layer_scales):
            raise ConfigError(f"rule.layer_scales must be positive numbers, got {self.layer_scales}")
        if self.diag_every < 0 or self.diag_steps < 1 or any(not b > 0 for b in self.diag_betas):
            raise ConfigError("rule.diag_every must be >= 0, diag_steps >= 1 and diag_betas positive")


@dataclass
class EPSpec(ContrastiveSpec):
    """``[rule]`` with ``name = "ep"``: equilibrium propagation (options: :class:`ContrastiveSpec`).

    beta: nudging strength (> 0; its sign comes from ``nudging``).
    nudging: "positive", "negative", "random_sign" (per batch) or "symmetric" (+beta and -beta).
    """

    name: str = "ep"
    beta: float = 0.5
    nudging: Nudging = "random_sign"

    def check(self) -> None:
        super().check()
        if not self.beta > 0:
            raise ConfigError(f"rule.beta must be > 0 (the sign is set by rule.nudging), got {self.beta}")


@dataclass
class CHLSpec(ContrastiveSpec):
    """``[rule]`` with ``name = "chl"``: contrastive Hebbian learning, output clamped to the target
    in the positive phase (options: :class:`ContrastiveSpec`)."""

    name: str = "chl"


# ------------------------------------------------------------------------ phases
@dataclass(frozen=True)
class Phase:
    """How the dynamics run in one phase: nudging ``beta`` (0: free) or clamped output."""

    beta: float = 0.0
    clamp: bool = False


FREE = Phase()


def draw_length(distribution: str, mean: float, generator: torch.Generator | None = None) -> float:
    """One phase length (ticks) with the given mean: fixed, geometric on 1, 2, ..., or exponential."""
    if distribution == "fixed":
        return float(mean)
    u = float(torch.rand((), generator=generator))
    if distribution == "geometric":
        q = 1.0 / mean
        if q >= 1.0:
            return 1.0
        return float(1 + math.floor(math.log1p(-u) / math.log1p(-q)))  # inverse CDF of P(n) = q (1-q)^(n-1)
    return float(-mean * math.log1p(-u))  # exponential


class _Accumulator:
    """Sums ``w * dE(s)`` over ticks; first-layer products deferred to one product with ``x``."""

    def __init__(self, x: torch.Tensor, model: EnergyNet) -> None:
        self.x = x
        self.act = model.activation
        self.r1 = torch.zeros(x.shape[0], model.sizes[1], dtype=x.dtype, device=x.device)
        self.gw = [torch.zeros_like(w) for w in model.weights[1:]]
        self.gb = [torch.zeros_like(b) for b in model.biases[1:]]

    def adder(self, w):
        """``lambda states: self.add(states, w)``."""
        return lambda states: self.add(states, w)

    def add(self, states: fe.States, w) -> None:
        """Add ``w * dE(states)``; ``w`` a number or per-sample weights [batch]."""
        r = [fe.rho(s, self.act) for s in states]
        if isinstance(w, torch.Tensor):
            wr = [w.unsqueeze(1) * rk for rk in r]
            self.r1.add_(wr[0])
            for k in range(1, len(r)):
                self.gw[k - 1].addmm_(wr[k].t(), r[k - 1])
                self.gb[k - 1].add_(wr[k].sum(0))
            return
        self.r1.add_(r[0], alpha=w)
        for k in range(1, len(r)):
            self.gw[k - 1].addmm_(r[k].t(), r[k - 1], alpha=w)
            self.gb[k - 1].add_(r[k].sum(0), alpha=w)

    def result(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        b = self.x.shape[0]
        gw = [-(self.r1.t() @ self.x) / b] + [-g / b for g in self.gw]
        gb = [-self.r1.sum(0) / b] + [-g / b for g in self.gb]
        return gw, gb


# ------------------------------------------------------------------------ rule
class ContrastiveRule(Rule):
    """EP or CHL on an :class:`EnergyNet` (see module docstring)."""

    requirements = Requirements()  # only read-out states: works on any substrate that settles

    def __init__(self, spec: ContrastiveSpec, n_train: int = 0) -> None:
        self.spec = spec
        self.name = spec.name
        self.batches_seen = 0
        self.diagnostics: dict = {}
        self.n_train = int(n_train)
        self.particles: list[torch.Tensor] | None = None  # persistent free states [n_train, n_k], k = 1 .. L

    # ------------------------------------------------------ persistent particles
    def particle_states(self, model: EnergyNet, x: torch.Tensor, index: torch.Tensor | None) -> fe.States | None:
        """The samples' stored free states (copies), or ``None`` (start from zero) without ``persistent``."""
        if not self.spec.persistent:
            return None
        if index is None:
            raise ConfigError(
                "rule.persistent = true needs the samples' indices (Batch.index), which the trainer gives; "
                "this batch has none: set rule.persistent = false when calling the rule directly"
            )
        index = index.to(torch.long)
        need = max(self.n_train, int(index.max()) + 1)
        dtype, device = x.dtype, x.device
        if self.particles is None or self.particles[0].shape[0] < need or self.particles[0].dtype != dtype:
            old = self.particles
            self.particles = [torch.zeros(need, n, dtype=dtype, device=device) for n in model.sizes[1:]]
            if old is not None:
                for new, o in zip(self.particles, old):
                    new[: o.shape[0]] = o.to(dtype)
        return [p.index_select(0, index.to(p.device)).to(device) for p in self.particles]

    def store_particles(self, index: torch.Tensor | None, states: fe.States) -> None:
        """Write the samples' free end states back into the buffer (no-op without ``persistent``)."""
        if not self.spec.persistent or index is None or self.particles is None:
            return
        index = index.to(torch.long)
        for p, s in zip(self.particles, states):
            p.index_copy_(0, index.to(p.device), s.detach().to(p.device, p.dtype))

    # ----------------------------------------------------------- compatibility
    def check_compatible(self, model: nn.Module) -> None:
        if not isinstance(model, EnergyNet):
            raise IncompatibleError(
                f'rule `{self.name}` trains energy-based networks; set model.kind = "energy" '
                f"(got a {type(model).__name__})"
            )
        if self.spec.layer_scales and len(self.spec.layer_scales) != model.n_layers:
            raise IncompatibleError(
                f"rule.layer_scales has {len(self.spec.layer_scales)} entries but the network has "
                f"{model.n_layers} coupled layers; give one scale per layer"
            )
        base_check_compatible(self, model)

    # ----------------------------------------------------------------- phases
    def phase_pair(self, generator: torch.Generator | None = None) -> tuple[Phase, Phase, float]:
        """(positive phase, negative phase, scale c) for one batch (the table in the module docstring)."""
        if self.name == "chl":
            return Phase(clamp=True), FREE, 1.0
        beta, nudging = self.spec.beta, self.spec.nudging
        if nudging == "symmetric":
            return Phase(beta), Phase(-beta), 1.0 / (2.0 * beta)
        if nudging == "negative" or (nudging == "random_sign" and bool(torch.rand((), generator=generator) < 0.5)):
            beta = -beta
        return Phase(beta), FREE, 1.0 / beta

    def free_steps(self, model: EnergyNet) -> int:
        return self.spec.free_steps or model.settle_steps

    def _settle(
        self,
        model,
        x,
        states,
        phase: Phase,
        steps: int,
        target,
        drive,
        eps=None,
        trace=None,
        beta=None,
        clamp=None,
        tick=None,
    ):
        beta = phase.beta if beta is None else beta
        clamp = phase.clamp if clamp is None else clamp
        return model.settle(
            x,
            states,
            steps=steps,
            beta=beta,
            target=target,
            clamp_output=clamp,
            eps=eps,
            input_drive=drive,
            trace=trace,
            tick=tick,
        )

    # ------------------------------------------------------------------ forms
    def two_phase(
        self,
        model: EnergyNet,
        x,
        target,
        *,
        free_steps=None,
        nudged_steps=None,
        pair=None,
        drive=None,
        s0=None,
        start=None,
    ):
        """Standard update ``c [dE(s^+) - dE(s^-)]``; returns ``(gw, gb, s0)``.

        ``start``: where the free phase starts (``None``: zero); ``s0``: skip the free phase, use this free state.
        """
        pos, neg, c = pair if pair is not None else self.phase_pair()
        n_free = self.free_steps(model) if free_steps is None else free_steps
        n_nudged = self.spec.nudged_steps if nudged_steps is None else nudged_steps
        if s0 is None:
            s0 = self._settle(model, x, start, FREE, n_free, target, drive)
        s_pos = self._settle(model, x, s0, pos, n_nudged, target, drive)
        s_neg = s0 if neg == FREE else self._settle(model, x, s0, neg, n_nudged, target, drive)
        gw, gb = fe.contrastive_grads(x, s_pos, s_neg, c, model.activation)
        return gw, gb, s0

    def schedule(self, generator: torch.Generator | None = None) -> list[tuple[int, float]]:
        """The batch's learning phases as ``(sigma, length)``: sigma +1 positive, -1 negative."""
        spec = self.spec
        if spec.phases == "temporally_local":
            return [(-1 if i % 2 == 0 else 1, float(spec.phase_length)) for i in range(spec.phases_per_batch)]
        out = []
        for _ in range(spec.phases_per_batch):
            sigma = 1 if bool(torch.rand((), generator=generator) < spec.p_positive) else -1
            out.append((sigma, draw_length(spec.phase_distribution, spec.phase_length, generator)))
        return out

    def both_types_probability(self) -> float:
        """``P2 = 1 - p^n - (1-p)^n``: a window of ``n`` non-periodic phases has both phase types."""
        p, n = self.spec.p_positive, self.spec.phases_per_batch
        return 1.0 - p**n - (1.0 - p) ** n

    def flexible(
        self, model: EnergyNet, x, target, *, pair=None, schedule=None, drive=None, generator=None, start=None
    ):
        """Temporally local / non-periodic update: signed local terms summed tick by tick; returns ``(gw, gb, s0)``."""
        spec = self.spec
        pos, neg, c = pair if pair is not None else self.phase_pair(generator)
        schedule = schedule if schedule is not None else self.schedule(generator)
        n_first = self.free_steps(model) if spec.settle_first < 0 else spec.settle_first
        if n_first:
            s = self._settle(model, x, start, FREE, n_first, target, drive)
        else:
            s = start if start is not None else model.zero_states(x)
        s0 = s
        if spec.phases == "non_periodic":
            weight = {1: 1.0 / (2.0 * spec.p_positive), -1: 1.0 / (2.0 * (1.0 - spec.p_positive))}
        else:
            weight = {1: 1.0, -1: 1.0}
        base = (2.0 / len(schedule)) * c / spec.phase_length if schedule else 0.0
        if spec.phases == "non_periodic" and spec.balance == "duration":
            # weight 1 / (realized duration of the tick's phase type in this window) / P2; 0 without both types
            durations = {sig: sum(length for sg, length in schedule if sg == sig) for sig in (1, -1)}
            both = durations[1] > 0 and durations[-1] > 0
            weight = {sig: 1.0 / (durations[sig] * self.both_types_probability()) if both else 0.0 for sig in (1, -1)}
            base = c
            if not both:
                schedule = []  # the window's update is 0 (a device would still run its phases; nothing depends on them)
        acc = _Accumulator(x, model)
        for sigma, length in schedule:
            phase = pos if sigma > 0 else neg
            whole = math.floor(float(length) + 1e-9)  # whole ticks, then a partial last one of h = the rest
            if whole:  # one settle for the phase's whole ticks, reading the state after each tick
                w = sigma * weight[sigma] * base
                s = self._settle(
                    model, x, s, phase, whole * spec.substeps, target, drive, tick=(spec.substeps, acc.adder(w))
                )
            h = float(length) - whole
            if h > 1e-9:
                s = self._settle(model, x, s, phase, spec.substeps, target, drive, eps=model.step_size * h)
                acc.add(s, sigma * weight[sigma] * base * h)
        gw, gb = acc.result()
        return gw, gb, s0

    def per_sample_schedule(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample phase signals on a common tick clock: sigma [ticks, batch] in {+1, -1, 0} (0: done).

        Each sample draws ``phases_per_batch`` phases (type and integer length in ticks; exponential
        lengths are rounded up, i.e. geometric with ``q = 1 - exp(-1 / phase_length)``).
        """
        spec = self.spec
        n = spec.phases_per_batch
        positive = torch.rand(batch_size, n, generator=generator) < spec.p_positive
        if spec.phase_distribution == "fixed":
            lengths = torch.full((batch_size, n), round(spec.phase_length))
        else:
            u = torch.rand(batch_size, n, generator=generator, dtype=torch.float64)
            if spec.phase_distribution == "geometric":
                q = 1.0 / spec.phase_length
                lengths = (
                    (1 + torch.floor(torch.log1p(-u) / math.log1p(-q))).long() if q < 1 else torch.ones_like(u).long()
                )
            else:
                lengths = torch.ceil(-spec.phase_length * torch.log1p(-u)).clamp_min(1).long()
        total = int(lengths.sum(1).max())
        sigma = torch.zeros(total, batch_size)
        for b in range(batch_size):
            t = 0
            for i in range(n):
                sigma[t : t + int(lengths[b, i]), b] = 1.0 if bool(positive[b, i]) else -1.0
                t += int(lengths[b, i])
        return sigma

    def mean_tick_length(self) -> float:
        """Mean phase length in ticks of the per-sample process (the normalization ``phase_length`` of the update)."""
        spec = self.spec
        if spec.phase_distribution == "exponential":
            return 1.0 / (1.0 - math.exp(-1.0 / spec.phase_length))
        return float(round(spec.phase_length)) if spec.phase_distribution == "fixed" else float(spec.phase_length)

    def flexible_per_sample(
        self, model: EnergyNet, x, target, *, pair=None, sigma=None, drive=None, generator=None, start=None
    ):
        """Non-periodic update with a phase signal per sample; returns ``(gw, gb, s0)``."""
        spec = self.spec
        pos, neg, c = pair if pair is not None else self.phase_pair(generator)
        sigma = sigma if sigma is not None else self.per_sample_schedule(x.shape[0], generator)
        sigma = sigma.to(x.dtype)
        n_first = self.free_steps(model) if spec.settle_first < 0 else spec.settle_first
        if n_first:
            s = self._settle(model, x, start, FREE, n_first, target, drive)
        else:
            s = start if start is not None else model.zero_states(x)
        s0 = s
        base = (2.0 / spec.phases_per_batch) * c / self.mean_tick_length()
        w_pos = torch.full((x.shape[0],), base / (2.0 * spec.p_positive), dtype=x.dtype, device=x.device)
        w_neg = torch.full((x.shape[0],), base / (2.0 * (1.0 - spec.p_positive)), dtype=x.dtype, device=x.device)
        if spec.balance == "duration":
            # per sample: weight 1 / (its realized duration of the tick's phase type) / P2; 0 without both types
            t_pos, t_neg = (sigma > 0).sum(0).to(x.dtype), (sigma < 0).sum(0).to(x.dtype)
            both = (t_pos > 0) & (t_neg > 0)
            scale = c / self.both_types_probability()
            w_pos = torch.where(both, scale / t_pos.clamp_min(1.0), 0.0)
            w_neg = torch.where(both, scale / t_neg.clamp_min(1.0), 0.0)
        acc = _Accumulator(x, model)
        for sig in sigma:
            is_pos, is_neg = (sig > 0).unsqueeze(1), (sig < 0).unsqueeze(1)
            beta = torch.where(is_pos, pos.beta, torch.where(is_neg, neg.beta, 0.0)).to(x.dtype)
            clamp = (is_pos & pos.clamp) | (is_neg & neg.clamp) if pos.clamp or neg.clamp else False
            s = self._settle(model, x, s, Phase(), spec.substeps, target, drive, beta=beta, clamp=clamp)
            acc.add(s, w_pos * (sig > 0).to(x.dtype) - w_neg * (sig < 0).to(x.dtype))
        gw, gb = acc.result()
        return gw, gb, s0

    # ------------------------------------------------------------------- step
    @torch.no_grad()
    def compute(self, model: EnergyNet, batch: Batch):
        """The pseudo-gradient of this rule for one batch (before layer scales): ``(gw, gb, s0)``."""
        x = batch.x.to(model.weights[0].dtype)
        target = fe.one_hot(batch.y, model.sizes[-1], x.dtype)
        drive = model.input_drive(x) if model.substrate is None else None
        start = self.particle_states(model, x, batch.index)
        if self.spec.phases == "two_phase":
            out = self.two_phase(model, x, target, drive=drive, start=start)
        elif self.spec.phase_signal == "per_sample":
            out = self.flexible_per_sample(model, x, target, drive=drive, start=start)
        else:
            out = self.flexible(model, x, target, drive=drive, start=start)
        self.store_particles(batch.index, out[2])
        return out

    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        gw, gb, s0 = self.compute(model, batch)
        scales = self.spec.layer_scales or [1.0] * model.n_layers
        for k in range(model.n_layers):
            for p, g in ((model.weights[k], gw[k]), (model.biases[k], gb[k])):
                g = g * scales[k]
                p.grad = g.detach().clone() if p.grad is None else p.grad + g
        self.batches_seen += 1
        with torch.no_grad():
            target = fe.one_hot(batch.y, model.sizes[-1], s0[-1].dtype)
            out = fe.rho(s0[-1], model.activation)
            metrics = {
                "loss": float(fe.cost(s0, target, model.activation).mean()),
                "accuracy": float((out.argmax(1) == batch.y).float().mean()),
                "update_norm": float(fe.flat(gw, gb).norm()),
            }
        if (
            self.spec.diag_every
            and model.substrate is None
            and self.batches_seen % self.spec.diag_every == 1 % self.spec.diag_every
        ):
            metrics.update(self.diagnose(model, batch, fe.flat(gw, gb)))
        return metrics

    # ------------------------------------------------------------ diagnostics
    @torch.no_grad()
    def diagnose(self, model: EnergyNet, batch: Batch, update: torch.Tensor | None = None) -> dict[str, float]:
        """Cosines with the true fixed-point gradient and per-phase settling convergence (module docstring)."""
        spec = self.spec
        # in float64: near convergence the loss gradient is tiny and the EP differences (1/beta)[dE(s^beta) - dE(s^0)]
        # of O(1) terms lose it to float32 rounding for small beta
        model = copy.deepcopy(model).double()
        x = batch.x.to(torch.float64)
        target = fe.one_hot(batch.y, model.sizes[-1], x.dtype)
        drive = model.input_drive(x)
        w, b = list(model.weights), list(model.biases)
        update = update.to(torch.float64) if update is not None else None

        def tracer(store: list, prev: list, phase: Phase):
            def trace(t, states):
                store.append(
                    (
                        max(float((a - c).abs().max()) for a, c in zip(states, prev[0])),
                        float(fe.total_energy(x, states, w, b, phase.beta, target, model.activation).mean()),
                    )
                )
                prev[0] = states

            return trace

        # settling convergence of the phases this rule uses (on its own step counts); a private generator,
        # so that diagnostics leave the training's random stream (e.g. random nudging signs) untouched
        pos, _neg, _ = self.phase_pair(torch.Generator().manual_seed(self.batches_seen))
        zero = model.zero_states(x)
        free_log: list = []
        s0 = self._settle(
            model, x, zero, FREE, self.free_steps(model), target, drive, trace=tracer(free_log, [zero], FREE)
        )
        pos_log: list = []
        self._settle(model, x, s0, pos, spec.nudged_steps, target, drive, trace=tracer(pos_log, [s0], pos))
        # true gradient at a settled free fixed point
        star = self._settle(model, x, s0, FREE, spec.diag_steps, target, drive)
        true_w, true_b, adj = fe.fixed_point_gradient(
            x, star, target, w, b, eps=model.step_size, activation=model.activation
        )
        true = fe.flat(true_w, true_b)
        out: dict[str, float] = {
            "adjoint_residual": adj,
            "free_residual": free_log[-1][0] if free_log else 0.0,
            "nudged_residual": pos_log[-1][0] if pos_log else 0.0,
        }
        settling = {
            "batch": self.batches_seen,
            "free_residual": [r for r, _ in free_log],
            "free_energy": [e for _, e in free_log],
            "nudged_residual": [r for r, _ in pos_log],
            "nudged_energy": [e for _, e in pos_log],
        }
        out["true_grad_norm"] = float(true.norm())
        out["diag_zero_gradient"] = float(not out["true_grad_norm"] > 0)
        if out["diag_zero_gradient"]:
            # every output sits exactly on its target (hard sigmoid saturated at 0 / 1): the loss and its
            # gradient are exactly 0 and no cosine is defined; keep the last defined cosines for the report
            self.diagnostics = {**self.diagnostics, **settling}
            return out
        if update is not None:
            out["cos_true"] = fe.cosine(update, true)
        ep_one, ep_sym = [], []
        for beta in spec.diag_betas:
            one = self.two_phase(
                model,
                x,
                target,
                nudged_steps=spec.diag_steps,
                pair=(Phase(beta), FREE, 1.0 / beta),
                drive=drive,
                s0=star,
            )
            sym = self.two_phase(
                model,
                x,
                target,
                nudged_steps=spec.diag_steps,
                pair=(Phase(beta), Phase(-beta), 0.5 / beta),
                drive=drive,
                s0=star,
            )
            ep_one.append(fe.cosine(fe.flat(*one[:2]), true))
            ep_sym.append(fe.cosine(fe.flat(*sym[:2]), true))
            out[f"cos_ep_b{beta:g}"], out[f"cos_sym_b{beta:g}"] = ep_one[-1], ep_sym[-1]
        chl = self.two_phase(
            model, x, target, nudged_steps=spec.diag_steps, pair=(Phase(clamp=True), FREE, 1.0), drive=drive, s0=star
        )
        out["cos_chl"] = fe.cosine(fe.flat(*chl[:2]), true)
        self.diagnostics = {
            "betas": list(spec.diag_betas),
            "cos_ep": ep_one,
            "cos_sym": ep_sym,
            "cos_chl": out["cos_chl"],
            "cos_true": out.get("cos_true"),
            "cos_batch": self.batches_seen,
            **settling,
        }
        return out

    # ---------------------------------------------------------------- report
    def state_dict(self) -> dict:
        out = {"batches_seen": self.batches_seen, "diagnostics": self.diagnostics}
        if self.particles is not None:
            out["particles"] = list(self.particles)
        return out

    def load_state_dict(self, state: dict) -> None:
        self.batches_seen = int(state.get("batches_seen", 0))
        self.diagnostics = dict(state.get("diagnostics") or {})
        particles = state.get("particles")
        self.particles = [p.clone() for p in particles] if particles else None

    def report_data(self, records=None) -> dict:
        """Report section ``contrastive`` (drawn by :mod:`neuro.report.contrastive`)."""
        return {"contrastive": {"diagnostics": self.diagnostics, "phases": self.spec.phases}}


@RULES.register("ep", spec=EPSpec)
def build_ep(spec: EPSpec, data) -> Rule:
    return ContrastiveRule(spec, n_train=_n_train(data))


@RULES.register("chl", spec=CHLSpec)
def build_chl(spec: CHLSpec, data) -> Rule:
    return ContrastiveRule(spec, n_train=_n_train(data))


def _n_train(data) -> int:
    """Size of the training split (the persistent-particle buffer's rows); 0 when unknown (the buffer grows)."""
    try:
        return len(data.train)
    except (AttributeError, TypeError):
        return 0
