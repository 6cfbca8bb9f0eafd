"""The LIF engines agree: native (fused), reference, snnTorch and Norse.

Peers run for real (snntorch.Leaky/Synaptic, norse LIFCell/LIFBoxCell) on random two-layer
networks; spikes must be equal, membranes and gradients (w.r.t. input currents and both
weight matrices) equal to float64 tolerance.  snnTorch's own surrogates emit float32
spikes, so gradients through them carry float32 rounding (rtol 1e-5 there).
"""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch

from neuro.errors import IncompatibleError
from neuro.layers.lif import engine_names, run_engine
from neuro.rules.base import Batch
from simulators.lif import LIFParameters, LIFState, lif_sequence_fused, lif_sequence_reference
from simulators.surrogate import Surrogate

F64 = torch.float64


def _seed(*parts) -> int:
    """A seed that is the same in every process (``hash`` of a str is salted per process)."""
    return zlib.crc32(repr(parts).encode())


def _net_trace(engine, p, x, w1, w2):
    h = run_engine(engine, x @ w1.T, p, None)
    o = run_engine(engine, h.spikes @ w2.T, p, None)
    return h, o


def _compare_networks(engine, p, *, seed, grad_rtol=1e-9):
    g = torch.Generator().manual_seed(seed)
    T, B, n_in, n_h, n_out = 14, 3, 7, 9, 4
    scale = (1.0 - p.alpha) / p.gamma  # input that drives the membrane by O(v_th) per step
    x = (torch.rand(T, B, n_in, generator=g, dtype=F64) * scale).requires_grad_()
    w1 = (torch.randn(n_h, n_in, generator=g, dtype=F64) * 0.6).requires_grad_()
    w2 = ((torch.randn(n_out, n_h, generator=g, dtype=F64) + 0.5) * scale).requires_grad_()
    ws = [torch.randn(T, B, n, generator=g, dtype=F64) for n in (n_h, n_out, n_out)]

    def objective(h, o):
        return (h.membrane * ws[0]).sum() + (o.spikes * ws[1]).sum() + (o.membrane * ws[2]).sum()

    ref = _net_trace("native", p, x, w1, w2)
    peer = _net_trace(engine, p, x, w1, w2)
    assert 0.02 < ref[0].spikes.mean() < 0.6, "inputs should make the hidden layer spike sometimes"
    assert ref[1].spikes.sum() > 0
    for a, b in zip(ref, peer):
        assert torch.equal(a.spikes, b.spikes.to(F64))
        assert torch.allclose(a.membrane, b.membrane, rtol=0, atol=1e-12)
    ga = torch.autograd.grad(objective(*ref), [x, w1, w2])
    gb = torch.autograd.grad(objective(*peer), [x, w1, w2])
    for u, v in zip(ga, gb):
        assert u.abs().sum() > 0
        assert torch.allclose(u, v, rtol=grad_rtol, atol=grad_rtol * u.abs().max().item())


SNN_CASES = [
    # (tau_syn, reset, reset_timing): the orders snnTorch's cells implement
    (5e-3, "subtract", "next_step"),  # Synaptic
    (5e-3, "zero", "next_step"),  # Synaptic
    (None, "subtract", "next_step"),  # Leaky
    (None, "zero", "immediate"),  # Leaky
]


@pytest.mark.parametrize("tau_syn, reset, timing", SNN_CASES)
@pytest.mark.parametrize(
    "surrogate, integrator, gain",
    [
        ("atan", "exact", "leak"),
        ("sigmoid", "euler", "unit"),
        ("fast_sigmoid", "exact", "unit"),
        ("triangle", "euler", "leak"),
    ],
)
def test_snntorch_engine_equals_native(tau_syn, reset, timing, surrogate, integrator, gain):
    p = LIFParameters(
        tau_syn=tau_syn,
        reset=reset,
        reset_timing=timing,
        integrator=integrator,
        input_gain=gain,
        surrogate=Surrogate(surrogate, 4.0),
    )
    rtol = 1e-9 if surrogate == "triangle" else 1e-5  # snnTorch's surrogates round spikes to float32
    _compare_networks("snntorch", p, seed=_seed(tau_syn, reset, surrogate, integrator), grad_rtol=rtol)


NORSE_CASES = [(5e-3, "zero"), (None, "zero"), (None, "subtract")]  # LIFCell, LIFBoxCell x2


@pytest.mark.parametrize("tau_syn, reset", NORSE_CASES)
@pytest.mark.parametrize("surrogate, integrator, gain", [("triangle", "euler", "leak"), ("sigmoid", "exact", "unit")])
def test_norse_engine_equals_native(tau_syn, reset, surrogate, integrator, gain):
    p = LIFParameters(
        tau_syn=tau_syn,
        reset=reset,
        detach_reset=False,
        integrator=integrator,
        input_gain=gain,
        v_leak=-0.1,
        v_reset=0.05,
        surrogate=Surrogate(surrogate, 2.5),
    )
    _compare_networks("norse", p, seed=_seed(tau_syn, reset, surrogate, integrator))


def test_reference_engine_equals_native_on_a_network():
    _compare_networks("reference", LIFParameters(reset_timing="next_step"), seed=3)


def test_next_step_reset_hand_derived_trace():
    # beta = 1 - dt/tau = 0.5 exactly, unit gain, delta synapse, constant input 0.8, v_th = 1
    kw = dict(tau_mem=2e-3, dt=1e-3, tau_syn=None, integrator="euler", input_gain="unit")
    x = torch.full((4, 1, 1), 0.8, dtype=F64)
    for engine in ("native", "reference", "snntorch"):
        sub = run_engine(engine, x, LIFParameters(reset="subtract", reset_timing="next_step", **kw), None)
        # p: 0.8, 0.4+0.8=1.2 (spike), 0.6+0.8-1=0.4, 0.2+0.8=1.0 (not > 1)
        assert sub.spikes.flatten().tolist() == [0, 1, 0, 0]
        assert sub.membrane.flatten().tolist() == pytest.approx([0.8, 1.2, 0.4, 1.0], abs=1e-12)
    imm = run_engine("native", x, LIFParameters(reset="subtract", **kw), None)
    # immediate: v = 0.8, 1.2-1=0.2, 0.1+0.8=0.9, 0.45+0.8=1.25 (spike) -> 0.25
    assert imm.spikes.flatten().tolist() == [0, 1, 0, 1]
    assert imm.membrane.flatten().tolist() == pytest.approx([0.8, 0.2, 0.9, 0.25], abs=1e-12)
    for engine in ("native", "reference"):
        zero = run_engine(engine, x, LIFParameters(reset="zero", reset_timing="next_step", **kw), None)
        # the step after the spike integrates 0.6 + 0.8 and is then set to v_reset = 0
        assert zero.spikes.flatten().tolist() == [0, 1, 0, 0]
        assert zero.membrane.flatten().tolist() == pytest.approx([0.8, 1.2, 0.0, 0.8], abs=1e-12)


OPTIONS = list(
    itertools.product(("subtract", "zero"), (False, True), (5e-3, None), ("exact", "euler"), ("unit", "leak"))
)


@pytest.mark.parametrize("reset, delay, tau_syn, integrator, gain", OPTIONS)
def test_next_step_fused_equals_reference_values_and_gradients(reset, delay, tau_syn, integrator, gain):
    g = torch.Generator().manual_seed(_seed(reset, delay, tau_syn, integrator, gain))
    p = LIFParameters(
        tau_syn=tau_syn,
        reset=reset,
        current_delay=delay,
        reset_timing="next_step",
        integrator=integrator,
        input_gain=gain,
        v_reset=0.1,
        v_leak=-0.05,
    )
    scale = 1.5 if gain == "unit" else 8.0
    x = (torch.randn(12, 3, 5, generator=g, dtype=F64) * scale).requires_grad_()
    v0 = torch.randn(3, 5, generator=g, dtype=F64).requires_grad_()
    i0 = torch.randn(3, 5, generator=g, dtype=F64).requires_grad_()
    a = lif_sequence_reference(x, p, LIFState(v0, i0))
    b = lif_sequence_fused(x, p, LIFState(v0, i0))
    assert torch.equal(a.spikes, b.spikes) and 0 < a.spikes.mean() < 1
    assert torch.allclose(a.membrane, b.membrane, atol=1e-12)
    w = [torch.randn(x.shape, generator=g, dtype=F64) for _ in range(2)] + [
        torch.randn(v0.shape, generator=g, dtype=F64) for _ in range(2)
    ]

    def objective(t):
        return (t.spikes * w[0]).sum() + (t.membrane * w[1]).sum() + (t.state.i * w[2]).sum() + (t.state.v * w[3]).sum()

    for u, v in zip(torch.autograd.grad(objective(a), [x, v0, i0]), torch.autograd.grad(objective(b), [x, v0, i0])):
        assert torch.allclose(u, v, atol=1e-10)


@pytest.mark.parametrize(
    "engine, kw, fragment",
    [
        ("snntorch", dict(reset="subtract"), 'reset_timing = "next_step"'),
        ("snntorch", dict(tau_syn=None, reset="zero", reset_timing="next_step"), 'reset_timing = "immediate"'),
        ("snntorch", dict(reset_timing="next_step", v_leak=0.1), "set v_leak = 0"),
        ("snntorch", dict(reset_timing="next_step", current_delay=True), "current_delay = false"),
        ("snntorch", dict(reset="zero", reset_timing="next_step", v_reset=0.2), "v_reset = 0"),
        ("snntorch", dict(spiking=False), "engine 'native'"),
        ("norse", dict(), "detach_reset = false"),
        ("norse", dict(detach_reset=False, surrogate=Surrogate("triangle")), 'reset = "zero"'),
        ("norse", dict(detach_reset=False, reset="zero"), "no surrogate equal to 'fast_sigmoid'"),
        ("norse", dict(detach_reset=False, reset="zero", surrogate=Surrogate("atan")), "no surrogate equal"),
    ],
)
def test_peer_engines_refuse_what_they_cannot_express(engine, kw, fragment):
    with pytest.raises(IncompatibleError, match=fragment.replace("(", r"\(")):
        run_engine(engine, torch.zeros(2, 1, 3), LIFParameters(**kw), None)


def test_snntorch_engine_does_not_grow_snntorchs_global_registry():
    import snntorch

    p = LIFParameters(reset_timing="next_step")
    before = len(snntorch.SpikingNeuron.instances)
    for _ in range(5):
        run_engine("snntorch", torch.rand(3, 2, 4), p, None)
    assert len(snntorch.SpikingNeuron.instances) == before


def test_engines_table_lists_all_four():
    assert set(engine_names()) == {"native", "reference", "snntorch", "norse"}


def _digits_config(**lif):
    return {
        "data": {"dataset": "digits", "limit": 40},
        "model": {"hidden": [16], "time_steps": 5, "lif": lif},
        "train": {"epochs": 1, "batch_size": 8},
    }


@pytest.mark.parametrize(
    "engine, lif",
    [
        ("snntorch", {"reset_timing": "next_step"}),
        ("norse", {"reset": "zero", "detach_reset": False, "surrogate": "sigmoid", "surrogate_slope": 2.0}),
    ],
)
def test_engine_chosen_from_config_trains(engine, lif):
    from neuro.build import build_experiment

    config = _digits_config(**lif)
    config["model"]["engine"] = engine
    exp = build_experiment(config)
    assert [layer.engine for layer in exp.model.layers] == [engine, engine]
    assert exp.model.layers[0].capabilities.substrate == f"simulator:lif-{engine}"
    x, y = exp.data.train.x[:8], exp.data.train.y[:8]
    metrics = exp.rule.step(exp.model, Batch(x, y))
    assert metrics["loss"] > 0 and exp.model.layers[0].linear.weight.grad.abs().sum() > 0


def test_config_with_an_inexpressible_engine_fails_at_build_with_the_fix(cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\ndataset = "digits"\n[model]\nengine = "snntorch"\n')
    r = cli("train", str(cfg), "--out", str(tmp_path))
    assert r.returncode != 0 and 'reset_timing = "next_step"' in r.stderr and "Traceback" not in r.stderr


def test_info_names_the_engines():
    from neuro.cli.info import backends

    rows = {name: ok for name, ok, _ in backends()}
    assert rows['lif-snntorch (model.engine = "snntorch")'] and rows['lif-norse (model.engine = "norse")']
