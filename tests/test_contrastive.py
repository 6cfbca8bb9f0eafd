"""Energy-based networks, equilibrium propagation and CHL (neuro/functional/energy.py, neuro/layers/energy.py,
neuro/rules/contrastive.py).

References used here are independent of the code under test: autograd of the energy written out in
the test, central finite differences of the loss through long settling, and the two-phase update
computed by the same closed form the temporally local sum must reproduce.
"""

from __future__ import annotations

import math

import pytest
import torch

from neuro.errors import ConfigError, IncompatibleError
from neuro.functional import energy as fe
from neuro.layers.energy import EnergyNet
from neuro.rules.base import Batch
from neuro.rules.contrastive import FREE, CHLSpec, ContrastiveRule, EPSpec, Phase, draw_length

DT = torch.float64


def make_net(
    sizes=(12, 9, 4), activation="hard_sigmoid", seed=0, weight_scale=1.0, bias_std=0.0, eps=0.5, bias_mean=0.0
):
    torch.manual_seed(seed)
    net = EnergyNet(list(sizes), step_size=eps, settle_steps=50, activation=activation).to(DT)
    with torch.no_grad():
        for w in net.weights:
            w.mul_(weight_scale)
        for b in net.biases:
            b.normal_(bias_mean, bias_std) if bias_std else b.fill_(bias_mean)
    return net


def make_batch(net, n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, net.sizes[0], generator=g, dtype=DT)
    y = torch.randint(0, net.sizes[-1], (n,), generator=g)
    return x, y, fe.one_hot(y, net.sizes[-1], DT)


def energy_by_hand(x, states, weights, biases, act):
    """E written independently: 1/2 sum rho^2 - sum rho_k W_k rho_{k-1} - sum b rho."""
    r = [x] + [fe.rho(s, act) for s in states]
    e = torch.zeros(x.shape[0], dtype=x.dtype)
    for k in range(1, len(r)):
        e = (
            e
            + 0.5 * (r[k] ** 2).sum(1)
            - torch.einsum("bi,ij,bj->b", r[k], weights[k - 1], r[k - 1])
            - r[k] @ biases[k - 1]
        )
    return e


def rule(name="ep", **kw) -> ContrastiveRule:
    spec = EPSpec(**kw) if name == "ep" else CHLSpec(**kw)
    spec.check()
    return ContrastiveRule(spec)


# ----------------------------------------------------------------- energy and dynamics
def test_energy_dynamics_and_parameter_terms_agree_with_autograd():
    net = make_net(activation="sigmoid", bias_std=0.3)
    x, _, t = make_batch(net)
    states = [torch.randn(x.shape[0], n, dtype=DT) for n in net.sizes[1:]]
    w, b = list(net.weights), list(net.biases)
    assert torch.allclose(fe.energy(x, states, w, b, "sigmoid"), energy_by_hand(x, states, w, b, "sigmoid"), atol=1e-12)
    # one Euler step = s - eps dF/ds with F = E + beta C (sigmoid: no projection)
    beta, eps = 0.3, 0.1
    s_req = [s.clone().requires_grad_(True) for s in states]
    f = (energy_by_hand(x, s_req, w, b, "sigmoid") + beta * ((fe.rho(s_req[-1], "sigmoid") - t) ** 2).sum(1)).sum()
    grads = torch.autograd.grad(f, s_req)
    stepped = fe.settle_step(x, states, w, b, eps=eps, beta=beta, target=t, activation="sigmoid")
    for s, g, n in zip(states, grads, stepped):
        assert torch.allclose(n, s - eps * g, atol=1e-12)
    # dE/dtheta (batch mean) against autograd
    params = [p.detach().clone().requires_grad_(True) for p in (*w, *b)]
    e = energy_by_hand(x, states, params[:2], params[2:], "sigmoid").mean()
    auto = torch.autograd.grad(e, params)
    gw, gb = fe.energy_grads(x, states, "sigmoid")
    for mine, ref in zip((*gw, *gb), auto):
        assert torch.allclose(mine, ref, atol=1e-12)


@pytest.mark.parametrize(
    "nudge", [{}, {"beta": 0.7}, {"beta": "per_sample"}, {"clamp_output": True}, {"clamp_output": "per_sample"}]
)
def test_hard_sigmoid_fast_step_equals_general_step(nudge):
    """The fused hard-sigmoid step (used when the input drive is precomputed) against the general one."""
    net = make_net(sizes=(12, 10, 8, 4), bias_std=0.5, seed=2)
    x, _, t = make_batch(net, n=5)
    w, b = list(net.weights), list(net.biases)
    g = torch.Generator().manual_seed(0)
    states = [torch.rand(x.shape[0], n, generator=g, dtype=DT) for n in net.sizes[1:]]
    kw = dict(nudge)
    if kw.get("beta") == "per_sample":
        kw["beta"] = torch.tensor([[0.5], [0.0], [-0.5], [0.5], [0.0]], dtype=DT)
    if kw.get("clamp_output") == "per_sample":
        kw["clamp_output"] = torch.tensor([[True], [False], [True], [False], [False]])
    general = fe.settle_step(x, states, w, b, eps=0.4, target=t, **kw)
    fast = fe.settle_step(x, states, w, b, eps=0.4, target=t, input_drive=x @ w[0].t() + b[0], **kw)
    for a, c in zip(general, fast):
        assert torch.allclose(a, c, atol=1e-13)
    assert not torch.allclose(general[0], states[0])


@pytest.mark.parametrize("activation,eps", [("hard_sigmoid", 0.2), ("sigmoid", 0.1)])
@pytest.mark.parametrize("beta", [0.0, 0.5, -0.5])
def test_settling_decreases_energy_monotonically(activation, eps, beta):
    net = make_net(sizes=(12, 10, 8, 4), activation=activation, bias_std=0.5, seed=3)
    x, _, t = make_batch(net, n=8)
    w, b = list(net.weights), list(net.biases)
    energies = []
    fe.settle(
        x,
        net.zero_states(x),
        w,
        b,
        steps=150,
        eps=eps,
        beta=beta,
        target=t,
        activation=activation,
        trace=lambda i, s: energies.append(float(fe.total_energy(x, s, w, b, beta, t, activation).sum())),
    )
    diffs = torch.tensor(energies).diff()
    assert (diffs <= 1e-12).all(), f"energy rose by {float(diffs.max())}"
    assert energies[-1] < energies[0] - 1e-3  # and it actually moved


def test_large_step_can_break_monotonicity():
    """The guarantee needs a small step (so the test above can fail).

    Hand-made 1-1-1 net: h and o inhibit each other (W_2 = -2), biases 1, no input.  With eps = 1 the
    synchronous update jumps between (h, o) = (0, 0) (E = 0) and (1, 1) (E = 1 + 2 - 1 - 1 = 1): the energy
    rises every other step.  With eps = 0.2 the same net settles with E falling at every step.
    """
    x = torch.zeros(1, 1, dtype=DT)
    w = [torch.zeros(1, 1, dtype=DT), torch.full((1, 1), -2.0, dtype=DT)]
    b = [torch.ones(1, dtype=DT), torch.ones(1, dtype=DT)]
    for eps, rises in ((1.0, True), (0.2, False)):
        energies = []
        fe.settle(
            x,
            [torch.zeros(1, 1, dtype=DT)] * 2,
            w,
            b,
            steps=20,
            eps=eps,
            trace=lambda i, s, energies=energies: energies.append(float(fe.energy(x, s, w, b).sum())),
        )
        if rises:
            assert energies[:4] == [1.0, 0.0, 1.0, 0.0]
        else:
            assert max(torch.tensor(energies).diff()) <= 1e-15


# ---------------------------------------------------------------- gradient agreement
@torch.no_grad()
def settled(net, x, steps=3000):
    s = net.settle(x, steps=steps)
    res = max(float((a - c).abs().max()) for a, c in zip(net.settle(x, s, steps=1), s))
    assert res < 1e-12, f"not settled: {res}"
    return s


def test_fixed_point_gradient_matches_finite_differences():
    net = make_net(bias_std=0.2)
    x, _, t = make_batch(net)
    star = settled(net, x)
    gw, gb, adj = fe.fixed_point_gradient(
        x, star, t, list(net.weights), list(net.biases), eps=net.step_size, iterations=5000, tol=1e-14
    )
    assert adj < 1e-12

    def loss():
        return float(fe.cost(net.settle(x, steps=3000), t).mean())

    checked = 0
    with torch.no_grad():
        for p, g in ((net.weights[0], gw[0]), (net.weights[1], gw[1]), (net.biases[1], gb[1])):
            flat_p, flat_g = p.view(-1), g.reshape(-1)
            for i in torch.argsort(flat_g.abs(), descending=True)[:3]:
                h = 1e-6
                flat_p[i] += h
                lp = loss()
                flat_p[i] -= 2 * h
                lm = loss()
                flat_p[i] += h
                fd = (lp - lm) / (2 * h)
                assert abs(fd - float(flat_g[i])) <= 1e-5 * max(1.0, abs(fd)), (fd, float(flat_g[i]))
                checked += 1
    assert checked == 9


@pytest.mark.parametrize("activation,weight_scale,beta", [("hard_sigmoid", 1.0, 1e-3), ("sigmoid", 0.15, 1e-2)])
def test_symmetric_ep_matches_backprop_gradient_for_small_beta(activation, weight_scale, beta):
    net = make_net(
        activation=activation,
        weight_scale=weight_scale,
        bias_std=0.2,
        bias_mean=0.5 if activation == "sigmoid" else 0.0,
    )
    x, _, t = make_batch(net)
    star = settled(net, x, 4000)
    gw, gb, _ = fe.fixed_point_gradient(
        x,
        star,
        t,
        list(net.weights),
        list(net.biases),
        eps=net.step_size,
        activation=activation,
        iterations=5000,
        tol=1e-14,
    )
    true = fe.flat(gw, gb)
    r = rule(beta=beta, nudging="symmetric")
    sym = r.two_phase(net, x, t, nudged_steps=4000, pair=(Phase(beta), Phase(-beta), 0.5 / beta), s0=star)
    cos = fe.cosine(fe.flat(*sym[:2]), true)
    assert cos >= 0.99, cos
    # and the magnitude, not only the direction
    assert abs(float(fe.flat(*sym[:2]).norm() / true.norm()) - 1.0) < 0.05


def test_symmetric_nudging_has_smaller_bias_than_one_sided():
    """Smooth units: the one-sided estimate's error is O(beta), the symmetric one's O(beta^2)."""
    net = make_net(activation="sigmoid", weight_scale=0.15, bias_std=0.2, bias_mean=0.5)
    x, _, t = make_batch(net)
    star = settled(net, x, 4000)
    gw, gb, _ = fe.fixed_point_gradient(
        x,
        star,
        t,
        list(net.weights),
        list(net.biases),
        eps=net.step_size,
        activation="sigmoid",
        iterations=5000,
        tol=1e-14,
    )
    true = fe.flat(gw, gb)
    r = rule()
    errors = {}
    for beta in (0.1, 0.05):
        one = fe.flat(*r.two_phase(net, x, t, nudged_steps=4000, pair=(Phase(beta), FREE, 1 / beta), s0=star)[:2])
        sym = fe.flat(
            *r.two_phase(net, x, t, nudged_steps=4000, pair=(Phase(beta), Phase(-beta), 0.5 / beta), s0=star)[:2]
        )
        errors[beta] = (float((one - true).norm()), float((sym - true).norm()))
    assert errors[0.1][1] < 0.5 * errors[0.1][0]
    # halving beta halves the one-sided error and quarters the symmetric one (to 20 %)
    assert 1.6 < errors[0.1][0] / errors[0.05][0] < 2.4
    assert 3.2 < errors[0.1][1] / errors[0.05][1] < 4.8


# --------------------------------------------------------------- flexible phase forms
@pytest.mark.parametrize("name,nudging", [("ep", "positive"), ("ep", "negative"), ("ep", "symmetric"), ("chl", None)])
def test_temporally_local_sum_equals_two_phase_update_when_settled(name, nudging):
    net = make_net(bias_std=0.2)
    x, _, t = make_batch(net)
    kw = {"nudging": nudging, "beta": 0.3} if name == "ep" else {}
    two = rule(name, free_steps=3000, nudged_steps=3000, **kw)
    local = rule(
        name, phases="temporally_local", phase_length=3.0, phases_per_batch=2, substeps=3000, settle_first=3000, **kw
    )
    gw2, gb2, _ = two.two_phase(net, x, t)
    gwl, gbl, _ = local.flexible(net, x, t)
    for a, c in zip((*gw2, *gb2), (*gwl, *gbl)):
        assert torch.allclose(a, c, rtol=1e-9, atol=1e-12)
    # the same with 4 alternating phases of fractional length (last tick of each phase partial)
    local4 = rule(
        name, phases="temporally_local", phase_length=2.5, phases_per_batch=4, substeps=3000, settle_first=3000, **kw
    )
    gw4, gb4, _ = local4.flexible(net, x, t)
    for a, c in zip((*gw2, *gb2), (*gw4, *gb4)):
        assert torch.allclose(a, c, rtol=1e-9, atol=1e-12)


def test_temporally_local_with_transients_differs_from_two_phase():
    """Few substeps: the time average over the trajectory is not the end-state difference.

    (So the test above can fail.)
    """
    net = make_net(bias_std=0.2)
    x, _, t = make_batch(net)
    two = rule(free_steps=3000, nudged_steps=3000, nudging="positive")
    local = rule(phases="temporally_local", phase_length=3.0, substeps=1, settle_first=3000, nudging="positive")
    a, c = fe.flat(*two.two_phase(net, x, t)[:2]), fe.flat(*local.flexible(net, x, t)[:2])
    assert float((a - c).norm()) > 0.05 * float(a.norm())


@pytest.mark.parametrize("distribution", ["geometric", "exponential", "fixed"])
@pytest.mark.parametrize("signal", ["global", "per_sample"])
def test_non_periodic_mean_update_matches_two_phase(distribution, signal):
    """Random phase types and lengths: the mean over many batches equals the standard update.

    Tolerance: with N independent batch updates u_i and the standard error vector SE = std(u) / sqrt(N),
    E ||mean(u) - g||^2 = sum SE^2 if the estimator is unbiased; we require <= 3 sum SE^2 (for a biased
    estimator the left side stays put while the right side shrinks like 1/N).
    """
    net = make_net(sizes=(8, 6, 3), bias_std=0.2)
    x, _, t = make_batch(net, n=4)
    beta = 0.5
    two = rule(free_steps=400, nudged_steps=400, nudging="positive", beta=beta)
    g = fe.flat(*two.two_phase(net, x, t)[:2])
    length = 3.0 if distribution == "fixed" else 2.5
    r = rule(
        phases="non_periodic",
        phase_distribution=distribution,
        phase_length=length,
        phases_per_batch=4,
        p_positive=0.3,
        substeps=400,
        settle_first=400,
        nudging="positive",
        beta=beta,
        phase_signal=signal,
    )
    gen = torch.Generator().manual_seed(7)
    drive = net.input_drive(x)
    s0 = net.settle(x, steps=400)
    s_pos = net.settle(x, s0, steps=400, beta=beta, target=t)
    # per-tick states are exactly s0 or s_pos once settled; reuse them instead of re-settling every tick
    fast = _SettledNet(net, s0, s_pos, beta)
    ups = []
    n = 600
    for _ in range(n):
        if signal == "global":
            gw, gb, _ = r.flexible(fast, x, t, generator=gen, drive=drive)
        else:
            gw, gb, _ = r.flexible_per_sample(fast, x, t, generator=gen, drive=drive)
        ups.append(fe.flat(gw, gb))
    u = torch.stack(ups)
    mean, se2 = u.mean(0), (u.var(0) / n).sum()
    err2 = float(((mean - g) ** 2).sum())
    assert err2 <= 3.0 * float(se2), (err2, float(se2))
    assert float(u.std(0).norm()) > 0.1 * float(g.norm())  # the single updates really are noisy


class _SettledNet:
    """Stands in for an EnergyNet whose phases settle instantly: returns the settled state of the phase asked for."""

    def __init__(self, net, s0, s_pos, beta):
        self.net, self.s0, self.s_pos, self.beta = net, s0, s_pos, beta
        self.activation, self.sizes, self.weights, self.biases = net.activation, net.sizes, net.weights, net.biases
        self.step_size, self.settle_steps, self.substrate = net.step_size, net.settle_steps, None

    def zero_states(self, x):
        return self.net.zero_states(x)

    def settle(
        self,
        x,
        states=None,
        *,
        steps,
        beta=0.0,
        target=None,
        clamp_output=False,
        eps=None,
        input_drive=None,
        trace=None,
        tick=None,
    ):
        if isinstance(beta, torch.Tensor):
            pos = (beta != 0).to(x.dtype)
            return [pos * p + (1 - pos) * f for p, f in zip(self.s_pos, self.s0)]
        out = self.s_pos if beta else self.s0
        for _ in range(steps // tick[0] if tick is not None else 0):
            tick[1](out)
        return out


def test_non_periodic_fast_stand_in_matches_real_settling():
    """The stand-in used above gives the same update as real settling (a few batches, same random draws)."""
    net = make_net(sizes=(8, 6, 3), bias_std=0.2)
    x, _, t = make_batch(net, n=4)
    r = rule(
        phases="non_periodic",
        phase_distribution="exponential",
        phase_length=2.5,
        phases_per_batch=4,
        substeps=400,
        settle_first=400,
        nudging="positive",
        beta=0.5,
    )
    s0 = net.settle(x, steps=400)
    fast = _SettledNet(net, s0, net.settle(x, s0, steps=400, beta=0.5, target=t), 0.5)
    for seed in range(3):
        a = r.flexible(net, x, t, generator=torch.Generator().manual_seed(seed))
        c = r.flexible(fast, x, t, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(fe.flat(*a[:2]), fe.flat(*c[:2]), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("distribution,mean", [("geometric", 3.0), ("exponential", 2.5), ("fixed", 4.0)])
def test_phase_length_distributions(distribution, mean):
    gen = torch.Generator().manual_seed(0)
    xs = torch.tensor([draw_length(distribution, mean, gen) for _ in range(20000)], dtype=DT)
    assert abs(float(xs.mean()) - mean) < 4 * float(xs.std()) / math.sqrt(xs.numel()) + 1e-12
    if distribution == "geometric":
        assert float(xs.min()) >= 1 and bool((xs == xs.round()).all())
        assert abs(float((xs == 1).to(DT).mean()) - 1 / mean) < 0.01  # P(1) = q
    if distribution == "exponential":
        assert abs(float(xs.std()) - mean) < 0.05 * mean  # std = mean


# ------------------------------------------------------------------------- training
def test_rule_writes_descent_direction_and_layer_scales():
    net = make_net(bias_std=0.2).float()
    x, y, _ = make_batch(net)
    r = rule(nudging="positive", beta=0.2, layer_scales=[0.1, 0.05], free_steps=200, nudged_steps=200)
    r.step(net, Batch(x.float(), y))
    gw, gb, _ = r.two_phase(net, x.float(), fe.one_hot(y, 4))
    assert torch.allclose(net.weights[0].grad, 0.1 * gw[0]) and torch.allclose(net.biases[1].grad, 0.05 * gb[1])

    # a small SGD step along -grad lowers the loss of the settled network
    def loss():
        return float(fe.cost(net.settle(x.float(), steps=200), fe.one_hot(y, 4)).mean())

    before = loss()
    with torch.no_grad():
        for p in net.parameters():
            p -= 0.5 * p.grad
    assert loss() < before


@pytest.mark.parametrize("phases", ["two_phase", "temporally_local"])
def test_ep_learns_digits(phases):
    torch.set_num_threads(1)
    from neuro.build import build_experiment

    cfg = {
        "run": {"progress": False, "seed": 0},
        "data": {"dataset": "digits"},
        "model": {"kind": "energy", "hidden": [64]},
        "rule": {"name": "ep", "phases": phases, "layer_scales": [0.1, 0.05], "diag_every": 40},
        "optim": {"name": "sgd", "lr": 1.0},
        "train": {"epochs": 4, "batch_size": 20},
    }
    exp = build_experiment(cfg)
    trainer = exp.trainer(progress=False)
    records = trainer.fit()
    assert records[-1]["val_accuracy"] > 0.85
    assert -1.0 <= records[-1]["train_cos_true"] <= 1.0 and records[-1]["train_cos_ep_b0.01"] > 0.5


def test_report_section_draws_figures(tmp_path):
    net = make_net(bias_std=0.2).float()
    x, y, _ = make_batch(net)
    r = rule(diag_every=1, diag_steps=100)
    metrics = r.step(net, Batch(x.float(), y))
    assert {"cos_true", "cos_chl", "free_residual", "nudged_residual"} <= set(metrics)
    from neuro.report import as_legacy, collect_sections

    records = [{"event": "epoch", "epoch": 1, "train_cos_true": metrics["cos_true"]}]
    figures, tables = as_legacy(collect_sections([r], records, tmp_path))
    for _, png, _ in figures:
        assert (tmp_path / png).stat().st_size > 1000
    assert tables and len(tables[0][2]) == len(r.spec.diag_betas)


# --------------------------------------------------------------------------- errors
def test_bad_configs_are_one_line_errors():
    with pytest.raises(ConfigError, match="even"):
        rule(phases="temporally_local", phases_per_batch=3)
    with pytest.raises(ConfigError, match="beta"):
        rule(beta=0.0)
    with pytest.raises(ConfigError, match="per_sample"):
        rule(phase_signal="per_sample")
    from neuro.build import resolve

    with pytest.raises(ConfigError, match="not one of"):
        resolve({"model": {"kind": "energy"}, "rule": {"name": "ep", "phases": "random"}})
    with pytest.raises(IncompatibleError, match="energy"):
        rule().check_compatible(torch.nn.Linear(3, 3))
    with pytest.raises(IncompatibleError, match="layer_scales"):
        rule(layer_scales=[0.1]).check_compatible(make_net())


def test_mnist_first50k_split():
    from neuro.data import load_dataset
    from neuro.data.mnist import _read_pair
    from neuro.data.paths import data_root

    try:
        d = load_dataset("mnist_first50k", limit=None)
    except Exception as exc:  # noqa: BLE001 - no data here
        pytest.skip(f"MNIST not available: {exc}")
    assert (len(d.train), len(d.val), len(d.test)) == (50000, 10000, 10000)
    x, y = _read_pair(data_root(None) / "mnist", data_root(None), "train")
    # val is exactly images 50000..59999: same multiset of labels and the same pixel sum
    assert torch.equal(torch.bincount(d.val.y, minlength=10), torch.bincount(torch.from_numpy(y[50000:]), minlength=10))
    assert float((d.val.x.double() * 255).round().sum()) == float(x[50000:].astype("float64").sum())


def test_settling_substrate_hook():
    """A device-like substrate (here a torch simulator behind the documented interface) trains with EP."""

    class FakeDevice:
        name = "fake:hopfield0"

        def __init__(self):
            self.writes, self.w, self.b = 0, None, None

        def set_params(self, weights, biases):
            self.writes += 1
            self.w, self.b = [w.clone() for w in weights], [b.clone() for b in biases]

        def settle(self, x, states, *, steps, eps, beta=0.0, target=None, clamp_output=False):
            states = states if states is not None else [x.new_zeros(x.shape[0], w.shape[0]) for w in self.w]
            return fe.settle(
                x, states, self.w, self.b, steps=steps, eps=eps, beta=beta, target=target, clamp_output=clamp_output
            )

    net = make_net(bias_std=0.2).float()
    twin = make_net(bias_std=0.2).float()
    dev = FakeDevice()
    net.set_substrate(dev)
    assert not net.capabilities.differentiable and net.capabilities.substrate == "fake:hopfield0"
    x, y, _ = make_batch(net)
    r = rule(nudging="positive", free_steps=30, nudged_steps=10)
    r.step(net, Batch(x.float(), y))
    r.step(twin, Batch(x.float(), y))
    for p, q in zip(net.parameters(), twin.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
    writes = dev.writes
    net(x.float())
    assert dev.writes == writes  # parameters unchanged: not written again
    with torch.no_grad():
        net.weights[0].add_(0.01)
    net(x.float())
    assert dev.writes == writes + 1
    with pytest.raises(ConfigError, match="set_params"):
        net.set_substrate(object())


def test_diagnostics_skip_cosines_when_the_loss_is_exactly_zero():
    """Saturated outputs on their targets: gradient exactly 0, so no cosine (not a misleading 0)."""
    net = make_net(sizes=(5, 4, 3)).float()
    with torch.no_grad():
        net.weights[1].zero_()
        net.biases[1].copy_(torch.tensor([5.0, -5.0, -5.0]))  # output pinned at (1, 0, 0)
    x = torch.rand(4, 5)
    y = torch.zeros(4, dtype=torch.long)
    r = rule(diag_every=1, diag_steps=50)
    metrics = r.step(net, Batch(x, y))
    assert metrics["loss"] == 0.0 and metrics["diag_zero_gradient"] == 1.0 and "cos_true" not in metrics
    with torch.no_grad():
        net.biases[1].fill_(0.5)  # outputs inside (0, 1): the loss has a gradient
    metrics = r.step(net, Batch(x, y))
    assert metrics["diag_zero_gradient"] == 0.0 and -1 <= metrics["cos_true"] <= 1


# ------------------------------------------------------- fused settling (issue 15, settling cost)
@pytest.mark.parametrize(
    "sizes,nudge",
    [
        ((12, 10, 8, 4), {}),
        ((12, 10, 8, 4), {"beta": 0.7}),
        ((12, 10, 8, 4), {"beta": "per_sample"}),
        ((12, 10, 8, 4), {"clamp_output": True}),
        ((12, 4), {"beta": -0.5}),
        ((12, 4), {"clamp_output": True}),
    ],
)
@pytest.mark.parametrize("from_zero", [False, True])
def test_fused_settle_equals_repeated_general_step(sizes, nudge, from_zero):
    """``settle`` without a trace (fused loop, one transposed buffer) against ``settle_step`` repeated on the
    general (autograd-friendly) path, from a random state and from zero; states leave the box on the way."""
    net = make_net(sizes=sizes, bias_std=0.8, seed=4, weight_scale=2.0)
    x, _, t = make_batch(net, n=5)
    w, b = list(net.weights), list(net.biases)
    g = torch.Generator().manual_seed(1)
    start = None if from_zero else [torch.rand(x.shape[0], n, generator=g, dtype=DT) for n in net.sizes[1:]]
    kw = dict(nudge)
    if kw.get("beta") == "per_sample":
        kw["beta"] = torch.tensor([[0.5], [0.0], [-0.5], [0.5], [0.0]], dtype=DT)
    ref = start if start is not None else net.zero_states(x)
    for _ in range(9):
        ref = fe.settle_step(x, ref, w, b, eps=0.4, target=t, **kw)  # general path: no input_drive
    with torch.no_grad():
        fused = fe.settle(x, start, w, b, steps=9, eps=0.4, target=t, **kw)
    for a, c in zip(ref, fused):
        assert a.shape == c.shape
        assert torch.allclose(a, c, rtol=0, atol=1e-13)
    assert any(bool(((s == 0) | (s == 1)).any()) for s in ref)  # the projection was active
    if start is not None:  # the caller's start states are not written to
        g = torch.Generator().manual_seed(1)
        assert all(torch.equal(s, torch.rand(x.shape[0], s.shape[1], generator=g, dtype=DT)) for s in start)


# ------------------------------------------------------ duration-balanced non-periodic estimator
def _masked_two_phase(net, x, s_pos, s_neg, c, mask):
    """``c [dE(s+) - dE(s-)]`` summed only over the samples in ``mask`` (others contribute 0), batch mean."""
    plus = [torch.where(mask.unsqueeze(1), p, m) for p, m in zip(s_pos, s_neg)]
    return fe.flat(*fe.contrastive_grads(x, plus, s_neg, c))


@torch.no_grad()
def test_duration_balanced_update_equals_two_phase_when_settled():
    """Settled phases: ``(c/P2)[mean over + ticks - mean over - ticks]`` is the two-phase update divided by P2,
    whatever the realized durations (unequal here: the plain estimator is off by (T+ - T-) x rho rho).
    Real settling (3000 substeps per tick) for one schedule, the settled stand-in for the others."""
    net = make_net(bias_std=0.2)
    x, _, t = make_batch(net)
    beta = 0.4
    two = rule(free_steps=3000, nudged_steps=3000, nudging="positive", beta=beta)
    g = fe.flat(*two.two_phase(net, x, t)[:2])
    kw = dict(phases="non_periodic", phases_per_batch=4, p_positive=0.3, substeps=3000, settle_first=3000)
    bal = rule(nudging="positive", beta=beta, balance="duration", **kw)
    p2 = 1 - 0.3**4 - 0.7**4
    got = fe.flat(*bal.flexible(net, x, t, schedule=[(1, 2.0), (-1, 3.0), (1, 1.5), (-1, 1.0)])[:2])
    assert torch.allclose(got, g / p2, rtol=1e-9, atol=1e-12)
    s0 = net.settle(x, steps=3000)
    fast = _SettledNet(net, s0, net.settle(x, s0, steps=3000, beta=beta, target=t), beta)
    plain = rule(nudging="positive", beta=beta, **kw)
    for schedule in ([(-1, 4.0), (-1, 1.0), (-1, 2.0), (1, 0.5)], [(1, 1.0), (1, 6.0), (-1, 1.0), (1, 2.0)]):
        got = fe.flat(*bal.flexible(fast, x, t, schedule=schedule)[:2])
        assert torch.allclose(got, g / p2, rtol=1e-9, atol=1e-12)
        off = fe.flat(*plain.flexible(fast, x, t, schedule=schedule)[:2])
        assert float((off - g).norm()) > 0.5 * float(g.norm())  # unbalanced: far off on a single window
    # one phase type only: no contrast in the window, the update is exactly 0
    one = fe.flat(*bal.flexible(fast, x, t, schedule=[(1, 2.0), (1, 3.0), (1, 1.0), (1, 1.0)])[:2])
    assert float(one.abs().max()) == 0.0


@torch.no_grad()
def test_duration_balanced_per_sample_signal_equals_masked_two_phase():
    """Per-sample phase signals: each sample with both types contributes ``(c/P2)[dE_b(s+) - dE_b(s-)]``
    (its own durations cancel when settled), a sample with one type 0."""
    net = make_net(sizes=(8, 6, 3), bias_std=0.2)
    x, _, t = make_batch(net, n=4)
    beta = 0.5
    s0 = net.settle(x, steps=400)
    s_pos = net.settle(x, s0, steps=400, beta=beta, target=t)
    fast = _SettledNet(net, s0, s_pos, beta)
    # ticks x samples: sample 0 +,+,-,0; sample 1 -,-,-,+ ; sample 2 +,+,+,+ (one type); sample 3 -,+,0,0
    sigma = torch.tensor([[1, -1, 1, -1], [1, -1, 1, 1], [-1, -1, 1, 0], [0, 1, 1, 0]], dtype=DT)
    r = rule(
        phases="non_periodic",
        phases_per_batch=2,
        p_positive=0.5,
        phase_signal="per_sample",
        balance="duration",
        nudging="positive",
        beta=beta,
        settle_first=400,
    )
    got = fe.flat(*r.flexible_per_sample(fast, x, t, sigma=sigma, drive=net.input_drive(x))[:2])
    p2 = 1 - 0.5**2 - 0.5**2
    want = _masked_two_phase(net, x, s_pos, s0, 1 / (beta * p2), torch.tensor([True, True, False, True]))
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("signal", ["global", "per_sample"])
@torch.no_grad()
def test_duration_balanced_mean_matches_two_phase_with_far_smaller_spread(signal):
    """Random types and geometric lengths, settled phases: the balanced mean over 400 (200) windows equals the
    two-phase update (same statistical tolerance as above), and a single window's spread around it is
    far below the plain estimator's on the same draws."""
    net = make_net(sizes=(8, 6, 3), bias_std=0.2)
    x, _, t = make_batch(net, n=4)
    beta = 0.5
    g = fe.flat(*rule(free_steps=400, nudged_steps=400, nudging="positive", beta=beta).two_phase(net, x, t)[:2])
    s0 = net.settle(x, steps=400)
    fast = _SettledNet(net, s0, net.settle(x, s0, steps=400, beta=beta, target=t), beta)
    kw = dict(
        phases="non_periodic",
        phase_distribution="geometric",
        phase_length=2.5,
        phases_per_batch=4,
        p_positive=0.4,
        settle_first=400,
        nudging="positive",
        beta=beta,
        phase_signal=signal,
    )
    spreads = {}
    n = 400 if signal == "global" else 200  # (the per-sample path is slower per window)
    for balance in ("duration", "none"):
        r = rule(balance=balance, **kw)
        gen = torch.Generator().manual_seed(3)
        call = r.flexible if signal == "global" else r.flexible_per_sample
        u = torch.stack([fe.flat(*call(fast, x, t, generator=gen, drive=net.input_drive(x))[:2]) for _ in range(n)])
        if balance == "duration":  # (the plain one's mean: test_non_periodic_mean_update_matches_two_phase)
            err2 = float(((u.mean(0) - g) ** 2).sum())
            assert err2 <= 3.0 * float((u.var(0) / n).sum()), err2
        spreads[balance] = float((u - g).norm(dim=1).pow(2).mean().sqrt())
    # measured ratios: 0.11 (global), 0.26 (per-sample signals: the plain one already averages over the batch)
    assert spreads["duration"] < (0.25 if signal == "global" else 0.4) * spreads["none"], spreads


def test_balance_needs_non_periodic():
    with pytest.raises(ConfigError, match="non_periodic"):
        rule(phases="temporally_local", balance="duration")


# ---------------------------------------------------------------- persistent particles
def test_persistent_particles_continue_each_samples_free_phase():
    """With ``persistent``, sample i's free phase starts where its last one ended: after k visits (weights
    unchanged) its stored state is the state after k x free_steps steps from zero; other rows stay 0."""
    net = make_net(bias_std=0.2).float()
    x, y, _ = make_batch(net, n=6)
    x = x.float()
    r = ContrastiveRule(EPSpec(persistent=True, free_steps=3, nudging="positive"), n_train=20)
    index = torch.tensor([17, 2, 5, 11, 0, 9])
    for _ in range(4):
        r.step(net, Batch(x, y, index))
    want = net.settle(x, steps=12)
    with torch.no_grad():
        for p, w in zip(r.particles, want):
            assert p.shape == (20, w.shape[1])
            assert torch.allclose(p[index], w, atol=1e-6)
            rest = torch.ones(20, dtype=torch.bool)
            rest[index] = False
            assert float(p[rest].abs().max()) == 0.0
    # a permuted batch of the same samples reads the right rows
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    s = r.particle_states(net, x[perm], index[perm])
    assert torch.allclose(s[0], want[0][perm], atol=1e-6)
    # checkpoint round trip
    r2 = ContrastiveRule(EPSpec(persistent=True), n_train=20)
    r2.load_state_dict(r.state_dict())
    assert all(torch.equal(a, c) for a, c in zip(r.particles, r2.particles))
    # without indices: a one-line error naming the fix
    with pytest.raises(ConfigError, match="persistent"):
        r.step(net, Batch(x, y))


def test_trainer_batches_carry_sample_indices():
    from neuro.trainer import batches

    x, y = torch.arange(10.0).unsqueeze(1) * 3, torch.arange(10)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    seen = []
    for b in batches(x, y, 4, order):
        assert torch.equal(b.x[:, 0], 3.0 * b.index) and torch.equal(b.y, b.index)
        seen.append(b.index)
    assert torch.equal(torch.cat(seen), order)
