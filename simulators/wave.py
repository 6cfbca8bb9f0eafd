"""Wave-physics substrates: fixed nonlinear physical layers used as black boxes.

Three kinds of physical system map an input vector ``x`` (``n_in`` values in the device
range ``[-1, 1]``) concatenated with ``n_control`` *control inputs* ``c`` (hardware
parameters the learner writes with ``set_params({"control": c})``) to ``n_out`` measured
intensities.  Let ``e = [x; c]`` (length ``m = n_in + n_control``) and let the input field be
``E = e`` (``modulation="amplitude"``) or ``E = exp(i*pi*e)`` (``"phase"``):

- ``scattering``: intensity detection of a random complex scattering transform,
  ``y = |A E + b|^2`` with hidden ``A`` (complex ``[n_out, m]``, entries ``CN(0, 1/m)``) and
  hidden background field ``b`` (complex ``[n_out]``, ``CN(0, 0.01)``).
- ``saturable``: a saturable Kerr-like medium between two scatterers,
  ``u = A E``; ``v = u * exp(i*kerr*|u|^2) / sqrt(1 + |u|^2/saturation)``; ``y = |B v|^2``,
  hidden ``A`` (``CN(0, 1/m)``) and ``B`` (complex ``[n_out, n_out]``, ``CN(0, 1/n_out)``).
- ``oscillators``: a chain of ``n_out`` driven Duffing oscillators (unit mass, fixed ends),
  ``q_i'' = -w_i^2 q_i - damping q_i' - duffing q_i^3 + coupling (q_{i-1} - 2 q_i + q_{i+1}) + F_i(t)``,
  integrated from rest with semi-implicit (symplectic) Euler, step ``osc_dt``, for
  ``osc_steps`` steps (dimensionless time).  ``modulation="amplitude"``: ``F_i = (D e)_i cos(t)``;
  ``"frequency"``: ``F_i = drive cos((1 + 0.25 (D e)_i) t)``.  Output: mean of ``q_i^2`` over the
  second half of the steps.  Hidden: ``D`` (``[n_out, m]``, ``N(0, drive^2/m)``) and the natural
  frequencies ``w`` (uniform in [0.8, 1.2]).

Measurement: ``y_meas = y (1 + noise * n1) + noise_floor * n2`` with standard normal ``n1, n2``
from the substrate's own seeded generator.

Drift and perturbations act on the hidden parameters as a function of *device time*,
counted in samples measured (``clock``).  Every ``drift_tick`` samples each hidden tensor
``theta`` takes a random-walk step ``theta += drift * s * n`` (``s`` = RMS of its initial
value; ``n`` standard normal drawn from a generator seeded by ``(seed, tick index)``), so two
substrates with the same seed have the same hidden parameters at the same device time
whatever batch sizes they were measured with.  At each device time in ``perturb_at`` a
sudden jump ``theta += perturb_scale * s * n`` is applied (seeded by ``(seed, index)``).
A batch is measured at the hidden state of its first sample, then the clock advances.

The functional core is pure: :func:`init_hidden`, :func:`transfer`, :func:`advance`,
:func:`measure` over an explicit :class:`WaveState`.  :class:`WaveSubstrate` wraps it in
the :class:`~simulators.substrate.Substrate` protocol and keeps the state explicitly.

Hidden parameters are not exposed by the protocol (``get_params`` returns only the written
controls; ``describe`` gives sizes and settings, no values).  :meth:`WaveSubstrate.exact_forward`
is the documented exception: a differentiable, noise-free evaluation at the current hidden
state, for in-silico backpropagation and exact twins only (rules that use it say so).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from simulators.errors import SettingError, SubstrateFault
from simulators.substrate import SUBSTRATE_FAMILIES, check_batch, check_options, checked_control

KINDS = ("scattering", "saturable", "oscillators")
MODULATIONS = {
    "scattering": ("amplitude", "phase"),
    "saturable": ("amplitude", "phase"),
    "oscillators": ("amplitude", "frequency"),
}
INPUT_RANGE = (-1.0, 1.0)


@dataclass(frozen=True)
class WaveOptions:
    """Settings of one wave substrate (dimensionless physics units; times in samples measured).

    kind: ``scattering`` | ``saturable`` | ``oscillators`` (see module docstring).
    n_control: number of control inputs (hardware parameters written with ``set_params``).
    modulation: how input values set the field (see module docstring).
    noise: relative std of the measurement noise; noise_floor: additive std (output units).
    drift: relative std of one random-walk step of the hidden parameters per ``drift_tick`` samples.
    perturb_at: device times (samples) of sudden perturbations of relative std ``perturb_scale``.
    saturation, kerr: saturable medium (intensity scale, rad per unit intensity).
    osc_steps, osc_dt, coupling, duffing, damping, drive: oscillator chain.
    seed: draws the hidden parameters, the drift, the perturbations and the noise.
    """

    kind: str = "scattering"
    n_in: int = 4
    n_out: int = 16
    n_control: int = 8
    modulation: str = "amplitude"
    noise: float = 0.01
    noise_floor: float = 0.0
    drift: float = 0.0
    drift_tick: int = 256
    perturb_at: tuple[int, ...] = ()
    perturb_scale: float = 0.3
    saturation: float = 1.0
    kerr: float = 1.0
    osc_steps: int = 48
    osc_dt: float = 0.25
    coupling: float = 0.2
    duffing: float = 1.0
    damping: float = 0.2
    drive: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind '{self.kind}' is not one of {', '.join(KINDS)}")
        if self.modulation not in MODULATIONS[self.kind]:
            raise ValueError(
                f"modulation '{self.modulation}' is not valid for {self.kind}; choose "
                f"{' or '.join(MODULATIONS[self.kind])}"
            )
        if self.n_in < 1 or self.n_out < 1 or self.n_control < 0:
            raise ValueError(
                f"need n_in >= 1, n_out >= 1, n_control >= 0 (got {self.n_in}, {self.n_out}, {self.n_control})"
            )
        if self.noise < 0 or self.noise_floor < 0 or self.drift < 0 or self.perturb_scale < 0:
            raise ValueError("noise, noise_floor, drift and perturb_scale must be >= 0")
        if self.drift_tick < 1 or self.osc_steps < 2 or self.osc_dt <= 0:
            raise ValueError("drift_tick >= 1, osc_steps >= 2 and osc_dt > 0 are required")
        object.__setattr__(self, "perturb_at", tuple(sorted(int(t) for t in self.perturb_at)))

    @property
    def width(self) -> int:
        """``m = n_in + n_control``: the length of the physical input vector ``e``."""
        return self.n_in + self.n_control


@dataclass
class WaveState:
    """Explicit state of a wave substrate.

    hidden: current hidden parameters (name -> tensor); clock: device time (samples measured);
    ticks: drift steps applied; perturbations: sudden jumps applied; noise_rng: state of the
    measurement-noise generator.
    """

    hidden: dict[str, torch.Tensor]
    clock: int = 0
    ticks: int = 0
    perturbations: int = 0
    noise_rng: torch.Tensor = field(default_factory=lambda: torch.Generator().manual_seed(0).get_state())


# ------------------------------------------------------------------ functional core
def _generator(*key: int) -> torch.Generator:
    seed = 0
    for k in key:
        seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def _complex_normal(shape, var: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    s = math.sqrt(var / 2)
    return torch.randn(shape, generator=g) * s, torch.randn(shape, generator=g) * s


def init_hidden(opt: WaveOptions) -> dict[str, torch.Tensor]:
    """Draw the hidden parameters of ``opt.kind`` from ``opt.seed`` (float32 tensors; complex as re/im pairs)."""
    g = _generator(opt.seed, 1)
    m, n = opt.width, opt.n_out
    if opt.kind == "scattering":
        a_re, a_im = _complex_normal((n, m), 1.0 / m, g)
        b_re, b_im = _complex_normal((n,), 0.01, g)
        return {"A_re": a_re, "A_im": a_im, "b_re": b_re, "b_im": b_im}
    if opt.kind == "saturable":
        a_re, a_im = _complex_normal((n, m), 1.0 / m, g)
        b_re, b_im = _complex_normal((n, n), 1.0 / n, g)
        return {"A_re": a_re, "A_im": a_im, "B_re": b_re, "B_im": b_im}
    d = torch.randn((n, m), generator=g) * (opt.drive / math.sqrt(m))
    w = 0.8 + 0.4 * torch.rand((n,), generator=g)
    return {"D": d, "w": w}


def _field(e: torch.Tensor, modulation: str) -> tuple[torch.Tensor, torch.Tensor]:
    if modulation == "phase":
        return torch.cos(math.pi * e), torch.sin(math.pi * e)
    return e, torch.zeros_like(e)


def _cmatmul(e_re, e_im, m_re, m_im):
    """``(e_re + i e_im) @ (m_re + i m_im)^T`` for row-vector batches."""
    return e_re @ m_re.T - e_im @ m_im.T, e_re @ m_im.T + e_im @ m_re.T


def oscillator_step(q, p, force, w, opt: WaveOptions):
    """One semi-implicit Euler step of the Duffing chain: returns ``(q, p)`` after ``osc_dt``."""
    left = torch.nn.functional.pad(q[..., :-1], (1, 0))
    right = torch.nn.functional.pad(q[..., 1:], (0, 1))
    acc = -(w * w) * q - opt.damping * p - opt.duffing * q**3 + opt.coupling * (left - 2 * q + right) + force
    p = p + opt.osc_dt * acc
    return q + opt.osc_dt * p, p


def transfer(e: torch.Tensor, hidden: dict[str, torch.Tensor], opt: WaveOptions) -> torch.Tensor:
    """Noise-free physical response ``y [batch, n_out]`` to ``e = [x; c]`` (``[batch, m]``); differentiable."""
    if opt.kind == "scattering":
        f_re, f_im = _field(e, opt.modulation)
        u_re, u_im = _cmatmul(f_re, f_im, hidden["A_re"], hidden["A_im"])
        u_re, u_im = u_re + hidden["b_re"], u_im + hidden["b_im"]
        return u_re**2 + u_im**2
    if opt.kind == "saturable":
        f_re, f_im = _field(e, opt.modulation)
        u_re, u_im = _cmatmul(f_re, f_im, hidden["A_re"], hidden["A_im"])
        intensity = u_re**2 + u_im**2
        amp = torch.rsqrt(1.0 + intensity / opt.saturation)
        phi = opt.kerr * intensity
        cos, sin = torch.cos(phi), torch.sin(phi)
        v_re, v_im = amp * (u_re * cos - u_im * sin), amp * (u_re * sin + u_im * cos)
        y_re, y_im = _cmatmul(v_re, v_im, hidden["B_re"], hidden["B_im"])
        return y_re**2 + y_im**2
    drive = e @ hidden["D"].T
    q = torch.zeros_like(drive)
    p = torch.zeros_like(drive)
    keep = opt.osc_steps // 2
    acc = torch.zeros_like(drive)
    for k in range(opt.osc_steps):
        t = k * opt.osc_dt
        if opt.modulation == "frequency":
            force = opt.drive * torch.cos((1.0 + 0.25 * drive) * t)
        else:
            force = drive * math.cos(t)
        q, p = oscillator_step(q, p, force, hidden["w"], opt)
        if k >= opt.osc_steps - keep:
            acc = acc + q * q
    return acc / keep


def transfer_macs(opt: WaveOptions) -> int:
    """Real multiply-accumulates per sample of :func:`transfer` (what simulating it digitally costs)."""
    m, n = opt.width, opt.n_out
    if opt.kind == "scattering":
        return 4 * n * m + 2 * n
    if opt.kind == "saturable":
        return 4 * n * m + 4 * n * n + 12 * n
    return n * m + opt.osc_steps * 12 * n


def rms_scales(hidden: dict[str, torch.Tensor]) -> dict[str, float]:
    """RMS of each hidden tensor: the unit of drift and perturbation steps."""
    return {k: float(v.pow(2).mean().sqrt()) for k, v in hidden.items()}


def advance(state: WaveState, n_samples: int, scales: dict[str, float], opt: WaveOptions) -> WaveState:
    """Pure: the state after ``n_samples`` more samples of device time (drift steps and jumps applied)."""
    clock = state.clock + int(n_samples)
    hidden = state.hidden
    ticks, jumps = state.ticks, state.perturbations
    target_ticks = clock // opt.drift_tick if opt.drift > 0 else ticks
    if target_ticks > ticks or (jumps < len(opt.perturb_at) and opt.perturb_at[jumps] <= clock):
        hidden = {k: v.clone() for k, v in hidden.items()}
    while ticks < target_ticks:
        g = _generator(opt.seed, 2, ticks)
        for k in sorted(hidden):
            hidden[k] += opt.drift * scales[k] * torch.randn(hidden[k].shape, generator=g)
        ticks += 1
    while jumps < len(opt.perturb_at) and opt.perturb_at[jumps] <= clock:
        g = _generator(opt.seed, 3, jumps)
        for k in sorted(hidden):
            hidden[k] += opt.perturb_scale * scales[k] * torch.randn(hidden[k].shape, generator=g)
        jumps += 1
    return dataclasses.replace(state, hidden=hidden, clock=clock, ticks=ticks, perturbations=jumps)


def measure(y: torch.Tensor, opt: WaveOptions, g: torch.Generator) -> torch.Tensor:
    """Noisy measurement of the noise-free response ``y`` (draws from ``g``)."""
    if opt.noise > 0:
        y = y * (1.0 + opt.noise * torch.randn(y.shape, generator=g))
    if opt.noise_floor > 0:
        y = y + opt.noise_floor * torch.randn(y.shape, generator=g)
    return y


# ------------------------------------------------------------------ the black box
class DriftingState:
    """Device time and checkpointing shared by substrates whose hidden physics drifts with device time
    (:class:`WaveSubstrate`, :class:`simulators.measured.MeasuredSubstrate`).

    The class keeps ``self._state`` (a :class:`WaveState`), ``self._scales``, ``self.options`` (with the drift
    settings), ``self._noise`` (its measurement-noise generator), ``self._control`` and ``self.n_evals``.
    """

    # -- device time
    @property
    def clock(self) -> int:
        """Device time: samples measured (plus any :meth:`advance_time`)."""
        return self._state.clock

    def advance_time(self, n_samples: int) -> None:
        """Let ``n_samples`` of device time pass without measuring (drift keeps going)."""
        self._state = advance(self._state, int(n_samples), self._scales, self.options)

    # -- checkpointing of the explicit state (so a resumed run continues the same noise and drift)
    def state_dict(self) -> dict:
        s = self._state
        return {
            "hidden": {k: v.clone() for k, v in s.hidden.items()},
            "clock": s.clock,
            "ticks": s.ticks,
            "perturbations": s.perturbations,
            "noise_rng": self._noise.get_state(),
            "control": self._control.clone(),
            "n_evals": self.n_evals,
        }

    def load_state_dict(self, state: dict) -> None:
        self._state = WaveState(
            hidden={k: v.clone() for k, v in state["hidden"].items()},
            clock=int(state["clock"]),
            ticks=int(state["ticks"]),
            perturbations=int(state["perturbations"]),
            noise_rng=state["noise_rng"],
        )
        self._noise.set_state(state["noise_rng"])
        self._control = state["control"].clone()
        self.n_evals = int(state.get("n_evals", 0))


class WaveSubstrate(DriftingState):
    """A wave substrate behind the :class:`~simulators.substrate.Substrate` protocol.

    ``forward(x)`` measures (no gradients, noise, drift advancing the clock by the batch size);
    ``set_params({"control": c})`` writes the control inputs (``[n_control]`` in ``[-1, 1]``).
    Counters: ``n_evals`` (samples measured), ``n_calls``, ``grad_touches`` (forward calls made
    with autograd enabled on a tensor that requires grad, which a model-free rule must never
    cause), ``exact_calls`` (uses of :meth:`exact_forward`).
    """

    input_range = INPUT_RANGE

    def __init__(self, options: WaveOptions) -> None:
        self.options = options
        self.n_in, self.n_out = options.n_in, options.n_out
        hidden = init_hidden(options)
        self._scales = rms_scales(hidden)
        self._state = WaveState(hidden=hidden, noise_rng=_generator(options.seed, 4).get_state())
        self._noise = torch.Generator()
        self._noise.set_state(self._state.noise_rng)
        self._control = torch.zeros(options.n_control)
        self.n_evals = self.n_calls = self.grad_touches = self.exact_calls = 0

    # -- protocol
    @property
    def kind(self) -> str:
        return f"wave:{self.options.kind}"

    def _inputs(self, x: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        check_batch(self.kind, x, self.n_in, self.input_range)
        x = x.to(torch.float32)
        return torch.cat([x, control.to(x).expand(x.shape[0], -1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One noisy measurement per sample, ``[batch, n_out]`` float32; advances device time."""
        self.n_calls += 1
        if torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.requires_grad:
            self.grad_touches += 1
        with torch.no_grad():
            e = self._inputs(x.detach(), self._control)
            y = measure(transfer(e, self._state.hidden, self.options), self.options, self._noise)
        self.n_evals += int(x.shape[0])
        self._state = advance(self._state, int(x.shape[0]), self._scales, self.options)
        return y

    def set_params(self, params: dict[str, torch.Tensor]) -> None:
        control = checked_control(self.kind, params, self.options.n_control, self.input_range)
        if control is not None:
            self._control = control

    def get_params(self) -> dict[str, torch.Tensor]:
        return {"control": self._control.clone()}

    def reset(self) -> None:
        """Power-on state of the dynamics: the oscillators start from rest on every sample
        already, so nothing to do; written controls and the (drifted) physics stay."""

    def describe(self) -> dict:
        o = self.options
        return {
            "kind": self.kind,
            "n_in": self.n_in,
            "n_out": self.n_out,
            "input_range": list(self.input_range),
            "params": {"control": [o.n_control]},
            "modulation": o.modulation,
            "noise": o.noise,
            "noise_floor": o.noise_floor,
            "drift": o.drift,
            "drift_tick": o.drift_tick,
            "perturb_at": list(o.perturb_at),
        }

    # -- explicit, documented escape hatch for in-silico training and exact twins
    def exact_forward(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Differentiable, noise-free response at the current hidden state (no clock advance).

        ``params`` may hold a ``control`` tensor (e.g. a torch Parameter) to differentiate
        with respect to; default: the written controls.  Only for in-silico backpropagation
        (rule ``insilico``) and exact twins (``pat`` with ``twin = "exact"``): a real device has
        no such method.
        """
        self.exact_calls += 1
        control = (params or {}).get("control", self._control)
        if x.dim() != 2 or x.shape[1] != self.n_in:
            raise SubstrateFault(f"{self.kind} expects inputs [batch, {self.n_in}], got {tuple(x.shape)}")
        e = torch.cat([x, control.to(x).expand(x.shape[0], -1)], dim=1)
        hidden = {k: v.to(x.dtype) for k, v in self._state.hidden.items()}
        return transfer(e, hidden, self.options)

    def simulation_macs(self, batch: int) -> int:
        """Digital MACs of one :meth:`exact_forward` over ``batch`` samples."""
        return batch * transfer_macs(self.options)



def wave_substrate(kind: str, n_in: int, n_out: int, *, seed: int = 0, **options) -> WaveSubstrate:
    """Convenience constructor: ``WaveSubstrate(WaveOptions(kind, n_in, n_out, seed=seed, **options))``."""
    return WaveSubstrate(WaveOptions(kind=kind, n_in=n_in, n_out=n_out, seed=seed, **options))


@SUBSTRATE_FAMILIES.register("wave", variants=KINDS, emulatable=True)
def open_wave(variant: str, n_in: int, n_out: int, *, seed: int = 0, options: dict) -> WaveSubstrate:
    """``wave:<kind>``: options are fields of :class:`WaveOptions` (``n_control``, ``noise``, ``drift``, ...)."""
    options = dict(options)
    check_options(
        f"wave:{variant}",
        options,
        {f.name for f in dataclasses.fields(WaveOptions)} - {"kind", "n_in", "n_out", "seed"},
    )
    if "perturb_at" in options:
        options["perturb_at"] = tuple(options["perturb_at"])
    try:
        return WaveSubstrate(WaveOptions(kind=variant, n_in=n_in, n_out=n_out, seed=seed, **options))
    except (TypeError, ValueError) as exc:
        raise SettingError(f"substrate wave:{variant}: {exc}") from None
