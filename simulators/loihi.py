"""Bit-accurate fixed-point twin of Loihi 2's CUBA LIF and Dense, as Lava's ``fixed_pt`` models define them.

Ground truth: lava-nc 0.10.0, ``lava/proc/lif/models.py`` (``PyLifModelBitAcc``,
``PyLifResetModelBitAcc``) and ``lava/proc/dense/models.py`` (``PyDenseModelBitAcc``).
All state is integer (torch ``int64`` tensors, batched ``[batch, n]``); one time step is
one Loihi algorithmic step (the float model's ``dt`` seconds).

Dense (binary spikes ``s`` in {0, 1}, integer weights ``w`` as handed to Lava)::

    w'   = truncate(clip(w))                       (sign mode MIXED: clip to [-256, 255], then
                                                    drop the LSB: w' = (w >> 1) << 1)
    a    = sum_j w'_ij s_j                          (exact integer sum)
    a_out = a << e   if e > 0   else   a >> -e      (e = weight_exp; >> is arithmetic: floor)

so a weight is ``2 m 2^e`` with an 8-bit signed mantissa ``m`` in [-128, 127].

CUBA LIF, per step, in this order (``>>12`` below is truncation toward zero:
``sign(x) (|x| >> 12)``)::

    u = wrap24( (u (4096 - (du + 1))) >>12  +  (a_in << 6) )         current
    v = clip24( (v (4096 - dv)) >>12  +  u  +  bias )                  voltage (uses the new u)
    s = v > (vth << 6)                                                 spike
    v = 0 where s                                                      reset to zero

- ``du``, ``dv``: 12-bit unsigned decays (0..4095); Lava adds ``ds_offset = 1`` to ``du``
  (so ``du = 4095`` means no current memory, a delta synapse) and ``dm_offset = 0`` to ``dv``.
- ``a_in << 6`` and ``vth << 6``: the MSB alignment of the hardware; ``vth`` is 17 bits
  (0..131071).
- ``bias = bias_mant << bias_exp`` (``bias_mant``: 13-bit signed, -4096..4095; ``bias_exp``
  0..7); the bias enters the voltage, not the current, and is *not* shifted by 6.
- ``wrap24`` (current): values above ``2^23`` wrap by ``-2^24``, values at or below
  ``-2^23`` by ``+2^24`` (Lava's exact comparisons: ``+2^23`` itself is kept).
  ``clip24`` (voltage): saturate to ``[-(2^23 - 1), 2^23 - 1]``.
- Lava adds ``a_in << 6`` into an int32 numpy array, which wraps modulo 2^32 before the 24-bit
  check; :func:`_wrap32` reproduces that too, so even absurd inputs agree.  Lava's model does
  not saturate the Dense output at 16 bits (hardware would), and neither does the twin.

Reset behaviours.  Both are the ones Lava's bit-accurate models offer:

- ``"zero"`` (``LIF``): ``v = 0`` after a spike, ``u`` keeps decaying.  This is the only
  spike reset Lava's fixed-point LIF has.
- ``"periodic"`` (``LIFReset``): the same spike reset, plus ``u = v = 0`` at the start of
  every step whose 1-based index ``t`` has ``t % reset_interval == reset_offset``, before the
  dynamics.  This is the second behaviour we support because it is the only other reset
  that Lava implements bit-accurately (``LIFRefractory`` has only a ``floating_pt`` model,
  ``ATRLIF`` is a different neuron with an adaptive threshold, and no Lava model does a
  subtractive reset), and because it is what makes many samples in one Lava run exact: the
  deployment runner resets layer ``k`` at the step where that layer starts a new sample.

Timing.  In a Lava graph every Dense sends, at step ``t``, what it accumulated from the
spikes it received at ``t - 1`` (Lava buffers ``a_buff`` to avoid deadlocks), so layer
``k`` of a feed-forward network lags the input by ``k + 1`` steps.  :func:`run_network`
simulates either that pipelined graph (``pipelined=True``, for step-by-step comparison
with a Lava run) or the same network in *local time* (``pipelined=False``): every layer
sees the spikes of the layer below from the same step, each sample starts from zero
state.  A Lava run of ``LIFReset`` layers with ``reset_interval = T`` and
``reset_offset = (k + 2) % T`` for layer ``k`` (input sample ``b`` at steps ``b T + 1 ..
b T + T``) equals the local-time run of all samples at once, step for step
(:func:`local_to_pipelined_steps` gives the global step of a local one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

DECAY_BITS = 12
DECAY_UNITY = 1 << DECAY_BITS
DU_OFFSET = 1  # Lava's ds_offset
DV_OFFSET = 0  # Lava's dm_offset
ACT_SHIFT = 6
VTH_SHIFT = 6
UV_BITS = 24
UV_MAX = 1 << (UV_BITS - 1)  # 2^23
VTH_MAX = (1 << 17) - 1
BIAS_MANT_MIN, BIAS_MANT_MAX = -(1 << 12), (1 << 12) - 1
BIAS_EXP_MIN, BIAS_EXP_MAX = 0, 7
WEIGHT_MANT_MIN, WEIGHT_MANT_MAX = -128, 127  # signed 8-bit mantissa; Lava weight = 2 * mantissa (MIXED)
WEIGHT_EXP_MIN, WEIGHT_EXP_MAX = -8, 7
RESET_MODES = ("zero", "periodic")


@dataclass(frozen=True)
class LoihiLayerParams:
    """One Dense + LIF layer in Lava's integer units (see the module docstring).

    weights: int tensor [n_out, n_in], the values handed to ``Dense(weights=...)`` with
        ``sign_mode=MIXED, num_weight_bits=8`` (even numbers in [-256, 254] are exact).
    weight_exp: Dense ``weight_exp``.
    du, dv: LIF current and voltage decays (12 bits).  vth: threshold mantissa (17 bits).
    bias_mant, bias_exp: int tensors [n_out] (or scalars) of the LIF bias.
    """

    weights: torch.Tensor
    weight_exp: int
    du: int
    dv: int
    vth: int
    bias_mant: torch.Tensor
    bias_exp: torch.Tensor

    @property
    def n_in(self) -> int:
        return int(self.weights.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weights.shape[0])

    def problems(self) -> list[str]:
        """What Loihi cannot hold, one phrase each (empty list: the layer fits)."""
        out = []
        w = self.weights
        if w.dtype.is_floating_point and not torch.equal(w, w.round()):
            out.append("weights are not integers")
        lo, hi = 2 * WEIGHT_MANT_MIN, 2 * WEIGHT_MANT_MAX
        if w.numel() and (int(w.min()) < lo or int(w.max()) > hi):
            out.append(f"weights span [{int(w.min())}, {int(w.max())}], outside [{lo}, {hi}] (8-bit mantissa x 2)")
        elif w.numel() and bool(torch.any(torch.remainder(w.long(), 2) != 0)):
            out.append("odd weights (Lava drops the LSB of MIXED-sign weights; use even values)")
        if not WEIGHT_EXP_MIN <= self.weight_exp <= WEIGHT_EXP_MAX:
            out.append(f"weight_exp {self.weight_exp} outside [{WEIGHT_EXP_MIN}, {WEIGHT_EXP_MAX}]")
        for name, val, hi in (
            ("du", self.du, DECAY_UNITY - 1),
            ("dv", self.dv, DECAY_UNITY - 1),
            ("vth", self.vth, VTH_MAX),
        ):
            if not 0 <= val <= hi:
                out.append(f"{name} = {val} outside [0, {hi}]")
        bm, be = torch.as_tensor(self.bias_mant), torch.as_tensor(self.bias_exp)
        if bm.numel() and (int(bm.min()) < BIAS_MANT_MIN or int(bm.max()) > BIAS_MANT_MAX):
            out.append(
                f"bias mantissa spans [{int(bm.min())}, {int(bm.max())}], outside 13 bits [{BIAS_MANT_MIN}, "
                f"{BIAS_MANT_MAX}]"
            )
        if be.numel() and (int(be.min()) < BIAS_EXP_MIN or int(be.max()) > BIAS_EXP_MAX):
            out.append(f"bias exponent outside [{BIAS_EXP_MIN}, {BIAS_EXP_MAX}]")
        return out

    def effective_bias(self) -> torch.Tensor:
        """``bias_mant << bias_exp`` per neuron, int64 [n_out]."""
        bm = torch.as_tensor(self.bias_mant, dtype=torch.int64).expand(self.n_out)
        be = torch.as_tensor(self.bias_exp, dtype=torch.int64).expand(self.n_out)
        return torch.where(be >= 0, bm << be.clamp(min=0), bm >> (-be).clamp(min=0))


class LoihiLIFState(NamedTuple):
    """Integer current ``u`` and voltage ``v``, each int64 [batch, n]."""

    u: torch.Tensor
    v: torch.Tensor


class LoihiTrace(NamedTuple):
    """Per layer: spikes (bool), currents ``u`` and voltages ``v`` (after reset), each [T, batch, n]."""

    spikes: list[torch.Tensor]
    currents: list[torch.Tensor]
    voltages: list[torch.Tensor]


def _wrap32(x: torch.Tensor) -> torch.Tensor:
    """Two's-complement int32 wrap-around of an int64 tensor (numpy int32 overflow)."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _decay(x: torch.Tensor, keep: int) -> torch.Tensor:
    """``sign(x k) (|x k| >> 12)``: multiply by ``keep / 4096`` truncating toward zero."""
    return torch.div(x * keep, DECAY_UNITY, rounding_mode="trunc")


def dense_fixed(spikes: torch.Tensor, weights: torch.Tensor, weight_exp: int) -> torch.Tensor:
    """Dense output ``a_out`` [batch, n_out] (int64) for binary ``spikes`` [batch, n_in].

    Lava's MIXED-sign clip and LSB truncation are applied to ``weights`` first.
    """
    w = torch.clamp(weights.to(torch.int64), -256, 255)
    w = (w >> 1) << 1
    # Exact: integer values with |sum| < 2^53 in float64.
    a = (spikes.to(torch.float64) @ w.to(torch.float64).T).to(torch.int64)
    return a << weight_exp if weight_exp > 0 else a >> -weight_exp


def lif_fixed_step(
    a_in: torch.Tensor, state: LoihiLIFState, du: int, dv: int, vth: int, bias: torch.Tensor
) -> tuple[torch.Tensor, LoihiLIFState]:
    """One step of Lava's bit-accurate LIF (module docstring); returns ``(spikes, new_state)``."""
    u = _decay(state.u, DECAY_UNITY - (du + DU_OFFSET))
    u = _wrap32(u + _wrap32(_wrap32(a_in) << ACT_SHIFT))
    u = torch.where(u > UV_MAX, u - 2 * UV_MAX, torch.where(u <= -UV_MAX, u + 2 * UV_MAX, u))
    v = _decay(state.v, DECAY_UNITY - (dv + DV_OFFSET)) + u + bias
    v = v.clamp(-UV_MAX + 1, UV_MAX - 1)
    s = v > (vth << VTH_SHIFT)
    v = torch.where(s, torch.zeros_like(v), v)
    return s, LoihiLIFState(u, v)


def zero_state(batch: int, n: int, device=None) -> LoihiLIFState:
    z = torch.zeros(batch, n, dtype=torch.int64, device=device)
    return LoihiLIFState(z, z.clone())


def reset_offsets(n_layers: int, interval: int) -> list[int]:
    """``reset_offset`` of each ``LIFReset`` layer so that layer ``k`` starts a sample at step ``b T + k + 2``."""
    return [(k + 2) % interval for k in range(n_layers)]


def local_to_pipelined_steps(layer: int, sample: int, interval: int) -> slice:
    """0-based indices, in a pipelined run, of the ``interval`` local steps of ``sample`` at ``layer``."""
    start = sample * interval + layer + 1
    return slice(start, start + interval)


def run_network(
    x: torch.Tensor,
    layers: list[LoihiLayerParams],
    *,
    pipelined: bool = False,
    reset: str = "zero",
    reset_interval: int | None = None,
    record_state: bool = True,
) -> LoihiTrace:
    """Simulate input spikes ``x`` [T, batch, n_in] through ``layers`` (module docstring: timing).

    ``pipelined=True`` reproduces the Lava graph (one-step delay per Dense, the run's steps
    numbered from 1); ``reset="periodic"`` zeroes ``u, v`` of layer ``k`` at the steps with
    ``t % reset_interval == reset_offsets(...)[k]`` (pipelined) or every ``reset_interval``
    steps from step 0 (local time).  Spikes are bool; ``u`` and ``v`` int64.
    """
    if reset not in RESET_MODES:
        raise ValueError(f"reset must be one of {RESET_MODES}, got '{reset}'")
    if reset == "periodic" and not (reset_interval and reset_interval >= 1):
        raise ValueError("reset='periodic' needs reset_interval >= 1")
    T, B = int(x.shape[0]), int(x.shape[1])
    states = [zero_state(B, p.n_out, x.device) for p in layers]
    biases = [p.effective_bias().to(x.device) for p in layers]
    # pipelined: what each Dense holds from the previous step (a_buff), initially 0
    buffers = [torch.zeros(B, p.n_out, dtype=torch.int64, device=x.device) for p in layers]
    offsets = reset_offsets(len(layers), reset_interval) if reset == "periodic" else []
    spikes = [[] for _ in layers]
    cur = [[] for _ in layers]
    vol = [[] for _ in layers]
    for t in range(T):
        below = x[t]
        for k, p in enumerate(layers):
            a_now = dense_fixed(below, p.weights, p.weight_exp)
            if pipelined:
                a_in, buffers[k] = buffers[k], a_now
            else:
                a_in = a_now
            if reset == "periodic":
                due = ((t + 1) % reset_interval == offsets[k]) if pipelined else (t % reset_interval == 0)
                if due:
                    states[k] = zero_state(B, p.n_out, x.device)
            s, states[k] = lif_fixed_step(a_in, states[k], p.du, p.dv, p.vth, biases[k])
            spikes[k].append(s)
            if record_state:
                cur[k].append(states[k].u)
                vol[k].append(states[k].v)
            below = s
    stack = lambda seqs: [torch.stack(q) if q else torch.empty(0) for q in seqs]  # noqa: E731
    return LoihiTrace(stack(spikes), stack(cur), stack(vol))
