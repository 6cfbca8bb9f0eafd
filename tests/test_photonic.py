"""Photonic MZI meshes, SVD layers and their non-idealities (simulators/photonic.py).

References of our own: Haar-random unitaries from ``scipy.stats.unitary_group``; the MZI as the
literal product of coupler and phase-shifter matrices; a slow loop-over-MZIs reconstruction that
embeds each 2x2 in an N x N identity and multiplies (numpy, complex128); closed-form predictions
for each non-ideality; finite differences for gradients.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from scipy.stats import unitary_group

from simulators import photonic as ph
from simulators.errors import SettingError, SubstrateFault
from simulators.substrate import open_substrate_spec, substrate_names
from tests.conftest import REPO_ROOT

KINDS = ("clements", "reck")


# ------------------------------------------------------------------ independent references
def coupler(alpha: float = 0.0) -> np.ndarray:
    a = math.pi / 4 + alpha
    return np.array([[math.cos(a), 1j * math.sin(a)], [1j * math.sin(a), math.cos(a)]])


def mzi_ref(theta: float, phi: float, a1: float = 0.0, a2: float = 0.0, amp: float = 1.0) -> np.ndarray:
    """Coupler, internal phase on the upper arm, coupler, after the external phase on the upper input."""
    return amp * coupler(a2) @ np.diag([np.exp(1j * theta), 1]) @ coupler(a1) @ np.diag([np.exp(1j * phi), 1])


def slow_mesh(n, modes, theta, phi, out, a1=None, a2=None, amp=None) -> np.ndarray:
    """Loop over MZIs: U = diag(e^{i out}) T_K ... T_1, each T embedded in the identity."""
    u = np.eye(n, dtype=complex)
    for i, m in enumerate(modes):
        t = np.eye(n, dtype=complex)
        t[m : m + 2, m : m + 2] = mzi_ref(
            theta[i], phi[i], 0.0 if a1 is None else a1[i], 0.0 if a2 is None else a2[i], 1.0 if amp is None else amp[i]
        )
        u = t @ u
    return np.diag(np.exp(1j * np.asarray(out))) @ u


def haar(n: int, seed: int) -> np.ndarray:
    return unitary_group.rvs(n, random_state=seed)


def random_phases(spec, seed: int):
    g = torch.Generator().manual_seed(seed)
    k = spec.n_mzi
    return (
        2 * math.pi * torch.rand(k, generator=g, dtype=torch.float64),
        2 * math.pi * torch.rand(k, generator=g, dtype=torch.float64),
        2 * math.pi * torch.rand(spec.n, generator=g, dtype=torch.float64),
    )


def substrate(kind="clements", n_in=4, n_out=4, seed=0, **options) -> ph.PhotonicSubstrate:
    return open_substrate_spec(f"photonic:{kind}", n_in, n_out, seed=seed, options=options)


# ------------------------------------------------------------------ layout and the MZI
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16])
def test_layouts_have_n_choose_2_mzis_in_disjoint_columns(kind, n):
    spec = ph.mesh_spec(n, kind)
    assert spec.n_mzi == n * (n - 1) // 2
    assert spec.n_cols == (0 if n == 1 else 1 if n == 2 else (n if kind == "clements" else 2 * n - 3))
    for c in range(spec.n_cols):
        tops = spec.modes[spec.cols == c].tolist()
        touched = [m for t in tops for m in (t, t + 1)]
        assert len(touched) == len(set(touched)) and max(touched) <= n - 1  # MZIs of one column are disjoint
        if kind == "clements" and n > 2:
            assert tops == list(range(c % 2, n - 1, 2))
    keys = list(zip(spec.cols.tolist(), spec.modes.tolist()))
    assert keys == sorted(keys)


def test_mzi_matrix_is_the_product_of_couplers_and_phase_shifters():
    g = np.random.default_rng(0)
    for _ in range(20):
        theta, phi, a1, a2 = g.uniform(-7, 7), g.uniform(-7, 7), g.normal(0, 0.1), g.normal(0, 0.1)
        ideal = ph.mzi_matrix(torch.tensor(theta, dtype=torch.float64), torch.tensor(phi, dtype=torch.float64)).numpy()
        assert np.abs(ideal - mzi_ref(theta, phi)).max() < 1e-14
        closed = (
            1j
            * np.exp(1j * theta / 2)
            * np.array(
                [
                    [np.exp(1j * phi) * np.sin(theta / 2), np.cos(theta / 2)],
                    [np.exp(1j * phi) * np.cos(theta / 2), -np.sin(theta / 2)],
                ]
            )
        )
        assert np.abs(ideal - closed).max() < 1e-14  # the documented closed form

        def t(v):
            return torch.tensor(v, dtype=torch.float64)

        err = ph.mzi_matrix(t(theta), t(phi), t(a1), t(a2), t(0.9)).numpy()
        assert np.abs(err - mzi_ref(theta, phi, a1, a2, 0.9)).max() < 1e-14
    zero = torch.tensor(0.0, dtype=torch.float64)
    bar = ph.mzi_matrix(zero + math.pi, zero).numpy()
    cross = ph.mzi_matrix(zero, zero).numpy()
    assert abs(bar[1, 0]) < 1e-15 and abs(abs(bar[0, 0]) - 1) < 1e-15  # theta = pi: bar
    assert abs(cross[0, 0]) < 1e-15 and abs(abs(cross[1, 0]) - 1) < 1e-15  # theta = 0: cross


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [2, 5, 16, 64])
def test_lossless_mesh_is_unitary_and_matches_the_slow_reference(kind, n):
    spec = ph.mesh_spec(n, kind)
    theta, phi, out = random_phases(spec, n)
    u = ph.mesh_matrix(spec, theta, phi, out).numpy()
    assert np.abs(u.conj().T @ u - np.eye(n)).max() < 1e-10
    ref = slow_mesh(n, spec.modes.tolist(), theta.numpy(), phi.numpy(), out.numpy())
    assert np.abs(u - ref).max() < 1e-10


def test_per_sample_phases_and_errors_match_the_slow_reference():
    spec = ph.mesh_spec(6, "clements")
    g = torch.Generator().manual_seed(3)
    batch = 5
    theta = 6 * torch.rand(batch, spec.n_mzi, generator=g, dtype=torch.float64)
    phi = 6 * torch.rand(batch, spec.n_mzi, generator=g, dtype=torch.float64)
    out = 6 * torch.rand(batch, spec.n, generator=g, dtype=torch.float64)
    a1, a2 = (0.1 * torch.randn(spec.n_mzi, generator=g, dtype=torch.float64) for _ in range(2))
    amp = 0.8 + 0.2 * torch.rand(spec.n_mzi, generator=g, dtype=torch.float64)
    x = torch.randn(batch, 6, dtype=torch.complex128, generator=g)
    y = ph.mesh_field(x, spec, theta, phi, out, alpha1=a1, alpha2=a2, amp=amp).numpy()
    for b in range(batch):
        ref = slow_mesh(
            6,
            spec.modes.tolist(),
            theta[b].numpy(),
            phi[b].numpy(),
            out[b].numpy(),
            a1.numpy(),
            a2.numpy(),
            amp.numpy(),
        )
        assert np.abs(y[b] - ref @ x[b].numpy()).max() < 1e-12


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,block", [(1, 16), (2, 1), (3, 2), (5, 2), (9, 4), (17, 16), (33, 4), (40, 16)])
def test_blocked_unitary_equals_the_slow_reference_with_errors(kind, n, block):
    """mesh_unitary (banded groups, block-tridiagonal tree product) against the loop-over-MZIs product, with
    coupler errors and per-MZI loss (so not unitary), odd sizes and blocks that do not divide n or n_cols."""
    spec = ph.mesh_spec(n, kind)
    theta, phi, out = random_phases(spec, 7 + n)
    g = torch.Generator().manual_seed(n)
    a1, a2 = (0.1 * torch.randn(spec.n_mzi, generator=g, dtype=torch.float64) for _ in range(2))
    amp = 0.8 + 0.2 * torch.rand(spec.n_mzi, generator=g, dtype=torch.float64)
    u = ph.mesh_unitary(spec, theta, phi, out, alpha1=a1, alpha2=a2, amp=amp, block=block).numpy()
    errors = (a1.numpy(), a2.numpy(), amp.numpy())
    ref = slow_mesh(n, spec.modes.tolist(), theta.numpy(), phi.numpy(), out.numpy(), *errors)
    assert np.abs(u - ref).max() < 1e-12
    x = torch.randn(4, n, dtype=torch.complex128, generator=g)
    y = ph.mesh_field(x, spec, theta, phi, out, alpha1=a1, alpha2=a2, amp=amp, method="unitary").numpy()
    assert np.abs(y - x.numpy() @ ref.T).max() < 1e-12


def test_blocked_unitary_gradients_match_finite_differences():
    spec = ph.mesh_spec(7, "clements")
    theta, phi, out = (v.requires_grad_() for v in random_phases(spec, 4))

    def f(t, p, o):
        u = ph.mesh_unitary(spec, t, p, o, block=2)  # 4 groups of 2 columns: two tree levels
        return torch.cat([u.real, u.imag], -1)

    assert torch.autograd.gradcheck(f, (theta, phi, out), eps=1e-6, atol=1e-7)


def test_mesh_field_methods_agree_and_per_sample_phases_refuse_the_unitary_path():
    spec = ph.mesh_spec(12, "reck")
    theta, phi, out = random_phases(spec, 5)
    x = torch.randn(6, 12, dtype=torch.complex128, generator=torch.Generator().manual_seed(5))
    cols = ph.mesh_field(x, spec, theta, phi, out, method="columns")
    for method in ("auto", "unitary"):
        assert (ph.mesh_field(x, spec, theta, phi, out, method=method) - cols).abs().max() < 1e-12
    with pytest.raises(SettingError, match="per-sample phases"):
        ph.mesh_field(x, spec, theta.expand(6, -1), phi, out, method="unitary")
    with pytest.raises(SettingError, match="not one of"):
        ph.mesh_field(x, spec, theta, phi, out, method="fast")


def test_unitary_memo_reuses_u_only_while_every_phase_is_equal():
    spec = ph.mesh_spec(40, "clements")
    theta, phi, out = random_phases(spec, 9)
    x = torch.randn(8, 40, dtype=torch.complex128, generator=torch.Generator().manual_seed(9))
    memo = ph.UNITARY_MEMO
    with torch.no_grad():
        first = ph.mesh_field(x, spec, theta, phi, out)
        hits = memo.hits
        again = ph.mesh_field(x, spec, theta, phi, out)
        assert memo.hits == hits + 1 and torch.equal(first, again)
        theta[3] += 0.5  # in place: the memo compares values, not tensor identity
        changed = ph.mesh_field(x, spec, theta, phi, out)
        assert memo.hits == hits + 1
        ref = slow_mesh(40, spec.modes.tolist(), theta.numpy(), phi.numpy(), out.numpy())
        assert np.abs(changed.numpy() - x.numpy() @ ref.T).max() < 1e-12
    t = theta.clone().requires_grad_()
    y = ph.mesh_field(x, spec, t, phi, out)  # needs gradients: built, never taken from the memo
    assert memo.hits == hits + 1
    y.abs().sum().backward()
    assert t.grad is not None and bool(torch.isfinite(t.grad).all())


# ------------------------------------------------------------------ decomposition
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [4, 5, 8, 13, 32, 64])
def test_decomposition_of_haar_unitaries_reconstructs_them(kind, n):
    target = haar(n, seed=100 + n)
    theta, phi, out = ph.decompose(target, kind)
    spec = ph.mesh_spec(n, kind)
    assert theta.shape == (n * (n - 1) // 2,) and out.shape == (n,)
    assert float(theta.min()) >= 0 and float(theta.max()) <= math.pi + 1e-12  # nulling gives theta in [0, pi]
    assert np.abs(ph.mesh_matrix(spec, theta, phi, out).numpy() - target).max() < 1e-10
    slow = slow_mesh(n, spec.modes.tolist(), theta.numpy(), phi.numpy(), out.numpy())
    assert np.abs(slow - target).max() < 1e-10


@pytest.mark.parametrize("kind", KINDS)
def test_decomposition_handles_permutations_and_identity(kind):
    perm = np.eye(5)[[4, 2, 0, 1, 3]] * np.exp(1j * np.arange(5))
    for target in (np.eye(5), perm, np.diag(np.exp(1j * np.arange(5.0)))):
        spec = ph.mesh_spec(5, kind)
        assert np.abs(ph.mesh_matrix(spec, *ph.decompose(target, kind)).numpy() - target).max() < 1e-12


def test_decompose_refuses_non_unitary_and_non_square():
    with pytest.raises(SettingError, match=r"needs a unitary matrix .* use svd_decompose"):
        ph.decompose(np.ones((3, 3)))
    with pytest.raises(SettingError, match="square"):
        ph.decompose(np.ones((2, 3)))
    with pytest.raises(SettingError, match="mesh kind 'triangle'"):
        ph.mesh_spec(4, "triangle")


# ------------------------------------------------------------------ SVD layer
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (6, 6)])
@pytest.mark.parametrize("complex_matrix", [False, True])
def test_svd_layer_reproduces_its_matrix(kind, shape, complex_matrix):
    g = torch.Generator().manual_seed(sum(shape))
    m = torch.randn(*shape, dtype=torch.float64, generator=g)
    if complex_matrix:
        m = m + 1j * torch.randn(*shape, dtype=torch.float64, generator=g)
    params, scale = ph.svd_decompose(m, kind)
    assert float(params["sigma"].max()) == pytest.approx(1.0, abs=1e-12) and float(params["sigma"].min()) >= 0
    opt = ph.PhotonicOptions(kind=kind, n_in=shape[1], n_out=shape[0], detection="homodyne")
    x = torch.randn(7, shape[1], dtype=torch.complex128, generator=g)
    field = ph.layer_field(x, params, opt)
    assert (scale * field - x @ m.to(torch.complex128).T).abs().max() < 1e-10
    if not complex_matrix:  # real matrix, real input, homodyne at lo_phase 0: the matrix product itself
        xr = x.real
        assert (scale * ph.detect(ph.layer_field(xr, params, opt), opt) - xr @ m.T).abs().max() < 1e-10


def test_svd_scale_with_and_without_amplifier():
    m = torch.diag(torch.tensor([6.0, 3.0, 0.5], dtype=torch.float64))
    p, s = ph.svd_decompose(m)
    assert s == pytest.approx(6.0) and sorted(p["sigma"].tolist()) == pytest.approx([0.5 / 6, 0.5, 1.0])
    p, s = ph.svd_decompose(m, amplifier=True, gain_max=4.0)
    assert s == pytest.approx(1.5) and float(p["sigma"].max()) == pytest.approx(4.0)
    p, s = ph.svd_decompose(m, amplifier=True, gain_max=10.0)
    assert s == 1.0 and float(p["sigma"].max()) == pytest.approx(6.0)


@pytest.mark.parametrize("kind", KINDS)
def test_every_non_ideality_off_gives_the_ideal_matrix_product(kind):
    g = torch.Generator().manual_seed(7)
    m = torch.randn(5, 4, dtype=torch.float64, generator=g)
    x = 2 * torch.rand(9, 4, dtype=torch.float64, generator=g) - 1
    sub = substrate(kind, 4, 5, seed=3)  # defaults: every non-ideality off
    scale = sub.program(m)
    want = (x @ m.T / scale) ** 2  # intensity of the ideal field
    assert (sub.exact_forward(x) - want).abs().max() < 1e-6  # settings held in float32 (as on the wire)
    assert (sub.forward(x.float()).double() - want).abs().max() < 1e-5
    # the same with every switch explicitly at zero, and with the settings given in float64
    zero = {
        "loss_db": 0.0,
        "bs_error": 0.0,
        "phase_error": 0.0,
        "phase_noise": 0.0,
        "crosstalk": 0.0,
        "dac_bits": 0,
        "noise": 0.0,
        "shot_noise": 0.0,
        "noise_floor": 0.0,
        "drift": 0.0,
    }
    sub0 = substrate(kind, 4, 5, seed=9, **zero)
    params, scale = ph.svd_decompose(m, kind)
    units = {k: (v if k == "sigma" else v / math.pi) for k, v in params.items()}
    assert (scale**2 * sub0.exact_forward(x, units) - (x @ m.T) ** 2).abs().max() < 1e-10


# ------------------------------------------------------------------ gradients
def test_mesh_gradients_match_finite_differences():
    spec = ph.mesh_spec(5, "clements")
    theta, phi, out = (v.requires_grad_() for v in random_phases(spec, 1))
    x = torch.randn(3, 5, dtype=torch.complex128, generator=torch.Generator().manual_seed(2))

    def f(t, p, o):
        y = ph.mesh_field(x, spec, t, p, o)
        return torch.cat([y.real, y.imag], -1)

    assert torch.autograd.gradcheck(f, (theta, phi, out), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_exact_forward_gradients_match_finite_differences_with_static_errors(kind):
    sub = substrate(
        kind,
        4,
        3,
        seed=5,
        loss_db=0.2,
        loss_db_std=0.05,
        bs_error=0.05,
        phase_error=0.1,
        crosstalk=0.02,
        nonlinearity="saturable",
        sa_depth=1.0,
        sa_isat=0.5,
    )
    params = {k: v.double().requires_grad_() for k, v in sub.get_params().items()}
    names = list(params)
    x = (2 * torch.rand(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) - 1).requires_grad_()

    def f(x, *values):
        return sub.exact_forward(x, dict(zip(names, values)))

    assert torch.autograd.gradcheck(f, (x, *params.values()), eps=1e-6, atol=1e-6)


# ------------------------------------------------------------------ non-idealities, each against its equation
def _bar_state(sub) -> dict:
    p = sub.get_params()
    return {
        k: (torch.ones_like(v) if k.endswith("theta") or k == "sigma" else torch.zeros_like(v)) for k, v in p.items()
    }


@pytest.mark.parametrize("kind", KINDS)
def test_insertion_loss_costs_the_stated_db_per_mzi_on_each_path(kind):
    n, loss = 6, 0.3
    sub = substrate(kind, n, n, loss_db=loss)
    sub.set_params(_bar_state(sub))  # theta = pi everywhere: mode k stays on waveguide k through both meshes
    y = sub.forward(torch.eye(n)).double()
    spec = ph.mesh_spec(n, kind)
    tops = spec.modes.tolist()
    per_mode = [sum(1 for m in tops if k in (m, m + 1)) for k in range(n)]  # MZIs that waveguide k passes
    for k in range(n):
        want = 10 ** (-loss * 2 * per_mode[k] / 10)  # V mesh and U mesh
        assert float(y[k, k]) == pytest.approx(want, rel=1e-5)
        assert float(y[k].sum() - y[k, k]) < 1e-10  # bar state: nothing leaks to other outputs
    ideal = substrate(kind, n, n)
    ideal.set_params(_bar_state(ideal))
    assert torch.allclose(ideal.forward(torch.eye(n)), torch.eye(n), atol=1e-6)


def test_beam_splitter_error_limits_the_extinction_to_sin_squared_of_the_difference():
    for a1, a2 in ((0.03, -0.02), (0.1, 0.1), (-0.07, 0.05)):
        t = ph.mzi_matrix(*(torch.tensor(v, dtype=torch.float64) for v in (math.pi, 0.3, a1, a2)))
        assert float(t[1, 0].abs() ** 2) == pytest.approx(math.sin(a1 - a2) ** 2, rel=1e-12, abs=1e-30)
        assert float((t.conj().T @ t - torch.eye(2)).abs().max()) < 1e-14  # still lossless
    sub = substrate("clements", 8, 8, seed=2, bs_error=0.04)
    h = sub._state.hidden
    errs = torch.cat([h["v_alpha1"], h["v_alpha2"], h["u_alpha1"], h["u_alpha2"]])
    assert float(errs.std()) == pytest.approx(0.04, rel=0.2) and errs.numel() == 112


def test_static_phase_error_shifts_every_phase_by_its_hidden_value():
    sub = substrate("reck", 5, 4, seed=1, phase_error=0.2)
    x = 2 * torch.rand(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 1
    hidden = sub._state.hidden
    shifted = {}
    for mesh in ("v", "u"):
        spec = sub.options.specs()[mesh]
        d = hidden[f"{mesh}_dphase"]
        k = spec.n_mzi
        for key, part in zip(("theta", "phi", "out"), (d[:k], d[k : 2 * k], d[2 * k :])):
            shifted[f"{mesh}_{key}"] = sub.get_params()[f"{mesh}_{key}"].double() + part / math.pi
    got = sub.exact_forward(x)
    want = sub.exact_forward(x, shifted, ideal=True)
    assert (got - want).abs().max() < 1e-12
    assert (got - sub.exact_forward(x, ideal=True)).abs().max() > 1e-3  # the error matters
    allerr = torch.cat([hidden["v_dphase"], hidden["u_dphase"]])
    assert float(allerr.std()) == pytest.approx(0.2, rel=0.25)


def test_per_shot_phase_noise_dephases_the_homodyne_signal_by_exp_minus_sigma_squared():
    # one mode: field = x * sigma * e^{i (v_out + u_out + n1 + n2)}, n ~ N(0, s^2) each, so
    # E[Re] = x sigma cos(phi0) exp(-s^2)
    s, phi0 = 0.5, 0.3
    sub = substrate("clements", 1, 1, seed=4, detection="homodyne", phase_noise=s)
    sub.set_params({"v_out": torch.tensor([phi0 / math.pi]), "u_out": torch.zeros(1), "sigma": torch.tensor([1.0])})
    y = sub.forward(torch.full((40000, 1), 0.8)).double()
    want = 0.8 * math.cos(phi0) * math.exp(-s * s)
    assert float(y.mean()) == pytest.approx(want, abs=4 * float(y.std()) / 200)
    assert float(y.std()) > 0.1
    assert float(sub.exact_forward(torch.tensor([[0.8]]))) == pytest.approx(0.8 * math.cos(phi0), rel=1e-6)


def test_truncated_phase_noise_stays_inside_and_has_the_truncated_normal_variance():
    from scipy.stats import truncnorm

    s, c = 0.3, 2.0
    opt = ph.PhotonicOptions(n_in=6, n_out=6, phase_noise=s, phase_noise_trunc=c)
    shots = ph.phase_shots(opt, 4000, s, torch.Generator().manual_seed(1))
    z = torch.cat([v.reshape(-1) for v in shots.values()])
    assert float(z.abs().max()) < c * s
    var = float(truncnorm.var(-c, c)) * s * s  # 0.7737 s^2, independent of our code
    assert var == pytest.approx(0.7737 * s * s, rel=1e-3)
    n = z.numel()  # var of the sample variance of a truncated normal ~ (mu4 - var^2) / n
    mu4 = float(truncnorm.moment(4, -c, c)) * s**4
    assert float(z.var()) == pytest.approx(var, abs=4 * math.sqrt((mu4 - var * var) / n))
    # default options: exactly sigma * randn per mesh (v then u), as before the option existed
    plain = ph.phase_shots(ph.PhotonicOptions(n_in=6, n_out=6), 5, s, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    for mesh in ("v", "u"):
        want = s * torch.randn(5, 2 * 15 + 6, generator=g, dtype=torch.float64)
        assert torch.equal(plain[mesh], want)


def test_mixing_phase_noise_is_a_push_pull_rotation_of_each_mzi():
    # the whole layer against the slow reference built MZI by MZI from the push-pull equation
    n, d = 4, 0.4
    spec = ph.mesh_spec(n, "clements")
    opt = ph.PhotonicOptions(n_in=n, n_out=n, phase_noise=d, phase_noise_model="mixing", detection="homodyne")
    g = torch.Generator().manual_seed(5)
    settings = {}
    for mesh in ("v", "u"):
        th, ph_, out = random_phases(spec, 11 if mesh == "v" else 12)
        settings.update({f"{mesh}_theta": th, f"{mesh}_phi": ph_, f"{mesh}_out": out})
    settings["sigma"] = torch.tensor([0.9, -0.5, 0.3, 1.0], dtype=torch.float64)
    x = 2 * torch.rand(3, n, generator=g, dtype=torch.float64) - 1
    shots = ph.phase_shots(opt, 3, d, torch.Generator().manual_seed(6))
    k = spec.n_mzi
    for mesh in ("v", "u"):
        assert torch.all(shots[mesh][:, k:] == 0) and torch.all(shots[mesh][:, :k] != 0)  # theta only
    got = ph.layer_field(x, settings, opt, shots=shots, ideal=True).numpy()

    def rot(a):
        return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])

    def mesh_ref(mesh, b):
        u = np.eye(n, dtype=complex)
        for i, m in enumerate(spec.modes.tolist()):
            th, p = float(settings[f"{mesh}_theta"][i]), float(settings[f"{mesh}_phi"][i])
            dl = float(shots[mesh][b, i])
            t = np.eye(n, dtype=complex)
            # the documented identity: push-pull drive = pure mixing-angle rotation, no common phase
            pp = mzi_ref(th + dl, p) * np.exp(-0.5j * dl)
            assert np.abs(pp - rot(-dl / 2) @ mzi_ref(th, p)).max() < 1e-13
            t[m : m + 2, m : m + 2] = pp
            u = t @ u
        return np.diag(np.exp(1j * settings[f"{mesh}_out"].numpy())) @ u

    for b in range(3):
        want = mesh_ref("u", b) @ (settings["sigma"].numpy() * (mesh_ref("v", b) @ x[b].numpy()))
        assert np.abs(got[b] - want).max() < 1e-12
    # the substrate draws the same model: one mode has no MZI, so mixing noise leaves it exact (the output
    # phases get no noise), while the default model dephases it
    xs = torch.full((200, 1), 0.8)
    for model, noisy in (("mixing", False), ("shifters", True)):
        sub = substrate("clements", 1, 1, seed=4, detection="homodyne", phase_noise=0.5, phase_noise_model=model)
        sub.set_params({"v_out": torch.tensor([0.1]), "u_out": torch.zeros(1), "sigma": torch.tensor([1.0])})
        spread = float((sub.forward(xs).double() - 0.8 * math.cos(0.1 * math.pi)).abs().max())
        assert (spread > 0.05) if noisy else (spread < 1e-6)
    with pytest.raises(SettingError, match="phase_noise_model 'push' is not one of shifters, mixing"):
        substrate("clements", 2, 2, phase_noise_model="push")
    with pytest.raises(SettingError, match="phase_noise_trunc must be >= 0"):
        substrate("clements", 2, 2, phase_noise_trunc=-1.0)


def test_thermal_crosstalk_adds_kappa_times_each_neighbours_heater_phase():
    n, kappa = 6, 0.05
    opt = ph.PhotonicOptions(n_in=n, n_out=n, crosstalk=kappa)
    spec = ph.mesh_spec(n, "clements")
    hidden = ph.init_hidden(opt)
    k = spec.n_mzi
    # neighbours, derived here from the layout: theta (or phi) heaters of MZIs m and m+2 in one column;
    # adjacent output phase shifters
    pos = {(c, m): i for i, (c, m) in enumerate(zip(spec.cols.tolist(), spec.modes.tolist()))}
    for heater in (pos[(2, 2)], k + pos[(2, 2)], 2 * k + 2):
        setting = torch.zeros(spec.n_heaters, dtype=torch.float64)
        setting[heater] = -0.5 * math.pi  # the controller wraps it: the heater runs at 1.5 pi
        got = ph.realized_phases(setting, hidden, "v", spec, opt)
        if heater >= 2 * k:
            expected_nb = {heater - 1, heater + 1}
        else:
            kind_off = 0 if heater < k else k
            c, m = spec.cols[heater - kind_off].item(), spec.modes[heater - kind_off].item()
            expected_nb = {pos[(c, mm)] + kind_off for mm in (m - 2, m + 2) if (c, mm) in pos}
        want = setting.clone()
        for j in expected_nb:
            want[j] += kappa * 1.5 * math.pi
        assert len(expected_nb) == 2 and torch.allclose(got, want, atol=1e-15)


def test_dac_quantization_error_is_at_most_half_an_lsb():
    opt = ph.PhotonicOptions(dac_bits=6, heater_vmax=4.0)
    lsb, gamma = 4.0 / 63, 2 * math.pi / 16
    p = torch.linspace(0, 2 * math.pi - 1e-9, 5001, dtype=torch.float64)
    got = ph.dac_phase(p, opt)
    v, vq = torch.sqrt(p / gamma), torch.sqrt(got / gamma)
    assert float((vq - v).abs().max()) <= lsb / 2 + 1e-12
    assert float((vq - v).abs().max()) > 0.45 * lsb  # the bound is reached, not vacuous
    codes = vq / lsb
    assert float((codes - codes.round()).abs().max()) < 1e-9 and int(codes.round().max()) <= 63
    assert bool(((got - p).abs() <= gamma * lsb / 2 * (2 * v + lsb / 2) + 1e-12).all())
    assert torch.equal(ph.dac_phase(p, ph.PhotonicOptions()), p)  # 0 bits: ideal
    # wrapping: a setting and the same setting plus a turn give the same heater phase
    assert torch.allclose(ph.dac_phase(p - 2 * math.pi, opt), got, atol=1e-12)
    # the substrate: quantization moves the output, and in-silico gradients pass straight through
    sub = substrate("clements", 4, 4, seed=1, dac_bits=4)
    x = 2 * torch.rand(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) - 1
    assert (sub.exact_forward(x) - sub.exact_forward(x, ideal=True)).abs().max() > 1e-3
    theta = sub.get_params()["u_theta"].double().requires_grad_()
    sub.exact_forward(x, {"u_theta": theta}).sum().backward()
    assert theta.grad is not None and float(theta.grad.abs().sum()) > 0


def test_saturable_absorber_follows_its_equation():
    depth, isat = 2.0, 0.5
    e = torch.tensor([1e-4, 0.3 + 0.4j, 30.0], dtype=torch.complex128)
    out = ph.saturable_absorber(e, depth, isat)
    trans = (out.abs() ** 2 / e.abs() ** 2).tolist()
    assert trans[0] == pytest.approx(math.exp(-depth), rel=1e-6)  # weak light: small-signal absorption
    assert trans[1] == pytest.approx(math.exp(-depth / (1 + 0.25 / isat)), rel=1e-12)
    assert trans[2] == pytest.approx(1.0, abs=2e-3)  # saturated: transparent
    assert torch.allclose(torch.angle(out), torch.angle(e))  # no phase change
    sub = substrate("clements", 3, 3, seed=2, nonlinearity="saturable", sa_depth=depth, sa_isat=isat)
    x = torch.tensor([[0.9, -0.5, 0.2]], dtype=torch.float64)
    lin = substrate("clements", 3, 3, seed=2).exact_forward(x)  # same seed: same settings
    assert torch.allclose(sub.exact_forward(x), lin * torch.exp(-depth / (1 + lin / isat)), atol=1e-12)


def test_homodyne_detection_reads_the_quadrature_at_the_lo_phase():
    e = torch.tensor([[1 + 2j, -0.5 + 0.1j]], dtype=torch.complex128)
    for lo in (0.0, 0.7, math.pi / 2):
        opt = ph.PhotonicOptions(n_in=2, n_out=2, detection="homodyne", lo_phase=lo)
        want = e.real * math.cos(lo) + e.imag * math.sin(lo)
        assert torch.allclose(ph.detect(e, opt), want, atol=1e-15)
    assert torch.allclose(ph.detect(e, ph.PhotonicOptions()), e.abs() ** 2)


@pytest.mark.parametrize("which,value", [("noise_floor", 0.02), ("shot_noise", 0.05), ("noise", 0.1)])
def test_photodetector_noise_has_the_stated_std(which, value):
    sub = substrate("clements", 4, 4, seed=6, **{which: value})
    x = torch.full((6000, 4), 0.5)
    y = sub.forward(x).double()
    mean = sub.exact_forward(x[:1].double())[0]
    std = (y - mean).std(0)
    want = {"noise_floor": torch.full_like(mean, value), "shot_noise": value * mean.sqrt(), "noise": value * mean}[
        which
    ]
    assert torch.allclose(std, want, rtol=0.06)
    assert torch.allclose((y - mean).mean(0), torch.zeros(4, dtype=torch.float64), atol=4 * float(want.max()) / 70)


def test_drift_is_a_seeded_random_walk_in_device_time_whatever_the_batch_sizes():
    opts = {"drift": 0.01, "drift_tick": 50}
    a, b = substrate("clements", 4, 4, seed=8, **opts), substrate("clements", 4, 4, seed=8, **opts)
    start = a._state.hidden["u_dphase"].clone()
    a.forward(torch.zeros(170, 4))
    for _ in range(17):
        b.forward(torch.zeros(10, 4))
    assert a.clock == b.clock == 170 and a._state.ticks == 3
    assert torch.equal(a._state.hidden["u_dphase"], b._state.hidden["u_dphase"])
    steps = sum(
        0.01 * torch.randn(start.shape, generator=ph._generator(8, 2, t, 1), dtype=torch.float64) for t in range(3)
    )
    assert torch.allclose(a._state.hidden["u_dphase"], start + steps, atol=1e-15)
    still = substrate("clements", 4, 4, seed=8)
    x = torch.full((3, 4), 0.3)
    first = still.forward(x)
    still.advance_time(10_000)
    assert torch.equal(still.forward(x), first)  # no drift when it is off
    x = torch.full((1, 4), 0.3, dtype=torch.float64)
    before = a.exact_forward(x)
    a.advance_time(5000)
    assert (a.exact_forward(x) - before).abs().max() > 1e-4


def test_seeds_are_reproducible_and_distinct():
    noisy = {
        "loss_db": 0.1,
        "bs_error": 0.02,
        "phase_error": 0.05,
        "phase_noise": 0.02,
        "crosstalk": 0.01,
        "dac_bits": 8,
        "noise": 0.01,
        "shot_noise": 0.01,
        "noise_floor": 0.001,
        "drift": 0.01,
        "drift_tick": 16,
    }
    x = 2 * torch.rand(40, 5, generator=torch.Generator().manual_seed(0)) - 1
    a, b, c = (substrate("reck", 5, 3, seed=s, **noisy) for s in (11, 11, 12))
    ya, yb, yc = a.forward(x), b.forward(x), c.forward(x)
    assert torch.equal(ya, yb) and not torch.allclose(ya, yc)
    assert torch.equal(a.forward(x), b.forward(x)) and not torch.equal(a.forward(x), ya)  # fresh noise each shot
    # switching one error on does not redraw the others
    p1 = substrate("clements", 4, 4, seed=3, phase_error=0.1)._state.hidden["v_dphase"]
    p2 = substrate("clements", 4, 4, seed=3, phase_error=0.1, bs_error=0.05)._state.hidden["v_dphase"]
    assert torch.equal(p1, p2)


def test_checkpointed_state_continues_the_same_noise_and_drift():
    opts = {"phase_noise": 0.05, "noise_floor": 0.01, "drift": 0.02, "drift_tick": 8}
    a = substrate("clements", 3, 3, seed=2, **opts)
    x = torch.full((5, 3), 0.4)
    a.forward(x)
    state = a.state_dict()
    want = a.forward(x)
    b = substrate("clements", 3, 3, seed=99, **opts)
    b.load_state_dict(state)
    assert torch.equal(b.forward(x), want)


# ------------------------------------------------------------------ the substrate contract
def test_registered_family_options_and_one_line_errors():
    assert "photonic:clements" in substrate_names(emulatable_only=True) and "photonic:reck" in substrate_names()
    sub = open_substrate_spec("photonic:reck", 3, 5, seed=1, options={"loss_db": 0.1, "dac_bits": 8})
    assert isinstance(sub, ph.PhotonicSubstrate) and sub.options.kind == "reck" and sub.options.dac_bits == 8
    with pytest.raises(
        SettingError, match=r"unknown option 'los_db' for substrate photonic:reck \(did you mean 'loss_db'\?\)"
    ):
        open_substrate_spec("photonic:reck", 3, 5, options={"los_db": 0.1})
    with pytest.raises(SettingError, match=r"photonic:clements: detection 'power' is not one of intensity, homodyne"):
        open_substrate_spec("photonic:clements", 3, 5, options={"detection": "power"})
    with pytest.raises(SettingError, match="unknown substrate 'photonic:clement'.*did you mean 'photonic:clements'"):
        open_substrate_spec("photonic:clement", 3, 5)
    d = sub.describe()
    assert d["kind"] == "photonic:reck" and d["params"] == {
        "v_theta": [3],
        "v_phi": [3],
        "v_out": [3],
        "sigma": [3],
        "u_theta": [10],
        "u_phi": [10],
        "u_out": [5],
    }
    assert d["param_units"]["u_phi"] == "pi rad" and d["param_ranges"]["sigma"] == [-1.0, 1.0] and d["n_mzi"] == 13


def test_set_params_round_trip_wraps_phases_and_refuses_bad_values():
    sub = substrate("clements", 3, 3)
    sub.set_params({"u_phi": torch.tensor([0.5, 1.5, -2.5]), "sigma": torch.tensor([1.0, -0.5, 0.0])})
    got = sub.get_params()
    assert torch.allclose(got["u_phi"], torch.tensor([0.5, -0.5, -0.5]))
    assert torch.equal(got["sigma"], torch.tensor([1.0, -0.5, 0.0]))
    for bad, pattern in (
        ({"w": torch.zeros(1)}, "no hardware parameter 'w'"),
        ({"u_phi": torch.zeros(2)}, "u_phi needs 3 values"),
        ({"sigma": torch.tensor([1.5, 0, 0])}, r"sigma must lie in \[-1, 1\] .*amplifier = true"),
        ({"v_out": torch.tensor([0.0, float("nan"), 0.0])}, "non-finite"),
    ):
        with pytest.raises(SubstrateFault, match=pattern) as err:
            sub.set_params(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(SubstrateFault, match=r"inputs must lie in \[-1.0, 1.0\]"):
        sub.forward(torch.full((1, 3), 1.5))
    amp = substrate("clements", 3, 3, amplifier=True, gain_max=3.0)
    amp.set_params({"sigma": torch.tensor([2.5, -3.0, 0.1])})
    assert amp.describe()["param_ranges"]["sigma"] == [-3.0, 3.0]


# ------------------------------------------------------------------ through the serial emulator
def test_round_trip_through_the_emulated_serial_link(tmp_path):
    from devices import SerialDevice
    from devices.emulator import Emulator

    opts = {"loss_db": 0.1, "phase_error": 0.05, "phase_noise": 0.01, "noise_floor": 0.001}
    reference = substrate("clements", 5, 4, seed=3, **opts)
    threads = threading.active_count()
    with (
        Emulator(substrate("clements", 5, 4, seed=3, **opts), link=tmp_path / "ttyPH0", max_batch=16) as emu,
        SerialDevice(emu.port, timeout=0.5) as dev,
    ):
        assert (dev.n_in, dev.n_out, dev.input_range) == (5, 4, (-1.0, 1.0))
        desc = dev.describe()
        assert desc["kind"] == "serial:photonic:clements"
        assert dev.identity.params == {
            "v_theta": [10],
            "v_phi": [10],
            "v_out": [5],
            "sigma": [4],
            "u_theta": [6],
            "u_phi": [6],
            "u_out": [4],
        }
        x = 2 * torch.rand(12, 5, generator=torch.Generator().manual_seed(1)) - 1
        assert torch.equal(dev.forward(x), reference.forward(x))  # same seed, same noise draws
        # hardware parameters travel as named tensors: program a matrix remotely, read it back, measure it
        m = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        params, scale = ph.svd_decompose(m)
        units = {k: (v if k == "sigma" else v / math.pi).float() for k, v in params.items()}
        dev.set_params(units)
        reference.set_params(units)
        back = dev.get_params()
        assert all(torch.equal(back[k], reference.get_params()[k]) for k in units)
        y = dev.forward(x)
        assert torch.equal(y, reference.forward(x))
        ideal = (x.double() @ m.T / scale) ** 2  # the programmed matrix on a perfect chip
        chip = reference.exact_forward(x.double())  # this chip, without per-shot and detector noise
        assert (y.double() - chip).abs().max() < 0.03 < (chip - ideal).abs().max()
    assert threading.active_count() == threads


def _spsa_loss(forward, settings, x, target):
    return float(((forward(x, settings) - target) ** 2).mean())


def test_phases_can_be_trained_through_the_link_with_spsa(tmp_path):
    """Model-free training on the emulated device: SPSA on the written phases lowers the error to a
    target response to under 30 % (the device only measures; nothing differentiable crosses)."""
    from devices import SerialDevice
    from devices.emulator import Emulator

    g = torch.Generator().manual_seed(0)
    x = 2 * torch.rand(16, 3, generator=g) - 1
    teacher = substrate("clements", 3, 3, seed=50)
    target = teacher.forward(x)
    with (
        Emulator(substrate("clements", 3, 3, seed=1, noise_floor=1e-4), link=tmp_path / "ttyPH1") as emu,
        SerialDevice(emu.port, timeout=0.5) as dev,
    ):
        names = [k for k in dev.get_params() if k != "sigma"]
        params = {k: v.clone() for k, v in dev.get_params().items()}

        def loss(p):
            dev.set_params(p)
            return float(((dev.forward(x) - target) ** 2).mean())

        first = loss(params)
        lr, c = 0.3, 0.05
        for _step in range(60):
            delta = {k: torch.randint(0, 2, params[k].shape, generator=g).float() * 2 - 1 for k in names}
            plus = loss({**params, **{k: params[k] + c * delta[k] for k in names}})
            minus = loss({**params, **{k: params[k] - c * delta[k] for k in names}})
            slope = (plus - minus) / (2 * c)
            params = {**params, **{k: params[k] - lr * slope * delta[k] for k in names}}
        last = loss(params)
    assert last < 0.3 * first, (first, last)  # 0.116 -> 0.015 here


@pytest.mark.skipif(not os.path.exists("/dev/ptmx"), reason="needs ptys")
def test_neuro_devices_emulate_serves_the_photonic_substrate(tmp_path):
    from devices import SerialDevice

    link = tmp_path / "ttyPH2"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "neuro",
            "devices",
            "emulate",
            "--substrate",
            "photonic:reck",
            "--n-in",
            "4",
            "--n-out",
            "3",
            "--seed",
            "5",
            "--option",
            "loss_db=0.2",
            "--link",
            str(link),
            "--duration",
            "120",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        port = proc.stdout.readline().strip()
        assert port == str(link), proc.stderr.read() if not port else port
        with SerialDevice(port, timeout=2.0) as dev:
            assert dev.describe()["kind"] == "serial:photonic:reck"
            x = torch.full((2, 4), 0.5)
            assert torch.equal(dev.forward(x), substrate("reck", 4, 3, seed=5, loss_db=0.2).forward(x))
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("kind", KINDS)
def test_forward_issues_a_few_torch_calls_per_column_not_per_mzi(kind):
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    spec = ph.mesh_spec(64, kind)
    theta, phi, out = random_phases(spec, 0)
    x = torch.randn(8, 64, dtype=torch.complex128)
    with Count():
        ph.mesh_field(x, spec, theta, phi, out)
    assert Count.calls <= 10 * spec.n_cols + 60 < spec.n_mzi  # 2016 MZIs, 64 (Clements) or 125 (Reck) columns
