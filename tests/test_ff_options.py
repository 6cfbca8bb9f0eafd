"""Forward-forward options of issue 18: per-unit threshold, peer normalization, pass-through ReLU gradient,
the soft-rate gradient that lets a silent spiking layer learn, readout layer selection, parameter groups and the
linear-cooldown schedule.  Expected values are computed independently (by hand formulas or plain autograd)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from neuro.build import OptimSpec, build_optimizer, linear_cooldown, parameter_groups
from neuro.errors import ConfigError, IncompatibleError
from neuro.functional.forward_forward import length_normalize
from neuro.layers.mlp import MLP
from neuro.layers.spiking_mlp import SpikingMLP
from neuro.rules.base import Batch
from neuro.rules.ff import FF, FFSpec, ff_view


def _mlp_batch(seed=0, n=16, f=20, hidden=(12, 9, 7)):
    torch.manual_seed(seed)
    model = MLP(f, list(hidden), 4)
    x = torch.rand(n, f)
    y = torch.randint(0, 4, (n,))
    return model, Batch(x, y)


def _first_layer_reference(model, rule, batch, seed, loss_fn, pass_through=False, normalize_input=False):
    """Layer-1 gradient from plain autograd on the same positive/negative inputs the rule draws."""
    torch.manual_seed(seed)
    from neuro.functional.forward_forward import random_wrong_labels

    wrong = random_wrong_labels(batch.y, rule.n_classes)
    u = torch.cat([rule.embed(batch.x, batch.y), rule.embed(batch.x, wrong)])
    if normalize_input:
        u = length_normalize(u)
    lin = model.layers[0].linear
    z = lin(u)
    h = z + (torch.relu(z) - z).detach() if pass_through else torch.relu(z)
    loss = loss_fn(h, batch.y.numel())
    return torch.autograd.grad(loss, [lin.weight, lin.bias])


def test_per_unit_threshold_is_sum_of_squares_minus_width():
    model, batch = _mlp_batch()
    spec = FFSpec(goodness="sum_squares", threshold=1.0, threshold_scale="per_unit", normalize_input=True)
    rule = FF(spec, n_classes=4)
    torch.manual_seed(3)
    rule.step(model, batch)
    got = [p.grad.clone() for p in model.layers[0].linear.parameters()]
    n = model.layers[0].linear.out_features

    def loss(h, B):  # loeweX: BCE-with-logits of (sum h^2 - n) against 1 for positives, 0 for negatives
        logits = h.pow(2).sum(1) - n
        target = torch.cat([torch.ones(B), torch.zeros(B)])
        return F.binary_cross_entropy_with_logits(logits[:B], target[:B]) + F.binary_cross_entropy_with_logits(
            logits[B:], target[B:]
        )

    want = _first_layer_reference(model, rule, batch, 3, loss, normalize_input=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_pass_through_relu_gradient_reaches_units_that_are_off():
    """Dead units get no gradient through a true ReLU; with pass-through, peer normalization revives them.

    (The FF loss alone cannot: its derivative ``dG/dh_j = 2 h_j`` is zero for a unit that is off.)"""
    model, batch = _mlp_batch(hidden=(12,))
    dead = slice(0, 6)
    with torch.no_grad():
        model.layers[0].linear.bias[dead] = -50.0  # units 0-5 off for every input
    for relu_gradient, expect_zero in (("relu", True), ("pass_through", False)):
        for p in model.parameters():
            p.grad = None
        rule = FF(FFSpec(relu_gradient=relu_gradient, peer_normalization=1.0), n_classes=4)
        torch.manual_seed(4)
        rule.step(model, batch)
        g = model.layers[0].linear.weight.grad
        assert float(g[6:].abs().max()) > 0
        assert (float(g[dead].abs().max()) == 0.0) == expect_zero
    got = [p.grad.clone() for p in model.layers[0].linear.parameters()]

    def loss(h, B):  # default FF loss (mean-square goodness, logistic, theta = 2) + peer loss from a zero running mean
        g = h.pow(2).mean(1)
        m = 0.1 * h[:B].mean(0)
        return F.softplus(2.0 - g[:B]).mean() + F.softplus(g[B:] - 2.0).mean() + ((m.mean() - m) ** 2).mean()

    want = _first_layer_reference(model, rule, batch, 4, loss, pass_through=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_peer_normalization_loss_and_running_mean():
    torch.manual_seed(0)
    rule = FF(FFSpec(peer_normalization=0.03, peer_momentum=0.9), n_classes=4)
    a1 = torch.rand(6, 5, requires_grad=True)
    loss1 = rule._peer_loss(0, a1)
    m1 = 0.1 * a1.detach().mean(0)  # running mean starts at zero
    torch.testing.assert_close(loss1.detach(), ((m1.mean() - m1) ** 2).mean())
    a2 = torch.rand(6, 5, requires_grad=True)
    loss2 = rule._peer_loss(0, a2)
    m2 = 0.9 * m1 + 0.1 * a2.detach().mean(0)
    torch.testing.assert_close(rule.peer_means[0], m2)
    torch.testing.assert_close(loss2.detach(), ((m2.mean() - m2) ** 2).mean())
    # gradient flows only through the current batch's share: d/da2_ij = 0.1/6 * 2 (m_j - mean m)(1 - 1/5) / 5 ...
    (g,) = torch.autograd.grad(loss2, a2)
    n = 5
    dm = 2.0 * (m2 - m2.mean()) / n  # d loss / d m_j (the mean-over-units term cancels in the sum)
    torch.testing.assert_close(g, (0.1 / 6) * dm.expand(6, n), rtol=1e-5, atol=1e-8)
    # state survives a checkpoint
    other = FF(FFSpec(peer_normalization=0.03), n_classes=4)
    other.load_state_dict(rule.state_dict())
    torch.testing.assert_close(other.peer_means[0], m2)


def test_peer_normalization_evens_out_unit_activity_in_training():
    """A layer with one dominant unit (94 % of the layer's mean activity): peer normalization shrinks its share."""

    def dominance(weight):
        model, batch = _mlp_batch(n=64, hidden=(8,))
        with torch.no_grad():
            model.layers[0].linear.weight[0] = model.layers[0].linear.weight[0].abs() * 4
            model.layers[0].linear.bias[0] = 1.0
        rule = FF(FFSpec(peer_normalization=weight), n_classes=4)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for step in range(60):
            opt.zero_grad()
            torch.manual_seed(step)
            rule.step(model, batch)
            opt.step()
        with torch.no_grad():
            m = model.layers[0](rule.embed(batch.x, batch.y)).mean(0)
        return float(m[0] / m.sum())

    without, with_peer = dominance(0.0), dominance(3.0)
    assert without > 0.9
    assert with_peer < without - 0.1, (without, with_peer)


def _silent_spiking_model():
    torch.manual_seed(0)
    model = SpikingMLP(20, [16], 4, time_steps=10)
    with torch.no_grad():
        for layer in model.layers:
            layer.linear.weight.mul_(0.05)  # far below threshold: no layer fires
    x = torch.rand(32, 20)
    y = torch.randint(0, 4, (32,))
    return model, Batch(x, y)


def _spike_rate(model, rule, batch):
    with torch.no_grad():
        view_in = model.encoder(rule.embed(batch.x, batch.y))
        return float(model.layers[0].forward_trace(view_in).spikes.mean())


def test_silent_spiking_layer_gets_updates_and_starts_firing():
    model, batch = _silent_spiking_model()
    spec = FFSpec(goodness="sum_squares", loss="symba", rate_gradient="spikes")
    rule = FF(spec, n_classes=4)
    assert _spike_rate(model, rule, batch) == 0.0
    rule.step(model, batch)
    assert float(model.layers[0].linear.weight.grad.abs().max()) == 0.0  # the old behaviour: no signal at all

    model, batch = _silent_spiking_model()
    rule = FF(FFSpec(goodness="sum_squares", loss="symba", rate_gradient="soft"), n_classes=4)
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    rule.step(model, batch)
    assert float(model.layers[0].linear.weight.grad.abs().max()) > 1e-6
    for step in range(40):
        opt.zero_grad()
        torch.manual_seed(step)
        rule.step(model, batch)
        opt.step()
        if _spike_rate(model, rule, batch) > 0.01:
            break
    assert _spike_rate(model, rule, batch) > 0.01, "the silent layer never started firing"


def test_soft_rate_gradient_keeps_the_goodness_value():
    """Soft mode changes only the gradient: the logged goodness equals that of the spike rates."""
    model, batch = _silent_spiking_model()
    with torch.no_grad():
        for layer in model.layers:
            layer.linear.weight.mul_(200.0)  # now the layers fire
    metrics = {}
    for mode in ("spikes", "soft"):
        rule = FF(FFSpec(goodness="sum_squares", rate_gradient=mode), n_classes=4)
        torch.manual_seed(7)
        metrics[mode] = rule.step(model, batch)
    assert metrics["soft"]["layer0_g_pos"] > 0
    assert metrics["soft"]["layer0_g_pos"] == pytest.approx(metrics["spikes"]["layer0_g_pos"], rel=1e-6)
    assert metrics["soft"]["layer0_loss"] == pytest.approx(metrics["spikes"]["layer0_loss"], rel=1e-6)


def test_readout_layers_zero_the_other_layers_features():
    model, batch = _mlp_batch()
    rule = FF(FFSpec(readout=True, readout_layers=[2, 3]), n_classes=4)
    feats = rule._readout_features(ff_view(model, rule.spec), batch.x)
    n1 = model.layers[0].linear.out_features
    assert feats.shape[1] == sum(layer.linear.out_features for layer in model.layers)
    assert float(feats[:, :n1].abs().max()) == 0.0
    assert float(feats[:, n1:].abs().sum(dim=1).min()) > 0  # every sample has features from layers 2 and 3
    with pytest.raises(IncompatibleError, match="readout_layers"):
        FF(FFSpec(readout=True, readout_layers=[4]), n_classes=4).check_compatible(model)
    with pytest.raises(ConfigError, match="1-based"):
        FFSpec(readout_layers=[0]).check()


def test_parameter_groups_get_their_own_settings_and_bad_prefixes_fail():
    model, _ = _mlp_batch()
    spec = OptimSpec(name="sgd", lr=1e-3, weight_decay=3e-4, options={"momentum": 0.9},
                     groups={"readout": {"lr": 1e-2, "weight_decay": 3e-3}})
    groups = parameter_groups(spec, model.named_parameters())
    opt = build_optimizer(spec, groups)
    readout_ids = {id(p) for p in model.readout.parameters()}
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        if ids == readout_ids:
            assert (g["lr"], g["weight_decay"], g["momentum"]) == (1e-2, 3e-3, 0.9)
        else:
            assert not ids & readout_ids and (g["lr"], g["weight_decay"]) == (1e-3, 3e-4)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    with pytest.raises(ConfigError, match="no trainable parameter name starts with 'decoder'"):
        parameter_groups(OptimSpec(groups={"decoder": {"lr": 1.0}}), model.named_parameters())
    with pytest.raises(ConfigError, match="has no option 'lrr'"):
        parameter_groups(OptimSpec(groups={"readout": {"lrr": 1.0}}), model.named_parameters())


def test_linear_cooldown_matches_loewex_formula():
    E = 10
    for epoch in range(E):  # scheduler's epoch counter = epochs completed; the next epoch is e = epoch + 1
        e = epoch + 1
        want = 1.0 if e <= E // 2 else 2.0 * (1 + E - e) / E
        assert linear_cooldown(epoch, E) == pytest.approx(want)
    assert linear_cooldown(E - 1, E) == pytest.approx(0.2) and math.isclose(linear_cooldown(4, E), 1.0)


def test_bce_loss_is_loewex_bce_over_positives_and_negatives_together():
    """loss = "bce": torch's BCEWithLogitsLoss over the 2B logits (sum of squares minus width) at once, as in
    loeweX's FF_model._calc_ff_loss: half the "logistic" form's gradient."""
    model, batch = _mlp_batch()
    spec = FFSpec(goodness="sum_squares", threshold=1.0, threshold_scale="per_unit", normalize_input=True, loss="bce")
    rule = FF(spec, n_classes=4)
    torch.manual_seed(3)
    rule.step(model, batch)
    got = [p.grad.clone() for p in model.layers[0].linear.parameters()]
    n = model.layers[0].linear.out_features

    def loss(h, B):
        logits = h.pow(2).sum(1) - n
        return F.binary_cross_entropy_with_logits(logits, torch.cat([torch.ones(B), torch.zeros(B)]))

    want = _first_layer_reference(model, rule, batch, 3, loss, normalize_input=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_peer_running_means_start_at_peer_init():
    rule = FF(FFSpec(peer_normalization=0.03, peer_momentum=0.9, peer_init=0.5), n_classes=4)
    a = torch.rand(6, 5)
    rule._peer_loss(0, a)
    torch.testing.assert_close(rule.peer_means[0], 0.9 * 0.5 + 0.1 * a.mean(0))


def test_normal_fan_out_init_is_loewex_init():
    """model.init = "normal_fan_out": weights N(0, 1/out_features), zero biases, zero readout (loeweX's
    FF_model._init_weights); the default keeps torch's uniform(+-1/sqrt(fan_in))."""
    torch.manual_seed(0)
    model = MLP(784, [1000, 500], 10, init="normal_fan_out")
    for layer, out in zip(model.layers, (1000, 500)):
        w = layer.linear.weight
        assert abs(w.mean().item()) < 3 * out**-0.5 / math.sqrt(w.numel())
        assert w.std().item() == pytest.approx(out**-0.5, rel=0.01)
        assert not layer.linear.bias.any()
    assert not model.readout.weight.any() and not model.readout.bias.any()
    default = MLP(784, [1000], 10)
    assert default.layers[0].linear.weight.abs().max().item() <= 784**-0.5
    assert default.layers[0].linear.weight.std().item() == pytest.approx((3 * 784) ** -0.5, rel=0.01)
    with pytest.raises(ConfigError, match="model.init"):
        MLP(4, [3], 2, init="xavier")


def test_goodness_under_bf16_autocast_is_exact_float32_sum():
    """Under bf16 autocast a ReLU layer's activities come out in bfloat16; the goodness must still be the float32
    sum of their squares.  Rounded to bf16 (spacing 8 between 1024 and 2048) a sum of squares near 2000 would be
    off by up to 4, as large as the logit G - 2000 that loeweX's per-unit threshold builds from it."""
    from neuro.functional.forward_forward import goodness

    torch.manual_seed(0)
    lin = torch.nn.Linear(50, 2000)
    x = torch.randn(8, 50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = torch.relu(lin(x))
        h = h * (2000.0 / h.float().pow(2).sum(-1, keepdim=True)).sqrt().to(h.dtype)  # sum of squares near 2000
        g = goodness(h, "sum_squares")
        g_mean = goodness(h, "mean_squares")
    assert h.dtype == torch.bfloat16
    exact = h.double().pow(2).sum(-1)
    assert g.dtype == torch.float32
    assert torch.allclose(g.double(), exact, rtol=0, atol=2e-3), (g.double() - exact).abs().max()
    assert torch.allclose(g_mean.double(), exact / 2000, rtol=0, atol=2e-6)
    assert (exact - 2000).abs().max() < 60  # the regime where bf16 rounding of G would matter


def test_ff_predict_modes_bench_reloads_a_run_and_evaluates_both_predictions(tmp_path, capsys):
    """bench/ff_predict_modes.py on a 1-epoch digits FF run: its goodness figure on test is the one the run itself
    logged (same checkpoint, same seeded evaluation), the readout's is a real accuracy, and a run without a
    readout is refused in one line."""
    import json
    import tomllib
    from pathlib import Path

    from bench.ff_predict_modes import main as modes_main
    from neuro.config import apply_overrides
    from neuro.workflow import train

    examples = Path(__file__).resolve().parents[1] / "examples"
    config = tomllib.loads((examples / "digits_ff.toml").read_text())
    config = apply_overrides(config, ["train.epochs=1", f"run.out_dir={tmp_path}", "run.name=ff1"])
    run, result = train(config, progress=False, echo=lambda *a, **k: None)
    modes_main([str(run.path)])
    got = json.loads(capsys.readouterr().out)
    assert got["goodness_test"] == pytest.approx(100 * result["accuracy"], abs=0.006)
    assert 20.0 < got["readout_test"] <= 100.0 and 20.0 < got["readout_val"] <= 100.0
    bare = apply_overrides(config, ["rule.readout=false", "rule.negatives=random", "run.name=ff0"])
    run0, _ = train(bare, progress=False, echo=lambda *a, **k: None)
    with pytest.raises(SystemExit, match="^error: .*without rule.readout = true"):
        modes_main([str(run0.path)])
