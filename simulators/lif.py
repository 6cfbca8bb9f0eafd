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
  (``current_delay=True``: the membrane integrates the current of the previous step, as
  Norse's ``lif_feed_forward_step`` did before release 1.0; Norse 1.1 integrates the same
  step's current, ``current_delay=False``).
- ``reset_timing`` says when the reset acts.  ``"immediate"`` (default) is the equations
  above: the reset is applied at the spike's own step, before the next leak.
  ``"next_step"`` is snnTorch's order (``reset_delay=True``): the state carries the
  potential *before* reset, ``v[t] = p[t]``, and the reset of a spike at ``t`` is applied
  in step ``t+1`` *after* that step's leak and input:

  .. math::

      u[t] &= v_{leak} + \\beta\\,(p[t-1] - v_{leak}) + \\gamma\\, \\tilde i[t] \\\\
      p[t] &= u[t] - v_{th}\\, z[t-1]  \\quad\\text{(subtract)} \\\\
      p[t] &= (1 - z[t-1])\\, u[t] + z[t-1]\\, v_{reset}  \\quad\\text{(zero)}

  with ``z[t-1] = H(p[t-1] - v_th)`` recomputed from the carried potential (as snnTorch
  does).  This is snnTorch's ``Leaky``/``Synaptic`` with ``reset_mechanism="subtract"``
  and ``Synaptic`` with ``"zero"`` (the step after a spike integrates nothing).
  snnTorch's ``Leaky`` with ``"zero"`` zeroes *before* the leak, which is
  ``"immediate"`` with ``v_reset = 0``.  ``"next_step"`` needs ``detach_reset=True``
  (snnTorch always detaches its reset).
- ``spiking=False`` gives a leaky integrator (LI) with no threshold and no reset, the
  usual non-spiking readout layer.

Units: times in seconds, voltages in volts (or any consistent unit; the defaults are
normalized so that ``v_th = 1``).  The spike's derivative is the surrogate of
:mod:`simulators.surrogate`; with ``detach_reset=True`` (default, as in snnTorch and
Norse) no gradient flows through the reset term.

Implementations of the same equations:

- :func:`lif_step` / :func:`lif_sequence_reference`: plain autograd, one step at a time.
- :func:`lif_sequence_fused` (engine ``native``): the fast path, a single autograd node for the
  whole sequence with the hand-derived adjoint recursion as its backward.  On CPU float32/float64 it
  runs the compiled kernels of :mod:`simulators.lif_kernel` (:class:`_KernelLIF`: one forward pass
  and one reverse pass, each parallel over neurons; it stores only the pre-reset potential
  ``p [T, B, N]`` and recomputes spikes and surrogate derivatives from it).  Where the kernels are
  not available (build failed: one warning) it runs :class:`_FusedLIF`, the same recursion as
  vectorized torch ops, storing ``p`` and the spikes.
- :func:`lif_fused_output`: one output (spikes or membrane) of the fused engine; without gradients
  it keeps only the current state, optionally writing the output into the currents buffer.
- :func:`lif_event_forward`: a layer's no-gradient forward from binary input spikes, the synaptic
  gather and the neurons in one kernel.

Both are tested to agree on values and gradients.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, get_args

import torch

from simulators import lif_kernel
from simulators.registry import make_registry
from simulators.surrogate import Surrogate

LIF_ENGINES = make_registry("LIF_ENGINES", "LIF engine", discover=("simulators",))
"""Engine name -> sequence function ``(currents [T, B, n], params, state) -> LIFTrace``; an entry's
``check`` metadata (``check(params)``) raises IncompatibleSettingError for parameters it cannot run exactly."""

ResetMode = Literal["subtract", "zero"]
Integrator = Literal["exact", "euler"]
InputGain = Literal["unit", "leak"]
ResetTiming = Literal["immediate", "next_step"]
RESET_MODES, INTEGRATORS, INPUT_GAINS, RESET_TIMINGS = (
    get_args(t) for t in (ResetMode, Integrator, InputGain, ResetTiming)
)


@dataclass(frozen=True)
class LIFParameters:
    """Parameters of a population of CUBA LIF neurons (see the module docstring).

    tau_mem, tau_syn, dt: seconds (``tau_syn=None``: delta synapse, no current state;
    ``tau_mem=inf``: no leak, an integrate-and-fire neuron, with ``input_gain="unit"``).
    v_th, v_reset, v_leak: volts (normalized: threshold 1 by default).
    """

    tau_mem: float = 10e-3
    tau_syn: float | None = 5e-3
    dt: float = 1e-3
    v_th: float = 1.0
    v_reset: float = 0.0
    v_leak: float = 0.0
    reset: ResetMode = "subtract"
    integrator: Integrator = "exact"
    input_gain: InputGain = "leak"
    current_delay: bool = False
    reset_timing: ResetTiming = "immediate"
    spiking: bool = True
    detach_reset: bool = True
    surrogate: Surrogate = field(default_factory=Surrogate)

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(msg)

        if not (self.dt > 0 and math.isfinite(self.dt)):
            bad(f"dt must be a positive number of seconds, got {self.dt}")
        if not (self.tau_mem > 0 and not math.isnan(self.tau_mem)):
            bad(f"tau_mem must be a positive number of seconds, got {self.tau_mem}")
        if math.isinf(self.tau_mem) and self.input_gain == "leak":
            bad("tau_mem = inf (integrate-and-fire, no leak) needs input_gain='unit': the leak gain 1 - beta is 0")
        if self.tau_syn is not None and not (self.tau_syn > 0 and math.isfinite(self.tau_syn)):
            bad(f"tau_syn must be a positive number of seconds (or none), got {self.tau_syn}")
        if self.reset not in RESET_MODES:
            bad(f"reset must be one of {RESET_MODES}, got '{self.reset}'")
        if self.integrator not in INTEGRATORS:
            bad(f"integrator must be one of {INTEGRATORS}, got '{self.integrator}'")
        if self.input_gain not in INPUT_GAINS:
            bad(f"input_gain must be one of {INPUT_GAINS}, got '{self.input_gain}'")
        if self.reset_timing not in RESET_TIMINGS:
            bad(f"reset_timing must be one of {RESET_TIMINGS}, got '{self.reset_timing}'")
        if self.reset_timing == "next_step" and not self.detach_reset:
            bad("reset_timing='next_step' (snnTorch's order) needs detach_reset=True")
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


def pre_reset_potential(spikes: torch.Tensor, membrane: torch.Tensor, p: LIFParameters) -> torch.Tensor:
    """The membrane potential before reset, ``p[t]``, from a trace's spikes ``z`` and carried membrane ``v``.

    - ``reset_timing = "next_step"``: the carried potential *is* ``p[t]``.
    - ``"immediate"``, ``reset = "subtract"``: ``p[t] = v[t] + v_th z[t]`` (exact; ``z`` enters detached, so
      the gradient is that of ``v``, which equals ``p``'s with ``detach_reset``).
    - ``"immediate"``, ``reset = "zero"``: ``p[t]`` is lost where ``z[t] = 1`` (``v = v_reset``); there the
      value returned is ``v_th`` (the least ``p`` a spike implies) with no gradient; elsewhere ``p = v``.
    """
    if p.reset_timing == "next_step":
        return membrane
    if p.reset == "subtract":
        return membrane + p.v_th * spikes.detach()
    fired = spikes.detach() > 0
    return torch.where(fired, torch.full_like(membrane, p.v_th), membrane)


def lif_step(x: torch.Tensor, state: LIFState, p: LIFParameters) -> tuple[torch.Tensor, LIFState]:
    """One step of the equations above, differentiable with plain autograd.

    Returns ``(z, new_state)``; for ``spiking=False`` ``z`` is all zeros.
    """
    i_new = p.alpha * state.i + x
    i_used = state.i if p.current_delay else i_new
    pre = p.v_leak + p.beta * (state.v - p.v_leak) + p.gamma * i_used
    deferred = p.spiking and p.reset_timing == "next_step"
    if deferred:  # snnTorch's order: reset the previous step's spike now (detached)
        z_prev = (state.v > p.v_th).to(state.v.dtype)
        if p.reset == "subtract":
            pre = pre - p.v_th * z_prev
        else:
            pre = (1.0 - z_prev) * pre + z_prev * p.v_reset
    if not p.spiking:
        return torch.zeros_like(pre), LIFState(pre, i_new)
    z = p.surrogate.spike(pre - p.v_th)
    if deferred:
        return z, LIFState(pre, i_new)
    z_reset = z.detach() if p.detach_reset else z
    if p.reset == "subtract":
        v = pre - p.v_th * z_reset
    else:
        v = (1.0 - z_reset) * pre + z_reset * p.v_reset
    return z, LIFState(v, i_new)


@LIF_ENGINES.register("reference")
def lif_sequence_reference(currents: torch.Tensor, p: LIFParameters, state: LIFState | None = None) -> LIFTrace:
    """Run :func:`lif_step` over ``currents`` [T, batch, n] with plain autograd."""
    if state is None:
        state = initial_state(currents[0], p)
    spikes, membrane = [], []
    for x in currents.unbind(0):
        z, state = lif_step(x, state, p)
        spikes.append(z)
        membrane.append(state.v)
    return LIFTrace(torch.stack(spikes), torch.stack(membrane), state)


@contextmanager
def _one_intra_op_thread():
    """Run the per-step loops on one intra-op thread, then restore the thread count.

    Each step's ops touch only ``batch x n`` values (e.g. 128 x 1000), too few to gain from
    a parallel region, and every region is a barrier: with the cores shared (the benchmark
    machine runs ~10 processes on 2 cores) a barrier waits for a descheduled thread, and a
    128 x 1000 comparison measured 8-19 ms on 2 threads against 0.15 ms on one.  The large
    vectorized ops (whole-sequence surrogate derivative, the matmuls outside) keep all
    threads.
    """
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


class _FusedLIF(torch.autograd.Function):
    """Whole-sequence LIF with a hand-written backward (the adjoint recursion).

    Forward.  The synaptic current does not depend on the spikes, so it is filtered first
    (one op per step) and the drive ``gamma i[t] + (1 - beta) v_leak`` is formed for all
    steps at once; the membrane loop then costs three tensor ops per step (leak + drive,
    threshold, reset), all writing into preallocated ``[T, B, N]`` buffers (no ``x[t]``
    indexing inside autograd, no per-step allocation).

    Backward.  With ``dp[t] = dL/dp[t]`` (``p`` the pre-reset potential) the adjoint is the
    linear recursion ``dp[t] = A[t] + M[t] dp[t+1]`` with, for ``reset_timing="immediate"``::

        A = g_z S'(p - v_th) + c g_v,      M = beta c,
        c = dv/dp + dv/dz S'(p - v_th)      (the second term only without detach_reset)
        dv/dp = 1, dv/dz = -v_th            (subtract)
        dv/dp = 1 - z, dv/dz = v_reset - p  (zero)

    and for ``"next_step"`` (membrane output is ``p``; reset detached)
    ``A = g_v + g_z S'(p - v_th)``, ``M = beta`` (subtract) or ``beta (1 - z)`` (zero; then
    also ``dL/du[t] = (1 - z[t-1]) dp[t]`` reaches the drive).
    ``A`` and ``M`` are computed for all steps in a few vectorized ops; the recursion is one
    fused op per step.  The current's adjoint ``dL/di[t] = gamma dp[t] + alpha dL/di[t+1]``
    (``dp[t+1]`` for ``current_delay``) is a second one-op-per-step recursion, and
    ``dL/dx[t] = dL/di[t]``.  The last values are the gradients of the initial state.
    """

    @staticmethod
    def forward(ctx, currents, v0, i0, p: LIFParameters):  # type: ignore[override]
        with _one_intra_op_thread():
            pre, spikes, membrane, i_final = _fused_forward(currents, v0, i0, p)
        ctx.p = p
        ctx.save_for_backward(pre, spikes, v0)
        ctx.set_materialize_grads(False)  # unused outputs give None, not [T, B, N] zeros
        return spikes, membrane, i_final

    @staticmethod
    def backward(ctx, g_spikes, g_membrane, g_i_final):  # type: ignore[override]
        p: LIFParameters = ctx.p
        pre, spikes, v0 = ctx.saved_tensors
        A, M = _adjoint_coefficients(p, pre, spikes, g_spikes, g_membrane)
        with _one_intra_op_thread():
            return (*_adjoint_recursion(p, A, M, spikes, v0, g_i_final), None)


def _fused_forward(currents, v0, i0, p: LIFParameters):
    """Forward of :class:`_FusedLIF`: ``(pre, spikes, membrane, i_final)``."""
    alpha, beta, gamma = p.alpha, p.beta, p.gamma
    leak = (1.0 - beta) * p.v_leak
    has_current = p.tau_syn is not None and alpha != 0.0
    # --- synaptic current, then the drive gamma * i_used + leak, for all steps
    if has_current:
        cur = torch.empty_like(currents)
        i = i0
        for t, x in enumerate(currents.unbind(0)):
            i = torch.add(x, i, alpha=alpha, out=cur[t])
        i_final = cur[-1].clone()
        if p.current_delay:
            drive = torch.cat([i0.unsqueeze(0), cur[:-1]])
            del cur
        else:
            drive = cur
    else:
        i_final = currents[-1].clone()
        if p.current_delay:
            drive = torch.cat([i0.unsqueeze(0), currents[:-1]])
        else:
            drive = currents.clone()
    if gamma != 1.0:
        drive.mul_(gamma)
    if leak != 0.0:
        drive.add_(leak)
    # --- membrane loop; `drive` becomes the pre-reset potential p in place
    pre = drive
    v_th, v_reset = p.v_th, p.v_reset
    deferred = p.spiking and p.reset_timing == "next_step"
    if not p.spiking:
        v = v0
        for pre_t in pre.unbind(0):
            v = pre_t.add_(v, alpha=beta)
        membrane, spikes = pre, torch.zeros_like(pre)
    elif deferred:
        spikes = torch.empty_like(pre)
        v = v0
        mask = torch.gt(v0, v_th)
        z_prev = mask.to(pre.dtype)
        for pre_t, z_t in zip(pre.unbind(0), spikes.unbind(0)):
            pre_t.add_(v, alpha=beta)
            if p.reset == "subtract":
                pre_t.sub_(z_prev, alpha=v_th)
                torch.gt(pre_t, v_th, out=z_t)
                z_prev = z_t
            else:
                pre_t.masked_fill_(mask, v_reset)
                mask = torch.gt(pre_t, v_th)
                z_t.copy_(mask)
            v = pre_t
        membrane = pre
    else:
        spikes = torch.empty_like(pre)
        membrane = torch.empty_like(pre)
        v = v0
        for pre_t, z_t, v_t in zip(pre.unbind(0), spikes.unbind(0), membrane.unbind(0)):
            pre_t.add_(v, alpha=beta)
            if p.reset == "subtract":
                torch.gt(pre_t, v_th, out=z_t)
                v = torch.sub(pre_t, z_t, alpha=v_th, out=v_t)
            else:
                mask = torch.gt(pre_t, v_th)
                z_t.copy_(mask)
                v = torch.where(mask, torch.as_tensor(v_reset, dtype=pre.dtype), pre_t, out=v_t)
    return pre, spikes, membrane, i_final


def _adjoint_coefficients(p: LIFParameters, pre, spikes, g_spikes, g_membrane):
    """``A [T, B, N]`` and ``M`` (tensor or the float beta) of ``dp[t] = A[t] + M[t] dp[t+1]``."""
    beta = p.beta
    deferred = p.spiking and p.reset_timing == "next_step"
    # --- A[t] and M[t] for all steps at once
    M: torch.Tensor | float = beta
    if p.spiking:
        sd = p.surrogate.derivative(pre - p.v_th)
        A = g_spikes * sd if g_spikes is not None else torch.zeros_like(pre)
        c = None  # dv/dp + dv/dz S' ; None means the constant 1
        if not deferred:
            if p.reset == "subtract":
                if not p.detach_reset:
                    c = sd.mul(-p.v_th).add_(1.0)
            else:
                c = 1.0 - spikes
                if not p.detach_reset:
                    c.addcmul_(p.v_reset - pre, sd)
        elif p.reset == "zero":
            c = 1.0 - spikes
        if g_membrane is not None:
            if c is None or deferred:
                A.add_(g_membrane)
            else:
                A.addcmul_(c, g_membrane)
        if c is not None:
            M = c.mul_(beta)
        del sd
    else:
        A = g_membrane.clone() if g_membrane is not None else torch.zeros_like(pre)
    return A, M


def _adjoint_recursion(p: LIFParameters, A, M, spikes, v0, g_i_final):
    """Run the two backward recursions; returns ``(dL/dcurrents, dL/dv0, dL/di0)``."""
    alpha, beta, gamma = p.alpha, p.beta, p.gamma
    T = A.shape[0]
    deferred = p.spiking and p.reset_timing == "next_step"
    # --- dp[t] = A[t] + M[t] dp[t+1], in place in A
    dp = A
    dps = dp.unbind(0)
    if isinstance(M, float):
        for t in range(T - 2, -1, -1):
            dps[t].add_(dps[t + 1], alpha=M)
    else:
        Ms = M.unbind(0)
        for t in range(T - 2, -1, -1):
            dps[t].addcmul_(Ms[t], dps[t + 1])
    if deferred and p.reset == "zero":  # u[t] is zeroed when the neuron spiked at t-1
        dp[1:].mul_(1.0 - spikes[:-1])
        dps[0].mul_((v0 <= p.v_th).to(dp.dtype))
    d_v0 = beta * dps[0]  # gradient reaching v0 (the state before step 0)
    # --- current adjoint: dL/di[t] = gamma dp[t'] + alpha dL/di[t+1]
    has_current = p.tau_syn is not None and alpha != 0.0
    if p.current_delay:
        d_cur = torch.empty_like(dp)
        d_cur[-1] = g_i_final if g_i_final is not None else 0.0
        dcs = d_cur.unbind(0)
        if T > 1:
            d_cur[:-1] = dp[1:]
            d_cur[:-1].mul_(gamma)
        if has_current:
            for t in range(T - 2, -1, -1):
                dcs[t].add_(dcs[t + 1], alpha=alpha)
        d_i0 = dcs[0] * alpha + dps[0] * gamma if has_current else dps[0] * gamma
        return d_cur, d_v0, d_i0
    d_cur = dp
    if gamma != 1.0:
        d_cur.mul_(gamma)
    if g_i_final is not None:
        d_cur[-1].add_(g_i_final)
    if has_current:
        dcs = d_cur.unbind(0)
        for t in range(T - 2, -1, -1):
            dcs[t].add_(dcs[t + 1], alpha=alpha)
        d_i0 = dcs[0] * alpha
    else:
        d_i0 = torch.zeros_like(dps[0])
    return d_cur, d_v0, d_i0


# ----------------------------------------------------------------------------------- compiled kernel
def _kernel_for(currents: torch.Tensor):
    """The compiled extension if it can run on ``currents`` (CPU, float32/float64), else ``None``."""
    if currents.device.type != "cpu" or currents.dtype not in (torch.float32, torch.float64):
        return None
    return lif_kernel.kernel()


def _flags(p: LIFParameters) -> dict:
    return dict(
        alpha=p.alpha, beta=p.beta, gamma=p.gamma, v_th=p.v_th, v_reset=p.v_reset,
        has_current=p.tau_syn is not None and p.alpha != 0.0, delay=p.current_delay, spiking=p.spiking,
        next_step=p.spiking and p.reset_timing == "next_step", zero=p.reset == "zero",
    )


def _kernel_forward(k, currents, v0, i0, p: LIFParameters, *, pre, spikes, membrane):
    """Run ``lif_forward``; returns the final state ``(v, i)`` [B, N] (fresh tensors)."""
    f = _flags(p)
    T = currents.shape[0]
    v = v0.detach().to(currents.dtype).contiguous().clone()
    i = i0.detach().to(currents.dtype).contiguous().clone()
    empty = currents.new_empty(0)

    def flat(t):
        return empty if t is None else t.view(T, -1)

    k.lif_forward(currents.view(T, -1), flat(pre), flat(spikes), flat(membrane), i.view(-1), v.view(-1),
                  f["alpha"], f["beta"], f["gamma"], (1.0 - p.beta) * p.v_leak, f["v_th"], f["v_reset"],
                  f["has_current"], f["delay"], f["spiking"], f["next_step"], f["zero"])
    return v, i


class _KernelLIF(torch.autograd.Function):
    """:class:`_FusedLIF` on the compiled kernels: one forward pass and one reverse adjoint pass.

    Saves only the pre-reset potential ``p [T, B, N]`` (spikes and the surrogate derivative are
    recomputed from it in backward; nothing for a leaky integrator).  ``outputs`` picks what the
    forward returns besides the final state: ``"both"`` (spikes, membrane), ``"spikes"`` or
    ``"membrane"``.  ``overwrite=True`` lets the kernel write ``p`` (or the membrane of a leaky
    integrator) into the ``currents`` buffer: only for a caller that owns it and never reads it again.
    Returns ``(*outputs, v_final, i_final)``.
    """

    @staticmethod
    def forward(ctx, currents, v0, i0, p: LIFParameters, outputs: str, overwrite: bool):  # type: ignore[override]
        k = lif_kernel.kernel()
        currents = currents.contiguous()
        want_z = outputs in ("both", "spikes")
        want_v = outputs in ("both", "membrane")
        pre = (currents if overwrite else torch.empty_like(currents)) if p.spiking else None
        if want_z:
            spikes = torch.empty_like(currents) if p.spiking else torch.zeros_like(currents)
        else:
            spikes = None
        membrane = torch.empty_like(currents) if want_v else None
        v, i = _kernel_forward(k, currents, v0, i0, p, pre=pre, spikes=spikes if p.spiking else None,
                               membrane=membrane)
        ctx.p, ctx.outputs, ctx.T = p, outputs, currents.shape[0]
        ctx.save_for_backward(pre if pre is not None else currents.new_empty(0), v0)
        ctx.set_materialize_grads(False)
        outs = tuple(t for t, w in ((spikes, want_z), (membrane, want_v)) if w)
        return (*outs, v, i)

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        p: LIFParameters = ctx.p
        pre, v0 = ctx.saved_tensors
        grads = list(grads)
        g_z = grads.pop(0) if ctx.outputs in ("both", "spikes") else None
        g_m = grads.pop(0) if ctx.outputs in ("both", "membrane") else None
        g_vT, g_iT = grads
        T, shape, dtype, M = ctx.T, v0.shape, pre.dtype, v0.numel()
        empty = pre.new_empty(0)

        def flat(t, rows):
            if t is None:
                return empty
            t = t.to(dtype).contiguous()
            return t.view(rows, M) if rows else t.view(M)

        d_x = torch.empty((T, *shape), dtype=dtype)
        d_v0 = torch.empty(shape, dtype=dtype)
        d_i0 = torch.empty(shape, dtype=dtype)
        f = _flags(p)
        lif_kernel.kernel().lif_backward(
            pre.view(T, M) if pre.numel() else empty, flat(g_z, T), flat(g_m, T), flat(g_vT, 0), flat(g_iT, 0),
            v0.to(dtype).contiguous().view(M), d_x.view(T, M), d_v0.view(M), d_i0.view(M),
            f["alpha"], f["beta"], f["gamma"], f["v_th"], f["v_reset"], f["has_current"], f["delay"], f["spiking"],
            f["next_step"], f["zero"], p.detach_reset, lif_kernel.SURROGATE_IDS[p.surrogate.name], p.surrogate.slope,
        )
        return d_x, d_v0.to(v0.dtype), d_i0.to(v0.dtype), None, None, None


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def lif_fused_output(currents: torch.Tensor, p: LIFParameters, state: LIFState | None = None, *,
                     output: str = "spikes", overwrite: bool = False) -> tuple[torch.Tensor, LIFState]:
    """One output of the fused engine (``"spikes"`` or ``"membrane"`` [T, B, N]) and the final state.

    Cheaper than :func:`lif_sequence_fused` (which returns both): the other output is never written.
    Without gradients the compiled kernel keeps only the current state (no ``T x B x N`` history;
    with ``overwrite=True`` the output is written into the ``currents`` buffer, which the caller
    must own and not read again).  With gradients it stores the pre-reset potential only.
    """
    if output not in ("spikes", "membrane"):
        raise ValueError(f"output must be 'spikes' or 'membrane', got '{output}'")
    k = _kernel_for(currents)
    if k is None:
        trace = lif_sequence_fused(currents, p, state)
        return (trace.spikes if output == "spikes" else trace.membrane), trace.state
    if state is None:
        state = initial_state(currents[0], p)
    if not _needs_grad(currents, state.v, state.i):
        currents = currents.contiguous()
        buf = currents if overwrite else torch.empty_like(currents)
        if output == "spikes" and not p.spiking:
            buf.zero_()
        spk = buf if output == "spikes" and p.spiking else None
        mem = buf if output == "membrane" else None
        v, i = _kernel_forward(k, currents, state.v, state.i, p, pre=None, spikes=spk, membrane=mem)
        return buf, LIFState(v, i)
    out, v, i = _KernelLIF.apply(currents, state.v, state.i, p, output, overwrite)
    return out, LIFState(v, i)


def lif_event_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: LIFParameters,
                      state: LIFState | None = None, *, output: str = "spikes") -> tuple[torch.Tensor, LIFState] | None:
    """A whole layer's forward without gradients, event-driven: ``x [T, B, n_in]`` binary spikes.

    The synaptic input of row ``(t, b)`` is ``b + sum_{c: x[t, b, c] = 1} W[:, c]``, gathered from the
    rows of ``W^T`` for the active inputs (compressed row format) and fed straight into the LIF step,
    tile by tile of 128 neurons, in one compiled kernel: no ``[T, B, n_out]`` currents are stored.
    Returns ``(spikes or membrane [T, B, n_out], final state)``, or ``None`` where the kernel cannot
    run (not built, not CPU float32/float64, dtypes differ).  Raises ValueError for non-binary ``x``.
    """
    if output not in ("spikes", "membrane"):
        raise ValueError(f"output must be 'spikes' or 'membrane', got '{output}'")
    k = _kernel_for(x)
    if not p.spiking and output == "spikes":
        return None  # a leaky integrator's spikes are all zero: nothing to gain here
    if k is None or weight.dtype != x.dtype or weight.device != x.device:
        return None
    if bias is not None and bias.dtype != x.dtype:
        return None
    T, B, n_in = x.shape
    n_out = weight.shape[0]
    if state is None:
        state = initial_state(x.new_empty(B, n_out), p)
    with torch.no_grad():
        x = x.contiguous()
        w_t = weight.detach().t().contiguous()
        out = x.new_empty(T, B, n_out)
        spk = out if output == "spikes" else x.new_empty(0)
        mem = out if output == "membrane" else x.new_empty(0)
        f = _flags(p)
        v = state.v.detach().to(x.dtype).contiguous().clone()
        i = state.i.detach().to(x.dtype).contiguous().clone()
        nnz = k.lif_event_forward(
            x, w_t, bias.detach().contiguous() if bias is not None else x.new_empty(0), spk, mem, i, v,
            f["alpha"], f["beta"], f["gamma"], (1.0 - p.beta) * p.v_leak, f["v_th"], f["v_reset"],
            f["has_current"], f["delay"], f["spiking"], f["next_step"], f["zero"],
        )
    if nnz < 0:
        raise ValueError("the event-driven synapse needs binary spikes (0/1) as input; use synapse 'dense' or 'auto'")
    return out, LIFState(v, i)


@LIF_ENGINES.register("native")
def lif_sequence_fused(currents: torch.Tensor, p: LIFParameters, state: LIFState | None = None) -> LIFTrace:
    """Fast path: same result as :func:`lif_sequence_reference`, one autograd node.

    Runs the compiled kernels of :mod:`simulators.lif_kernel` for CPU float32/float64 input, and the
    pure-torch :class:`_FusedLIF` otherwise (or if the kernels could not be built).
    """
    if state is None:
        state = initial_state(currents[0], p)
    if _kernel_for(currents) is not None:
        spikes, membrane, v, i = _KernelLIF.apply(currents, state.v, state.i, p, "both", False)
        return LIFTrace(spikes, membrane, LIFState(v, i))
    spikes, membrane, i_final = _FusedLIF.apply(currents, state.v, state.i, p)
    return LIFTrace(spikes, membrane, LIFState(membrane[-1], i_final))
