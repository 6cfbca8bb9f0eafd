"""Surrogate gradients equal finite differences of their smooth functions."""

from __future__ import annotations

import pytest
import torch

from simulators.surrogate import SURROGATE_NAMES, Surrogate


@pytest.mark.parametrize("name", SURROGATE_NAMES)
@pytest.mark.parametrize("slope", [2.0, 10.0, 25.0])
def test_backward_matches_finite_difference_of_smooth_function(name, slope):
    s = Surrogate(name, slope)
    # avoid the kinks of the triangle at 0 and +-1/k, where S is only once differentiable
    x = torch.linspace(-1.5, 1.5, 301, dtype=torch.float64)
    x = x[(x.abs() > 1e-3) & ((x.abs() - 1 / slope).abs() > 1e-3)]
    xr = x.clone().requires_grad_()
    s.spike(xr).sum().backward()
    h = 1e-6
    fd = (s.smooth(x + h) - s.smooth(x - h)) / (2 * h)
    assert torch.allclose(xr.grad, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", SURROGATE_NAMES)
def test_forward_is_heaviside_and_smooth_limits(name):
    s = Surrogate(name, 10.0)
    x = torch.tensor([-2.0, -1e-3, 0.0, 1e-3, 2.0], dtype=torch.float64)
    assert s.spike(x).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    big = torch.tensor([-1e6, 1e6], dtype=torch.float64)
    assert s.smooth(big).tolist() == pytest.approx([0.0, 1.0], abs=1e-5)
    # the surrogate derivative integrates to one (S goes from 0 to 1)
    grid = torch.linspace(-200, 200, 2_000_001, dtype=torch.float64)
    integral = torch.trapezoid(s.derivative(grid), grid).item()
    assert integral == pytest.approx(1.0, abs=2e-3)


def test_unknown_surrogate_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown surrogate 'relu'; choose one of"):
        Surrogate("relu")
