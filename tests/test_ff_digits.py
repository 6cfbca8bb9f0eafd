"""End to end: forward-forward on scikit-learn digits (1293 train / 145 val / 359 test digits, split seed 0)."""

from __future__ import annotations

import pytest

from neuro.build import build_experiment
from neuro.demo import example_config

pytestmark = pytest.mark.slow  # end-to-end training (still part of make test)


def _fit_and_test(config):
    exp = build_experiment(config)
    trainer = exp.trainer(None, progress=False)
    trainer.fit()
    return trainer.evaluate("test")


def test_ff_mlp_on_digits_reaches_95_percent():
    # Seed 0; 64-500-500 ReLU MLP with FF layer normalization; label in 10 blank border pixels;
    # SymBa loss on mean-square goodness; negatives sampled from the neutral-pass softmax readout;
    # prediction = goodness summed over both layers; Adam lr 1e-2 cosine, 20 epochs of batch 64.
    cfg = example_config("digits_ff.toml")
    assert cfg["run"]["seed"] == 0 and cfg["train"]["epochs"] == 20
    test = _fit_and_test(cfg)
    assert test["count"] == 359
    assert test["accuracy"] >= 0.95, test


def test_spiking_ff_on_digits_reaches_90_percent():
    # Seed 0; the default spiking_mlp 64-256-10 LIF (tau_mem 10 ms, tau_syn 5 ms, dt 1 ms), rate
    # coding over T = 20 steps; both LIF layers trained by FF with goodness = sum of squared firing
    # rates (spikes/step); SymBa loss; random wrong labels; Adam lr 3e-3 cosine, 15 epochs of batch 64.
    cfg = example_config("digits_ff_spiking.toml")
    assert cfg["run"]["seed"] == 0 and cfg["train"]["epochs"] == 15 and cfg["model"]["kind"] == "spiking_mlp"
    test = _fit_and_test(cfg)
    assert test["count"] == 359
    assert test["accuracy"] >= 0.90, test
