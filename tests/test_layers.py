"""Encoders, readouts and the LIF layer's shapes and conventions."""

from __future__ import annotations

import pytest
import torch

from neuro.layers.encoders import DirectEncoder, LatencyEncoder, RateEncoder
from neuro.layers.lif import LIFLayer
from neuro.layers.readouts import first_spike_time, membrane_max, spike_count
from neuro.layers.spiking_mlp import SpikingMLP


def test_rate_encoder_matches_probabilities():
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([[0.0, 0.1, 0.5, 1.0]])
    s = RateEncoder(20000)(x, generator=g)
    rate = s.mean(0).flatten()
    assert rate[0] == 0 and rate[3] == 1
    # binomial std for p=0.5 over 20000 draws is 0.0035: 5 sigma
    assert rate[1].item() == pytest.approx(0.1, abs=0.011) and rate[2].item() == pytest.approx(0.5, abs=0.018)


def test_latency_encoder_spike_times():
    x = torch.tensor([[1.0, 0.5, 0.25, 0.0]])
    s = LatencyEncoder(9)(x)
    assert s.sum(0).flatten().tolist() == [1.0, 1.0, 1.0, 0.0]
    assert s[:, 0].argmax(0).tolist() == [0, 4, 6, 0]  # round((1-x)*8) = 0, 4, 6


def test_direct_encoder_repeats_value():
    x = torch.rand(2, 3)
    s = DirectEncoder(5)(x)
    assert s.shape == (5, 2, 3) and torch.equal(s[4], x)


def test_readouts_on_a_known_raster():
    z = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]).unsqueeze(1)  # [T=4, B=1, 3]
    assert spike_count(z).flatten().tolist() == [2.0, 1.0, 1.0]
    assert first_spike_time(z).flatten().tolist() == [1.0, 3.0, 2.0]
    assert first_spike_time(torch.zeros(4, 1, 2)).flatten().tolist() == [4.0, 4.0]
    v = torch.tensor([[0.1, -1.0], [0.7, -2.0], [0.3, -0.5]]).unsqueeze(1)
    assert membrane_max(v).flatten().tolist() == pytest.approx([0.7, -0.5])


def test_first_spike_time_gradient_is_finite_differences_of_its_formula():
    # t* is multilinear in the spike values, so its derivative w.r.t. z can be checked exactly.
    z = torch.tensor([[0.2], [0.7], [0.4]], dtype=torch.float64).unsqueeze(1).requires_grad_()
    first_spike_time(z).sum().backward()
    h = 1e-6
    for t in range(3):
        zp, zm = z.detach().clone(), z.detach().clone()
        zp[t] += h
        zm[t] -= h
        fd = (first_spike_time(zp) - first_spike_time(zm)).sum() / (2 * h)
        assert z.grad[t].item() == pytest.approx(fd.item(), abs=1e-8)


def test_lif_layer_checks_input_shape():
    layer = LIFLayer(4, 3)
    with pytest.raises(ValueError, match=r"expects input \[time, batch, 4\], got \(2, 4\)"):
        layer(torch.zeros(2, 4))
    assert layer(torch.zeros(5, 2, 4)).shape == (5, 2, 3)


def test_spiking_mlp_trace_shapes_and_membrane_readout():
    m = SpikingMLP(6, [5, 4], 3, time_steps=7, readout="membrane_max", encoder="direct")
    tr = m.forward_trace(torch.rand(2, 6))
    assert tr.scores.shape == (2, 3)
    assert list(tr.spikes) == ["input", "layers.0", "layers.1"]  # the LI output layer has no spikes
    assert not m.layers[-1].params.spiking
    assert torch.equal(tr.scores, tr.membrane["layers.2"].max(0).values)
