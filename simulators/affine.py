"""A small substrate for testing a link: ``y = tanh(x W^T + b) + noise (+ drift k)``."""

from __future__ import annotations

import torch

from simulators.errors import SettingError
from simulators.substrate import SUBSTRATE_FAMILIES, check_options


class AffineTanhSubstrate:
    """A small substrate for testing the link itself: ``y = tanh(x W^T + b) + noise (+ drift k)``.

    ``W [n_out, n_in]`` and ``b [n_out]`` are its hardware parameters (seeded at
    construction); ``k`` counts the batches measured since ``reset()`` (a stand-in for a
    device that drifts with use, which makes any recomputation of a retried request
    visible); ``noise`` is the std of Gaussian measurement noise from its own seeded
    generator.  Inputs in ``[-1, 1]`` (dimensionless).  With ``drift == 0`` the outputs
    are clipped to ``[-1, 1]`` and that output range is advertised (int16 samples work);
    with drift the outputs are unbounded and no output range is advertised.
    """

    def __init__(self, n_in: int = 8, n_out: int = 4, *, seed: int = 0, drift: float = 0.0, noise: float = 0.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.n_in, self.n_out = n_in, n_out
        self.input_range = (-1.0, 1.0)
        self.drift, self.noise = drift, noise
        self.W = torch.randn(n_out, n_in, generator=g) / n_in ** 0.5
        self.b = 0.1 * torch.randn(n_out, generator=g)
        self._noise_gen = torch.Generator().manual_seed(seed + 1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(x.float() @ self.W.T + self.b)
        if self.noise:
            y = y + self.noise * torch.randn(y.shape, generator=self._noise_gen)
        if self.drift:
            y = y + self.drift * self.calls
        else:
            y = y.clamp(-1.0, 1.0)
        self.calls += 1
        return y

    def set_params(self, params: dict[str, torch.Tensor]) -> None:
        for name, value in params.items():
            if name not in ("W", "b"):
                raise KeyError(name)
            setattr(self, name, value.detach().float().clone())

    def get_params(self) -> dict[str, torch.Tensor]:
        return {"W": self.W.clone(), "b": self.b.clone()}

    def reset(self) -> None:
        self.calls = 0

    def describe(self) -> dict:
        out = 1.0 if self.drift == 0 else None
        d = {"kind": "affine-tanh", "n_in": self.n_in, "n_out": self.n_out, "input_range": list(self.input_range)}
        if out is not None:
            d["output_range"] = [-out, out]
        return d


@SUBSTRATE_FAMILIES.register("affine", variants=(), emulatable=True)
def open_affine(variant: str, n_in: int, n_out: int, *, seed: int = 0, options: dict) -> AffineTanhSubstrate:
    """``affine``: options ``noise`` and ``drift`` (see :class:`AffineTanhSubstrate`)."""
    check_options("affine", options, ("noise", "drift"))
    try:
        return AffineTanhSubstrate(n_in, n_out, seed=seed, **{k: float(v) for k, v in options.items()})
    except (TypeError, ValueError) as exc:
        raise SettingError(f"substrate affine: {exc}") from None
