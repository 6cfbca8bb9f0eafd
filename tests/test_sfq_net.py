"""The ``sfq_net`` model kind end to end: bptt through the SFQ rate model, evaluation on the pulse emulator."""

from __future__ import annotations

import pytest
import torch

from neuro.build import build_experiment
from neuro.demo import example_config
from neuro.errors import ConfigError


def _config(**model):
    config = example_config("digits_sfq.toml")
    config["data"]["limit"] = 300
    config["train"]["epochs"] = 4
    config["model"].update({"eval_on": "rate_model", "window_ns": 5.0, **model})  # fast epochs
    return config


def test_sfq_net_trains_on_digits_and_runs_on_pulses():
    exp = build_experiment(_config())
    trainer = exp.trainer(None, progress=False)
    trainer.fit()
    model = trainer.model
    test = trainer.evaluate("test")  # rate model
    assert test["count"] == 300 and test["accuracy"] >= 0.6, test  # chance is 0.1
    # the trained network converted to bias currents, on the pulse emulator (32 test digits, 5 ns window)
    x, y = trainer.data.test.x[:32], trainer.data.test.y[:32]
    model.eval()
    model.eval_on = "pulses"
    torch.manual_seed(0)
    with torch.no_grad():
        on_pulses = model(x).argmax(1)
    assert model.last["batch"] == 32 and model.last["energy"]["total_J"] > 0  # it ran on pulses
    assert (on_pulses == y).float().mean() >= 0.5
    assert all(layer.w.abs().max() < 1 for layer in model.rate_layers())  # transmission probabilities


def test_sfq_net_bad_settings():
    with pytest.raises(ConfigError, match="rate_GHz"):
        build_experiment(_config(rate_GHz=500.0))
    with pytest.raises(ConfigError, match="hidden"):
        build_experiment(_config(hidden=[]))
