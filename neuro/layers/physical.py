"""Building blocks of physical neural networks: encoding, the physical layer, the digital part.

A *physical block* is ``h -> encode -> physical system -> measured y -> digital (W y + b, ReLU) -> h'``,
followed by length normalization before the next block:

- :class:`InputEncoder`: maps unbounded features into the device range ``[lo, hi]``:
  ``"tanh"``: ``mid + half * tanh(gain * h)``; ``"clip"``: ``clamp(mid + half * gain * h, lo, hi)``
  (``mid``, ``half``: centre and half-width of the range).  How the values act on the physics
  (amplitude, phase, frequency) is the substrate's ``modulation``.
- :class:`PhysicalLayer`: runs any :class:`~simulators.substrate.Substrate` (simulator, emulated
  firmware or serial driver) under ``torch.no_grad()``; its outputs refuse backprop with a
  clear error (:func:`~neuro.layers.hardware.measured_output`).  Its hardware parameters
  (``control``) are a torch Parameter of the layer, written to the substrate with
  ``set_params`` whenever they change, so checkpoints hold them and a resumed run re-writes them.
- :class:`DigitalLayer`: the trainable digital part, ``relu(W s(y) + b)`` (or linear), counting MACs;
  ``s`` standardizes the measured intensities per sample (:func:`standardize`).
- length normalization between blocks: :func:`neuro.functional.forward_forward.length_normalize`, which removes
  the goodness
  (squared length) of one block from the input of the next (Hinton 2022).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import nn

from neuro.errors import IncompatibleError
from neuro.layers.capabilities import Capabilities
from neuro.layers.hardware import measured_output

Encoding = Literal["tanh", "clip"]
ENCODINGS: tuple[str, ...] = get_args(Encoding)


class InputEncoder(nn.Module):
    """Bounded encoding of features into the device range (no trainable parameters)."""

    def __init__(self, input_range: tuple[float, float], kind: str = "tanh", gain: float = 1.0) -> None:
        super().__init__()
        if kind not in ENCODINGS:
            raise ValueError(f"encoding '{kind}' is not one of {', '.join(ENCODINGS)}")
        lo, hi = float(input_range[0]), float(input_range[1])
        if not hi > lo:
            raise ValueError(f"device input range must have high > low, got {input_range}")
        self.kind, self.gain = kind, float(gain)
        self.mid, self.half, self.lo, self.hi = (lo + hi) / 2, (hi - lo) / 2, lo, hi

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "tanh":
            return self.mid + self.half * torch.tanh(self.gain * h)
        return torch.clamp(self.mid + self.half * self.gain * h, self.lo, self.hi)


class PhysicalLayer(nn.Module):
    """A physical system used as a non-differentiable layer.

    substrate: any object implementing the Substrate protocol.
    name: how errors and capabilities name it, e.g. ``"simulator:wave-scattering"`` or
        ``"serial:/dev/pts/3"``.
    Hardware parameters: every entry of ``substrate.get_params()`` becomes a trainable
    ``nn.Parameter`` of this layer (initialised from the device's values, or uniformly in
    the device range with ``init_params="uniform"``); they are kept inside their ranges (periodic
    ones, e.g. phases, wrap; see :meth:`sync_params`) and written to the device whenever they change.
    Counters: ``n_evals`` (samples measured through this layer).
    """

    def __init__(self, substrate, name: str, *, init_params: str = "uniform", seed: int = 0) -> None:
        super().__init__()
        self.substrate = substrate
        self.where = name
        self.n_in, self.n_out = int(substrate.n_in), int(substrate.n_out)
        self.input_range = tuple(float(v) for v in substrate.input_range)
        g = torch.Generator().manual_seed(seed)
        lo, hi = self.input_range
        self.hardware = nn.ParameterDict()
        for key, value in substrate.get_params().items():
            value = torch.as_tensor(value, dtype=torch.float32).clone()
            if init_params == "uniform":
                value = lo + (hi - lo) * torch.rand(value.shape, generator=g)
            self.hardware[key] = nn.Parameter(value)
        self._written: dict[str, torch.Tensor] = {}
        self.param_ranges, self.param_periodic = _param_ranges(substrate, tuple(self.hardware), self.input_range)
        self.n_evals = 0
        self.capabilities = Capabilities(
            differentiable=False,
            precision="analog",
            substrate=name,
            hardware_parameters=tuple(f"hardware.{k}" for k in self.hardware),
        )

    def sync_params(self) -> None:
        """Bring the hardware parameters into their ranges and write any that changed.

        A parameter the substrate declares periodic (``describe()["param_periodic"]``, e.g. a phase with
        range ``[lo, hi)`` = one period) wraps: ``p <- lo + (p - lo) mod (hi - lo)``; any other is clamped to its
        range (``describe()["param_ranges"]``, else the device input range).
        """
        changed = {}
        with torch.no_grad():
            for key, p in self.hardware.items():
                lo, hi = self.param_ranges[key]
                if self.param_periodic[key]:
                    p.copy_(lo + torch.remainder(p - lo, hi - lo))
                else:
                    p.clamp_(lo, hi)
                if key not in self._written or not torch.equal(self._written[key], p):
                    changed[key] = p.detach().clone()
        if changed:
            self.substrate.set_params(changed)
            self._written.update(changed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Measure ``x`` (``[batch, n_in]`` in the device range) on the substrate; refuses backprop."""
        self.sync_params()
        with torch.no_grad():
            y = self.substrate.forward(x.detach())
        self.n_evals += int(x.shape[0])
        upstream = x if x.requires_grad or not len(self.hardware) else next(iter(self.hardware.values()))
        return measured_output(y.to(x.dtype), upstream, f"layer '{self.where}'")

    # -- differentiable paths, each only where the substrate or the user provides one
    def exact(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable noise-free response through the simulator's ``exact_forward`` (in-silico only)."""
        fn = getattr(self.substrate, "exact_forward", None)
        if not callable(fn):
            raise IncompatibleError(
                f"layer '{self.where}' has no exact simulator (its substrate exposes no exact_forward); "
                "train it with `mfff` or `pat` with a fitted twin"
            )
        self.sync_params()
        return fn(x, dict(self.hardware.items()))

    def simulation_macs(self, batch: int) -> int:
        fn = getattr(self.substrate, "simulation_macs", None)
        return int(fn(batch)) if callable(fn) else 0

    # -- the substrate's explicit state (noise generator, drift) travels with checkpoints
    def get_extra_state(self):
        fn = getattr(self.substrate, "state_dict", None)
        return {"substrate": fn()} if callable(fn) else {}

    def set_extra_state(self, state) -> None:
        fn = getattr(self.substrate, "load_state_dict", None)
        if callable(fn) and state and "substrate" in state:
            fn(state["substrate"])
        self._written = {}  # re-write the hardware parameters on the next forward

    def extra_repr(self) -> str:
        return f"{self.n_in} -> {self.n_out} on {self.where}, hardware parameters: {', '.join(self.hardware) or 'none'}"


def _param_ranges(substrate, names: tuple[str, ...], default: tuple[float, float]):
    """Per hardware parameter ``(lo, hi)`` and whether it is periodic, from the substrate's ``describe()``
    (keys ``param_ranges`` and ``param_periodic``, both optional) with the input range as the default."""
    fn = getattr(substrate, "describe", None)
    info = {}
    if callable(fn):
        try:
            info = fn() or {}
        except Exception:  # noqa: BLE001 - a device that cannot describe itself keeps the defaults
            info = {}
    if "param_ranges" not in info and isinstance(info.get("device"), dict):
        info = info["device"]  # a serial driver nests the firmware's own description
    ranges = info.get("param_ranges") or {}
    periodic = info.get("param_periodic") or {}
    out_r, out_p = {}, {}
    for name in names:
        lo, hi = ranges.get(name, default)
        out_r[name] = (float(lo), float(hi))
        out_p[name] = bool(periodic.get(name, False)) and float(hi) > float(lo)
    return out_r, out_p


def standardize(y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per sample: ``(y - mean_j y_j) / (std_j y_j + eps)`` (measured intensities are all positive;
    centring them keeps the ReLUs after them from dying together)."""
    mu = y.mean(dim=-1, keepdim=True)
    return (y - mu) / ((y - mu).pow(2).mean(dim=-1, keepdim=True).sqrt() + eps)


class DigitalLayer(nn.Module):
    """Trainable digital part ``act(W s(y) + b)``, ``s`` = :func:`standardize` (``standardize_input``)
    or identity; ``n_macs`` counts forward multiply-accumulates."""

    def __init__(
        self, n_in: int, n_out: int, activation: str = "relu", seed: int = 0, standardize_input: bool = False
    ) -> None:
        super().__init__()
        self.standardize_input = standardize_input
        if activation not in ("relu", "linear"):
            raise ValueError(f"activation '{activation}' is not relu or linear")
        self.linear = nn.Linear(n_in, n_out)
        g = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(n_in)
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound, generator=g)
            self.linear.bias.zero_()
        self.activation = activation
        self.n_macs = 0

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        self.n_macs += y.shape[0] * self.linear.in_features * self.linear.out_features
        z = self.linear(standardize(y) if self.standardize_input else y)
        return torch.relu(z) if self.activation == "relu" else z
