"""The fixed-point twin of Loihi 2 (simulators/loihi.py): hand-derived values from Lava's fixed_pt equations."""

from __future__ import annotations

import pytest
import torch

from simulators import loihi as fx


def _step(u, v, a_in, *, du=0, dv=0, vth=100_000, bias=0):
    t = lambda val: torch.tensor([[val]], dtype=torch.int64)  # noqa: E731
    s, st = fx.lif_fixed_step(t(a_in), fx.LoihiLIFState(t(u), t(v)), du, dv, vth, t(bias))
    return bool(s), int(st.u), int(st.v)


def test_decay_truncates_toward_zero_then_adds_shifted_input_and_bias():
    # u: -1000 * 4095 / 4096 = -999.76 -> -999 (toward zero, not -1000); + (3 << 6) = -807
    # v: 5000 * 3996 / 4096 = 4877.9 -> 4877; + u + bias (5 << 2 = 20) = 4090
    bias = int(fx.LoihiLayerParams(torch.zeros(1, 1), 0, 0, 0, 0, torch.tensor(5), torch.tensor(2)).effective_bias())
    assert bias == 20
    assert _step(-1000, 5000, 3, du=0, dv=100, vth=64, bias=bias) == (False, -807, 4090)  # 4090 <= 64 << 6 = 4096
    assert _step(-1000, 5000, 3, du=0, dv=100, vth=63, bias=bias) == (True, -807, 0)  # 4090 > 4032: spike, v = 0
    # du = 4095 (+ Lava's ds_offset 1) keeps nothing of the old current: a delta synapse
    assert _step(123456, 0, 2, du=4095) == (False, 128, 128)
    # dv = 0 keeps the voltage exactly; the threshold comparison is strict
    assert _step(0, 6400, 0, dv=0, vth=100) == (False, 0, 6400)
    assert _step(0, 6401, 0, dv=0, vth=100) == (True, 0, 0)


def test_current_wraps_at_24_bits_exactly_as_lava_compares():
    big = 1 << 17  # (2^17) << 6 = 2^23
    assert _step(0, 0, big, du=4095)[1] == 1 << 23  # +2^23 itself is kept (Lava tests "> 2^23")
    assert _step(0, 0, big + 1, du=4095)[1] == (1 << 23) + 64 - (1 << 24)  # wraps to -2^23 + 64
    assert _step(0, 0, -big, du=4095)[1] == 1 << 23  # -2^23 is "<= -2^23": +2^24
    assert _step(0, 0, -big - 1, du=4095)[1] == -(1 << 23) - 64 + (1 << 24)


def test_voltage_saturates_at_24_bits():
    top = (1 << 23) - 1
    # u = 2^23 - 64 (no wrap), v = 2^23 - 1 kept (dv=0): saturates to 2^23 - 1 and spikes above the largest threshold
    assert _step(0, top, (1 << 17) - 1, du=4095, vth=fx.VTH_MAX) == (True, (1 << 23) - 64, 0)
    assert _step(0, -top, -((1 << 17) - 1), du=4095) == (False, -(1 << 23) + 64, -top)


def test_dense_clips_drops_the_mixed_sign_lsb_then_shifts_the_sum():
    w = torch.tensor([[3, -3, 255, -256, 300]])
    ones = torch.ones(1, 5)
    # clip to [-256, 255]: 300 -> 255; (w >> 1) << 1: 3 -> 2, -3 -> -4 (floor), 255 -> 254, -256 -> -256
    assert int(fx.dense_fixed(ones, w, 0)) == 2 - 4 + 254 - 256 + 254
    two = torch.tensor([[2, 2, 2]])
    assert int(fx.dense_fixed(torch.ones(1, 3), two, -2)) == 1  # (2+2+2) >> 2: shift the sum, not each weight
    assert int(fx.dense_fixed(torch.ones(1, 1), torch.tensor([[-3]]), -2)) == -1  # -4 >> 2, arithmetic
    assert int(fx.dense_fixed(torch.ones(1, 1), torch.tensor([[-3]]), 3)) == -32
    assert int(fx.dense_fixed(torch.tensor([[1.0, 0.0]]), torch.tensor([[10, 100]]), 0)) == 10


def _layer(w, **kw):
    base = dict(
        weight_exp=0, du=0, dv=0, vth=10, bias_mant=torch.zeros(w.shape[0], dtype=torch.int64), bias_exp=torch.tensor(0)
    )
    base.update(kw)
    return fx.LoihiLayerParams(w, **base)


@pytest.mark.parametrize(
    "kw, fragment",
    [
        (dict(w=torch.tensor([[300, 0]])), "outside [-256, 254]"),
        (dict(w=torch.tensor([[3, 0]])), "odd weights"),
        (dict(w=torch.tensor([[2, 0]]), vth=1 << 17), "vth = 131072"),
        (dict(w=torch.tensor([[2, 0]]), du=4096), "du = 4096"),
        (dict(w=torch.tensor([[2, 0]]), weight_exp=9), "weight_exp 9"),
        (dict(w=torch.tensor([[2, 0]]), bias_mant=torch.tensor([5000])), "13 bits"),
    ],
)
def test_problems_name_what_loihi_cannot_hold(kw, fragment):
    w = kw.pop("w")
    problems = _layer(w, **kw).problems()
    assert len(problems) == 1 and fragment in problems[0], problems


def _random_layers(g, sizes, bias):
    out = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        out.append(
            fx.LoihiLayerParams(
                weights=2 * torch.randint(-128, 128, (b, a), generator=g),
                weight_exp=int(torch.randint(-2, 3, (1,), generator=g)),
                du=int(torch.randint(0, 4096, (1,), generator=g)),
                dv=int(torch.randint(0, 800, (1,), generator=g)),
                vth=int(torch.randint(50, 2000, (1,), generator=g)),
                bias_mant=torch.randint(-4096, 4096, (b,), generator=g) if bias else torch.zeros(b, dtype=torch.int64),
                bias_exp=torch.tensor(2 if bias else 0),
            )
        )
    return out


def test_local_time_batch_equals_the_pipelined_run_with_periodic_resets():
    """The batching identity the Lava runner relies on, checked on the twin alone."""
    g = torch.Generator().manual_seed(3)
    layers = _random_layers(g, [10, 8, 6, 4], bias=True)
    T, B = 7, 5
    x = torch.rand(T, B, 10, generator=g) < 0.4
    local = fx.run_network(x, layers)
    steps = B * T + len(layers) + 1
    flat = torch.zeros(steps, 1, 10, dtype=torch.bool)
    flat[: B * T, 0] = x.permute(1, 0, 2).reshape(B * T, 10)
    piped = fx.run_network(flat, layers, pipelined=True, reset="periodic", reset_interval=T)
    assert sum(int(s.sum()) for s in local.spikes) > 20  # the network is active
    for k in range(len(layers)):
        for b in range(B):
            sl = fx.local_to_pipelined_steps(k, b, T)
            assert torch.equal(piped.spikes[k][sl, 0], local.spikes[k][:, b])
            assert torch.equal(piped.voltages[k][sl, 0], local.voltages[k][:, b])
            assert torch.equal(piped.currents[k][sl, 0], local.currents[k][:, b])


def test_pipelined_run_delays_each_layer_by_one_step():
    w = torch.tensor([[254]])
    layers = [_layer(w, vth=0, du=4095, dv=4095), _layer(w, vth=0, du=4095, dv=4095)]
    x = torch.zeros(6, 1, 1, dtype=torch.bool)
    x[0] = True
    piped = fx.run_network(x, layers, pipelined=True)
    assert piped.spikes[0][:, 0, 0].tolist() == [False, True, False, False, False, False]
    assert piped.spikes[1][:, 0, 0].tolist() == [False, False, True, False, False, False]
    local = fx.run_network(x, layers)
    assert local.spikes[1][:, 0, 0].tolist() == [True, False, False, False, False, False]
