"""SLTT equals BPTT's spatial term (states detached between steps) exactly, and differs from full BPTT."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from simulators.lif import LIFParameters, LIFState, lif_sequence_reference, lif_step
from simulators.sltt import SLTTLayer, sltt_backward

F64 = torch.float64


def _net(p, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(16, 5, 12, generator=g) < 0.3).to(F64)
    y = torch.randint(0, 4, (5,), generator=g)
    w1 = (torch.randn(10, 12, generator=g, dtype=F64) * 1.5 / p.gamma ** 0.5).requires_grad_()
    b1 = (torch.randn(10, generator=g, dtype=F64) * 0.1).requires_grad_()
    w2 = (torch.randn(4, 10, generator=g, dtype=F64) * 1.5 / p.gamma ** 0.5 + 0.3).requires_grad_()
    return x, y, [(w1, b1), (w2, None)]


def _loss(spikes, membrane, y):
    return F.cross_entropy(spikes.sum(0), y) + 0.05 * (membrane ** 2).mean()


def _bptt(x, y, weights, p, *, detach_states):
    """One graph over all steps (plain autograd); optionally cut the state between steps."""
    states = [None, None]
    zs, vs = [], []
    for x_t in x.unbind(0):
        h = x_t
        for k, (w, b) in enumerate(weights):
            cur = F.linear(h, w, b)
            s = states[k] or LIFState(torch.full_like(cur, p.v_leak), torch.zeros_like(cur))
            if detach_states:
                s = LIFState(s.v.detach(), s.i.detach())
            h, states[k] = lif_step(cur, s, p)
        zs.append(h)
        vs.append(states[1].v)
    loss = _loss(torch.stack(zs), torch.stack(vs), y)
    params = [q for pair in weights for q in pair if q is not None]
    return loss, torch.autograd.grad(loss, params)


@pytest.mark.parametrize("reset, timing", [("subtract", "immediate"), ("zero", "immediate"), ("subtract", "next_step")])
@pytest.mark.parametrize("tau_syn", [5e-3, None])
def test_sltt_equals_the_spatial_term_of_bptt(reset, timing, tau_syn):
    p = LIFParameters(reset=reset, reset_timing=timing, tau_syn=tau_syn, v_leak=0.05)
    x, y, weights = _net(p, seed=7)
    loss_ref, g_spatial = _bptt(x, y, weights, p, detach_states=True)
    _, g_full = _bptt(x, y, weights, p, detach_states=False)
    layers = [SLTTLayer(w, b, p) for w, b in weights]
    loss, spikes, _ = sltt_backward(layers, lambda: x.unbind(0), lambda z, v: _loss(z, v, y))
    assert 0 < spikes.mean() < 1
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-14)
    params = [q for pair in weights for q in pair if q is not None]
    for q, g_s, g_f in zip(params, g_spatial, g_full):
        assert g_s.abs().sum() > 0
        assert torch.allclose(q.grad, g_s, rtol=1e-12, atol=1e-14)
        # the temporal term is real: full BPTT differs
        assert not torch.allclose(q.grad, g_f, rtol=1e-3)


def test_sltt_forward_values_are_the_simulation():
    p = LIFParameters()
    x, y, weights = _net(p, seed=1)
    layers = [SLTTLayer(w, b, p) for w, b in weights]
    _, spikes, membrane = sltt_backward(layers, lambda: x.unbind(0), lambda z, v: z.sum())
    h = lif_sequence_reference(F.linear(x, *weights[0]), p).spikes
    out = lif_sequence_reference(F.linear(h, weights[1][0]), p)
    assert torch.equal(spikes, out.spikes.detach()) and torch.allclose(membrane, out.membrane.detach(), atol=1e-13)


def test_sltt_refuses_delayed_current():
    p = LIFParameters(current_delay=True)
    with pytest.raises(ValueError, match="current_delay=False"):
        sltt_backward([SLTTLayer(torch.zeros(2, 3), None, p)], lambda: [torch.zeros(1, 3)], lambda z, v: z.sum())
