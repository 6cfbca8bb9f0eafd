"""End to end: a spiking MLP trained with surrogate-gradient BPTT on scikit-learn digits."""

from __future__ import annotations

import pytest

from neuro.build import build_experiment
from neuro.demo import example_config

pytestmark = pytest.mark.slow  # end-to-end training (still part of make test)


def test_spiking_mlp_on_digits_reaches_95_percent():
    # The demo's settings: seed 0, 64-256-10 LIF (tau_mem 10 ms, tau_syn 5 ms, dt 1 ms),
    # rate coding over T = 20 steps, spike-count readout, Adam lr 5e-3 with cosine decay,
    # 20 epochs of batch 32 on 1293 training digits; test split = 359 held-out digits.
    config = example_config("digits_bptt.toml")  # the demo's first part
    assert config["run"]["seed"] == 0 and config["train"]["epochs"] == 20 and config["model"]["time_steps"] == 20
    exp = build_experiment(config)
    trainer = exp.trainer(None, progress=False)
    trainer.fit()
    test = trainer.evaluate("test")
    assert test["count"] == 359
    assert test["accuracy"] >= 0.95, test
