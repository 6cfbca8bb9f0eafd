"""The SFQ network as a black-box substrate (family ``sfq``, variants ``rsfq`` and ``ersfq``).

:class:`SFQSubstrate` fabricates a layered rate-coded SFQ network (:mod:`simulators.sfq`: cells,
process variation, the event-driven pulse emulator) and serves it through the
:class:`~simulators.substrate.Substrate` contract: inputs are rates (GHz), hardware parameters
are the bias currents (uA), outputs are measured rates (GHz).  :meth:`SFQSubstrate.rate_forward`
is the differentiable twin from :mod:`simulators.sfq_rate`.  It lives in its own module so that
the emulator and the rate model do not import each other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from simulators.errors import SettingError, SubstrateFault
from simulators.sfq import (
    INPUT_MODES,
    VARIANTS,
    CellParams,
    Layer,
    Variation,
    decision_latency_ps,
    emulate,
    energy,
)
from simulators.sfq_rate import RateLayer, network_rate, transmission
from simulators.substrate import SUBSTRATE_FAMILIES, check_options


@dataclass(frozen=True)
class SFQOptions:
    """Settings of an :class:`SFQSubstrate` (units in the names).

    hidden: widths of the hidden layers.  window_ns: readout window per measurement.
    input_mode: ``periodic`` | ``poisson`` input converters.  routing: how signs are fixed at
    fabrication: ``alternate`` (synapse ``(i, j)`` excitatory when ``i + j`` is even) or
    ``random`` (seeded).  bias_spread, global_spread, ic_spread: process variation (fractions).
    cells: overrides of :class:`CellParams` fields.  seed: draws the chip (variation, routing)
    and the noise of the measurements.
    """

    variant: str = "rsfq"
    n_in: int = 2
    n_out: int = 1
    hidden: tuple[int, ...] = (4,)
    window_ns: float = 10.0
    input_mode: str = "periodic"
    routing: str = "alternate"
    bias_spread: float = 0.0
    global_spread: float = 0.0
    ic_spread: float = 0.0
    cells: dict = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise SettingError(f"sfq variant '{self.variant}' is not one of {', '.join(VARIANTS)}")
        if self.input_mode not in INPUT_MODES:
            raise SettingError(f"sfq input_mode '{self.input_mode}' is not one of {', '.join(INPUT_MODES)}")
        if self.routing not in ("alternate", "random"):
            raise SettingError(f"sfq routing '{self.routing}' is not one of alternate, random")
        if min((self.n_in, self.n_out) + tuple(self.hidden)) < 1:
            raise SettingError(
                f"sfq layer widths must be >= 1, got n_in={self.n_in}, hidden={list(self.hidden)}, n_out={self.n_out}"
            )
        valid = {f.name for f in dataclasses.fields(CellParams)}
        for key in self.cells:
            if key not in valid:
                raise SettingError(f"unknown sfq cell parameter '{key}'; valid: {', '.join(sorted(valid))}")


class SFQSubstrate:
    """A layered SFQ network as a black-box substrate (see the module docstring).

    forward(x [B, n_in] GHz) -> measured output rates [B, n_out] (GHz, float32); each call draws
    fresh thermal noise, phases and jitter from the substrate's own seeded stream.  The process
    variation and the routing are hidden (fixed at construction from the seed).  Counters:
    ``n_evals`` (patterns measured); ``last`` holds the accounting of the latest measurement
    (pulses per cell, energy per inference, latency).
    """

    def __init__(self, options: SFQOptions) -> None:
        self.options = options
        self.cells = CellParams(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in options.cells.items()})
        widths = (options.n_in,) + tuple(options.hidden) + (options.n_out,)
        g = np.random.default_rng([options.seed, 0x516])
        self.layers = []
        for a, b in zip(widths, widths[1:]):
            if options.routing == "alternate":
                signs = np.where((np.arange(b)[:, None] + np.arange(a)[None, :]) % 2 == 0, 1, -1)
            else:
                signs = g.choice([-1, 1], size=(b, a))
            mid_syn = sum(self.cells.syn_range_uA) / 2
            mid_neu = sum(self.cells.neu_range_uA) / 2
            self.layers.append(Layer(signs, np.full((b, a), mid_syn), np.full(b, mid_neu)))
        self.variation = Variation.draw(
            [(l.n_out, l.n_in) for l in self.layers],
            bias_spread=options.bias_spread,
            global_spread=options.global_spread,
            ic_spread=options.ic_spread,
            seed=options.seed,
        )
        self.n_in, self.n_out = options.n_in, options.n_out
        self.input_range = (0.0, float(self.cells.clock_GHz))
        self._noise_seed = np.random.SeedSequence([options.seed, 0xA11CE])
        self._calls = 0
        self.n_evals = 0
        self.last: dict = {}

    # -- protocol
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.dim() != 2 or x.shape[1] != self.n_in:
            raise SubstrateFault(f"sfq substrate expects input rates [batch, {self.n_in}], got {list(x.shape)}")
        seed = int(np.random.default_rng(self._noise_seed.spawn(1)[0]).integers(2**62))
        res = emulate(
            x.detach().double().cpu().numpy(),
            self.layers,
            self.cells,
            window_ns=self.options.window_ns,
            seed=seed,
            variation=self.variation,
            input_mode=self.options.input_mode,
        )
        self._calls += 1
        self.n_evals += int(x.shape[0])
        lat = decision_latency_ps(res.out_times, self.cells.ticks(res.delay_ps), self.cells)
        self.last = {
            "pulses": dict(res.pulses),
            "energy": energy(res, self.layers, self.cells, self.options.variant),
            "decision_ps": float(np.nanmean(lat)) if np.isfinite(lat).any() else float("nan"),
            "delay_ps": res.delay_ps,
        }
        return torch.from_numpy(res.rates.astype(np.float32))

    def rate_forward(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Differentiable *model* of the expected output rates (:mod:`simulators.sfq_rate`) at the nominal
        cell parameters: it does not know the chip's process variation, and it assumes Poisson pulse
        statistics, so it is a twin, not the measurement.  ``params`` may hold bias tensors to
        differentiate with respect to (default: the written currents)."""
        params = params or {}
        layers = []
        for i, layer in enumerate(self.layers):
            syn = params.get(f"bias_syn_{i}", torch.from_numpy(layer.bias_syn))
            neu = params.get(f"bias_neu_{i}", torch.from_numpy(layer.bias_neu))
            signs = torch.from_numpy(layer.signs.astype(np.float64)).to(syn.dtype)
            layers.append(RateLayer(signs * transmission(syn, self.cells), neu, (signs != 0).to(syn.dtype)))
        return network_rate(x.to(layers[0].w.dtype), layers, self.cells, input_mode=self.options.input_mode)

    def param_names(self) -> list[str]:
        return [f"bias_{kind}_{i}" for i in range(len(self.layers)) for kind in ("syn", "neu")]

    def set_params(self, params: dict[str, torch.Tensor]) -> None:
        for name, value in params.items():
            if name not in self.param_names():
                raise SettingError(
                    f"sfq substrate has no hardware parameter '{name}'; it has {', '.join(self.param_names())}"
                )
            _, kind, idx = name.split("_")
            layer = self.layers[int(idx)]
            v = torch.as_tensor(value).detach().double().cpu().numpy()
            want = layer.bias_syn.shape if kind == "syn" else layer.bias_neu.shape
            if v.shape != want:
                raise SettingError(f"sfq parameter '{name}' has shape {list(want)}, got {list(v.shape)}")
            lo, hi = self.cells.syn_range_uA if kind == "syn" else self.cells.neu_range_uA
            v = np.clip(v, lo, hi)  # the bias DACs saturate
            if kind == "syn":
                layer.bias_syn = v.copy()
            else:
                layer.bias_neu = v.copy()

    def get_params(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, layer in enumerate(self.layers):
            out[f"bias_syn_{i}"] = torch.from_numpy(layer.bias_syn.astype(np.float32))
            out[f"bias_neu_{i}"] = torch.from_numpy(layer.bias_neu.astype(np.float32))
        return out

    def param_ranges(self) -> dict[str, tuple[float, float]]:
        """Allowed range (uA) of each hardware parameter (the bias DACs clip to it)."""
        return {n: (self.cells.syn_range_uA if "_syn_" in n else self.cells.neu_range_uA) for n in self.param_names()}

    def signs(self) -> list[np.ndarray]:
        """The routing fixed at fabrication (a chip's netlist is public, its variation is not)."""
        return [l.signs.copy() for l in self.layers]

    def set_routing(self, signs: list) -> None:
        """Fabricate with the given routing (e.g. from :func:`simulators.sfq_rate.float_to_sfq`)."""
        if len(signs) != len(self.layers):
            raise SettingError(f"sfq routing needs {len(self.layers)} sign matrices, got {len(signs)}")
        for layer, s in zip(self.layers, signs):
            s = np.asarray(s)
            if s.shape != layer.signs.shape:
                raise SettingError(f"sfq routing matrix has shape {list(s.shape)}, expected {list(layer.signs.shape)}")
            layer.signs = Layer(s, layer.bias_syn, layer.bias_neu).signs

    def reset(self) -> None:
        """Power-on: neurons start empty on every measurement already; the noise stream restarts."""
        self._noise_seed = np.random.SeedSequence([self.options.seed, 0xA11CE])
        self._calls = 0

    def describe(self) -> dict:
        return {
            "kind": f"sfq-{self.options.variant}",
            "n_in": self.n_in,
            "n_out": self.n_out,
            "hidden": list(self.options.hidden),
            "input_range": list(self.input_range),
            "output_range": [0.0, float(self.cells.clock_GHz)],
            "units": {"input": "GHz", "output": "GHz", "params": "uA"},
            "window_ns": self.options.window_ns,
            "input_mode": self.options.input_mode,
            "param_ranges": {k: list(v) for k, v in self.param_ranges().items()},
            "params": {k: list(v.shape) for k, v in self.get_params().items()},
        }


def sfq_substrate(n_in: int, n_out: int, *, seed: int = 0, variant: str = "rsfq", **options) -> SFQSubstrate:
    """Convenience constructor: ``SFQSubstrate(SFQOptions(variant, n_in, n_out, seed=seed, **options))``."""
    if "hidden" in options:
        options["hidden"] = tuple(int(h) for h in options["hidden"])
    return SFQSubstrate(SFQOptions(variant=variant, n_in=n_in, n_out=n_out, seed=seed, **options))


@SUBSTRATE_FAMILIES.register("sfq", variants=VARIANTS, emulatable=True)
def open_sfq(variant: str, n_in: int, n_out: int, *, seed: int = 0, options: dict) -> SFQSubstrate:
    """``sfq:<rsfq|ersfq>``: options are fields of :class:`SFQOptions` (``hidden``, ``window_ns``,
    ``bias_spread``, ``cells``, ...)."""
    options = dict(options)
    check_options(
        f"sfq:{variant}",
        options,
        {f.name for f in dataclasses.fields(SFQOptions)} - {"variant", "n_in", "n_out", "seed"},
    )
    try:
        return sfq_substrate(n_in, n_out, seed=seed, variant=variant, **options)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SettingError):
            raise
        raise SettingError(f"substrate sfq:{variant}: {exc}") from None
