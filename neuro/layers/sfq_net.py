"""A rate-coded superconducting SFQ network as a model kind (``model.kind = "sfq_net"``).

Trained by backprop (``rule.name = "bptt"``) through the differentiable rate model of
:mod:`simulators.sfq_rate`; evaluated on the event-driven pulse emulator of :mod:`simulators.sfq`.

Input: features ``x`` in [0, 1] (clamped) become input rates ``x * rate_GHz`` (GHz) of DC-to-SFQ
converters.  Layer ``l``: signed transmission probabilities ``w_l = tanh(v_l)`` in (-1, 1) (the
trained parameters ``v_l`` are unconstrained) and neuron biases ``I_l = I_c - 1.5 dI + dI * u_l``
(uA, clamped to the cells' ``neu_range_uA``; ``u_l`` trained, 0 at initialization: a threshold of
1.5 fluxons).  Class scores: ``gain * r_out`` with ``r_out`` the output rates (GHz).

- training mode (``model.train()``): ``r_out`` from :func:`simulators.sfq_rate.network_rate`
  (float64 inside, float32 out), differentiable;
- evaluation mode (``model.eval()``), ``eval_on = "pulses"``: the float weights are converted to
  routing and bias currents (:func:`simulators.sfq_rate.float_to_sfq`: ``I_b = I_50 +
  sigma_I Phi^-1(|w|)``, clipped to the bias range) and the batch runs on the pulse emulator over a
  ``window_ns`` readout window; ``r_out`` = measured rates.  The emulator's seed is drawn from torch's
  generator, so the trainer's seeded evaluation is reproducible.  ``eval_on = "rate_model"``
  evaluates the rate model instead (fast).
  The energy per inference (J; dynamic switching plus RSFQ static bias power, or ERSFQ) and the
  latency to a decision (ps) of the latest emulated batch are in :attr:`SFQNet.last`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from neuro.errors import ConfigError
from neuro.layers.capabilities import Capabilities
from neuro.registry import MODEL_KINDS
from simulators.sfq import CellParams, decision_latency_ps, emulate, energy
from simulators.sfq_rate import RateLayer, float_to_sfq, network_rate


class SFQNet(nn.Module):
    """Layered SFQ network ``widths = [n_in, hidden..., n_classes]`` (see the module docstring)."""

    def __init__(
        self,
        widths: list[int],
        cells: CellParams,
        *,
        rate_GHz: float,
        gain: float,
        window_ns: float,
        input_mode: str,
        variant: str,
        eval_on: str,
        seed: int,
        arrivals: str = "correlated",
    ) -> None:
        super().__init__()
        self.cells, self.widths = cells, list(widths)
        self.rate_GHz, self.gain, self.window_ns = float(rate_GHz), float(gain), float(window_ns)
        self.input_mode, self.variant, self.eval_on, self.arrivals = input_mode, variant, eval_on, arrivals
        g = torch.Generator().manual_seed(int(seed))
        # w = tanh(v) uniform in (-0.9, 0.9) at the start, as simulators.sfq_rate.train_float
        self.v = nn.ParameterList(
            nn.Parameter(torch.atanh((torch.rand(b, a, generator=g) * 2 - 1) * 0.9)) for a, b in zip(widths, widths[1:])
        )
        self.u = nn.ParameterList(nn.Parameter(torch.zeros(b)) for b in widths[1:])
        self.last: dict = {}

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            differentiable=True,
            substrate=f"simulator:sfq-{self.variant} (rate model; pulse emulator in evaluation)",
            hardware_parameters=("bias currents",),
        )

    def rate_layers(self) -> list[RateLayer]:
        """The float network: signed transmissions ``tanh(v)`` and neuron biases (uA), float64."""
        lo, hi = self.cells.neu_range_uA
        base = self.cells.neuron_ic_uA - 1.5 * self.cells.neuron_step_uA
        return [
            RateLayer(torch.tanh(v.double()), (base + self.cells.neuron_step_uA * u.double()).clamp(lo, hi))
            for v, u in zip(self.v, self.u)
        ]

    def input_rates(self, x: torch.Tensor) -> torch.Tensor:
        """Input rates (GHz, float64): ``clamp(x, 0, 1) * rate_GHz``."""
        return x.double().clamp(0.0, 1.0) * self.rate_GHz

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.widths[0]:
            raise ConfigError(f"sfq_net expects features [batch, {self.widths[0]}], got {list(x.shape)}")
        r_in = self.input_rates(x)
        if self.training or self.eval_on == "rate_model":
            out = network_rate(
                r_in, self.rate_layers(), self.cells, input_mode=self.input_mode, arrivals=self.arrivals
            )
            return (self.gain * out).to(torch.float32)
        return self.gain * self.emulate(r_in)

    @torch.no_grad()
    def emulate(self, r_in: torch.Tensor) -> torch.Tensor:
        """Measured output rates (GHz, float32) of the converted network on the pulse emulator."""
        layers = float_to_sfq(self.rate_layers(), self.cells)
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        res = emulate(
            r_in.cpu().numpy(), layers, self.cells, window_ns=self.window_ns, seed=seed, input_mode=self.input_mode,
            chunk=8,
        )
        lat = decision_latency_ps(res.out_times, self.cells.ticks(res.delay_ps), self.cells)
        self.last = {
            "energy": energy(res, layers, self.cells, self.variant),
            "decision_latency_ps_mean": float(np.nanmean(lat)) if np.isfinite(lat).any() else float("nan"),
            "path_delay_ps": res.delay_ps,
            "batch": res.batch,
        }
        return torch.from_numpy(res.rates.astype(np.float32)).to(r_in.device)


# ---------------------------------------------------------------------- config
@dataclass
class SFQNetSpec:
    """``[model]`` with ``kind = "sfq_net"``: a rate-coded SFQ network (train with ``rule.name = "bptt"``).

    hidden: hidden widths.  rate_GHz: input rate of a feature equal to 1 (features clamped to
    [0, 1]).  gain: class scores = gain * output rate (GHz).  window_ns: pulse-emulator readout
    window in evaluation.  input_mode: ``periodic`` | ``poisson`` converters.  variant: ``rsfq`` |
    ``ersfq`` bias scheme (energy accounting).  eval_on: ``pulses`` (emulator) | ``rate_model``.
    arrivals: rate model, ``correlated`` (arrival-type correlation from the trains' Fano factors) or
    ``independent`` (the previous model; see :func:`simulators.sfq_rate.neuron_rate`).
    cells: overrides of :class:`simulators.sfq.CellParams` fields.  seed: initial weights.
    """

    kind: str = "sfq_net"
    hidden: list[int] = field(default_factory=lambda: [32])
    rate_GHz: float = 20.0
    gain: float = 0.5
    window_ns: float = 20.0
    input_mode: Literal["periodic", "poisson"] = "periodic"
    variant: Literal["rsfq", "ersfq"] = "rsfq"
    eval_on: Literal["pulses", "rate_model"] = "pulses"
    arrivals: Literal["correlated", "independent"] = "correlated"
    cells: dict = field(default_factory=dict)
    seed: int = 0

    def check(self) -> None:
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise ConfigError(f"model.hidden of sfq_net must list >= 1 positive widths, got {self.hidden}")
        if not self.rate_GHz > 0:
            raise ConfigError(f"model.rate_GHz must be > 0 GHz (and at most the clock rate), got {self.rate_GHz}")
        if not self.window_ns > 0:
            raise ConfigError(f"model.window_ns must be > 0 ns, got {self.window_ns}")
        if not self.gain > 0:
            raise ConfigError(f"model.gain must be > 0 (scores = gain * rate in GHz), got {self.gain}")


@MODEL_KINDS.register("sfq_net", spec=SFQNetSpec, bf16=False)
def build_sfq_net(spec: SFQNetSpec, data) -> SFQNet:
    try:
        cells = CellParams(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.cells.items()})
    except TypeError as exc:
        raise ConfigError(f"model.cells: {exc}; valid keys are the fields of simulators.sfq.CellParams") from None
    if spec.rate_GHz > cells.clock_GHz:
        raise ConfigError(f"model.rate_GHz = {spec.rate_GHz} exceeds the clock rate {cells.clock_GHz} GHz; lower it")
    return SFQNet(
        [data.n_features, *[int(h) for h in spec.hidden], data.n_classes],
        cells,
        rate_GHz=spec.rate_GHz,
        gain=spec.gain,
        window_ns=spec.window_ns,
        input_mode=spec.input_mode,
        variant=spec.variant,
        eval_on=spec.eval_on,
        seed=spec.seed,
        arrivals=spec.arrivals,
    )
