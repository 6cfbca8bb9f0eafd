"""The compiled LIF kernels (simulators/lif_kernel.cpp) against the plain-autograd reference engine.

Values and gradients of the kernel engine, of its one-output fast path (with and without gradients,
writing into the input buffer or not), of the event-driven fused layer forward, and of the pure-torch
fallback used when the build fails.  No timing assertions.
"""

from __future__ import annotations

import itertools
import warnings
import zlib

import pytest
import torch

from neuro.layers.lif import LIFLayer
from simulators import lif_kernel
from simulators.lif import (
    LIFParameters,
    LIFState,
    lif_event_forward,
    lif_fused_output,
    lif_sequence_fused,
    lif_sequence_reference,
)
from simulators.surrogate import SURROGATE_NAMES, Surrogate

F64 = torch.float64


def _seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def test_the_kernels_build_here():
    # g++ and torch's headers are on every machine `make test` runs on; the fast path must be tested
    assert lif_kernel.kernel() is not None


CASES = [
    # (reset, timing, tau_syn, delay, detach, spiking, surrogate, integrator, gain, v_leak, v_reset)
    ("subtract", "immediate", 5e-3, False, True, True, "fast_sigmoid", "exact", "leak", 0.0, 0.0),
    ("subtract", "immediate", 5e-3, True, False, True, "atan", "euler", "unit", -0.1, 0.0),
    ("zero", "immediate", None, False, False, True, "sigmoid", "exact", "unit", 0.05, 0.2),
    ("zero", "immediate", 5e-3, True, True, True, "triangle", "exact", "leak", 0.0, -0.1),
    ("subtract", "next_step", 5e-3, False, True, True, "triangle", "euler", "unit", 0.0, 0.0),
    ("subtract", "next_step", None, True, True, True, "fast_sigmoid", "exact", "leak", -0.05, 0.0),
    ("zero", "next_step", 5e-3, True, True, True, "atan", "exact", "unit", 0.0, 0.1),
    ("zero", "next_step", None, False, True, True, "sigmoid", "euler", "leak", 0.1, -0.2),
    ("subtract", "immediate", 5e-3, True, True, False, "fast_sigmoid", "exact", "leak", 0.1, 0.0),
    ("subtract", "immediate", None, False, True, False, "fast_sigmoid", "euler", "unit", 0.0, 0.0),
]


def _params(case) -> LIFParameters:
    reset, timing, tau_syn, delay, detach, spiking, surr, integ, gain, v_leak, v_reset = case
    return LIFParameters(tau_syn=tau_syn, reset=reset, reset_timing=timing, current_delay=delay, detach_reset=detach,
                         spiking=spiking, surrogate=Surrogate(surr, 3.0), integrator=integ, input_gain=gain,
                         v_leak=v_leak, v_reset=v_reset)


def _inputs(p: LIFParameters, seed: int, T=13, B=3, N=700):
    """Currents that make neurons spike now and then; N > 512 so two kernel chunks run."""
    g = torch.Generator().manual_seed(seed)
    scale = 2.0 * (1.0 - p.alpha) / p.gamma
    x = (torch.randn(T, B, N, generator=g, dtype=F64) * scale + 0.4 * scale).requires_grad_()
    v0 = (torch.rand(B, N, generator=g, dtype=F64) * 1.2).requires_grad_()  # some start above threshold
    i0 = torch.randn(B, N, generator=g, dtype=F64).requires_grad_()
    ws = [torch.randn(T, B, N, generator=g, dtype=F64) for _ in range(2)]
    ws += [torch.randn(B, N, generator=g, dtype=F64) for _ in range(2)]
    return x, v0, i0, ws


def _objective(tr, ws):
    return (tr.spikes * ws[0]).sum() + (tr.membrane * ws[1]).sum() + (tr.state.v * ws[2]).sum() + (
        tr.state.i * ws[3]).sum()


@pytest.mark.parametrize("case", CASES, ids=[f"c{k}" for k in range(len(CASES))])
def test_kernel_engine_equals_reference_values_and_gradients(case):
    p = _params(case)
    x, v0, i0, ws = _inputs(p, _seed(case))
    ref = lif_sequence_reference(x, p, LIFState(v0, i0))
    ker = lif_sequence_fused(x, p, LIFState(v0, i0))
    assert torch.equal(ref.spikes, ker.spikes)
    if p.spiking:
        assert 0.01 < ref.spikes.mean() < 0.7
    for a, b in zip((ref.membrane, ref.state.v, ref.state.i), (ker.membrane, ker.state.v, ker.state.i)):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    ga = torch.autograd.grad(_objective(ref, ws), [x, v0, i0])
    gb = torch.autograd.grad(_objective(ker, ws), [x, v0, i0])
    assert ga[0].abs().sum() > 0 and ga[1].abs().sum() > 0  # (i0 is unused by a delta synapse without delay)
    for u, v in zip(ga, gb):
        assert torch.allclose(u, v, rtol=1e-10, atol=1e-10 * u.abs().max().item())


@pytest.mark.parametrize("case", CASES[:8:2], ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("overwrite", [False, True])
def test_one_output_path_equals_reference_with_and_without_gradients(case, overwrite):
    p = _params(case)
    x, v0, i0, ws = _inputs(p, _seed(case, "one"))
    ref = lif_sequence_reference(x, p, LIFState(v0, i0))
    for output in ("spikes", "membrane"):
        want = ref.spikes if output == "spikes" else ref.membrane
        # with gradients: a single autograd node storing the pre-reset potential only
        xin = x.detach().clone().requires_grad_()
        cur = xin * 1.0  # a buffer the caller owns (overwrite=True may write into it)
        out, state = lif_fused_output(cur, p, LIFState(v0, i0), output=output, overwrite=overwrite)
        assert torch.allclose(out, want, rtol=0, atol=1e-12)
        obj = (out * ws[0]).sum() + (state.v * ws[2]).sum() + (state.i * ws[3]).sum()
        obj_ref = (want * ws[0]).sum() + (ref.state.v * ws[2]).sum() + (ref.state.i * ws[3]).sum()
        g_ref = torch.autograd.grad(obj_ref, [x, v0, i0], retain_graph=True)
        g = torch.autograd.grad(obj, [xin, v0, i0])
        for u, v in zip(g_ref, g):
            assert torch.allclose(u, v, rtol=1e-10, atol=1e-10 * u.abs().max().item())
        # without gradients: only the current state is kept; overwrite writes into the input buffer
        with torch.no_grad():
            cur = x.detach().clone()
            out, state = lif_fused_output(cur, p, LIFState(v0, i0), output=output, overwrite=overwrite)
        assert (out.data_ptr() == cur.data_ptr()) == overwrite
        assert torch.allclose(out, want, rtol=0, atol=1e-12)
        assert torch.allclose(state.v, ref.state.v, rtol=0, atol=1e-12)
        assert torch.allclose(state.i, ref.state.i, rtol=0, atol=1e-12)


def test_hand_derived_immediate_subtract_trace_on_the_kernel():
    # beta = 0.5 (Euler, tau_mem = 2 dt), unit gain, delta synapse, constant input 0.8, v_th = 1:
    # v = 0.8, 1.2 -> spike -> 0.2, 0.9, 1.25 -> spike -> 0.25
    p = LIFParameters(tau_mem=2e-3, dt=1e-3, tau_syn=None, integrator="euler", input_gain="unit")
    x = torch.full((4, 1, 1), 0.8, dtype=F64)
    tr = lif_sequence_fused(x, p)
    assert tr.spikes.flatten().tolist() == [0, 1, 0, 1]
    assert tr.membrane.flatten().tolist() == pytest.approx([0.8, 0.2, 0.9, 0.25], abs=1e-12)


def test_leaky_integrator_gradient_matches_finite_differences():
    # no threshold: the kernel's adjoint must be the exact gradient
    p = LIFParameters(spiking=False, current_delay=True, v_leak=0.1)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 2, 3, generator=g, dtype=F64, requires_grad=True)
    v0 = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)
    i0 = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)

    def f(x, v0, i0):
        tr = lif_sequence_fused(x, p, LIFState(v0, i0))
        return tr.membrane, tr.state.v, tr.state.i

    assert torch.autograd.gradcheck(f, (x, v0, i0))


@pytest.mark.parametrize("surrogate", SURROGATE_NAMES)
def test_kernel_surrogates_equal_torch_surrogates(surrogate):
    p = LIFParameters(surrogate=Surrogate(surrogate, 5.0), detach_reset=False)
    x, v0, i0, ws = _inputs(p, _seed(surrogate), N=40)
    ref = lif_sequence_reference(x, p, LIFState(v0, i0))
    ker = lif_sequence_fused(x, p, LIFState(v0, i0))
    for u, v in zip(torch.autograd.grad(_objective(ref, ws), [x]), torch.autograd.grad(_objective(ker, ws), [x])):
        assert torch.allclose(u, v, rtol=1e-10, atol=1e-10 * u.abs().max().item())


def test_float32_kernel_agrees_with_float64_reference():
    p = LIFParameters()
    x, v0, i0, ws = _inputs(p, 11)
    ref = lif_sequence_reference(x, p, LIFState(v0, i0))
    ker = lif_sequence_fused(x.float(), p, LIFState(v0.float(), i0.float()))
    assert ker.spikes.dtype == torch.float32
    assert (ker.spikes.double() != ref.spikes).float().mean() < 1e-3  # float32 rounding may flip a rare spike
    gx = torch.autograd.grad(_objective(ker, [w.float() for w in ws]), [x])[0]
    assert gx.dtype == F64 and torch.isfinite(gx).all()


# ------------------------------------------------------------------------------------ event path
EVENT_CASES = [c for c in CASES if c[5]][:6]


@pytest.mark.parametrize("case", EVENT_CASES, ids=[f"e{k}" for k in range(len(EVENT_CASES))])
@pytest.mark.parametrize("bias", [False, True])
def test_event_forward_equals_dense_then_reference(case, bias):
    p = _params(case)
    g = torch.Generator().manual_seed(_seed(case, bias))
    T, B, n_in, n_out = 9, 3, 50, 300  # 300 outputs: two full 128-wide tiles and a partial one
    x = (torch.rand(T, B, n_in, generator=g, dtype=F64) < 0.1).to(F64)
    w = torch.randn(n_out, n_in, generator=g, dtype=F64) * (2.0 * (1.0 - p.alpha) / p.gamma)
    b = torch.randn(n_out, generator=g, dtype=F64) * 0.3 if bias else None
    state = LIFState(torch.rand(B, n_out, generator=g, dtype=F64), torch.randn(B, n_out, generator=g, dtype=F64))
    ref = lif_sequence_reference(torch.nn.functional.linear(x, w, b), p, state)
    for output in ("spikes", "membrane"):
        out, st = lif_event_forward(x, w, b, p, state, output=output)
        want = ref.spikes if output == "spikes" else ref.membrane
        assert torch.allclose(out, want, rtol=0, atol=1e-12)
        assert torch.allclose(st.v, ref.state.v, rtol=0, atol=1e-12)
        assert torch.allclose(st.i, ref.state.i, rtol=0, atol=1e-12)
    assert 0.01 < ref.spikes.mean() < 0.7


def test_event_forward_refuses_non_binary_input():
    x = torch.zeros(2, 1, 4)
    x[1, 0, 2] = 0.5
    with pytest.raises(ValueError, match="binary spikes"):
        lif_event_forward(x, torch.ones(3, 4), None, LIFParameters())


@pytest.mark.parametrize("synapse", ["event", "auto"])
def test_layer_no_grad_event_path_equals_dense(synapse):
    torch.manual_seed(3)
    x = (torch.rand(20, 4, 64) < 0.04).float()
    dense, event = LIFLayer(64, 200, synapse="dense"), LIFLayer(64, 200, synapse=synapse)
    with torch.no_grad():
        dense.linear.weight.mul_(20.0)
        event.linear.weight.copy_(dense.linear.weight)
        a, b = dense(x), event(x)
    assert 0.005 < a.mean() < 0.5
    assert torch.equal(a, b)


def test_layer_outputs_equal_the_general_trace_path():
    torch.manual_seed(4)
    for p in (LIFParameters(), LIFParameters(spiking=False), LIFParameters(reset="zero", reset_timing="next_step")):
        layer = LIFLayer(30, 600, p).double()
        with torch.no_grad():
            layer.linear.weight.mul_(15.0)
        x = (torch.rand(7, 2, 30, dtype=F64) < 0.3).to(F64)
        tr = layer.forward_trace(x)
        want = tr.spikes if p.spiking else tr.membrane
        out = layer(x)  # grad path (weights require grad)
        assert torch.allclose(out, want, rtol=0, atol=1e-12)
        gw = torch.autograd.grad((out * want.detach().cos()).sum(), layer.linear.weight)[0]
        gw_ref = torch.autograd.grad((want * want.detach().cos()).sum(), layer.linear.weight)[0]
        assert torch.allclose(gw, gw_ref, rtol=1e-10, atol=1e-12)
        with torch.no_grad():
            assert torch.allclose(layer(x), want, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------ fallback
@pytest.mark.parametrize("case", CASES[::3], ids=lambda c: f"{c[0]}-{c[1]}-{c[5]}")
def test_torch_fallback_gives_the_kernel_results(case):
    p = _params(case)
    x, v0, i0, ws = _inputs(p, _seed(case, "fb"), N=30)
    saved = lif_kernel.kernel()
    assert saved is not None
    lif_kernel.reset_for_tests(None)  # as after a failed build
    try:
        fb = lif_sequence_fused(x, p, LIFState(v0, i0))
        g_fb = torch.autograd.grad(_objective(fb, ws), [x, v0, i0])
        out_fb, _ = lif_fused_output(x.detach().clone(), p, LIFState(v0, i0), output="spikes", overwrite=True)
        assert lif_event_forward((x.detach() > 0).to(F64), torch.ones(4, 30, dtype=F64), None, p) is None
    finally:
        lif_kernel.reset_for_tests(saved)
    ker = lif_sequence_fused(x, p, LIFState(v0, i0))
    g_ker = torch.autograd.grad(_objective(ker, ws), [x, v0, i0])
    assert torch.equal(fb.spikes, ker.spikes) and torch.equal(out_fb, ker.spikes)
    assert torch.allclose(fb.membrane, ker.membrane, rtol=0, atol=1e-12)
    for u, v in zip(g_fb, g_ker):
        assert torch.allclose(u, v, rtol=1e-10, atol=1e-10 * u.abs().max().item())


def test_a_failed_build_warns_once_and_the_layer_still_runs(monkeypatch):
    saved = lif_kernel.kernel()

    def broken():
        raise RuntimeError("Error building extension 'neurohil_lif': g++ not found")

    monkeypatch.setattr(lif_kernel, "_build", broken)
    lif_kernel.reset_for_tests(forget=True)
    try:
        with pytest.warns(RuntimeWarning, match="LIF kernel build failed .*g\\+\\+ not found.*pure-torch"):
            assert lif_kernel.kernel() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no second warning
            assert lif_kernel.kernel() is None
            layer = LIFLayer(5, 3)
            x = (torch.rand(4, 2, 5) < 0.5).float()
            out = layer(x)
            assert out.shape == (4, 2, 3)
            assert torch.equal(out, layer.forward_trace(x).spikes)
    finally:
        lif_kernel.reset_for_tests(saved)


def test_kernels_can_be_switched_off_by_environment(monkeypatch):
    saved = lif_kernel.kernel()
    monkeypatch.setenv("NEUROHIL_LIF_KERNEL", "0")
    lif_kernel.reset_for_tests(forget=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert lif_kernel.kernel() is None
    finally:
        lif_kernel.reset_for_tests(saved)


def test_parameter_grid_is_covered():
    # every (reset, timing, spiking) combination the kernel templates on appears in CASES
    seen = {(c[0], c[1], c[5]) for c in CASES}
    for reset, timing in itertools.product(("subtract", "zero"), ("immediate", "next_step")):
        assert (reset, timing, True) in seen
    assert any(not c[5] for c in CASES)


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path):
    """A build killed mid-way leaves torch's lock file; every later load would wait on it for ever."""
    import os
    import time

    lock = tmp_path / "lock"
    lock.touch()
    assert not lif_kernel.clear_stale_lock(tmp_path) and lock.exists()  # a build may be running
    old = time.time() - lif_kernel.STALE_LOCK_S - 5
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match="stale LIF kernel build lock"):
        assert lif_kernel.clear_stale_lock(tmp_path)
    assert not lock.exists() and not lif_kernel.clear_stale_lock(tmp_path)
