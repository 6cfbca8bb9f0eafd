"""Wave substrates: hand-derived responses, noise statistics, drift as a function of device time,
explicit state, the Substrate protocol and its errors."""

from __future__ import annotations

import math

import pytest
import torch

from neuro.errors import ConfigError
from neuro.substrates import open_substrate
from simulators.errors import SubstrateFault
from simulators.substrate import Substrate
from simulators.wave import WaveOptions, WaveSubstrate, oscillator_step, transfer


def test_scattering_intensity_hand_derived():
    opt = WaveOptions(kind="scattering", n_in=2, n_out=2, n_control=0)
    # A = [[1, i], [1 + i, 0]], b = [0.5, 0]; e = [0.5, -1]
    hidden = {
        "A_re": torch.tensor([[1.0, 0.0], [1.0, 0.0]]),
        "A_im": torch.tensor([[0.0, 1.0], [1.0, 0.0]]),
        "b_re": torch.tensor([0.5, 0.0]),
        "b_im": torch.zeros(2),
    }
    y = transfer(torch.tensor([[0.5, -1.0]]), hidden, opt)
    # row 0: 0.5 - i + 0.5 = 1 - i -> |.|^2 = 2;  row 1: (1 + i) 0.5 -> 0.5
    assert torch.allclose(y, torch.tensor([[2.0, 0.5]]))
    # phase modulation: e = [0.5, -1] -> E = [i, -1]; row 0: i - i + 0.5 -> 0.25; row 1: (1+i) i = -1 + i -> 2
    y = transfer(
        torch.tensor([[0.5, -1.0]]),
        hidden,
        WaveOptions(kind="scattering", n_in=2, n_out=2, n_control=0, modulation="phase"),
    )
    assert torch.allclose(y, torch.tensor([[0.25, 2.0]]), atol=1e-6)


def test_saturable_medium_hand_derived():
    opt = WaveOptions(kind="saturable", n_in=1, n_out=1, n_control=0, saturation=2.0, kerr=math.pi / 4)
    hidden = {
        "A_re": torch.tensor([[1.0]]),
        "A_im": torch.zeros(1, 1),
        "B_re": torch.tensor([[1.0]]),
        "B_im": torch.tensor([[1.0]]),
    }
    # u = 1 (I = 1): v = exp(i pi/4)/sqrt(1.5); y = |(1+i) v|^2 = 2/1.5
    y = transfer(torch.tensor([[1.0]]), hidden, opt)
    assert torch.allclose(y, torch.tensor([[2.0 / 1.5]]))


def test_oscillator_step_hand_derived():
    opt = WaveOptions(
        kind="oscillators", n_in=1, n_out=3, n_control=0, osc_dt=0.1, damping=0.5, duffing=2.0, coupling=0.3
    )
    q = torch.tensor([[1.0, 0.0, -0.5]])
    p = torch.tensor([[0.0, 1.0, 0.0]])
    w = torch.tensor([1.0, 2.0, 1.0])
    f = torch.tensor([[0.1, 0.0, 0.0]])
    q2, p2 = oscillator_step(q, p, f, w, opt)
    # acc_0 = -1 - 0 - 2 + 0.3 (0 - 2 + 0) + 0.1 = -3.5 ; acc_1 = 0 - 0.5 - 0 + 0.3 (1 + 0 - 0.5) = -0.35
    # acc_2 = 0.5 - 0 + 0.25 + 0.3 (0 + 1 + 0) = 1.05
    assert torch.allclose(p2, torch.tensor([[-0.35, 0.965, 0.105]]))
    assert torch.allclose(q2, q + 0.1 * p2)


@pytest.mark.parametrize("kind", ["scattering", "saturable", "oscillators"])
def test_protocol_and_exact_gradient(kind):
    sub = open_substrate(f"wave:{kind}", 3, 5, seed=2, options={"n_control": 2, "osc_steps": 12, "noise": 0.0})
    assert isinstance(sub, Substrate)
    x = (torch.rand(4, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1).double().requires_grad_()
    c = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: sub.exact_forward(a, {"control": b}), (x, c))
    sub.set_params({"control": c.detach().float()})
    measured = sub.forward(x.detach().float())
    assert torch.allclose(measured.double(), sub.exact_forward(x.detach(), {"control": c.detach()}), atol=1e-5)
    # hidden parameters are not readable through the protocol
    assert set(sub.get_params()) == {"control"}
    assert "A_re" not in str(sub.describe()) and "hidden" not in sub.describe()


def test_measurement_noise_statistics():
    sub = open_substrate("wave:scattering", 6, 50, seed=0, options={"noise": 0.05, "n_control": 0})
    x = torch.rand(1, 6, generator=torch.Generator().manual_seed(1)) * 2 - 1
    exact = sub.exact_forward(x).detach()
    ys = torch.cat([sub.forward(x) for _ in range(400)])
    rel = ys / exact - 1
    assert abs(float(rel.mean())) < 4 * 0.05 / math.sqrt(rel.numel())
    assert float(rel.std()) == pytest.approx(0.05, rel=0.03)


def test_drift_depends_only_on_device_time():
    opts = {"drift": 0.02, "drift_tick": 10, "noise": 0.0, "n_control": 1}
    a = open_substrate("wave:scattering", 3, 4, seed=5, options=opts)
    b = open_substrate("wave:scattering", 3, 4, seed=5, options=opts)
    x = torch.zeros(1, 3) + 0.5
    y0 = a.exact_forward(x).detach()
    a.forward(torch.zeros(37, 3))  # clock 37: 3 drift steps
    for _ in range(5):
        b.forward(torch.zeros(7, 3))  # clock 35: 3 drift steps
    b.advance_time(2)
    assert a.clock == b.clock == 37
    assert torch.equal(a.exact_forward(x), b.exact_forward(x))
    assert not torch.allclose(a.exact_forward(x), y0)
    still = open_substrate("wave:scattering", 3, 4, seed=5, options={**opts, "drift": 0.0})
    still.forward(torch.zeros(100, 3))
    assert torch.equal(still.exact_forward(x), y0)


def test_sudden_perturbation_at_device_time():
    sub = open_substrate(
        "wave:saturable", 3, 4, seed=1, options={"perturb_at": [20], "perturb_scale": 0.5, "noise": 0.0}
    )
    x = torch.full((1, 3), 0.3)
    before = sub.exact_forward(x).detach()
    sub.forward(torch.zeros(19, 3))
    assert torch.equal(sub.exact_forward(x), before)
    sub.forward(torch.zeros(1, 3))
    assert (sub.exact_forward(x) - before).abs().max() > 0.01


def test_state_dict_continues_identically():
    opts = {"drift": 0.05, "drift_tick": 3, "noise": 0.1}
    a = open_substrate("wave:oscillators", 2, 3, seed=3, options={**opts, "osc_steps": 8})
    x = torch.rand(5, 2) * 2 - 1
    a.forward(x)
    state = a.state_dict()
    after = [a.forward(x) for _ in range(3)]
    b = open_substrate("wave:oscillators", 2, 3, seed=3, options={**opts, "osc_steps": 8})
    b.load_state_dict(state)
    assert all(torch.equal(u, b.forward(x)) for u in after)


def test_bad_inputs_are_one_line_errors():
    sub = open_substrate("wave:scattering", 3, 4)
    with pytest.raises(SubstrateFault, match=r"inputs must lie in \[-1.0, 1.0\]"):
        sub.forward(torch.full((2, 3), 1.5))
    with pytest.raises(SubstrateFault, match=r"expects inputs \[batch, 3\]"):
        sub.forward(torch.zeros(2, 4))
    with pytest.raises(SubstrateFault, match="no hardware parameter 'gain'"):
        sub.set_params({"gain": torch.zeros(1)})
    with pytest.raises(SubstrateFault, match="control needs 8 values"):
        sub.set_params({"control": torch.zeros(3)})
    with pytest.raises(ConfigError, match="did you mean 'wave:scattering'"):
        open_substrate("wave:scatering", 3, 4)
    with pytest.raises(ConfigError, match="did you mean 'noise'"):
        open_substrate("wave:scattering", 3, 4, options={"nosie": 0.1})
    with pytest.raises(ConfigError, match="modulation 'frequency' is not valid for scattering"):
        open_substrate("wave:scattering", 3, 4, options={"modulation": "frequency"})


def test_grad_touch_is_recorded():
    sub = WaveSubstrate(WaveOptions(n_in=2, n_out=2))
    sub.forward(torch.zeros(1, 2))
    assert sub.grad_touches == 0
    sub.forward(torch.zeros(1, 2, requires_grad=True))
    assert sub.grad_touches == 1 and sub.n_evals == 2


def test_shared_input_and_control_checks_refuse_in_one_line_and_write_nothing():
    """simulators.substrate.check_batch / checked_control, used by the wave, measured and photonic substrates."""
    from simulators.substrate import RANGE_TOLERANCE, check_batch, checked_control

    sub = open_substrate("wave:scattering", 3, 4)
    before = sub.get_params()["control"].clone()
    with pytest.raises(SubstrateFault, match=r"^wave:scattering control values must lie in \[-1.0, 1.0\]$"):
        sub.set_params({"control": torch.full((8,), 1.0 + 10 * RANGE_TOLERANCE)})
    with pytest.raises(SubstrateFault, match="no hardware parameter 'gain'"):  # a valid control beside a bad name
        sub.set_params({"control": torch.full((8,), 0.5), "gain": torch.zeros(1)})
    assert torch.equal(sub.get_params()["control"], before)  # nothing written by either refused call
    sub.set_params({"control": torch.full((8,), 1.0 + 0.5 * RANGE_TOLERANCE)})  # rounding inside the tolerance
    assert float(sub.get_params()["control"].max()) == pytest.approx(1.0, abs=RANGE_TOLERANCE)
    assert checked_control("k", {}, 8, (-1.0, 1.0)) is None
    with pytest.raises(SubstrateFault, match=r"^k expects inputs \[batch, 2\], got list$"):
        check_batch("k", [[0.0, 0.0]], 2, (0.0, 1.0))
    photonic = open_substrate("photonic:clements", 4, 4)
    lo, hi = photonic.input_range
    with pytest.raises(SubstrateFault, match=r"inputs must lie in .*encode them into the device range first"):
        photonic.forward(torch.full((1, 4), hi + 1.0))
