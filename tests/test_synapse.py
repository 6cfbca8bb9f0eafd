"""Event-driven synaptic input: same values and gradients as the dense matmul; automatic choice."""

from __future__ import annotations

import pytest
import torch

from neuro.layers.lif import LIFLayer
from simulators import synapse
from simulators.synapse import choose_path, event_linear, synaptic_input

F64 = torch.float64


@pytest.mark.parametrize("activity", [0.0, 0.03, 0.3, 1.0])
@pytest.mark.parametrize("bias", [False, True])
def test_event_path_equals_dense_values_and_gradients(activity, bias):
    g = torch.Generator().manual_seed(int(activity * 100) + bias)
    x = (torch.rand(6, 4, 11, generator=g, dtype=F64) < activity).to(F64).requires_grad_()
    w = torch.randn(7, 11, generator=g, dtype=F64, requires_grad=True)
    b = torch.randn(7, generator=g, dtype=F64, requires_grad=True) if bias else None
    dense = torch.nn.functional.linear(x, w, b)
    event = event_linear(x, w, b)
    assert torch.allclose(dense, event, rtol=0, atol=1e-13)
    up = torch.randn(dense.shape, generator=g, dtype=F64)
    leaves = [x, w] + ([b] if bias else [])
    gd = torch.autograd.grad((dense * up).sum(), leaves)
    ge = torch.autograd.grad((event * up).sum(), leaves)
    for u, v in zip(gd, ge):
        assert torch.allclose(u, v, rtol=0, atol=1e-12)
    # the weight gradient is a sum over the events: check one entry by hand
    r = x.detach().reshape(-1, 11)[:, 3] == 1
    assert ge[1][5, 3].item() == pytest.approx(up.reshape(-1, 7)[r, 5].sum().item(), abs=1e-12)


def test_a_two_layer_network_has_identical_gradients_on_both_paths():
    torch.manual_seed(0)
    x = (torch.rand(10, 3, 20, dtype=F64) < 0.05).to(F64)
    grads = {}
    for path in ("dense", "event"):
        torch.manual_seed(1)
        l1 = LIFLayer(20, 15, synapse=path).double()
        l2 = LIFLayer(15, 4, synapse=path).double()
        with torch.no_grad():
            l1.linear.weight.mul_(12.0)
            l2.linear.weight.mul_(8.0)
        h = l1(x)
        assert 0 < h.mean() < synapse.EVENT_MAX_ACTIVITY  # hidden spikes are sparse too: event path in layer 2
        out = l2.forward_trace(h)
        loss = (out.membrane ** 2).sum() + out.spikes.sum()
        loss.backward()
        grads[path] = (l1.linear.weight.grad, l2.linear.weight.grad, h)
    for u, v in zip(grads["dense"], grads["event"]):
        assert torch.allclose(u, v, rtol=0, atol=1e-10)
    assert grads["event"][0].abs().sum() > 0


def test_auto_path_follows_measured_activity_and_binarity():
    n = 1000
    x = torch.zeros(n)
    x[: int(0.05 * n)] = 1.0
    assert choose_path(x) == "event"
    x[: int(0.5 * n)] = 1.0
    assert choose_path(x) == "dense"  # too active
    y = torch.zeros(n)
    y[:10] = 0.5
    assert choose_path(y) == "dense"  # sparse but not spikes
    with pytest.raises(ValueError, match="needs binary spikes"):
        synaptic_input(y.reshape(1, 1, n), torch.zeros(2, n), path="event")
    with pytest.raises(ValueError, match="synapse path must be one of"):
        choose_path(y, "sparse")


def test_auto_uses_the_event_path_only_when_no_gradient_is_needed(monkeypatch):
    calls = []
    monkeypatch.setattr(synapse, "event_linear", lambda *a: calls.append(1) or torch.nn.functional.linear(*a))
    x = torch.zeros(4, 2, 50)
    x[0, 0, :2] = 1.0
    w = torch.randn(3, 50, requires_grad=True)
    synaptic_input(x, w)
    assert calls == []  # training: dense
    with torch.no_grad():
        synaptic_input(x, w)
    assert calls == [1]  # inference at 1% activity: event
