"""Every example training config under examples/ parses and passes every check (no data loaded), and the loeweX
forward-forward recipe builds its optimizer groups as its comment says."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from neuro.build import resolve

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TRAINING_CONFIGS = sorted(
    p.name for p in EXAMPLES.glob("*.toml") if {"model", "rule"} & set(tomllib.loads(p.read_text()))
)


def test_there_are_training_examples():
    assert len(TRAINING_CONFIGS) >= 10 and "mnist_ff_loewex.toml" in TRAINING_CONFIGS


@pytest.mark.parametrize("name", TRAINING_CONFIGS)
def test_example_config_resolves(name):
    resolved = resolve(tomllib.loads((EXAMPLES / name).read_text()))
    assert set(resolved) >= {"run", "data", "model", "rule", "optim", "train"}


def test_loewex_recipe_optimizer_groups_on_digits():
    """The same recipe on digits (data swapped, 2 epochs skipped): FF layers at lr 1e-3 / wd 3e-4, the readout at
    lr 1e-2 / wd 3e-3, both with momentum 0.9; the readout reads layers 2 and 3 only."""
    from neuro.build import build_experiment

    config = tomllib.loads((EXAMPLES / "mnist_ff_loewex.toml").read_text())
    config["data"] = {"dataset": "digits"}
    config["rule"]["label_features"] = [0, 8, 16, 24, 32, 40, 48, 56, 7, 15]
    exp = build_experiment(config)
    readout = {id(p) for p in exp.model.readout.parameters()}
    seen = set()
    for g in exp.optimizer.param_groups:
        ids = {id(p) for p in g["params"]}
        seen |= ids
        want = (1e-2, 3e-3) if ids == readout else (1e-3, 3e-4)
        assert (g["lr"], g["weight_decay"], g["momentum"]) == (*want, 0.9)
    assert seen == {id(p) for p in exp.model.parameters()}
    assert exp.rule.spec.readout_layers == [2, 3] and exp.rule.spec.relu_gradient == "pass_through"
