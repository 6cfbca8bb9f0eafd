"""Quantization to Loihi fixed point, the NIR graph and the fixed-point spec (neuro/export/loihi.py)."""

from __future__ import annotations

import math

import nir
import numpy as np
import pytest
import torch
from torch import nn

from neuro.errors import IncompatibleError
from neuro.export.loihi import LoihiExport, LoihiFixedPointSpec, quantize
from neuro.layers.spiking_mlp import SpikingMLP
from simulators.lif import LIFParameters

DT = 1e-3
#: alpha = 0.5 and beta = 0.75 exactly: du = 2048 - 1, dv = 1024; gamma = 1 - beta = 0.25
EXACT = LIFParameters(tau_syn=DT / math.log(2), tau_mem=DT / math.log(4 / 3), dt=DT, reset="zero")


def _mlp(sizes, lif=EXACT, **kw):
    torch.manual_seed(0)
    return SpikingMLP(sizes[0], sizes[1:-1], sizes[-1], lif=lif, time_steps=10, **kw)


def test_quantize_hand_derived_single_layer():
    model = _mlp([3, 2])
    w = torch.tensor([[1.27, -0.5, 0.004], [0.0, 0.3, -1.0]])
    model.layers[0].linear.weight.data = w
    export, report = quantize(model)
    p, lay = export.layers[0], export.spec.layers[0]
    assert (p.du, p.dv) == (2047, 1024)
    assert report.layers[0].alpha_fixed == 0.5 and report.layers[0].beta_fixed == 0.75
    # q = 1.27 / 127 = 0.01 -> mantissas 127, -50, 0 | 0, 30, -100; Lava weights are twice that
    assert p.weights.tolist() == [[254, -100, 0], [0, 60, -200]]
    assert report.layers[0].weights_zeroed == 1 and report.layers[0].weights_clipped == 0
    # s = 128 2^e / (gamma q) = 51200 2^e; vth = s / 64 = 800 2^e; the largest e with vth <= 131071 >> 4 = 8191 is 3
    assert (p.weight_exp, p.vth) == (3, 6400)
    assert lay.voltage_scale == pytest.approx(51200 * 8)


def test_clip_percentile_clips_and_counts():
    model = _mlp([50, 4])
    export, report = quantize(model, clip_percentile=90.0)
    w = model.layers[0].linear.weight.detach()
    q = float(np.percentile(w.abs().flatten().numpy(), 90)) / 127
    assert report.layers[0].weights_clipped == int((w.abs() / q > 127.5).sum()) > 0
    assert (int(export.layers[0].weights.max()), int(export.layers[0].weights.min())) == (
        254,
        -256,
    )  # both ends of 8 bits


def test_twin_voltage_tracks_the_scaled_float_membrane_within_the_truncation_bound():
    """No spikes (high threshold): the twin differs from the float model only by rounding.

    Per step the current loses < 1 LSB to truncation, so its error stays below 1 / (1 - alpha) = 2;
    the voltage error below (1 + 2) / (1 - beta) = 12 LSB, plus the weights' rounding (here exact).
    """
    lif = LIFParameters(
        tau_syn=EXACT.tau_syn, tau_mem=EXACT.tau_mem, dt=DT, reset="zero", v_th=8.0
    )  # e = 0: no Dense truncation
    model = _mlp([20, 5], lif=lif)
    g = torch.Generator().manual_seed(1)
    m = torch.randint(-127, 128, (5, 20), generator=g).float()
    model.layers[0].linear.weight.data = m * 0.01
    model.layers[0].linear.weight.data[0, 0] = 1.27  # q = 0.01 exactly
    x = (torch.rand(30, 4, 20, generator=g) < 0.3).float()
    export, _ = quantize(model)
    twin = export.run_twin(x, record_state=True)
    with torch.no_grad():
        flt = model.layers[0].forward_trace(x)
    assert int(twin.spikes[0].sum()) == 0 and float(flt.spikes.sum()) == 0 and export.layers[0].weight_exp == 0
    s = export.spec.layers[0].voltage_scale
    err = (twin.voltages[0].double() - s * flt.membrane.double()).abs()
    assert float(err.max()) <= 12.0 + 1e-6 * float((s * flt.membrane).abs().max())
    assert float((s * flt.membrane).abs().max()) > 1e5  # the test is not vacuous


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: _mlp([4, 3], lif=LIFParameters(reset="subtract")), 'reset = "zero"'),
        (lambda: _mlp([4, 3], lif=LIFParameters(reset="zero", v_leak=0.1)), "v_leak"),
        (lambda: _mlp([4, 3], lif=LIFParameters(reset="zero", current_delay=True)), "current_delay"),
        (lambda: _mlp([4, 3], readout="membrane_max"), "non-spiking"),
        (lambda: _mlp([4, 3], encoder="direct"), "analog currents"),
    ],
)
def test_networks_loihi_cannot_hold_are_refused_with_the_fix(make, fragment):
    with pytest.raises(IncompatibleError, match=fragment):
        quantize(make())


def test_unsupported_layer_is_refused():
    model = _mlp([4, 3, 2])
    model.layers[1] = nn.Linear(3, 2)
    with pytest.raises(IncompatibleError, match="layer 1 is a Linear"):
        quantize(model)


def test_weights_out_of_range_after_quantization_are_refused():
    export, _ = quantize(_mlp([4, 3]))
    export.layers[0].weights[0, 0] = 400
    with pytest.raises(IncompatibleError, match=r"layer 0 does not fit Loihi 2: weights span .*400"):
        export.run_twin(torch.zeros(2, 1, 4))


def test_spec_that_disagrees_with_the_integer_layers_is_refused():
    from dataclasses import replace

    export, _ = quantize(_mlp([4, 3]))
    export.layers[0] = replace(export.layers[0], vth=export.layers[0].vth + 1)
    with pytest.raises(IncompatibleError, match=r"layer 0: the fixed-point spec says .* but the integer layer has"):
        export.check()


def test_save_load_and_nir_graph_carry_the_same_network(tmp_path):
    model = _mlp([6, 5, 3], bias=True)
    export, report = quantize(model)
    assert any("steady state" in n for n in report.notes)  # current bias -> voltage bias is approximate
    export.save(tmp_path)
    back = LoihiExport.load(tmp_path)
    assert back.spec == export.spec
    for a, b in zip(export.layers, back.layers):
        assert torch.equal(a.weights, b.weights) and torch.equal(a.effective_bias(), b.effective_bias())
        assert (a.weight_exp, a.du, a.dv, a.vth) == (b.weight_exp, b.du, b.dv, b.vth)
    spec = LoihiFixedPointSpec.from_json((tmp_path / "fixed_point.json").read_text())
    assert spec.dt == DT and spec.reset == "zero" and spec.decay_bits == 12 and spec.vth_shift == 6
    graph = nir.read(str(tmp_path / "network.nir"))
    assert [e for e in graph.edges] == [
        ("input", "fc0"),
        ("fc0", "lif0"),
        ("lif0", "fc1"),
        ("fc1", "lif1"),
        ("lif1", "output"),
    ]
    for k, lay in enumerate(export.spec.layers):
        node = graph.nodes[f"fc{k}"]
        assert isinstance(node, nir.Affine)
        np.testing.assert_allclose(node.weight, export.layers[k].weights.numpy() / 2 * lay.weight_scale, rtol=1e-6)
        # the dequantized weights are close to the float ones (8-bit rounding)
        w = model.layers[k].linear.weight.detach().numpy()
        assert np.abs(node.weight - w).max() <= 0.5 * lay.weight_scale + 1e-7
        lif = graph.nodes[f"lif{k}"]
        assert isinstance(lif, nir.CubaLIF)
        np.testing.assert_allclose(lif.v_threshold, lay.vth * 64 / lay.voltage_scale, rtol=1e-6)
        np.testing.assert_allclose(np.exp(-DT / lif.tau_syn), (4096 - lay.du - 1) / 4096, rtol=1e-6)
        np.testing.assert_allclose(np.exp(-DT / lif.tau_mem), (4096 - lay.dv) / 4096, rtol=1e-6)
    assert graph.metadata["fixed_point_spec"] == "fixed_point.json"


def test_calibration_keeps_current_and_voltage_within_half_the_24_bit_range():
    model = _mlp([64, 32, 10])
    g = torch.Generator().manual_seed(2)
    calib = (torch.rand(10, 64, 64, generator=g) < 0.5).float()
    export, report = quantize(model, calib)
    for r in report.layers:
        assert r.calib_max_current < 0.5 and r.calib_max_voltage < 0.5 and r.calib_max_dense < 1.0
        assert r.twin_current_wraps == 0
    # without the calibration limits the exponent is at least as large
    free, _ = quantize(model)
    assert all(a.weight_exp >= b.weight_exp for a, b in zip(free.layers, export.layers))


def test_qat_wrapper_computes_the_twin_and_passes_gradients_straight_through():
    from neuro.layers.loihi import LoihiTwinMLP

    model = _mlp([20, 16, 4])
    with torch.no_grad():
        for layer in model.layers:
            layer.linear.weight.mul_(6.0)  # an active network
    g = torch.Generator().manual_seed(4)
    calib = (torch.rand(10, 32, 20, generator=g) < 0.5).float()
    export, _ = quantize(model, calib)
    wrapper = LoihiTwinMLP(model, export)
    h = (torch.rand(10, 8, 20, generator=g) < 0.5).float()
    z = wrapper.spikes(h)
    twin = export.run_twin(h)
    assert all(torch.equal(a.bool(), b) for a, b in zip(z, twin.spikes))  # forward values are the twin's
    assert int(twin.spikes[-1].sum()) > 0
    for a, b in zip(wrapper.to_export().layers, export.layers):  # same rounding as the quantizer
        assert torch.equal(a.weights, b.weights) and a.vth == b.vth and a.weight_exp == b.weight_exp
    loss = z[-1].sum(0).logsumexp(1).sum()
    loss.backward()
    for layer in model.layers:
        grad = layer.linear.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and float(grad.abs().sum()) > 0
    assert len(list(wrapper.parameters())) == len(list(model.parameters()))  # shared, not duplicated


def test_finetune_on_twin_runs_the_ordinary_trainer_and_returns_a_fitting_export():
    from neuro.data import load_dataset
    from neuro.deploy.qat import finetune_on_twin

    data = load_dataset("digits", limit=48)
    model = _mlp([64, 8, 10])
    export, _ = quantize(model)
    before = [p.weights.clone() for p in export.layers]
    lines = []
    tuned = finetune_on_twin(model, export, data, epochs=1, lr=1e-2, batch_size=32, echo=lines.append)
    tuned.check()
    assert lines and lines[0].startswith("  QAT epoch 1/1")
    assert any(not torch.equal(a, p.weights) for a, p in zip(before, tuned.layers))  # the mantissas moved
    assert [p.vth for p in tuned.layers] == [p.vth for p in export.layers]  # the scales did not
