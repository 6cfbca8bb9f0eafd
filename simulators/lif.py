"""Current-based leaky integrate-and-fire (CUBA LIF) neurons: the functional core.

Discrete-time dynamics, one step of length ``dt`` seconds, for input current ``x[t]``
(the already-weighted synaptic input, in the same units as ``i``):

.. math::

    i[t] &= \\alpha\\, i[t-1] + x[t]                                   \\\\
    p[t] &= v_{leak} + \\beta\\,(v[t-1] - v_{leak}) + \\gamma\\, \\tilde i[t]  \\\\
    z[t] &= H(p[t] - v_{th})                                          \\\\
    v[t] &= p[t] - v_{th}\\, z[t]                 \\quad\\text{(reset = "subtract")} \\\\
    v[t] &= (1 - z[t])\\, p[t] + z[t]\\, v_{reset}   \\quad\\text{(reset = "zero")}

where ``p`` is the membrane potential before reset, ``z`` the spike (0 or 1) and ``v``
the membrane potential after reset (the state carried to the next step).

- ``alpha`` and ``beta`` are the per-step decay factors of the synaptic current and the
  membrane: ``exp(-dt/tau)`` for ``integrator="exact"`` (exact solution for a constant
  input over the step) or ``1 - dt/tau`` for ``integrator="euler"`` (forward Euler, as
  Norse integrates).  ``tau_syn=None`` means a delta synapse: ``alpha = 0`` and ``i = x``.
- ``gamma`` is the input gain: 1 for ``input_gain="unit"`` (``v += i`` each step, the
  snnTorch convention) or ``1 - beta`` for ``input_gain="leak"`` (``i`` is in volts and
  ``v`` relaxes towards ``v_leak + i``; with Euler this is ``dt/tau_mem``, Norse's form).
- ``~i[t]`` is ``i[t]`` (``current_delay=False``) or ``i[t-1]``
  (``current_delay=True``: the membrane integrates the current of the previous step,
  as Norse's ``lif_feed_forward_step`` does).
- ``spiking=False`` gives a leaky integrator (LI) with no threshold and no reset, the
  usual non-spiking readout layer.

Units: times in seconds, voltages in volts (or any consistent unit; the defaults are
normalized so that ``v_th = 1``).  The spike's derivative is the surrogate of
:mod:`simulators.surrogate`; with ``detach_reset=True`` (default, as in snnTorch and
Norse) no gradient flows through the reset term.

Two implementations of the same equations live here:

- :func:`lif_step` / :func:`lif_sequence_reference`: plain autograd, one step at a time.
- :func:`lif_sequence_fused`: the fast path.  A single autograd node for the whole
  sequence; its forward runs without building a graph and its backward is the
  hand-derived adjoint recursion (see :class:`_FusedLIF`).  It stores one tensor of
  pre-reset potentials and one of spikes, so memory is ``2 T B N`` values.

Both are tested to agree on values and gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from simulators.surrogate import Surrogate

RESET_MODES = ("subtract", "zero")
INTEGRATORS = ("exact", "euler")
INPUT_GAINS = ("unit", "leak")


@dataclass(frozen=True)
class LIFParameters:
    """Parameters of a population of CUBA LIF neurons (see the module docstring).

    tau_mem, tau_syn, dt: seconds (``tau_syn=None``: delta synapse, no current state).
    v_th, v_reset, v_leak: volts (normalized: threshold 1 by default).
    """

    tau_mem: float = 10e-3
    tau_syn: float | None = 5e-3
    dt: float = 1e-3
    v_th: float = 1.0
    v_reset: float = 0.0
    v_leak: float = 0.0
    reset: str = "subtract"
    integrator: str = "exact"
    input_gain: str = "leak"
    current_delay: bool = False
    spiking: bool = True
    detach_reset: bool = True
    surrogate: Surrogate = field(default_factory=Surrogate)

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(msg)

        if not (self.dt > 0 and math.isfinite(self.dt)):
            bad(f"dt must be a positive number of seconds, got {self.dt}")
        if not (self.tau_mem > 0 and math.isfinite(self.tau_mem)):
            bad(f"tau_mem must be a positive number of seconds, got {self.tau_mem}")
        if self.tau_syn is not None and not (self.tau_syn > 0 and math.isfinite(self.tau_syn)):
            bad(f"tau_syn must be a positive number of seconds (or none), got {self.tau_syn}")
        if self.reset not in RESET_MODES:
            bad(f"reset must be one of {RESET_MODES}, got '{self.reset}'")
        if self.integrator not in INTEGRATORS:
            bad(f"integrator must be one of {INTEGRATORS}, got '{self.integrator}'")
        if self.input_gain not in INPUT_GAINS:
            bad(f"input_gain must be one of {INPUT_GAINS}, got '{self.input_gain}'")
        if self.integrator == "euler":
            for name, tau in (("tau_mem", self.tau_mem), ("tau_syn", self.tau_syn)):
                if tau is not None and self.dt >= tau:
                    bad(
                        f"forward Euler needs dt < {name} (dt={self.dt} s, {name}={tau} s); "
                        "use a smaller dt or integrator='exact'"
                    )
        if self.spiking and not math.isfinite(self.v_th):
            bad("v_th must be finite for spiking neurons; use spiking=False for a leaky integrator")

    def _decay(self, tau: float | None) -> float:
        if tau is None:
            return 0.0
        if self.integrator == "exact":
            return math.exp(-self.dt / tau)
        return 1.0 - self.dt / tau

    @property
    def alpha(self) -> float:
        """Per-step decay of the synaptic current (0 for a delta synapse)."""
        return self._decay(self.tau_syn)

    @property
    def beta(self) -> float:
        """Per-step decay of the membrane potential."""
        return self._decay(self.tau_mem)

    @property
    def gamma(self) -> float:
        """Input gain from current to membrane per step."""
        return 1.0 if self.input_gain == "unit" else 1.0 - self.beta


class LIFState(NamedTuple):
    """Membrane potential ``v`` (after reset) and synaptic current ``i``, each [batch, n]."""

    v: torch.Tensor
    i: torch.Tensor


class LIFTrace(NamedTuple):
    """A simulated sequence: spikes and post-reset membrane, each [T, batch, n]; final state."""

    spikes: torch.Tensor
    membrane: torch.Tensor
    state: LIFState


def initial_state(like: torch.Tensor, p: LIFParameters) -> LIFState:
    """Resting state (``v = v_leak``, ``i = 0``) shaped like one time step of ``like``."""
    return LIFState(v=torch.full_like(like, p.v_leak), i=torch.zeros_like(like))


def lif_step(x: torch.Tensor, state: LIFState, p: LIFParameters) -> tuple[torch.Tensor, LIFState]:
    """One step of the equations above, differentiable with plain autograd.

    Returns ``(z, new_state)``; for ``spiking=False`` ``z`` is all zeros.
    """
    i_new = p.alpha * state.i + x
    i_used = state.i if p.current_delay else i_new
    pre = p.v_leak + p.beta * (state.v - p.v_leak) + p.gamma * i_used
    if not p.spiking:
        return torch.zeros_like(pre), LIFState(pre, i_new)
    z = p.surrogate.spike(pre - p.v_th)
    z_reset = z.detach() if p.detach_reset else z
    if p.reset == "subtract":
        v = pre - p.v_th * z_reset
    else:
        v = (1.0 - z_reset) * pre + z_reset * p.v_reset
    return z, LIFState(v, i_new)


def lif_sequence_reference(
    currents: torch.Tensor, p: LIFParameters, state: LIFState | None = None
) -> LIFTrace:
    """Run :func:`lif_step` over ``currents`` [T, batch, n] with plain autograd."""
    if state is None:
        state = initial_state(currents[0], p)
    spikes, membrane = [], []
    for x in currents.unbind(0):
        z, state = lif_step(x, state, p)
        spikes.append(z)
        membrane.append(state.v)
    return LIFTrace(torch.stack(spikes), torch.stack(membrane), state)


class _FusedLIF(torch.autograd.Function):
    """Whole-sequence LIF with a hand-written backward (the adjoint recursion).

    Backward, with ``g_z[t]``, ``g_v[t]`` the incoming gradients and ``lam_v``, ``lam_i``
    the gradients reaching ``v[t]`` and ``i[t]`` from step ``t+1``::

        dv      = g_v[t] + lam_v
        dz      = g_z[t] + (dv * dv/dz, only when the reset is not detached)
        dp      = dv * dv/dp + dz * S'(p[t] - v_th)
        lam_v   = beta * dp                                   (to v[t-1])
        same-step current:  dx[t] = lam_i + gamma * dp;  lam_i = alpha * dx[t]
        delayed current:    dx[t] = lam_i;               lam_i = alpha * dx[t] + gamma * dp

    with ``dv/dp = 1, dv/dz = -v_th`` (subtract) or ``dv/dp = 1 - z, dv/dz = v_reset - p``
    (zero).  The final ``lam_v``, ``lam_i`` are the gradients of the initial state.
    """

    @staticmethod
    def forward(ctx, currents, v0, i0, p: LIFParameters):  # type: ignore[override]
        alpha, beta, gamma = p.alpha, p.beta, p.gamma
        leak = (1.0 - beta) * p.v_leak
        pre = torch.empty_like(currents)
        spikes = torch.zeros_like(currents)
        membrane = torch.empty_like(currents)
        v, i = v0, i0
        has_current = p.tau_syn is not None
        for t, x in enumerate(currents.unbind(0)):
            if has_current:
                i_new = torch.add(x, i, alpha=alpha) if alpha != 0.0 else x
            else:
                i_new = x
            i_used = i if p.current_delay else i_new
            pre_t = pre[t]
            torch.mul(v, beta, out=pre_t)
            pre_t.add_(i_used, alpha=gamma)
            if leak != 0.0:
                pre_t.add_(leak)
            v_t = membrane[t]
            if p.spiking:
                z_t = spikes[t]
                torch.gt(pre_t, p.v_th, out=z_t)  # writes 0.0 / 1.0
                if p.reset == "subtract":
                    torch.sub(pre_t, z_t, alpha=p.v_th, out=v_t)
                else:
                    # v = pre + z * (v_reset - pre)
                    torch.addcmul(pre_t, z_t, p.v_reset - pre_t, out=v_t)
            else:
                v_t.copy_(pre_t)
            v, i = v_t, i_new
        i_final = i if has_current and alpha != 0.0 else i.clone()
        ctx.p = p
        ctx.save_for_backward(pre, spikes)
        return spikes, membrane, i_final

    @staticmethod
    def backward(ctx, g_spikes, g_membrane, g_i_final):  # type: ignore[override]
        p: LIFParameters = ctx.p
        pre, spikes = ctx.saved_tensors
        alpha, beta, gamma = p.alpha, p.beta, p.gamma
        T = pre.shape[0]
        d_currents = torch.empty_like(pre)
        lam_v = torch.zeros_like(pre[0])
        lam_i = g_i_final.clone() if g_i_final is not None else torch.zeros_like(pre[0])
        g_spikes_t = g_spikes.unbind(0) if g_spikes is not None else None
        g_membrane_t = g_membrane.unbind(0) if g_membrane is not None else None
        pre_t_all = pre.unbind(0)
        z_all = spikes.unbind(0)
        for t in range(T - 1, -1, -1):
            dv = lam_v if g_membrane_t is None else lam_v + g_membrane_t[t]
            if p.spiking:
                pre_t, z_t = pre_t_all[t], z_all[t]
                dz = g_spikes_t[t] if g_spikes_t is not None else torch.zeros_like(dv)
                if p.reset == "subtract":
                    dp = dv
                    if not p.detach_reset:
                        dz = dz - p.v_th * dv
                else:
                    dp = dv * (1.0 - z_t)
                    if not p.detach_reset:
                        dz = dz + dv * (p.v_reset - pre_t)
                dp = dp + dz * p.surrogate.derivative(pre_t - p.v_th)
            else:
                dp = dv
            lam_v = beta * dp
            if p.current_delay:
                d_currents[t] = lam_i
                lam_i = alpha * lam_i + gamma * dp
            else:
                dx = torch.add(lam_i, dp, alpha=gamma, out=d_currents[t])
                lam_i = alpha * dx
        return d_currents, lam_v, lam_i, None


def lif_sequence_fused(
    currents: torch.Tensor, p: LIFParameters, state: LIFState | None = None
) -> LIFTrace:
    """Fast path: same result as :func:`lif_sequence_reference`, one autograd node."""
    if state is None:
        state = initial_state(currents[0], p)
    spikes, membrane, i_final = _FusedLIF.apply(currents, state.v, state.i, p)
    return LIFTrace(spikes, membrane, LIFState(membrane[-1], i_final))
