"""Config parsing: defaults resolve, typos and bad values give one-line errors naming the key."""

from __future__ import annotations

import pytest
import torch

from neuro.build import OptimSpec, build_optimizer, resolve
from neuro.config import agrees_with, apply_overrides, parse_value
from neuro.errors import ConfigError


def test_defaults_resolve_completely():
    r = resolve({})
    assert r["model"]["kind"] == "spiking_mlp" and r["rule"]["name"] == "bptt"
    assert r["model"]["lif"]["tau_mem"] == 0.01 and r["model"]["lif"]["dt"] == 0.001
    assert r["train"]["epochs"] == 10 and r["data"]["dataset"] == "digits"


@pytest.mark.parametrize(
    "config, message",
    [
        ({"modle": {}}, "unknown config section [modle] (did you mean 'model'?)"),
        ({"train": {"epoch": 3}}, "unknown key 'train.epoch' (did you mean 'epochs'?)"),
        ({"train": {"epochs": 2.5}}, "train.epochs must be an integer, got 2.5"),
        ({"train": {"batch_size": 0}}, "train.batch_size must be >= 1, got 0"),
        ({"model": {"hidden": [64, "x"]}}, "model.hidden[1] must be an integer, got 'x'"),
        ({"model": {"encoder": "poisson"}}, "model.encoder = 'poisson' is not one of direct, latency, rate"),
        ({"model": {"lif": {"tau_mem": -0.01}}}, "[model.lif] tau_mem must be a positive number of seconds, got -0.01"),
        ({"data": {"val_fraction": 1.5}}, "data.val_fraction must be in [0, 1), got 1.5"),
        ({"optim": {"schedule": "linear"}}, "optim.schedule = 'linear' is not one of constant, cosine"),
        ({"rule": {"name": "bpt"}}, "rule.name = 'bpt' is not one of"),
        ({"run": "x"}, "config key 'run' must be a table [run], got a str"),
    ],
)
def test_errors_name_the_key(config, message):
    with pytest.raises(ConfigError) as info:
        from neuro.build import _parse_all

        _parse_all(config)
        # LIF parameters are checked when they are turned into simulator parameters
        from neuro.config import parse_spec
        from neuro.layers.spiking_mlp import LIFSpec

        parse_spec(LIFSpec, config.get("model", {}).get("lif", {}), "model.lif").to_parameters()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_parse_toml_values():
    cfg = apply_overrides(
        {"model": {"hidden": [8]}}, ["model.hidden=[256, 128]", "optim.lr=2e-3", "model.lif.reset=zero", "run.name=x y"]
    )
    assert cfg["model"]["hidden"] == [256, 128] and cfg["optim"]["lr"] == 0.002
    assert cfg["model"]["lif"]["reset"] == "zero" and cfg["run"]["name"] == "x y"
    assert parse_value("true") is True and parse_value("abc") == "abc"
    with pytest.raises(ConfigError, match="is not of the form section.key=value"):
        apply_overrides({}, ["epochs"])
    with pytest.raises(ConfigError, match="needs a section"):
        apply_overrides({}, ["epochs=3"])


def test_any_torch_optimizer_by_name():
    import torch

    p = [torch.nn.Parameter(torch.zeros(3))]
    assert type(build_optimizer(OptimSpec(name="SGD", lr=0.1, options={"momentum": 0.9}), p)).__name__ == "SGD"
    assert type(build_optimizer(OptimSpec(name="adamw", lr=0.1, options={"betas": [0.8, 0.9]}), p)).__name__ == "AdamW"
    with pytest.raises(ConfigError, match="optimizer SGD has no option 'betas'"):
        build_optimizer(OptimSpec(name="sgd", lr=0.1, options={"betas": [0.8, 0.9]}), p)
    with pytest.raises(ConfigError, match="is not a torch.optim optimizer"):
        build_optimizer(OptimSpec(name="adamm"), p)


def test_hardware_lr_puts_physical_layer_parameters_in_their_own_group():
    from torch import nn

    from neuro.build import OptimSpec, build_optimizer, parameter_groups

    class Phys(nn.Module):
        def __init__(self):
            super().__init__()
            self.hardware = nn.ParameterDict({"phase": nn.Parameter(torch.zeros(3))})

    model = nn.Sequential(nn.Linear(2, 2), Phys())
    opt = build_optimizer(OptimSpec(lr=0.01, hardware_lr=1e-4), parameter_groups(OptimSpec(hardware_lr=1e-4), model))
    assert [g["lr"] for g in opt.param_groups] == [0.01, 1e-4]
    assert opt.param_groups[1]["params"][0] is model[1].hardware["phase"]
    assert len(opt.param_groups[0]["params"]) == 2
    assert len(parameter_groups(OptimSpec(), model)) == 3  # no hardware_lr: one plain list
    with pytest.raises(ConfigError, match="hardware_lr"):
        resolve({"optim": {"hardware_lr": -1.0}})


def test_agrees_with_compares_only_what_the_request_sets():
    saved = {"optim": {"name": "sgd", "lr": 0.01, "momentum": 0.0}, "continual": {"hebbian_lr": [0.009, 0.01]}}
    # keys the request leaves out (defaults the saved run filled in) are not compared
    assert agrees_with({"optim": {"lr": 0.01}}, saved)
    assert agrees_with({"optim": {"lr": 0.01}, "continual": {"hebbian_lr": [0.009, 0.01]}}, saved)
    assert agrees_with({}, saved)
    # a changed value, a changed list element, a key the saved run lacks, a table where a value was saved
    assert not agrees_with({"optim": {"lr": 0.1}}, saved)
    assert not agrees_with({"continual": {"hebbian_lr": [0.001, 0.01]}}, saved)
    assert not agrees_with({"optim": {"nesterov": False}}, saved)
    assert not agrees_with({"train": {"epochs": 1}}, saved)
    assert not agrees_with({"optim": {"lr": {"value": 0.01}}}, saved)
