"""Trainer: resume is bit-identical, rules are checked against layer capabilities, metrics logged."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from neuro.build import build_experiment
from neuro.errors import CheckpointError, HardwareGradientError, IncompatibleError
from neuro.layers import Capabilities, measured_output
from neuro.rules import BPTT, Batch
from neuro.runs import Run

SMALL = {
    "run": {"name": "t", "seed": 3},
    "data": {"dataset": "digits", "limit": 200},
    "model": {"hidden": [32], "time_steps": 8, "encoder": "rate"},
    "optim": {"name": "adam", "lr": 0.01, "schedule": "cosine"},
    "train": {"epochs": 3, "batch_size": 32},
}


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    full = build_experiment(SMALL)
    full.trainer(Run.create(tmp_path, "full"), progress=False).fit()
    expected = _weights(full.model)

    # Interrupted after epoch 1 (a new process would rebuild everything from the config) ...
    first = build_experiment(SMALL)
    run = Run.create(tmp_path, "interrupted")
    trainer = first.trainer(run, progress=False)
    trainer.epochs = 1
    trainer.fit()
    # ... then resumed with freshly built objects: different global RNG state on purpose.
    torch.manual_seed(12345)
    second = build_experiment(SMALL)
    torch.rand(1000)
    resumed = second.trainer(run, progress=False)
    resumed.resume(run.checkpoint_path)
    assert resumed.epoch == 1
    resumed.fit()
    got = _weights(second.model)
    assert expected.keys() == got.keys()
    for k in expected:
        assert torch.equal(expected[k], got[k]), k
    # and the optimizer ended in the same state
    assert torch.equal(
        full.optimizer.state_dict()["state"][0]["exp_avg"], second.optimizer.state_dict()["state"][0]["exp_avg"]
    )


def test_metrics_records_per_epoch(tmp_path):
    exp = build_experiment({**SMALL, "train": {"epochs": 2, "batch_size": 50}})
    run = Run.create(tmp_path, "m")
    exp.trainer(run, progress=False).fit()
    lines = run.metrics_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]
    n_train = len(exp.data.train)
    assert records[-1]["step"] == 2 * -(-n_train // 50)
    for r in records:
        assert 0.0 <= r["train_accuracy"] <= 1.0 and 0.0 <= r["val_accuracy"] <= 1.0
        assert r["train_loss"] > 0 and r["time_s"] > 0


def test_epoch_order_depends_only_on_seed_and_epoch():
    exp = build_experiment(SMALL)
    t = exp.trainer(None, progress=False)
    a, b = t.epoch_order(2), t.epoch_order(2)
    assert torch.equal(a, b) and not torch.equal(a, t.epoch_order(3))
    assert sorted(a.tolist()) == list(range(len(exp.data.train)))


class _Board(nn.Module):
    """A layer that runs on (pretend) hardware: measured, not differentiable."""

    capabilities = Capabilities(differentiable=False, substrate="serial device board0")

    def forward(self, x):
        with torch.no_grad():
            y = torch.tanh(x)
        return measured_output(y, x, "layer 'board' on serial device board0")


def test_rule_needing_gradients_is_rejected_before_training():
    model = nn.Sequential(nn.Linear(4, 4), _Board(), nn.Linear(4, 2))
    with pytest.raises(IncompatibleError) as info:
        BPTT().check_compatible(model)
    msg = str(info.value)
    assert msg == (
        "rule `bptt` needs gradients through layer 0 ('1'), which runs on serial device board0 "
        "and is not differentiable; use `mfff` or `pat`"
    )


def test_backprop_into_a_measured_output_fails_clearly():
    model = nn.Sequential(nn.Linear(4, 4), _Board(), nn.Linear(4, 2))
    loss = model(torch.randn(3, 4)).sum()
    with pytest.raises(
        HardwareGradientError, match="cannot backpropagate through layer 'board' on serial device board0"
    ):
        loss.backward()
    # with a detached input nothing upstream needs gradients: the output is a plain tensor
    y = _Board()(torch.randn(3, 4))
    assert not y.requires_grad


def test_bptt_writes_gradients_and_leaves_the_step_to_the_optimizer():
    exp = build_experiment(SMALL)
    before = _weights(exp.model)
    batch = Batch(exp.data.train.x[:16], exp.data.train.y[:16])
    metrics = exp.rule.step(exp.model, batch)
    assert set(metrics) == {"loss", "accuracy"}
    grads = [p.grad for p in exp.model.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    after = _weights(exp.model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    exp = build_experiment(SMALL)
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        exp.trainer(None, progress=False).resume(bad)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        exp.trainer(None, progress=False).resume(tmp_path / "missing.pt")


def test_bfloat16_precision_runs_matmuls_in_bf16_and_keeps_float32_state():
    """Mixed precision: gradients near the float32 ones (bf16 rounding, not zero, not garbage)."""
    from neuro.layers.mlp import MLP
    from neuro.rules.ff import FF, FFSpec
    from neuro.trainer import Trainer

    grads = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        model = MLP(64, [128, 128], 10)
        x, y = torch.rand(64, 64), torch.randint(0, 10, (64,))
        rule = FF(FFSpec(loss="symba", readout=True, negatives="readout"), n_classes=10)
        trainer = Trainer(
            model,
            rule,
            torch.optim.SGD(model.parameters(), lr=0.1),
            None,
            epochs=1,
            batch_size=64,
            progress=False,
            precision=precision,
        )
        torch.manual_seed(1)
        with trainer.autocast():
            activity = model.layers[0](x)
            rule.step(model, Batch(x, y))
        assert activity.dtype == torch.float32  # goodness and normalization never see bf16
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    rel = float((grads["bfloat16"] - grads["float32"]).norm() / grads["float32"].norm())
    assert 1e-4 < rel < 5e-2, rel  # above zero: autocast did change the matmuls; bf16 has 8 mantissa bits


def test_unknown_precision_is_a_config_error():
    from neuro.errors import ConfigError

    trainer = build_experiment({**SMALL, "train": {"epochs": 1, "precision": "bfloat16"}}).trainer(None, progress=False)
    assert trainer.precision == "bfloat16" and torch.is_autocast_enabled("cpu") is False
    with trainer.autocast():
        assert torch.is_autocast_enabled("cpu")

    with pytest.raises(ConfigError, match="train.precision = 'fp8' is not one of float32, bfloat16"):
        build_experiment({**SMALL, "train": {"epochs": 1, "precision": "fp8"}})


@pytest.mark.parametrize("flush", [True, False])
def test_flush_denormals_holds_during_fit_only(flush):
    seen = []

    def hook(trainer, record):  # runs inside fit
        seen.append(float(torch.tensor([1e-39]) * 1.0))

    exp = build_experiment({**SMALL, "train": {"epochs": 1, "batch_size": 50, "flush_denormals": flush}})
    exp.trainer(None, progress=False, hooks=(hook,)).fit()
    assert (seen[0] == 0.0) is flush  # 1e-39 is subnormal in float32
    assert float(torch.tensor([1e-39]) * 1.0) > 0.0  # switched off again after fit


def test_lif_state_stays_float32_under_bfloat16_autocast():
    from neuro.layers.spiking_mlp import SpikingMLP

    torch.manual_seed(0)
    layer = SpikingMLP(64, [128], 10, time_steps=8).layers[0]
    u = (torch.rand(8, 32, 64) < 0.3).float()
    with torch.no_grad():
        ref = layer.forward_trace(u)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = layer.forward_trace(u)
    assert got.membrane.dtype == torch.float32
    err = float((got.membrane - ref.membrane).abs().max() / ref.membrane.abs().max())
    assert 0 < err < 1e-2, err  # bf16 rounding of the synaptic current only, not of the integrated state


def test_bfloat16_is_refused_for_physical_models():
    from neuro.errors import ConfigError

    with pytest.raises(ConfigError, match="model kind physical_mlp simulates or drives physical layers"):
        build_experiment(
            {
                **SMALL,
                "model": {"kind": "physical_mlp"},
                "rule": {"name": "mfff"},
                "train": {"epochs": 1, "precision": "bfloat16"},
            }
        )


def test_trainer_runs_the_rules_own_compatibility_check():
    """A rule's check_compatible override (FF, mfff, pat have one) is what the trainer runs, not only the base check."""
    from neuro.data import load_dataset
    from neuro.layers.mlp import MLP
    from neuro.trainer import Trainer

    class Picky(BPTT):
        def check_compatible(self, model):
            raise IncompatibleError("rule `picky` refuses every model")

    data = load_dataset("digits", limit=50)
    model = MLP(data.n_features, [8], data.n_classes)
    with pytest.raises(IncompatibleError, match="picky"):
        Trainer(model, Picky(), torch.optim.SGD(model.parameters(), lr=0.1), data, epochs=1, batch_size=8)


def test_evaluation_is_deterministic_and_leaves_the_training_stream_alone(tmp_path):
    """Rate-coded evaluation draws its spikes from a seed of (run seed, split): the same weights give the same
    accuracy every time (trainer, `neuro eval`), and evaluating does not move the global generator."""
    from neuro import workflow

    config = {
        **SMALL,
        "run": {"name": "det", "seed": 3, "out_dir": str(tmp_path)},
        "train": {"epochs": 1, "batch_size": 32},
    }
    run, _ = workflow.train(config, progress=False, echo=lambda *a: None)
    logged = [r for r in run.records() if r.get("event") == "epoch"][-1]["val_accuracy"]
    _, exp = workflow.load_run(run.path)
    trainer = exp.trainer(None, progress=False)
    trainer.load_state_dict(torch.load(run.checkpoint_path, weights_only=False))
    state = torch.get_rng_state()
    first, second = trainer.evaluate("val"), trainer.evaluate("val")
    assert torch.equal(torch.get_rng_state(), state)
    assert first == second
    assert first["accuracy"] == logged == workflow.evaluate(run.path, "val")["accuracy"]
    assert trainer.evaluation_seed("val") != trainer.evaluation_seed("test")


def test_a_failed_run_still_writes_a_report_saying_why(tmp_path, monkeypatch):
    from neuro import workflow
    from neuro.trainer import Trainer

    original = Trainer.train_epoch

    def failing(self):
        if self.epoch == 1:
            raise RuntimeError("device on /dev/ttyUSB7 stopped answering")
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", failing)
    config = {
        **SMALL,
        "run": {"name": "dies", "seed": 3, "out_dir": str(tmp_path)},
        "train": {"epochs": 3, "batch_size": 32},
    }
    with pytest.raises(RuntimeError, match="stopped answering"):
        workflow.train(config, progress=False, echo=lambda *a: None)
    html = (tmp_path / "dies" / "report.html").read_text()
    assert "failed during epoch 2" in html and "device on /dev/ttyUSB7 stopped answering" in html
    assert torch.load(tmp_path / "dies" / "checkpoint.pt", weights_only=False)["epoch"] == 1
