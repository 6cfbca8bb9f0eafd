"""LIF dynamics: hand-derived traces, fused engine == reference engine (values and gradients)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from simulators.lif import LIFParameters, LIFState, lif_sequence_fused, lif_sequence_reference

# dt = 1 ms, Euler: alpha = 1 - 1/2 = 0.5, beta = 1 - 1/4 = 0.75; unit gain; threshold 1.
HAND = dict(tau_syn=2e-3, tau_mem=4e-3, dt=1e-3, integrator="euler", input_gain="unit", v_th=1.0)
X = [0.6, 0.0, 0.0, 0.5, 0.0]
# Derived by hand from i[t] = 0.5 i[t-1] + x[t];  p[t] = 0.75 v[t-1] + i[t];  spike if p > 1.
#   t0: i=0.6    p=0.6                      t1: i=0.3    p=0.45+0.3=0.75
#   t2: i=0.15   p=0.5625+0.15=0.7125       t3: i=0.575  p=0.534375+0.575=1.109375 -> spike
#   t4: i=0.2875 p=0.75 v[3] + 0.2875
SUBTRACT_V = [0.6, 0.75, 0.7125, 0.109375, 0.75 * 0.109375 + 0.2875]
ZERO_V = [0.6, 0.75, 0.7125, 0.0, 0.2875]
SPIKES = [0.0, 0.0, 0.0, 1.0, 0.0]
# Delayed current (Norse order): p[t] uses i[t-1], so the same trace arrives one step later.
DELAYED_V = [0.0, 0.6, 0.75, 0.7125, 0.109375]
DELAYED_SPIKES = [0.0, 0.0, 0.0, 0.0, 1.0]


def _run(engine, **kw):
    p = LIFParameters(**{**HAND, **kw})
    x = torch.tensor(X, dtype=torch.float64).view(5, 1, 1)
    trace = engine(x, p)
    return trace.spikes.flatten().tolist(), trace.membrane.flatten().tolist()


@pytest.mark.parametrize("engine", [lif_sequence_reference, lif_sequence_fused], ids=["reference", "fused"])
@pytest.mark.parametrize(
    "kw, spikes, membrane",
    [
        (dict(reset="subtract"), SPIKES, SUBTRACT_V),
        (dict(reset="zero"), SPIKES, ZERO_V),
        (dict(reset="subtract", current_delay=True), DELAYED_SPIKES, DELAYED_V),
    ],
    ids=["subtract", "zero", "delayed-current"],
)
def test_hand_derived_trace(engine, kw, spikes, membrane):
    z, v = _run(engine, **kw)
    assert z == spikes
    assert v == pytest.approx(membrane, abs=1e-15)


def test_leak_gain_and_exact_decay():
    # input_gain="leak": gamma = 1 - beta; integrator="exact": beta = exp(-dt/tau_mem).
    p = LIFParameters(tau_mem=20e-3, tau_syn=None, dt=1e-3, input_gain="leak", spiking=False)
    beta = math.exp(-1e-3 / 20e-3)
    assert p.alpha == 0.0 and p.beta == pytest.approx(beta) and p.gamma == pytest.approx(1 - beta)
    # A constant input u relaxes as v[t] = u (1 - beta^(t+1)) (delta synapse, leaky integrator).
    u = 0.8
    x = torch.full((50, 1, 1), u, dtype=torch.float64)
    v = lif_sequence_fused(x, p).membrane.flatten()
    expected = torch.tensor([u * (1 - beta ** (t + 1)) for t in range(50)], dtype=torch.float64)
    assert torch.allclose(v, expected, rtol=0, atol=1e-12)


def test_constant_input_firing_rate_matches_theory():
    # Delta synapse, unit gain, subtract reset, v_th = 1: with input u per step and no leak
    # (tau_mem huge) the neuron fires floor(T u) times in T steps (integrate-and-fire counting).
    # The u values keep every partial sum away from an integer, where '>' vs '>=' would matter.
    p = LIFParameters(tau_mem=1e9, tau_syn=None, dt=1e-3, input_gain="unit", reset="subtract")
    for u in (0.0512345, 0.3712345, 0.7654321):
        x = torch.full((199, 1, 1), u, dtype=torch.float64)
        n = lif_sequence_fused(x, p).spikes.sum().item()
        assert n == math.floor(199 * u)


OPTIONS = list(
    itertools.product(
        ("subtract", "zero"),
        (False, True),
        (5e-3, None),
        (True, False),
        (True, False),
        ("exact", "euler"),
        ("unit", "leak"),
    )
)


@pytest.mark.parametrize("reset, delay, tau_syn, spiking, detach, integrator, gain", OPTIONS)
def test_fused_equals_reference_values_and_gradients(reset, delay, tau_syn, spiking, detach, integrator, gain):
    torch.manual_seed(hash((reset, delay, tau_syn, spiking, detach, integrator, gain)) % 2**31)
    p = LIFParameters(
        tau_syn=tau_syn,
        reset=reset,
        current_delay=delay,
        spiking=spiking,
        detach_reset=detach,
        integrator=integrator,
        input_gain=gain,
        v_reset=0.1,
    )
    scale = 1.5 if gain == "unit" else 8.0
    x = (torch.randn(12, 3, 5, dtype=torch.float64) * scale).requires_grad_()
    v0 = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    i0 = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    a = lif_sequence_reference(x, p, LIFState(v0, i0))
    b = lif_sequence_fused(x, p, LIFState(v0, i0))
    assert torch.equal(a.spikes, b.spikes)
    assert torch.allclose(a.membrane, b.membrane, atol=1e-12)
    if spiking:
        assert 0 < a.spikes.mean() < 1, "test input should make some but not all neurons spike"
    w = [torch.randn_like(x), torch.randn_like(x), torch.randn_like(v0), torch.randn_like(v0)]

    def objective(t):
        return (t.spikes * w[0]).sum() + (t.membrane * w[1]).sum() + (t.state.i * w[2]).sum() + (t.state.v * w[3]).sum()

    ga = torch.autograd.grad(objective(a), [x, v0, i0])
    gb = torch.autograd.grad(objective(b), [x, v0, i0])
    for u, v in zip(ga, gb):
        assert torch.allclose(u, v, atol=1e-10)
    assert ga[0].abs().sum() > 0


@pytest.mark.parametrize(
    "kw, fragment",
    [
        (dict(dt=0.0), "dt must be a positive"),
        (dict(tau_mem=-1.0), "tau_mem must be a positive"),
        (dict(reset="hard"), "reset must be one of"),
        (dict(integrator="euler", dt=2e-3, tau_syn=1e-3), "forward Euler needs dt < tau_syn"),
        (dict(v_th=math.inf), "use spiking=False"),
    ],
)
def test_bad_parameters_are_rejected(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        LIFParameters(**kw)
