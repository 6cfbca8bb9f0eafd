"""LIF engines backed by the peer libraries: snnTorch 1.0 and Norse 1.1, driven step by step.

Each engine takes the same inputs as :func:`simulators.lif.lif_sequence_fused`
(``currents [T, batch, n]``, :class:`~simulators.lif.LIFParameters`, optional
:class:`~simulators.lif.LIFState`) and returns a :class:`~simulators.lif.LIFTrace` with our
conventions, so that a layer can swap engines without any other change.  The peer's own
cell does the dynamics and its own autograd graph gives the gradients; the adapters only
map parameters and states in and out.  Where a peer cannot express a parameter set
exactly, the engine refuses it with an :class:`~simulators.errors.IncompatibleSettingError` that says
which setting to change (never an approximate mapping).

Voltage scaling.  LIF dynamics are linear in (input, voltages) between threshold
crossings, so running the peer on ``c x`` with voltages ``c v_th, c v_leak, c v_reset``
gives the same spikes, a membrane ``c v`` and a surrogate seen at ``c (p - v_th)``.  The
adapters use that factor ``c`` to make a peer's surrogate equal ours exactly and divide it
out of the returned membrane and current.

snnTorch (``snntorch.Leaky`` for ``tau_syn=None``, ``snntorch.Synaptic`` otherwise):

======================  ===============================================================
ours                    snnTorch
======================  ===============================================================
beta, alpha             ``beta=p.beta``, ``alpha=p.alpha`` (any integrator: the decays)
gamma (input gain)      input multiplied by ``c * gamma`` (snnTorch adds the input as is)
v_th                    ``threshold = c * v_th``
reset="subtract"        ``reset_mechanism="subtract"``; needs ``reset_timing="next_step"``
reset="zero", Leaky     ``"zero"``; needs ``reset_timing="immediate"`` and ``v_reset=0``
reset="zero", Synaptic  ``"zero"``; needs ``reset_timing="next_step"`` and ``v_reset=0``
detach_reset            must be True (snnTorch detaches its reset)
v_leak                  must be 0 (no resting potential in snnTorch)
current_delay           must be False (snnTorch integrates the same step's current)
surrogate atan(k)       ``snntorch.surrogate.atan(alpha=k)``, ``c = 1``
surrogate sigmoid(k)    ``snntorch.surrogate.sigmoid(slope=k)``, ``c = 1``
fast_sigmoid(k)         ``snntorch.surrogate.fast_sigmoid(slope=2)``, ``c = k / 2``
triangle(k)             our :meth:`Surrogate.spike` as ``spike_grad`` (snnTorch has no equal)
state v (membrane)      ``mem = c v``;  state i: ``syn = c * gamma * i``
======================  ===============================================================

Norse (``norse.torch.LIFCell`` for a current synapse, ``LIFBoxCell`` for ``tau_syn=None``;
both forward Euler with ``v += dt/tau_mem (v_leak - v + i)``, the same step's current, and
a reset that is *not* detached):

======================  ===============================================================
ours                    Norse
======================  ===============================================================
beta, alpha             ``tau_mem_inv = (1 - beta) / dt``, ``tau_syn_inv = (1 - alpha) / dt``
                        (so any integrator maps: Norse's Euler step has our decay)
gamma (input gain)      input multiplied by ``c * gamma / (1 - beta)``
v_th, v_leak, v_reset   multiplied by ``c``
reset="zero"            ``LIFCell`` / ``LIFBoxCell(reset_method=reset_value)``
reset="subtract"        ``LIFBoxCell(reset_method=reset_subtract)``; ``LIFCell`` cannot
detach_reset            must be False; reset_timing must be "immediate"
current_delay           must be False
surrogate triangle(k)   ``method="triangle", alpha=1``, ``c = k``
surrogate sigmoid(k)    ``method="tanh", alpha=2``, ``c = k / 4``
fast_sigmoid, atan      refused: Norse 1.1's ``super`` ignores its ``alpha`` and is
                        ``1/(1+|x|)^2``, which is no scaling of ours
state i                 Norse stores the decayed current: ``i_norse = c * alpha * i``
======================  ===============================================================

Units: as in :mod:`simulators.lif` (seconds, volts); Norse's ``tau_*_inv`` are in 1/s.
"""

from __future__ import annotations

import torch

from simulators.errors import IncompatibleSettingError
from simulators.lif import LIF_ENGINES, LIFParameters, LIFState, LIFTrace, initial_state


def _refuse(engine: str, what: str) -> None:
    raise IncompatibleSettingError(f"LIF engine '{engine}' cannot run these parameters exactly: {what}")


# ------------------------------------------------------------------------ snnTorch
def snntorch_mapping(p: LIFParameters) -> tuple[dict, float]:
    """Keyword arguments for ``snntorch.Leaky``/``Synaptic`` and the voltage scale ``c``."""
    import snntorch
    from snntorch import surrogate as snn_surrogate

    if not p.spiking:
        _refuse("snntorch", "a non-spiking leaky integrator has no snnTorch cell; use engine 'native'")
    if p.v_leak != 0.0:
        _refuse("snntorch", f"v_leak = {p.v_leak}, but snnTorch neurons rest at 0; set v_leak = 0")
    if p.current_delay:
        _refuse("snntorch", "snnTorch integrates the same step's current; set current_delay = false")
    if not p.detach_reset:
        _refuse("snntorch", "snnTorch always detaches its reset; set detach_reset = true")
    synaptic = p.tau_syn is not None
    if p.reset == "subtract" and p.reset_timing != "next_step":
        _refuse("snntorch", "snnTorch subtracts the threshold at the step after a spike, after the leak; "
                "set reset_timing = \"next_step\"")
    if p.reset == "zero":
        if p.v_reset != 0.0:
            _refuse("snntorch", f"snnTorch resets to 0, got v_reset = {p.v_reset}; set v_reset = 0")
        want = "next_step" if synaptic else "immediate"
        if p.reset_timing != want:
            _refuse("snntorch", f"snnTorch's {'Synaptic' if synaptic else 'Leaky'} zero reset is our "
                    f"reset_timing = \"{want}\"; set it")
    k = p.surrogate.slope
    name = p.surrogate.name
    if name == "atan":
        spike_grad, c = snn_surrogate.atan(alpha=k), 1.0
    elif name == "sigmoid":
        spike_grad, c = snn_surrogate.sigmoid(slope=k), 1.0
    elif name == "fast_sigmoid":
        spike_grad, c = snn_surrogate.fast_sigmoid(slope=2.0), k / 2.0
    else:
        spike_grad, c = p.surrogate.spike, 1.0
    # tensors in float64 so that snnTorch does not round beta and the threshold to float32
    # before the cell is cast to the input's dtype
    f64 = torch.float64
    kwargs = dict(beta=torch.tensor(p.beta, dtype=f64), threshold=torch.tensor(c * p.v_th, dtype=f64),
                  spike_grad=spike_grad, reset_mechanism=p.reset)
    if synaptic:
        kwargs["alpha"] = torch.tensor(p.alpha, dtype=f64)
    del snntorch
    return kwargs, c


@LIF_ENGINES.register("snntorch", check=lambda p: snntorch_mapping(p))
def lif_sequence_snntorch(currents: torch.Tensor, p: LIFParameters, state: LIFState | None = None) -> LIFTrace:
    """Run ``currents`` [T, batch, n] through a real ``snntorch.Leaky``/``Synaptic`` cell."""
    import snntorch

    kwargs, c = snntorch_mapping(p)
    if state is None:
        state = initial_state(currents[0], p)
    synaptic = p.tau_syn is not None
    cell = snntorch.Synaptic(**kwargs) if synaptic else snntorch.Leaky(**kwargs)
    # snnTorch appends every neuron to a class-wide registry (used only for init_hidden);
    # states here are explicit, so take the cell out again instead of leaking one per call.
    registry = snntorch.SpikingNeuron.instances
    if registry and registry[-1] is cell:
        registry.pop()
    cell = cell.to(dtype=currents.dtype, device=currents.device)
    gain = c * p.gamma
    mem = c * state.v
    syn = gain * state.i
    spikes, membrane = [], []
    for x in currents.unbind(0):
        if synaptic:
            spk, syn, mem = cell(gain * x, syn, mem)
        else:
            spk, mem = cell(gain * x, mem)
        spikes.append(spk)
        membrane.append(mem)
    z = torch.stack(spikes).to(currents.dtype)  # snnTorch's surrogates emit float32 spikes
    m = torch.stack(membrane)
    if p.reset_timing == "immediate":  # snnTorch reports the potential before its (deferred) reset
        m = m * (1.0 - z.detach())
    m = m / c
    i_final = syn / gain if synaptic else currents[-1]
    return LIFTrace(z, m, LIFState(m[-1], i_final))


# --------------------------------------------------------------------------- Norse
def norse_mapping(p: LIFParameters, dtype: torch.dtype = torch.float32):
    """The Norse cell for ``p`` (``LIFCell`` or ``LIFBoxCell``), its ``dt`` and the scale ``c``."""
    import norse.torch as norse
    from norse.torch.functional import reset as norse_reset

    if not p.spiking:
        _refuse("norse", "a non-spiking leaky integrator runs on engine 'native'")
    if p.beta == 1.0:
        _refuse("norse", "tau_mem = inf (no leak) has no LIF cell in Norse; use engine 'native'")
    if p.current_delay:
        _refuse("norse", "Norse 1.1 integrates the same step's current; set current_delay = false")
    if p.detach_reset:
        _refuse("norse", "Norse's feed-forward LIF cells differentiate through the reset; set detach_reset = false")
    if p.reset_timing != "immediate":
        _refuse("norse", "Norse resets at the spike's own step; set reset_timing = \"immediate\"")
    k = p.surrogate.slope
    if p.surrogate.name == "triangle":
        method, alpha, c = "triangle", 1.0, k
    elif p.surrogate.name == "sigmoid":
        method, alpha, c = "tanh", 2.0, k / 4.0
    else:
        _refuse("norse", f"Norse has no surrogate equal to '{p.surrogate.name}' (its 'super' ignores alpha); "
                "use surrogate = \"triangle\" or \"sigmoid\"")

    def t(v: float) -> torch.Tensor:
        return torch.as_tensor(v, dtype=dtype)

    tau_mem_inv = (1.0 - p.beta) / p.dt
    volts = dict(v_th=t(c * p.v_th), v_leak=t(c * p.v_leak), v_reset=t(c * p.v_reset))
    if p.tau_syn is None:
        reset_method = norse_reset.reset_subtract if p.reset == "subtract" else norse_reset.reset_value
        params = norse.LIFBoxParameters(tau_mem_inv=t(tau_mem_inv), method=method, alpha=t(alpha),
                                        reset_method=reset_method, **volts)
        cell = norse.LIFBoxCell(params, dt=p.dt)
    else:
        if p.reset == "subtract":
            _refuse("norse", "Norse's LIFCell (current synapse) only resets to v_reset; set reset = \"zero\" "
                    "or use a delta synapse (tau_syn = 0, LIFBoxCell)")
        params = norse.LIFParameters(tau_syn_inv=t((1.0 - p.alpha) / p.dt), tau_mem_inv=t(tau_mem_inv),
                                     method=method, alpha=t(alpha), **volts)
        cell = norse.LIFCell(params, dt=p.dt)
    return cell, c


@LIF_ENGINES.register("norse", check=lambda p: norse_mapping(p))
def lif_sequence_norse(currents: torch.Tensor, p: LIFParameters, state: LIFState | None = None) -> LIFTrace:
    """Run ``currents`` [T, batch, n] through a real ``norse.torch.LIFCell``/``LIFBoxCell``."""
    from norse.torch.functional.lif import LIFFeedForwardState
    from norse.torch.functional.lif_box import LIFBoxFeedForwardState

    cell, c = norse_mapping(p, currents.dtype)
    if state is None:
        state = initial_state(currents[0], p)
    synaptic = p.tau_syn is not None
    gain = c * p.gamma / (1.0 - p.beta)
    if synaptic:
        s = LIFFeedForwardState(v=c * state.v, i=(c * p.alpha) * state.i)
    else:
        s = LIFBoxFeedForwardState(v=c * state.v)
    spikes, membrane = [], []
    for x in currents.unbind(0):
        z, s = cell(gain * x, s)
        spikes.append(z)
        membrane.append(s.v)
    m = torch.stack(membrane) / c
    i_final = s.i / (c * p.alpha) if synaptic else currents[-1]
    return LIFTrace(torch.stack(spikes), m, LIFState(m[-1], i_final))
