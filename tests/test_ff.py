"""Forward-forward: goodness/loss golden values, layer-local gradients, CFF == FF at weight 0, CLI."""

from __future__ import annotations

import math

import pytest
import torch

from neuro.config import parse_spec
from neuro.errors import ConfigError, IncompatibleError
from neuro.functional.forward_forward import (
    collaborative_goodness,
    collaborative_threshold,
    embed_label,
    ff_loss,
    goodness,
    hardest_wrong_labels,
    length_normalize,
    random_wrong_labels,
    sampled_wrong_labels,
    symba_loss,
)
from neuro.layers.mlp import MLP
from neuro.layers.spiking_mlp import SpikingMLP
from neuro.rules.base import Batch
from neuro.rules.ff import FF, FFSpec


def softplus(u: float) -> float:
    return math.log1p(math.exp(u))


# ------------------------------------------------------------------ golden values
def test_goodness_hand_computed():
    h = torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.5, 1.0]])
    # sum of squares: 1 + 4 + 0 = 5; 9 + 0.25 + 1 = 10.25; mean: 5/3, 10.25/3
    assert goodness(h, "sum_squares").tolist() == [5.0, 10.25]
    assert goodness(h, "mean_squares").tolist() == pytest.approx([5.0 / 3, 10.25 / 3])
    with pytest.raises(ValueError, match="unknown goodness"):
        goodness(h, "l1")


def test_ff_loss_hand_computed():
    g_pos = torch.tensor([5.0, 1.0])
    g_neg = torch.tensor([2.0, 6.0])
    theta = 3.0
    # positives: softplus(3-5), softplus(3-1); negatives: softplus(2-3), softplus(6-3)
    want = (softplus(-2) + softplus(2)) / 2 + (softplus(-1) + softplus(3)) / 2
    assert float(ff_loss(g_pos, g_neg, theta)) == pytest.approx(want, rel=1e-6)
    # negative form: positives should be low, negatives high
    want_neg = (softplus(2) + softplus(-2)) / 2 + (softplus(1) + softplus(-3)) / 2
    assert float(ff_loss(g_pos, g_neg, theta, negative_form=True)) == pytest.approx(want_neg, rel=1e-6)
    # SymBa, alpha 4: softplus(4 (2-5)), softplus(4 (6-1))
    want_symba = (softplus(-12) + softplus(20)) / 2
    assert float(symba_loss(g_pos, g_neg, 4.0)) == pytest.approx(want_symba, rel=1e-6)


def test_ff_loss_gradient_is_the_logistic_derivative():
    # dL/dG_pos = -sigmoid(theta - G_pos) / B ; dL/dG_neg = sigmoid(G_neg - theta) / B
    g_pos = torch.tensor([5.0, 1.0], requires_grad=True)
    g_neg = torch.tensor([2.0, 6.0], requires_grad=True)
    ff_loss(g_pos, g_neg, 3.0).backward()
    sig = lambda u: 1 / (1 + math.exp(-u))  # noqa: E731
    assert g_pos.grad.tolist() == pytest.approx([-sig(-2) / 2, -sig(2) / 2], rel=1e-6)
    assert g_neg.grad.tolist() == pytest.approx([sig(-1) / 2, sig(3) / 2], rel=1e-6)


def test_collaborative_goodness_and_threshold():
    g_layers = torch.tensor([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]])
    own = torch.tensor([1.5, 2.5], requires_grad=True)
    out = collaborative_goodness(g_layers, 1, own, 0.5)
    # own + 0.5 * (layer 0 + layer 2) = 1.5 + 0.5*101, 2.5 + 0.5*202
    assert out.tolist() == [1.5 + 50.5, 2.5 + 101.0]
    out.sum().backward()
    assert own.grad.tolist() == [1.0, 1.0]
    assert collaborative_goodness(g_layers, 1, own, 0.0) is own
    assert collaborative_threshold(2.0, 4, 0.5) == 2.0 * (1 + 0.5 * 3)
    assert collaborative_threshold(2.0, 4, 0.0) == 2.0


def test_length_normalize_and_label_embedding():
    h = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    rms = math.sqrt((9 + 16) / 2)
    assert length_normalize(h).tolist()[0] == pytest.approx([3 / rms, 4 / rms], rel=1e-6)
    assert length_normalize(h).tolist()[1] == [0.0, 0.0]
    x = torch.full((3, 6), 0.5)
    out = embed_label(x, torch.tensor([1, -1, 0]), 3, scale=2.0, offset=2)
    want = torch.tensor(
        [
            [0.5, 0.5, 0.0, 2.0, 0.0, 0.5],
            [0.5, 0.5, 2 / 3, 2 / 3, 2 / 3, 0.5],
            [0.5, 0.5, 2.0, 0.0, 0.0, 0.5],
        ]
    )
    torch.testing.assert_close(out, want)
    assert x.eq(0.5).all()  # input untouched
    out = embed_label(x[:1], torch.tensor([2]), 3, features=[5, 0, 3])
    assert out.tolist() == [[0.0, 0.5, 0.5, 1.0, 0.5, 0.0]]
    with pytest.raises(ValueError, match="distinct"):
        embed_label(x, torch.tensor([0, 0, 0]), 3, features=[1, 1, 2])


def test_wrong_labels_are_wrong():
    torch.manual_seed(0)
    y = torch.randint(0, 10, (2000,))
    wrong = random_wrong_labels(y, 10)
    assert (wrong != y).all() and set(wrong.tolist()) == set(range(10))
    scores = torch.tensor([[5.0, 4.0, 1.0], [0.0, 3.0, 2.0]])
    assert hardest_wrong_labels(scores, torch.tensor([0, 1])).tolist() == [1, 2]
    drawn = sampled_wrong_labels(scores.expand(1000, 2, 3)[:, 0], torch.zeros(1000, dtype=torch.long))
    assert (drawn != 0).all()
    # p(1) / p(2) = e^4 / e^1 among wrong labels: about 95% label 1
    assert 0.9 < float((drawn == 1).float().mean()) < 0.99


# --------------------------------------------------------------- layer locality
def _mlp_batch(seed=0, n=16, f=20):
    torch.manual_seed(seed)
    model = MLP(f, [12, 9, 7], 4)
    x = torch.rand(n, f)
    y = torch.randint(0, 4, (n,))
    return model, Batch(x, y)


def _spiking_batch():
    model = SpikingMLP(20, [12, 9], 4, time_steps=8)
    with torch.no_grad():  # strong enough weights that the layers fire
        for layer in model.layers:
            layer.linear.weight.mul_(6.0)
    return model, Batch(torch.rand(8, 20), torch.randint(0, 4, (8,)))


@pytest.mark.parametrize(
    "spec",
    [FFSpec(), FFSpec(loss="symba", goodness="sum_squares"), FFSpec(collaborative=True, collaboration=0.3)],
    ids=["logistic", "symba", "collaborative"],
)
def test_ff_gradients_equal_each_layers_own_loss_gradient(spec):
    """The rule's grad of layer j is d L_j / d W_j; in the connected graph, later losses would add to it."""
    model, batch = _mlp_batch()
    rule = FF(spec, n_classes=4)
    torch.manual_seed(1)
    rule.step(model, batch)
    rule_grads = [[p.grad.clone() for p in layer.parameters()] for layer in model.layers]

    # Reference: the same forward without any detach, and torch.autograd.grad per layer.
    torch.manual_seed(1)
    wrong = random_wrong_labels(batch.y, 4)
    u = torch.cat([rule.embed(batch.x, batch.y), rule.embed(batch.x, wrong)])
    B = batch.y.numel()
    goods = []
    for layer in model.layers:
        h = layer(u)
        goods.append(goodness(h, spec.goodness))
        u = model.next_input(h)
    g_all = torch.stack(goods)
    L = len(goods)
    theta = collaborative_threshold(spec.threshold, L, spec.collaboration) if spec.collaborative else spec.threshold
    losses = []
    for k, g in enumerate(goods):
        if spec.collaborative:
            g = collaborative_goodness(g_all, k, g, spec.collaboration)
        losses.append(
            symba_loss(g[:B], g[B:], spec.symba_alpha) if spec.loss == "symba" else ff_loss(g[:B], g[B:], theta)
        )
    for j, layer in enumerate(model.layers):
        own = torch.autograd.grad(losses[j], list(layer.parameters()), retain_graph=True)
        for got, want in zip(rule_grads[j], own):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
        if j < L - 1:  # the test can fail: a later layer's loss does reach layer j in the connected graph
            leak = torch.autograd.grad(losses[j + 1], list(layer.parameters()), retain_graph=True)
            assert max(float(t.abs().max()) for t in leak) > 1e-6


@pytest.mark.parametrize("kind", ["mlp", "mlp-hard", "spiking"])
def test_no_layer_input_carries_a_graph(kind):
    """Autograd check on every layer input during a step: nothing upstream is reachable from it."""
    torch.manual_seed(0)
    if kind.startswith("mlp"):
        model, batch = _mlp_batch()
        spec = (
            FFSpec(readout=True, negatives="readout") if kind == "mlp" else FFSpec(negatives="hard", collaborative=True)
        )
    else:
        model, batch = _spiking_batch()
        spec = FFSpec(goodness="sum_squares")
    seen = []

    def hook(module, args):
        (inp,) = args
        seen.append((inp.requires_grad, inp.grad_fn))

    if kind.startswith("mlp"):
        handles = [layer.linear.register_forward_pre_hook(hook) for layer in model.layers]  # the layer input
        FF(spec, n_classes=4).step(model, batch)
        for h in handles:
            h.remove()
    else:
        # A LIF layer's input reaches its weights through simulators.synapse.synaptic_input (dense
        # matmul or event gather), not through nn.Linear.__call__: observe it there.
        import neuro.layers.lif as lif_layer

        real = lif_layer.synaptic_input

        def observed(x, *rest, **kw):
            hook(None, (x,))
            return real(x, *rest, **kw)

        lif_layer.synaptic_input = observed
        try:
            FF(spec, n_classes=4).step(model, batch)
        finally:
            lif_layer.synaptic_input = real
    assert len(seen) >= len(model.layers)
    assert all(not rg and fn is None for rg, fn in seen), seen
    # and every layer's parameters got a pseudo-gradient (the first one certainly nonzero)
    assert all(p.grad is not None for layer in model.layers for p in layer.parameters())
    assert model.layers[0].linear.weight.grad.abs().sum() > 0


def test_collaborative_ff_with_weight_zero_is_ff_exactly():
    def grads(spec, kind):
        torch.manual_seed(3)
        if kind == "mlp":
            model, batch = _mlp_batch(seed=3)
        else:
            model, batch = _spiking_batch()
        torch.manual_seed(4)
        metrics = FF(spec, n_classes=4).step(model, batch)
        return [p.grad.clone() for p in model.parameters() if p.grad is not None], metrics

    for kind, base in (("mlp", FFSpec()), ("spiking", FFSpec(goodness="sum_squares", threshold=1.0))):
        ff, m_ff = grads(base, kind)
        cff0, m_cff0 = grads(FFSpec(**{**base.__dict__, "collaborative": True, "collaboration": 0.0}), kind)
        cff1, _ = grads(FFSpec(**{**base.__dict__, "collaborative": True, "collaboration": 0.5}), kind)
        assert len(ff) == len(cff0) > 0
        assert all(torch.equal(a, b) for a, b in zip(ff, cff0))
        assert m_ff == m_cff0
        assert not all(torch.equal(a, b) for a, b in zip(ff, cff1))


def test_goodness_prediction_sums_layers_and_can_skip_the_first():
    model, batch = _mlp_batch()
    for skip in (False, True):
        rule = FF(FFSpec(skip_first=skip), n_classes=4)
        scores = rule.predict(model, batch.x)
        for c in range(4):
            u = rule.embed(batch.x, torch.full((16,), c))
            total = torch.zeros(16)
            for k, layer in enumerate(model.layers):
                h = layer(u)
                if k >= int(skip):
                    total += goodness(h, "mean_squares")
                u = model.next_input(h)
            torch.testing.assert_close(scores[:, c], total.detach())


@pytest.mark.parametrize("activity,spike_norm", [("rate", False), ("membrane", False), ("rate", True)])
def test_spiking_goodness_prediction_matches_a_manual_trace(activity, spike_norm):
    """Rates are spikes per step over the window; membrane is the window-mean potential; same encoder noise per
    label."""
    model, batch = _spiking_batch()
    rule = FF(FFSpec(goodness="sum_squares", activity=activity, spike_norm=spike_norm), n_classes=4)
    torch.manual_seed(5)
    scores = rule.predict(model, batch.x)
    torch.manual_seed(5)
    seed = int(torch.randint(0, 2**31 - 1, (1,)))
    for c in range(4):
        x = rule.embed(batch.x, torch.full((8,), c))
        u = model.encoder(x, generator=torch.Generator().manual_seed(seed))
        total = torch.zeros(8)
        for layer in model.layers:
            tr = layer.forward_trace(u)
            a = tr.membrane.mean(0) if activity == "membrane" else tr.spikes.sum(0) / tr.spikes.shape[0]
            total += (a * a).sum(1)
            u = tr.spikes
            if spike_norm:
                u = u / torch.sqrt((u * u).mean(-1, keepdim=True) + 1e-8)
        torch.testing.assert_close(scores[:, c], total.detach())


def test_ff_errors_are_one_line():
    with pytest.raises(ConfigError, match="readout = true"):
        FFSpec(predict="readout").check()
    with pytest.raises(ConfigError, match="readout = true"):
        FFSpec(negatives="readout").check()
    with pytest.raises(ConfigError, match=r"rule.loss = 'hinge' is not one of logistic, bce, symba"):
        parse_spec(FFSpec, {"loss": "hinge"}, "rule")
    rule = FF(FFSpec(readout=True), n_classes=4)
    with pytest.raises(IncompatibleError, match="readout = false"):
        rule.check_compatible(SpikingMLP(20, [12], 4, time_steps=4))
    with pytest.raises(IncompatibleError, match="model kinds mlp or spiking_mlp"):
        FF(FFSpec(), 4).check_compatible(torch.nn.Sequential(torch.nn.Linear(3, 3)))


# ------------------------------------------------------------------------ CLI
LABEL_PIXELS = "rule.label_features=[0,8,16,24,32,40,48,56,7,15]"


def test_cli_train_rule_ff_works_on_the_default_spiking_mlp(cli, tmp_path):
    out = cli(
        "train",
        "--rule",
        "ff",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--set",
        "data.limit=64",
        "--set",
        LABEL_PIXELS,
        "--set",
        "model.hidden=[16]",
        "--set",
        "model.time_steps=4",
    )
    assert out.returncode == 0, out.stderr
    assert "spiking_mlp" in out.stdout and "rule ff" in out.stdout and "test accuracy" in out.stdout


def test_ff_run_on_mlp_writes_its_report_and_bad_combinations_fail_early(tmp_path):
    from neuro import config as cfg
    from neuro import workflow
    from neuro.build import build_experiment

    config = cfg.apply_overrides(
        {},
        [
            "run.name=d",
            f"run.out_dir={tmp_path}",
            "run.progress=false",
            "data.limit=64",
            "train.epochs=1",
            "model.kind=mlp",
            "model.hidden=[16,16]",
            "rule.name=ff",
            "rule.readout=true",
            "rule.negatives=readout",
            LABEL_PIXELS,
        ],
    )
    run, test = workflow.train(config, echo=lambda *_: None)
    assert 0.0 <= test["accuracy"] <= 1.0 and test["count"] == 64
    assert (run.path / "report.html").is_file() and (run.path / "ff_goodness.png").is_file()
    assert "FF layers (last epoch)" in (run.path / "report.html").read_text()
    bad = cfg.apply_overrides(config, ["model.kind=spiking_mlp", "model.hidden=[16]"])
    with pytest.raises(IncompatibleError, match="readout = false"):
        build_experiment(bad)
    with pytest.raises(ConfigError, match="label_features"):
        build_experiment(cfg.apply_overrides(config, ["rule.label_features=[1,2,3]"]))


def test_paired_dropout_shares_the_mask_between_a_samples_copies():
    from neuro.rules.ff import paired_dropout

    torch.manual_seed(0)
    u = torch.rand(2 * 500, 40) + 0.5
    out = paired_dropout(u, 0.25, batch_dim=0)
    kept = out != 0
    assert torch.equal(kept[:500], kept[500:])  # positive and negative copy: same units dropped
    assert abs(float(kept.float().mean()) - 0.75) < 0.01
    torch.testing.assert_close(out[kept], u[kept] / 0.75)
    spikes = torch.rand(6, 2 * 8, 5)  # [T, 2B, F]: batch on dim 1
    ks = paired_dropout(spikes + 1, 0.5, batch_dim=1) != 0
    assert torch.equal(ks[:, :8], ks[:, 8:])


def test_ff_dropout_zero_is_ff_exactly_and_dropout_changes_only_layers_after_the_first():
    grads = {}
    for p in (0.0, 0.3):
        model, batch = _mlp_batch()
        rule = FF(FFSpec(dropout=p), n_classes=4)
        torch.manual_seed(1)
        rule.step(model, batch)
        grads[p] = [layer.linear.weight.grad.clone() for layer in model.layers]
    model, batch = _mlp_batch()
    torch.manual_seed(1)
    FF(FFSpec(), n_classes=4).step(model, batch)
    for got, want in zip(grads[0.0], [layer.linear.weight.grad for layer in model.layers]):
        assert torch.equal(got, want)
    assert torch.equal(grads[0.3][0], grads[0.0][0])  # the first layer sees pixels and label, never dropped
    assert not torch.allclose(grads[0.3][1], grads[0.0][1])
    with pytest.raises(ConfigError, match=r"rule.dropout must be in \[0, 1\), got 1.0"):
        FF(FFSpec(dropout=1.0))
