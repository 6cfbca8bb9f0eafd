"""Superconducting single-flux-quantum (SFQ) neuromorphic networks: an event-driven pulse emulator.

SFQ circuits carry data as quantized voltage pulses (each pulse is one flux quantum
``Phi0 = h / 2e = 2.0678e-15 Wb`` leaving a Josephson-junction loop).  This module emulates
layered rate-coded networks built from SFQ cells in the style of Krylov, Edwards, Friedman and
Friedman ("Deep Neuromorphic Networks with Superconducting Single Flux Quanta", arXiv 2311.10721;
Neuromorph. Comput. Eng. 4, 014005, 2024): stochastic synapses set by bias currents, fluxon-
integrating neurons with bias-set thresholds, mergers, splitters and JTLs.

Units: time in picoseconds (ps), rates in GHz (pulses per ns), currents in microamperes (uA),
energies in joules (J), power in watts (W).  Pulse times live on a grid of ``dt_ps`` (0.1 ps by
default, so the published cell delays are exact multiples); they are held as int64 ticks.

Event-driven representation: a pulse train is an int64 array ``[..., K]`` of sorted tick times,
padded at the end with :data:`NEVER`.  Every cell maps trains to trains; the cost of a cell is
proportional to the number of pulses (``K``), never to the number of grid steps in the window
(the ``bench/sfq.py`` benchmark checks this).  Cells are vectorized over a batch of input
patterns and over all cells of a layer.

Cells (delays from PyLSE, Christensen et al., PLDI 2022, ``pylse/sfq_cells.py`` defaults):

- DC-to-SFQ converter (:func:`dc_to_sfq`): turns an input rate ``r`` (GHz, ``0 <= r <= clock``)
  into a pulse train over a window ``W`` (ns).  ``mode="periodic"``: pulses at ``phi + k/r``
  (random phase ``phi ~ U[0, 1/r)`` per train), plus Gaussian clock jitter of std ``jitter_ps``
  per pulse; ``mode="poisson"``: a Poisson train of rate ``r``.  3 JJs switch per pulse.
- JTL (:func:`delay`): delay ``jtl_ps = 5.7`` ps (PyLSE ``JTL.firing_delay``), 2 JJs per pulse.
- Splitter: delay ``splitter_ps = 4.3`` ps (PyLSE ``S``), 3 JJs per pulse; a fan-out of ``n``
  is a binary tree of ``n - 1`` splitters, ``ceil(log2 n)`` deep.
- Merger (:func:`merge`): delay ``merger_ps = 8.2`` ps (PyLSE ``M``) and a dead time
  ``merger_dead_ps = 8.2`` ps (PyLSE's ``M.transition_time``): a pulse arriving less than the dead
  time after the last *emitted* pulse collides with it and is absorbed (non-paralyzable).  For
  Poisson inputs of total rate ``lam`` the output rate is ``lam / (1 + lam * tau)``.  An n-input
  merger is a tree ``ceil(log2 n)`` deep (delay ``depth * merger_ps``), modelled as one dead time.
- Stochastic synapse (:func:`synapse`): each arriving pulse is transmitted with probability
  ``p(I_b) = Phi((I_b - I_50) / sigma_I)`` (Gaussian switching curve of a JJ biased near its
  critical current: thermal noise decides whether it switches), independently per pulse; it
  routes to the excitatory or inhibitory input of its neuron (``sign = +1 / -1``).  Output delay
  ``synapse_ps`` (one JTL stage, 5.7 ps).  2 JJs switch when it transmits, 1 (the escape
  junction) when it blocks.
- Fluxon-integrating neuron (:func:`neuron`): a bipolar storage loop holding ``k`` fluxons,
  ``n_min <= k <= n_max`` (``n_min = -1``: one antifluxon, so inhibition that arrives just
  before excitation is not lost at an empty loop).  An excitatory fluxon sets
  ``k <- min(k + 1, n_max)`` (beyond capacity the fluxon escapes); then the output junction switches with probability
  ``P(k) = Phi((I_n + k * dI - I_c) / sigma_n)`` (the neuron bias ``I_n`` sets the threshold
  ``theta = (I_c - I_n) / dI`` fluxons; ``sigma_n`` is the thermal width).  When it switches the
  neuron fires (output after ``neuron_ps``, 5.1 ps, PyLSE's ``DRO`` read-out delay) and the loop
  resets to ``k = 0``; the reset takes one clock period ``1000 / clock_GHz`` ps, during which
  arriving fluxons escape.  An inhibitory fluxon sets ``k <- max(k - 1, n_min)``.  The output rate
  therefore never exceeds the clock rate.  JJs per event: 1 per stored or removed fluxon, 3 per
  firing (output junction, reset, output JTL stage).
- Rate readout (:func:`rate_readout`): pulses of each output in ``[D, D + W)`` divided by ``W``
  (GHz), where ``D`` is the nominal path delay of the network.

Process variation (:class:`Variation`, seeded): a global bias-supply error ``g`` and per-cell
errors ``e`` scale every bias current, ``I_eff = I (1 + g)(1 + e)``; per-cell critical-current
errors ``c`` scale ``I_50`` (synapses) and ``I_c`` (neurons), ``I_50,eff = I_50 (1 + c)``.  Each
error is uniform in ``[-s, s]`` for its spread ``s`` (``bias_spread=0.05`` is "+/-5 % per cell").
Thermal switching noise is the randomness of the synapses and neurons (widths ``sigma_I``,
``sigma_n``); clock jitter acts on the input converters.

Accounting (:func:`energy`): every JJ switch dissipates ``I_c * Phi0`` (``jj_ic_uA`` = 100 uA:
2.07e-19 J); RSFQ adds static bias power ``N_JJ * bias_fraction * I_c * V_b`` (resistive bias
network, ``V_b`` = 2.5 mV), ERSFQ has none (its bias is delivered through JJs and inductors).
JJs per cell and per pulse listed above for DC-to-SFQ, synapse and neuron are this module's
assumptions (PyLSE gives JTL 2, splitter 3, merger 7 JJs; of a merger's 7 JJs we count the 3 on
a pulse's path).  Latency: the nominal path delay ``D`` plus the time until the decision is final.

:class:`SFQSubstrate` is a layered SFQ network behind the :class:`~simulators.substrate.Substrate`
contract: inputs are rates (GHz), outputs are measured output rates (GHz), the hardware
parameters are the bias currents (uA) ``bias_syn_<l>`` ``[n_out_l, n_in_l]`` and
``bias_neu_<l>`` ``[n_out_l]``; the routing (signs) is fixed at fabrication.  Registered as the
substrate family ``sfq`` (variants ``rsfq``, ``ersfq``: the bias scheme).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from simulators.errors import SettingError, SubstrateFault

PHI0 = 2.067833848e-15
"""Magnetic flux quantum h / 2e (Wb)."""

NEVER = np.iinfo(np.int64).max
"""Padding of pulse trains: a pulse that never happens."""

PYLSE_DELAYS_PS = {"jtl": 5.7, "merger": 8.2, "splitter": 4.3, "dro": 5.1}
"""Firing delays (ps) of PyLSE's default cells (``pylse/sfq_cells.py``: JTL, M, S, DRO)."""

PYLSE_JJS = {"jtl": 2, "merger": 7, "splitter": 3, "dro": 6}
"""Junction counts of PyLSE's default cells."""

JJ_PER_PULSE = {
    "dc_sfq": 3,
    "splitter": 3,
    "synapse_pass": 2,
    "synapse_block": 1,
    "merger": 3,
    "neuron_fluxon": 1,
    "neuron_fire": 3,
    "jtl": 2,
}
"""JJ switches per pulse through each cell (see the module docstring for which are assumptions)."""

VARIANTS = ("rsfq", "ersfq")
INPUT_MODES = ("periodic", "poisson")


@dataclass(frozen=True)
class CellParams:
    """Parameters of the SFQ cells of a network (units in the names; see the module docstring).

    dt_ps: grid of pulse times.  jtl_ps, splitter_ps, merger_ps, merger_dead_ps, synapse_ps,
    neuron_ps: delays (ps).  stagger_jtls: JTL stages per input index on each layer's input lines
    (input ``j`` is delayed by ``j * stagger_jtls * jtl_ps``), so that copies of one pulse that
    reach a merger through different neurons do not arrive together and collide.
    clock_GHz: clock rate; the neuron reset takes ``1000 / clock_GHz`` ps and the input
    converters accept rates up to it.
    i50_uA, sigma_syn_uA: synapse switching curve (50 % point, width).
    neuron_ic_uA, neuron_step_uA, sigma_neu_uA, n_max, n_min: neuron output junction critical current,
    current added per stored fluxon (``Phi0 / L_loop``), thermal width, loop capacity: the count
    ranges over ``n_min <= k <= n_max`` (``n_min < 0``: the loop also stores antifluxons).
    syn_range_uA, neu_range_uA: allowed bias currents.
    jitter_ps: std of the input converters' clock jitter.
    jj_ic_uA: critical current used for switching energy and static power; v_bias_mV,
    bias_fraction: RSFQ bias voltage and bias current per JJ as a fraction of ``jj_ic_uA``.
    """

    dt_ps: float = 0.1
    jtl_ps: float = PYLSE_DELAYS_PS["jtl"]
    splitter_ps: float = PYLSE_DELAYS_PS["splitter"]
    merger_ps: float = PYLSE_DELAYS_PS["merger"]
    merger_dead_ps: float = PYLSE_DELAYS_PS["merger"]
    synapse_ps: float = PYLSE_DELAYS_PS["jtl"]
    neuron_ps: float = PYLSE_DELAYS_PS["dro"]
    stagger_jtls: int = 2
    clock_GHz: float = 100.0
    i50_uA: float = 100.0
    sigma_syn_uA: float = 5.0
    neuron_ic_uA: float = 100.0
    neuron_step_uA: float = 20.0
    sigma_neu_uA: float = 2.0
    n_max: int = 7
    n_min: int = -1
    syn_range_uA: tuple[float, float] = (75.0, 125.0)
    neu_range_uA: tuple[float, float] = (0.0, 100.0)
    jitter_ps: float = 0.5
    jj_ic_uA: float = 100.0
    v_bias_mV: float = 2.5
    bias_fraction: float = 0.7

    def __post_init__(self) -> None:
        positive = ("dt_ps", "clock_GHz", "sigma_syn_uA", "neuron_step_uA", "sigma_neu_uA", "jj_ic_uA", "v_bias_mV")
        for name in positive:
            if not float(getattr(self, name)) > 0:
                raise SettingError(f"sfq cell parameter {name} must be > 0, got {getattr(self, name)}")
        for name in ("jtl_ps", "splitter_ps", "merger_ps", "merger_dead_ps", "synapse_ps", "neuron_ps", "jitter_ps"):
            if not float(getattr(self, name)) >= 0:
                raise SettingError(f"sfq cell parameter {name} must be >= 0 ps, got {getattr(self, name)}")
        if int(self.stagger_jtls) < 0:
            raise SettingError(f"sfq stagger_jtls must be >= 0 JTL stages, got {self.stagger_jtls}")
        if int(self.n_max) < 1:
            raise SettingError(f"sfq neuron capacity n_max must be >= 1 fluxon, got {self.n_max}")
        if int(self.n_min) > 0:
            raise SettingError(f"sfq neuron n_min (antifluxon capacity, as a count) must be <= 0, got {self.n_min}")
        for name in ("syn_range_uA", "neu_range_uA"):
            lo, hi = getattr(self, name)
            if not hi > lo:
                raise SettingError(f"sfq {name} must be (low, high) with high > low, got {getattr(self, name)}")

    def ticks(self, ps: float) -> int:
        """A duration in ps as grid ticks (rounded to the nearest tick)."""
        return int(round(float(ps) / self.dt_ps))

    @property
    def reset_ps(self) -> float:
        """Neuron reset time: one clock period (ps)."""
        return 1000.0 / self.clock_GHz

    @property
    def switch_energy_J(self) -> float:
        """Energy of one JJ switch, ``I_c * Phi0`` (J)."""
        return self.jj_ic_uA * 1e-6 * PHI0


def switch_probability(current_uA, center_uA, sigma_uA):
    """Gaussian switching curve ``Phi((I - I_center) / sigma)`` (numpy or float inputs)."""
    z = (np.asarray(current_uA, dtype=np.float64) - center_uA) / sigma_uA
    return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x) if np.ndim(x) else np.float64(math.erf(float(x)))


# ------------------------------------------------------------------------------------- pulse trains
def compact(t: np.ndarray) -> np.ndarray:
    """Sort each train and drop trailing columns that hold no pulse in any train (keeps >= 1 column)."""
    t = np.sort(t, axis=-1)
    if t.shape[-1] == 0:
        return np.full(t.shape[:-1] + (1,), NEVER, dtype=np.int64)
    valid = (t != NEVER).reshape(-1, t.shape[-1])
    width = int(valid.sum(axis=1).max()) if valid.size else 0
    return t[..., : max(width, 1)]


def count(t: np.ndarray) -> np.ndarray:
    """Pulses per train."""
    return (t != NEVER).sum(axis=-1)


def delay(t: np.ndarray, ticks: int) -> np.ndarray:
    """Shift every pulse by ``ticks`` (a JTL, splitter or any fixed delay); padding stays padding."""
    return np.where(t == NEVER, NEVER, t + int(ticks))


def dc_to_sfq(
    rates_GHz: np.ndarray, window_ns: float, cells: CellParams, rng: np.random.Generator, mode: str = "periodic"
) -> np.ndarray:
    """Input converters: rates ``[..., n]`` (GHz) to pulse trains ``[..., n, K]`` in ``[0, W)``.

    periodic: ``t_k = phi + k / r`` with ``phi ~ U[0, 1/r)`` per train, plus clock jitter
    ``N(0, jitter_ps^2)`` per pulse (jittered pulses keep their order and stay in the window);
    poisson: exponential gaps of mean ``1 / r``.  ``r = 0`` gives no pulses.
    """
    r = np.asarray(rates_GHz, dtype=np.float64)
    if mode not in INPUT_MODES:
        raise SettingError(f"input mode '{mode}' is not one of {', '.join(INPUT_MODES)}")
    if r.size and (not np.isfinite(r).all() or r.min() < 0 or r.max() > cells.clock_GHz * (1 + 1e-9)):
        raise SubstrateFault(
            f"input rates must lie in [0, {cells.clock_GHz:g}] GHz (the clock rate), "
            f"got [{np.nanmin(r):.4g}, {np.nanmax(r):.4g}]"
        )
    w_ps = float(window_ns) * 1000.0
    rmax = float(r.max()) if r.size else 0.0
    if mode == "periodic":
        k_max = int(math.ceil(rmax * window_ns)) + 1
        period = np.where(r > 0, 1000.0 / np.maximum(r, 1e-9), 2.0 * w_ps)[..., None]  # r = 0: beyond the window
        phase = rng.random(r.shape)[..., None] * period
        t = phase + np.arange(k_max) * period
        if cells.jitter_ps > 0:
            t = t + rng.normal(0.0, cells.jitter_ps, t.shape)
            t = np.maximum.accumulate(np.clip(t, 0.0, None), axis=-1)  # jitter never reorders pulses
    else:
        mean = rmax * window_ns
        k_max = int(math.ceil(mean + 6 * math.sqrt(mean) + 10))
        scale = np.where(r > 0, 1000.0 / np.maximum(r, 1e-9), 2.0 * w_ps)[..., None]
        t = np.cumsum(rng.exponential(1.0, r.shape + (k_max,)) * scale, axis=-1)
        if k_max and np.any((r > 0) & (t[..., -1] < w_ps)):  # 6 sigma above the mean: practically never
            raise SubstrateFault("a poisson input train ran out of pre-drawn pulses; shorten window_ns")
    t = np.where(r[..., None] > 0, t, np.inf)
    ticks = np.where(t < w_ps, np.rint(np.minimum(t, w_ps) / cells.dt_ps), -1).astype(np.int64)
    return compact(np.where(ticks >= 0, ticks, NEVER))


def merge(t: np.ndarray, dead_ticks: int) -> np.ndarray:
    """Merge the trains along axis -2 into one train per cell, with a non-paralyzable dead time.

    ``t [..., n_inputs, K]`` -> ``[..., K']``.  A pulse closer than ``dead_ticks`` after the last
    emitted pulse collides with it (absorbed).  Sequential over the merged pulses (the dead time
    depends on what was emitted), vectorized over all other axes.  No delay is added here.
    """
    flat = compact(t.reshape(t.shape[:-2] + (-1,)))
    if dead_ticks <= 0:
        return flat
    out = flat.copy()
    last = np.full(flat.shape[:-1], np.iinfo(np.int64).min // 2, dtype=np.int64)
    for k in range(flat.shape[-1]):
        col = flat[..., k]
        ok = (col != NEVER) & (col - last >= dead_ticks)
        last = np.where(ok, col, last)
        out[..., k] = np.where(ok, col, NEVER)
    return compact(out)


def neuron(
    exc: np.ndarray,
    inh: np.ndarray,
    bias_uA: np.ndarray,
    ic_uA: np.ndarray,
    cells: CellParams,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict]:
    """Fluxon-integrating neurons: excitatory and inhibitory trains ``[..., K]`` -> firing times ``[..., K']``.

    ``bias_uA`` and ``ic_uA`` broadcast against the leading axes (per neuron).  Firing times are
    the arrival times of the fluxons that made the neuron fire (no output delay added here).
    Returns the trains and counters ``{"fluxons": stored or removed, "fires": ...}``.
    """
    times = np.concatenate([exc, inh], axis=-1)
    sign = np.concatenate([np.ones(exc.shape, np.int8), -np.ones(inh.shape, np.int8)], axis=-1)
    order = np.argsort(times, axis=-1, kind="stable")
    times = np.take_along_axis(times, order, -1)
    sign = np.take_along_axis(sign, order, -1)
    lead = times.shape[:-1]
    k = np.zeros(lead, dtype=np.int64)
    free_at = np.full(lead, np.iinfo(np.int64).min // 2, dtype=np.int64)
    reset = cells.ticks(cells.reset_ps)
    n_max, n_min = int(cells.n_max), int(cells.n_min)
    # P(k) for k = n_min..n_max per neuron (index k - n_min): Phi((I_n + k dI - I_c) / sigma_n)
    ks = np.arange(n_min, n_max + 1)
    z = (
        np.asarray(bias_uA, np.float64)[..., None]
        + ks * cells.neuron_step_uA
        - np.asarray(ic_uA, np.float64)[..., None]
    )
    p_fire = np.broadcast_to(switch_probability(z, 0.0, cells.sigma_neu_uA), lead + (n_max - n_min + 1,))
    out = np.full(times.shape, NEVER, dtype=np.int64)
    fluxons = np.zeros(lead, dtype=np.int64)
    for j in range(times.shape[-1]):
        t = times[..., j]
        live = (t != NEVER) & (t >= free_at)
        if not live.any():
            if (t == NEVER).all():
                break
            continue
        is_exc = live & (sign[..., j] > 0)
        is_inh = live & (sign[..., j] < 0)
        changed = (is_exc & (k < n_max)) | (is_inh & (k > n_min))
        fluxons += changed
        k = np.where(is_exc, np.minimum(k + 1, n_max), k)
        k = np.where(is_inh, np.maximum(k - 1, n_min), k)
        pk = np.take_along_axis(p_fire, (k - n_min)[..., None], -1)[..., 0]
        fire = is_exc & (rng.random(lead) < pk)
        out[..., j] = np.where(fire, t, NEVER)
        k = np.where(fire, 0, k)
        free_at = np.where(fire, t + reset, free_at)
    out = compact(out)
    return out, {"fluxons": fluxons, "fires": count(out)}


def synapse(
    t_in: np.ndarray, p: np.ndarray, signs: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Stochastic synapses of one layer: inputs ``[B, J, K]`` -> (excitatory, inhibitory) ``[B, I, J, K]``.

    Synapse ``(i, j)`` passes each pulse of input ``j`` with probability ``p[i, j]`` (independent
    per pulse) and routes it by ``signs[i, j]`` (+1 excitatory, -1 inhibitory, 0 not connected).
    No delay added here.  Counters: pulses arriving, passing.
    """
    b, j, kk = t_in.shape
    i = p.shape[0]
    arriving = (t_in != NEVER)[:, None, :, :] & (signs != 0)[None, :, :, None]
    passed = arriving & (rng.random((b, i, j, kk)) < p[None, :, :, None])
    t = np.broadcast_to(t_in[:, None, :, :], (b, i, j, kk))
    exc = np.where(passed & (signs > 0)[None, :, :, None], t, NEVER)
    inh = np.where(passed & (signs < 0)[None, :, :, None], t, NEVER)
    return exc, inh, {"arriving": int(arriving.sum()), "passed": int(passed.sum())}


def rate_readout(t: np.ndarray, start_ticks: int, window_ns: float, cells: CellParams) -> np.ndarray:
    """Pulses in ``[start, start + W)`` per train divided by ``W`` (GHz)."""
    end = start_ticks + cells.ticks(window_ns * 1000.0)
    inside = (t != NEVER) & (t >= start_ticks) & (t < end)
    return inside.sum(axis=-1) / float(window_ns)


# --------------------------------------------------------------------------------------- networks
@dataclass
class Layer:
    """One layer of an SFQ network: ``n_out`` neurons fed by ``n_in`` trains through synapses.

    signs: int8 ``[n_out, n_in]`` routing (+1 excitatory, -1 inhibitory, 0 absent).
    bias_syn: synapse bias currents ``[n_out, n_in]`` (uA).  bias_neu: neuron biases ``[n_out]`` (uA).
    """

    signs: np.ndarray
    bias_syn: np.ndarray
    bias_neu: np.ndarray

    def __post_init__(self) -> None:
        self.signs = np.asarray(self.signs, dtype=np.int8)
        self.bias_syn = np.asarray(self.bias_syn, dtype=np.float64)
        self.bias_neu = np.asarray(self.bias_neu, dtype=np.float64)
        if (
            self.signs.ndim != 2
            or self.bias_syn.shape != self.signs.shape
            or self.bias_neu.shape != self.signs.shape[:1]
        ):
            raise SettingError(
                f"sfq layer shapes disagree: signs {self.signs.shape}, bias_syn {self.bias_syn.shape}, "
                f"bias_neu {self.bias_neu.shape}; need [n_out, n_in], [n_out, n_in], [n_out]"
            )
        if not np.isin(self.signs, (-1, 0, 1)).all():
            raise SettingError("sfq synapse signs must be -1 (inhibitory), 0 (absent) or +1 (excitatory)")

    @property
    def n_in(self) -> int:
        return int(self.signs.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.signs.shape[0])


@dataclass
class Variation:
    """Seeded process variation of one chip (relative errors; see the module docstring).

    Draw with :meth:`draw`; ``syn_bias``/``syn_ic`` are ``[n_out, n_in]`` per layer, ``neu_bias``/
    ``neu_ic`` ``[n_out]`` per layer, ``global_bias`` one number.
    """

    global_bias: float = 0.0
    syn_bias: list = field(default_factory=list)
    neu_bias: list = field(default_factory=list)
    syn_ic: list = field(default_factory=list)
    neu_ic: list = field(default_factory=list)

    @classmethod
    def draw(
        cls,
        shapes: list[tuple[int, int]],
        *,
        bias_spread: float = 0.0,
        global_spread: float = 0.0,
        ic_spread: float = 0.0,
        seed: int = 0,
    ) -> Variation:
        """Uniform errors in ``[-s, s]`` for each spread ``s`` (fractions, e.g. 0.05), from ``seed``."""
        for name, s in (("bias_spread", bias_spread), ("global_spread", global_spread), ("ic_spread", ic_spread)):
            if not 0 <= s < 1:
                raise SettingError(f"sfq {name} must be a fraction in [0, 1), got {s}")
        g = np.random.default_rng([int(seed), 0x5F0])
        v = cls(global_bias=float(g.uniform(-global_spread, global_spread)) if global_spread else 0.0)
        for n_out, n_in in shapes:
            v.syn_bias.append(
                g.uniform(-bias_spread, bias_spread, (n_out, n_in)) if bias_spread else np.zeros((n_out, n_in))
            )
            v.neu_bias.append(g.uniform(-bias_spread, bias_spread, n_out) if bias_spread else np.zeros(n_out))
            v.syn_ic.append(g.uniform(-ic_spread, ic_spread, (n_out, n_in)) if ic_spread else np.zeros((n_out, n_in)))
            v.neu_ic.append(g.uniform(-ic_spread, ic_spread, n_out) if ic_spread else np.zeros(n_out))
        return v

    def apply(
        self, layers: list[Layer], cells: CellParams
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Effective ``(bias_syn, i50, bias_neu, ic)`` per layer as the chip sees them."""
        out = []
        for li, layer in enumerate(layers):
            if li < len(self.syn_bias):
                sb, nb, sc, nc = self.syn_bias[li], self.neu_bias[li], self.syn_ic[li], self.neu_ic[li]
            else:
                sb, nb, sc, nc = 0.0, 0.0, 0.0, 0.0
            gb = 1.0 + self.global_bias
            out.append((
                layer.bias_syn * gb * (1 + sb),
                cells.i50_uA * (1 + sc) * np.ones(layer.signs.shape),
                layer.bias_neu * gb * (1 + nb),
                cells.neuron_ic_uA * (1 + nc) * np.ones(layer.n_out),
            ))
        return out


def _depth(n: int) -> int:
    return int(math.ceil(math.log2(n))) if n > 1 else 0


def path_delay_ps(layers: list[Layer], cells: CellParams) -> float:
    """Input-to-output delay (ps) of the slowest path: per layer, input stagger, fan-out splitter tree,
    synapse, merger tree, neuron."""
    d = 0.0
    for layer in layers:
        fan_in = max(int((layer.signs != 0).sum(axis=1).max()), 1)
        d += (layer.n_in - 1) * cells.stagger_jtls * cells.jtl_ps
        d += (
            _depth(layer.n_out) * cells.splitter_ps
            + cells.synapse_ps
            + _depth(fan_in) * cells.merger_ps
            + cells.neuron_ps
        )
    return d


def count_jjs(layers: list[Layer], cells: CellParams) -> int:
    """Junctions of the network (for RSFQ static power): converters, stagger JTLs, splitters, synapses,
    mergers, neurons."""
    n = JJ_PER_PULSE["dc_sfq"] * layers[0].n_in
    for layer in layers:
        n += layer.n_in * (layer.n_in - 1) // 2 * int(cells.stagger_jtls) * PYLSE_JJS["jtl"]
        n += layer.n_in * max(layer.n_out - 1, 0) * PYLSE_JJS["splitter"]
        n += int((layer.signs != 0).sum()) * JJ_PER_PULSE["synapse_pass"]
        for row in layer.signs:
            for s in (1, -1):
                n += max(int((row == s).sum()) - 1, 0) * PYLSE_JJS["merger"]
        n += layer.n_out * (2 + JJ_PER_PULSE["neuron_fire"])
    return n


@dataclass
class EmulationResult:
    """What one emulation measured.

    rates: ``[B, n_out]`` output rates (GHz) over the readout window.
    out_times: ``[B, n_out, K]`` output pulse ticks (``NEVER`` padded); ``hidden_rates``: per hidden layer.
    pulses: pulses through each kind of cell (summed over the batch); switches: JJ switches.
    delay_ps: nominal path delay ``D``; window_ns: readout window ``W``.
    """

    rates: np.ndarray
    out_times: np.ndarray
    hidden_rates: list
    pulses: dict
    switches: int
    delay_ps: float
    window_ns: float
    batch: int


def emulate(
    rates_GHz,
    layers: list[Layer],
    cells: CellParams,
    *,
    window_ns: float = 10.0,
    seed: int = 0,
    variation: Variation | None = None,
    input_mode: str = "periodic",
    chunk: int = 64,
) -> EmulationResult:
    """Run a batch of input rate patterns ``[B, n_in]`` (GHz) through a layered SFQ network.

    Inputs are converted for ``window_ns`` plus the path delay (so the readout window ``[D, D + W)``
    sees steady input); ``seed`` draws all thermal noise, phases and jitter of this run.  The batch
    is processed in chunks of ``chunk`` patterns (memory grows with chunk x synapses x pulses).
    """
    x = np.asarray(rates_GHz, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != layers[0].n_in:
        raise SubstrateFault(f"sfq network expects input rates [batch, {layers[0].n_in}], got {list(x.shape)}")
    for a, b in zip(layers, layers[1:]):
        if b.n_in != a.n_out:
            raise SettingError(
                f"sfq layers do not chain: a layer with {a.n_out} outputs feeds one with {b.n_in} inputs"
            )
    if not window_ns > 0:
        raise SettingError(f"sfq readout window must be > 0 ns, got {window_ns}")
    rng = np.random.default_rng(seed)
    effective = (variation or Variation()).apply(layers, cells)
    d_ps = path_delay_ps(layers, cells)
    start = cells.ticks(d_ps)
    run_ns = window_ns + d_ps / 1000.0
    pulses = {
        k: 0
        for k in (
            "dc_sfq",
            "jtl",
            "splitter",
            "synapse_in",
            "synapse_pass",
            "merger_in",
            "merger_out",
            "neuron_fluxon",
            "neuron_fire",
        )
    }
    rates, outs, hidden = [], [], [[] for _ in layers[:-1]]
    for lo in range(0, x.shape[0], max(int(chunk), 1)):
        t = dc_to_sfq(x[lo : lo + chunk], run_ns, cells, rng, input_mode)
        pulses["dc_sfq"] += int(count(t).sum())
        for li, (layer, (b_syn, i50, b_neu, ic)) in enumerate(zip(layers, effective)):
            n_sent = count(t)
            pulses["splitter"] += int(n_sent.sum()) * max(layer.n_out - 1, 0)
            stages = np.arange(layer.n_in) * int(cells.stagger_jtls)
            pulses["jtl"] += int((n_sent * stages[None, :]).sum())
            t = np.where(t == NEVER, NEVER, t + cells.ticks(cells.jtl_ps) * stages[None, :, None])
            t = delay(t, cells.ticks(_depth(layer.n_out) * cells.splitter_ps + cells.synapse_ps))
            p = switch_probability(b_syn, i50, cells.sigma_syn_uA)
            exc, inh, c = synapse(t, p, layer.signs, rng)
            pulses["synapse_in"] += c["arriving"]
            pulses["synapse_pass"] += c["passed"]
            fan_in = max(int((layer.signs != 0).sum(axis=1).max()), 1)
            dead = cells.ticks(cells.merger_dead_ps)
            merged = []
            for train, s in ((exc, 1), (inh, -1)):
                n_in_merger = (layer.signs == s).sum(axis=1)  # a single input needs no merger
                raw = compact(train.reshape(train.shape[:2] + (-1,)))
                m = _select((n_in_merger > 1)[None, :, None], merge(train, dead), raw)
                pulses["merger_in"] += int(count(raw)[:, n_in_merger > 1].sum())
                pulses["merger_out"] += int(count(m)[:, n_in_merger > 1].sum())
                merged.append(delay(m, cells.ticks(_depth(fan_in) * cells.merger_ps)))
            fired, nc = neuron(merged[0], merged[1], b_neu[None, :], ic[None, :], cells, rng)
            pulses["neuron_fluxon"] += int(nc["fluxons"].sum())
            pulses["neuron_fire"] += int(nc["fires"].sum())
            t = delay(fired, cells.ticks(cells.neuron_ps))
            if li < len(layers) - 1:
                hidden[li].append(rate_readout(t, start, window_ns, cells))
        rates.append(rate_readout(t, start, window_ns, cells))
        outs.append(t)
    width = max(o.shape[-1] for o in outs)
    out_times = np.concatenate([
        np.pad(o, ((0, 0), (0, 0), (0, width - o.shape[-1])), constant_values=NEVER) for o in outs
    ])
    switches = (
        JJ_PER_PULSE["dc_sfq"] * pulses["dc_sfq"]
        + JJ_PER_PULSE["splitter"] * pulses["splitter"]
        + JJ_PER_PULSE["jtl"] * pulses["jtl"]
        + JJ_PER_PULSE["synapse_pass"] * pulses["synapse_pass"]
        + JJ_PER_PULSE["synapse_block"] * (pulses["synapse_in"] - pulses["synapse_pass"])
        + JJ_PER_PULSE["merger"] * pulses["merger_out"]
        + JJ_PER_PULSE["neuron_fluxon"] * pulses["neuron_fluxon"]
        + JJ_PER_PULSE["neuron_fire"] * pulses["neuron_fire"]
    )
    return EmulationResult(
        np.concatenate(rates),
        out_times,
        [np.concatenate(h) for h in hidden],
        pulses,
        int(switches),
        d_ps,
        float(window_ns),
        int(x.shape[0]),
    )


def _pad_to(z: np.ndarray, width: int) -> np.ndarray:
    return np.pad(z, [(0, 0)] * (z.ndim - 1) + [(0, width - z.shape[-1])], constant_values=NEVER)


def _select(cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per train, ``a`` where ``cond`` else ``b`` (trains padded to a common width)."""
    w = max(a.shape[-1], b.shape[-1])
    return compact(np.where(cond, _pad_to(a, w), _pad_to(b, w)))


def energy(result: EmulationResult, layers: list[Layer], cells: CellParams, variant: str = "rsfq") -> dict:
    """Energy per inference (J) and power: dynamic ``switches * I_c * Phi0``; RSFQ static
    ``N_JJ * bias_fraction * I_c * V_b`` over the inference time ``D + W`` (ERSFQ: 0)."""
    if variant not in VARIANTS:
        raise SettingError(f"sfq bias scheme '{variant}' is not one of {', '.join(VARIANTS)}")
    dyn = result.switches * cells.switch_energy_J / max(result.batch, 1)
    n_jj = count_jjs(layers, cells)
    p_static = n_jj * cells.bias_fraction * cells.jj_ic_uA * 1e-6 * cells.v_bias_mV * 1e-3 if variant == "rsfq" else 0.0
    t_inf = result.delay_ps * 1e-12 + result.window_ns * 1e-9
    return {
        "dynamic_J": dyn,
        "static_W": p_static,
        "static_J": p_static * t_inf,
        "total_J": dyn + p_static * t_inf,
        "n_jj": n_jj,
        "switches_per_inference": result.switches / max(result.batch, 1),
        "inference_ps": t_inf * 1e12,
    }


def decision_latency_ps(out_times: np.ndarray, start_ticks: int, cells: CellParams) -> np.ndarray:
    """Per sample: time (ps, from the input start) after which the argmax of the outputs' running
    pulse counts stays at its final value (ties count as undecided); ``nan`` when no output fired.

    ``out_times [B, n_out, K]``.  For one output the decision is its first pulse.
    """
    b, n_out, k = out_times.shape
    t = np.where(out_times >= start_ticks, out_times, NEVER)
    flat_t = t.reshape(b, -1)
    who = np.broadcast_to(np.arange(n_out)[:, None], (n_out, k)).reshape(-1)
    order = np.argsort(flat_t, axis=1, kind="stable")
    ts = np.take_along_axis(flat_t, order, 1)
    ids = who[order]
    valid = ts != NEVER
    onehot = (ids[..., None] == np.arange(n_out)) & valid[..., None]
    counts = np.cumsum(onehot, axis=1)  # [B, E, n_out]
    top = counts.max(axis=2, keepdims=True)
    leader = np.where((counts == top).sum(axis=2) == 1, counts.argmax(axis=2), -1)
    final = leader[:, -1] if leader.shape[1] else np.full(b, -1)
    out = np.full(b, np.nan)
    for i in range(b):
        if final[i] < 0 or not valid[i].any():
            continue
        wrong = np.nonzero((leader[i] != final[i]) & valid[i])[0]
        j = wrong[-1] + 1 if wrong.size else 0
        out[i] = ts[i, j] * cells.dt_ps
    return out
