"""Physical networks: refusal of backprop, mfff never differentiates the physics, PAT with an
exact twin equals backprop, SPSA is unbiased, accounting, hardware parameters and resume."""

from __future__ import annotations

import copy

import pytest
import torch

import neuro.layers.hardware as hardware
from neuro.build import build_experiment
from neuro.errors import HardwareGradientError, IncompatibleError
from neuro.layers.physical import PhysicalLayer
from neuro.rules import BPTT, Batch
from neuro.rules.mfff import MFFF, MFFFSpec
from neuro.rules.physical_backprop import PAT, InSilico, PATSpec
from neuro.rules.spsa import spsa_gradient
from neuro.runs import Run
from neuro.substrates import open_substrate

B = 16


def config(rule: dict, noise: float = 0.01, n_control: int = 3, **train) -> dict:
    return {
        "run": {"name": "p", "seed": 1, "progress": False},
        "data": {"dataset": "digits", "limit": 64},
        "model": {
            "kind": "physical_mlp",
            "physical": [24],
            "hidden": [12, 12, 12],
            "substrate_options": {"noise": noise, "n_control": n_control},
        },
        "rule": rule,
        "optim": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 2, "batch_size": B, **train},
    }


def batch_of(exp) -> Batch:
    return Batch(exp.data.train.x[:B], exp.data.train.y[:B])


def test_physical_layer_refuses_backprop_with_a_clear_error():
    layer = PhysicalLayer(open_substrate("wave:scattering", 3, 4), "simulator:wave-scattering")
    assert layer.capabilities.differentiable is False
    assert layer.capabilities.substrate == "simulator:wave-scattering"
    assert layer.capabilities.hardware_parameters == ("hardware.control",)
    x = (torch.rand(2, 3) * 0.5).requires_grad_()
    with pytest.raises(
        HardwareGradientError, match=r"cannot backpropagate through layer 'simulator:wave-scattering'.*mfff, pat"
    ):
        layer(x).sum().backward()
    # even with a constant input, a loss on the measurement cannot silently skip the controls
    with pytest.raises(HardwareGradientError, match="it is measured, not differentiable"):
        layer(x.detach()).sum().backward()
    exp = build_experiment(config({"name": "mfff"}))
    with pytest.raises(
        IncompatibleError,
        match=r"rule `bptt` needs gradients through layer 0 .*simulator:wave-scattering.*`mfff` or `pat`",
    ):
        BPTT().check_compatible(exp.model)


@pytest.mark.parametrize("variant", ["supervised", "contrastive"])
def test_mfff_never_differentiates_the_physics(variant, monkeypatch):
    refused = []
    monkeypatch.setattr(hardware._RefuseBackprop, "backward", staticmethod(lambda ctx, g: refused.append(1)))
    exp = build_experiment(config({"name": "mfff", "variant": variant, "spsa_directions": 2}))
    rule, model = exp.rule, exp.model
    metrics = rule.step(model, batch_of(exp))
    subs = [layer.substrate for layer in model.physical_layers()]
    assert refused == []
    assert all(s.grad_touches == 0 and s.exact_calls == 0 for s in subs)
    # gradients reached every digital layer; controls got an SPSA estimate
    for block in model.blocks:
        assert block.digital.linear.weight.grad.abs().sum() > 0
        assert block.physical.hardware["control"].grad.abs().sum() > 0
    # measurements: per block, the batch (supervised: positive + negative) once, plus 2 per SPSA direction
    n = B * (2 if variant == "supervised" else 1)
    assert metrics["n_physical_evals"] == 3 * n * (1 + 2 * 2) == sum(s.n_evals for s in subs)
    assert (model.readout.linear.weight.grad is not None) == (variant == "contrastive")


def test_pat_with_exact_twin_equals_backprop_gradient():
    exp = build_experiment(config({"name": "insilico"}, noise=0.0))
    twin_model = copy.deepcopy(exp.model)
    batch = batch_of(exp)
    InSilico().step(exp.model, batch)
    metrics = PAT(PATSpec(twin="exact")).step(twin_model, batch)
    assert metrics["n_physical_evals"] == 3 * B
    ref = dict(exp.model.named_parameters())
    for name, p in twin_model.named_parameters():
        if ref[name].grad is None:
            assert p.grad is None, name
            continue
        assert ref[name].grad.abs().sum() > 0, name
        assert torch.allclose(p.grad, ref[name].grad, rtol=1e-5, atol=1e-7), name


def test_pat_with_fitted_twin_learns_from_measurements():
    exp = build_experiment(
        config(
            {
                "name": "pat",
                "twin": "fitted",
                "twin_samples": 2048,
                "twin_epochs": 8,
                "twin_hidden": 64,
                "twin_lr": 0.005,
            }
        )
    )
    rule = exp.rule
    first = rule.step(exp.model, batch_of(exp))
    assert first["n_physical_evals"] == 3 * 2048 + 3 * B  # warm-up measurements are counted
    for layer, twin in zip(exp.model.physical_layers(), rule.twins):  # held-out measurements
        e = torch.rand(128, layer.n_in, generator=torch.Generator().manual_seed(7)) * 2 - 1
        y = layer(e).detach()
        mse = float(((twin(e, layer.hardware["control"]).detach() - y) ** 2).mean())
        assert mse < 0.5 * float(y.var()), (mse, float(y.var()))  # the twin explains most of the response
    assert all(p.grad is not None for p in exp.model.parameters())
    assert rule.step(exp.model, batch_of(exp))["n_physical_evals"] == 3 * B


def test_insilico_refuses_a_device_without_exact_simulator():
    exp = build_experiment(config({"name": "mfff"}))

    class Device:  # a black box implementing only the Substrate protocol
        def __init__(self, inner):
            self.inner = inner
            self.n_in, self.n_out, self.input_range = inner.n_in, inner.n_out, inner.input_range

        def forward(self, x):
            return self.inner.forward(x)

        def set_params(self, p):
            self.inner.set_params(p)

        def get_params(self):
            return self.inner.get_params()

        def reset(self):
            pass

        def describe(self):
            return {}

    layer = exp.model.blocks[1].physical
    layer.substrate = Device(layer.substrate)
    with pytest.raises(IncompatibleError, match=r"rule `insilico` needs an exact simulator of layer 1"):
        InSilico().check_compatible(exp.model)
    with pytest.raises(IncompatibleError, match=r"twin = \"exact\" needs an exact simulator"):
        PAT(PATSpec(twin="exact")).check_compatible(exp.model)
    MFFF(MFFFSpec()).step(exp.model, batch_of(exp))  # the model-free rule runs on the black box


def test_insilico_accounting_hand_counted():
    exp = build_experiment(config({"name": "insilico"}, n_control=2))
    metrics = exp.rule.step(exp.model, batch_of(exp))
    assert metrics["n_physical_evals"] == 0
    digital = B * (24 * 12 * 3 + 36 * 10)  # three digital layers and the readout
    m = [64 + 10 + 2, 12 + 2, 12 + 2]
    physics = B * sum(4 * 24 * w + 2 * 24 for w in m)  # complex matmul + intensity per sample
    assert metrics["n_digital_macs"] == 3 * digital + 3 * physics


def test_spsa_expectation_matches_the_true_gradient():
    a = torch.tensor([1.0, -2.0, 0.5, 3.0])

    def f(t):
        return float(0.5 * (a * t * t).sum() + torch.sin(t[0] * t[1]) + t[2] * t[3] ** 2)

    theta = torch.tensor([0.3, -0.7, 1.1, 0.4])
    t0, t1, t2, t3 = theta.tolist()
    import math

    true = a * theta + torch.tensor([t1 * math.cos(t0 * t1), t0 * math.cos(t0 * t1), t3**2, 2 * t2 * t3])
    g = torch.Generator().manual_seed(0)
    est = torch.stack([spsa_gradient(f, theta, 1e-3, 1, g)[0] for _ in range(4000)])
    se = est.std(0) / est.shape[0] ** 0.5
    assert torch.all((est.mean(0) - true).abs() < 4 * se), (est.mean(0), true, se)
    assert torch.all(se > 1e-3)  # a real estimator with variance, not the true gradient in disguise
    _, n_evals = spsa_gradient(f, theta, 1e-3, 5, g)
    assert n_evals == 10


def test_hardware_parameters_are_written_and_rewritten_after_loading():
    exp = build_experiment(config({"name": "mfff"}))
    layer = exp.model.blocks[0].physical
    layer(torch.zeros(1, layer.n_in))
    assert torch.equal(layer.substrate.get_params()["control"], layer.hardware["control"].detach())
    with torch.no_grad():
        layer.hardware["control"].fill_(2.0)  # outside the device range: clamped before writing
    layer(torch.zeros(1, layer.n_in))
    assert torch.all(layer.substrate.get_params()["control"] == 1.0)
    state = exp.model.state_dict()
    fresh = build_experiment(config({"name": "mfff"})).model
    fresh.load_state_dict(state)
    fresh_layer = fresh.blocks[0].physical
    fresh_layer(torch.zeros(1, layer.n_in))
    assert torch.all(fresh_layer.substrate.get_params()["control"] == 1.0)


def test_mfff_resume_is_bit_identical(tmp_path):
    cfg = config({"name": "mfff"}, noise=0.05)
    cfg["model"]["substrate_options"]["drift"] = 0.01
    full = build_experiment(cfg)
    full.trainer(Run.create(tmp_path, "full"), progress=False).fit()
    first = build_experiment(cfg)
    run = Run.create(tmp_path, "cut")
    trainer = first.trainer(run, progress=False)
    trainer.epochs = 1
    trainer.fit()
    torch.manual_seed(99)
    second = build_experiment(cfg)
    resumed = second.trainer(run, progress=False)
    resumed.resume(run.checkpoint_path)
    resumed.fit()
    for (name, p), q in zip(full.model.named_parameters(), second.model.parameters()):
        assert torch.equal(p, q), name
    assert full.model.blocks[2].physical.substrate.clock == second.model.blocks[2].physical.substrate.clock


def test_config_errors_are_one_line():
    from neuro.errors import ConfigError

    with pytest.raises(IncompatibleError, match=r"rule `bptt` needs gradients through layer 0"):
        build_experiment(config({"name": "bptt"}))
    bad = config({"name": "mfff"})
    bad["model"]["substrate"] = "wave:scatter"
    with pytest.raises(ConfigError, match=r"unknown substrate 'wave:scatter' \(did you mean 'wave:scattering'\?\)"):
        build_experiment(bad)
    with pytest.raises(ConfigError, match=r"rule.variant = 'hinton' is not one of supervised, contrastive"):
        build_experiment(config({"name": "mfff", "variant": "hinton"}))


def test_deployed_copy_sees_the_same_drifting_device():
    from neuro.deployment import DeployedBaseline

    cfg = config({"name": "mfff", "variant": "supervised"}, noise=0.0)  # goodness prediction: one pass per class
    cfg["model"]["substrate_options"].update({"drift": 0.05, "drift_tick": 8})
    live, frozen = build_experiment(cfg), build_experiment(cfg)
    live.rule.step(live.model, batch_of(live))  # device time passes on the live device only
    hook = DeployedBaseline(frozen.model, frozen.rule)
    record = {}
    hook(live.trainer(None, progress=False), record)
    assert 0.0 <= record["deployed_val_accuracy"] <= 1.0
    e = torch.rand(4, 74) * 2 - 1
    a, b = live.model.blocks[0].physical.substrate, frozen.model.blocks[0].physical.substrate
    # caught up with the live device, then one measured pass per class over the validation split
    assert b.clock == a.clock + 10 * len(live.data.val)
    a.advance_time(b.clock - a.clock)
    c = {"control": torch.zeros(3)}  # (SPSA left a perturbed control written on the live device)
    assert torch.equal(a.exact_forward(e, c), b.exact_forward(e, c))


# ------------------------------------------------------------------ PhyLL options (issue 17)
def phyll_config(epochs: int = 2, **rule) -> dict:
    import tomllib
    from pathlib import Path

    if not (Path(__file__).resolve().parents[2] / "shared" / "data" / "hillenbrand_vowels").is_dir():
        pytest.skip("../shared/data/hillenbrand_vowels is absent (offline data not copied on this machine)")
    with open(Path(__file__).resolve().parents[1] / "examples" / "vowels_phyll.toml", "rb") as fh:
        cfg = tomllib.load(fh)
    cfg["run"]["progress"] = False
    cfg["model"]["substrate"] = "wave:scattering"  # the example's fitted device takes a minute to fit on first use
    cfg["model"]["substrate_options"] = {"n_control": 0, "noise": 0.01}
    cfg["train"]["epochs"] = epochs
    cfg["rule"].update(rule)
    return cfg


def test_cosine_goodness_and_pairwise_loss_golden_values():
    from neuro.functional.forward_forward import cosine_goodness, random_direction, symba_loss

    h = torch.tensor([[-3.0, 4.0], [0.0, -2.0]])
    assert cosine_goodness(h, torch.tensor([1.0, 0.0])).tolist() == pytest.approx([0.6, 0.0])
    assert cosine_goodness(h, torch.tensor([1.0, 1.0]) * 5).tolist() == pytest.approx([7 / 5 / 2**0.5, 1 / 2**0.5])
    r = random_direction(20, 3)
    assert float(r.norm()) == pytest.approx(1.0) and torch.equal(r, random_direction(20, 3))
    assert not torch.equal(r, random_direction(20, 4))
    gp, gn = torch.tensor([0.9, 0.2]), torch.tensor([0.1, 0.4])
    by_hand = (torch.log(1 + torch.exp(-4 * torch.tensor(0.8))) + torch.log(1 + torch.exp(-4 * torch.tensor(-0.2)))) / 2
    assert float(symba_loss(gp, gn, alpha=4.0)) == pytest.approx(float(by_hand), rel=1e-6)


def test_phyll_network_skip_concatenation_input_pad_and_unit_norm_encoding():
    exp = build_experiment(phyll_config())
    model = exp.model
    assert exp.data.n_features == 12 and exp.data.n_classes == 7 and len(exp.data.train) == 207
    assert [b.digital.linear.in_features for b in model.blocks] == [20 + 20, 20 + 20]
    assert [b.physical.n_in for b in model.blocks] == [20, 20]
    x = exp.data.train.x[:5]
    e = model.embed(x, torch.tensor([0, 1, 2, 3, 6]))
    top = float(x.abs().max())
    assert e.shape == (5, 20) and torch.equal(e[:, 8:], x) and torch.all(e[:, 7] == 0)
    assert torch.equal(e[:, :7], top * torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3, 6]), 7).float())
    h = torch.tensor([[3.0, -4.0] + [0.0] * 18])
    assert model.blocks[0].encoder(h)[0, :2].tolist() == pytest.approx([0.6, 0.8], abs=1e-6)
    # the digital layer reads [y; h] with y the raw measurement (no standardization) and is linear
    block = model.blocks[0]
    y_meas, a = block(e)
    ref = block.digital.linear(torch.cat([y_meas, e], dim=1))
    assert torch.allclose(a, ref, atol=1e-6) and (a < 0).any()
    # the readout of the default architecture is unchanged
    assert torch.equal(model.between(a), a)


def test_inner_steps_take_that_many_optimizer_steps_with_the_same_negatives(monkeypatch):
    exp = build_experiment(phyll_config(epochs=1))
    drawn = []
    real = torch.randint

    def counting(*args, **kw):
        out = real(*args, **kw)
        drawn.append(out)
        return out

    monkeypatch.setattr(torch, "randint", counting)
    trainer = exp.trainer(None, progress=False)
    records = trainer.fit()
    assert trainer.step == 10 and records[0]["batches"] == 1  # full batch, 10 inner steps
    assert len(drawn) == 1  # one draw of negative labels for the batch's 10 steps
    assert records[0]["n_physical_evals"] == 10 * 2 * 2 * 207  # 10 steps x 2 blocks x (positives + negatives)


def test_phyll_mfff_learns_vowels_model_free():
    exp = build_experiment(phyll_config(epochs=20))
    trainer = exp.trainer(None, progress=False)
    trainer.fit()
    subs = [layer.substrate for layer in exp.model.physical_layers()]
    assert all(s.grad_touches == 0 and s.exact_calls == 0 for s in subs)
    acc = trainer.evaluate("test")["accuracy"]
    assert acc > 0.75  # chance is 1/7; 200 epochs reach about 92 % (bench/physical_phyll.py)
    blocks = exp.rule.block_accuracies(exp.model, exp.data.test.x, exp.data.test.y)
    assert len(blocks) == 2 and min(blocks) > 0.5


def test_mfff_default_variant_is_contrastive():
    assert MFFFSpec().variant == "contrastive" and MFFFSpec().loss == "logistic" and MFFFSpec().inner_steps == 1
