"""From a config dict to the objects of an experiment: data, model, rule, optimizer, trainer.

The tables :data:`MODEL_KINDS` and :data:`RULES` map a config name to ``(spec class,
builder)``; they are plain constant tables in this module (no run-time registration), and
a new model kind or rule is added by one entry here.  Builders receive their parsed spec
and the dataset, and return a fresh object.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from neuro import config as cfg
from neuro.errors import ConfigError
from neuro.layers.encoders import ENCODERS
from neuro.layers.lif import engine_names
from neuro.layers.mlp import MLPSpec, build_mlp
from neuro.layers.physical_mlp import PhysicalMLPSpec, build_physical_mlp
from neuro.layers.readouts import READOUTS
from neuro.layers.spiking_mlp import SpikingMLP
from neuro.rules.base import Rule
from neuro.rules.bptt import BPTT
from neuro.rules.ff import FFSpec, build_ff
from neuro.rules.mfff import MFFFSpec, build_mfff
from neuro.rules.physical_backprop import InSilicoSpec, PATSpec, build_insilico, build_pat
from neuro.runs import Run
from neuro.trainer import Trainer, seed_everything
from simulators.lif import LIFParameters
from simulators.surrogate import Surrogate


# --------------------------------------------------------------------------- specs
@dataclass
class LIFSpec:
    """``[model.lif]``: neuron parameters (seconds, volts); ``tau_syn = 0`` means a delta synapse."""

    tau_mem: float = 10e-3
    tau_syn: float = 5e-3
    dt: float = 1e-3
    v_th: float = 1.0
    v_reset: float = 0.0
    v_leak: float = 0.0
    reset: str = "subtract"
    integrator: str = "exact"
    input_gain: str = "leak"
    current_delay: bool = False
    reset_timing: str = "immediate"
    detach_reset: bool = True
    surrogate: str = "fast_sigmoid"
    surrogate_slope: float = 10.0

    def to_parameters(self) -> LIFParameters:
        try:
            return LIFParameters(
                tau_mem=self.tau_mem,
                tau_syn=self.tau_syn if self.tau_syn > 0 else None,
                dt=self.dt,
                v_th=self.v_th,
                v_reset=self.v_reset,
                v_leak=self.v_leak,
                reset=self.reset,
                integrator=self.integrator,
                input_gain=self.input_gain,
                current_delay=self.current_delay,
                reset_timing=self.reset_timing,
                detach_reset=self.detach_reset,
                surrogate=Surrogate(self.surrogate, self.surrogate_slope),
            )
        except ValueError as exc:
            raise ConfigError(f"[model.lif] {exc}") from None


@dataclass
class SpikingMLPSpec:
    """``[model]`` with ``kind = "spiking_mlp"``: encoder -> LIF layers -> readout."""

    kind: str = "spiking_mlp"
    hidden: list[int] = field(default_factory=lambda: [128])
    time_steps: int = 20
    encoder: str = "rate"
    readout: str = "spike_count"
    engine: str = "native"
    bias: bool = False
    lif: LIFSpec = field(default_factory=LIFSpec)

    def check(self) -> None:
        _one_of("model.encoder", self.encoder, ENCODERS)
        _one_of("model.readout", self.readout, READOUTS)
        _one_of("model.engine", self.engine, engine_names())
        if self.time_steps < 1:
            raise ConfigError(f"model.time_steps must be >= 1, got {self.time_steps}")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"model.hidden sizes must be >= 1, got {self.hidden}")


@dataclass
class BPTTSpec:
    """``[rule]`` with ``name = "bptt"``: surrogate-gradient backpropagation through time."""

    name: str = "bptt"


@dataclass
class OptimSpec:
    """``[optim]``: any ``torch.optim`` optimizer by name (case-insensitive), its learning rate,
    an LR schedule ("constant" or "cosine" over the run's epochs), and extra keyword
    arguments of that optimizer in ``[optim.options]`` (e.g. ``betas``, ``momentum``)."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    options: dict = field(default_factory=dict)

    def check(self) -> None:
        _one_of("optim.schedule", self.schedule, ("constant", "cosine"))
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")


def _one_of(key: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key} = '{value}' is not one of {', '.join(choices)}{cfg._suggest(value, choices)}")


# -------------------------------------------------------------------- builders
def build_spiking_mlp(spec: SpikingMLPSpec, data) -> nn.Module:
    return SpikingMLP(
        data.n_features,
        list(spec.hidden),
        data.n_classes,
        time_steps=spec.time_steps,
        lif=spec.lif.to_parameters(),
        encoder=spec.encoder,
        readout=spec.readout,
        engine=spec.engine,
        bias=spec.bias,
    )


def build_bptt(spec: BPTTSpec, data) -> Rule:
    return BPTT()


MODEL_KINDS: dict[str, tuple[type, Callable[[Any, Any], nn.Module]]] = {
    "spiking_mlp": (SpikingMLPSpec, build_spiking_mlp),
    "physical_mlp": (PhysicalMLPSpec, build_physical_mlp),
    "mlp": (MLPSpec, build_mlp),
}

RULES: dict[str, tuple[type, Callable[[Any, Any], Rule]]] = {
    "bptt": (BPTTSpec, build_bptt),
    "mfff": (MFFFSpec, build_mfff),
    "pat": (PATSpec, build_pat),
    "insilico": (InSilicoSpec, build_insilico),
    "ff": (FFSpec, build_ff),
}


# Model kinds whose layers keep float32 state under bfloat16 autocast (train.precision).
BF16_MODEL_KINDS = ("mlp", "spiking_mlp")


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    names = {n.lower(): n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
             and issubclass(getattr(torch.optim, n), torch.optim.Optimizer) and n != "Optimizer"}
    key = name.lower()
    if key not in names:
        raise ConfigError(f"optim.name = '{name}' is not a torch.optim optimizer{cfg._suggest(key, names)}; e.g. adam, adamw, sgd")
    return getattr(torch.optim, names[key])


def build_optimizer(spec: OptimSpec, params) -> torch.optim.Optimizer:
    cls = optimizer_class(spec.name)
    accepted = set(inspect.signature(cls).parameters) - {"params", "self"}
    kwargs = dict(spec.options)
    kwargs["lr"] = spec.lr
    if spec.weight_decay:
        kwargs["weight_decay"] = spec.weight_decay
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"optimizer {cls.__name__} has no option '{key}'{cfg._suggest(key, accepted)}; it accepts {', '.join(sorted(accepted))}"
            )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        return cls(params, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optimizer {cls.__name__}: {exc}") from None


# ------------------------------------------------------------------ experiment
@dataclass
class Experiment:
    """Everything one run needs, built from a config, plus the resolved config."""

    config: dict
    run: cfg.RunSpec
    train: cfg.TrainSpec
    data: Any
    model: nn.Module
    rule: Rule
    optimizer: torch.optim.Optimizer
    scheduler: Any

    def trainer(self, run: Run | None = None, *, progress: bool | None = None, hooks=()) -> Trainer:
        return Trainer(
            self.model,
            self.rule,
            self.optimizer,
            self.data,
            epochs=self.train.epochs,
            batch_size=self.train.batch_size,
            seed=self.run.seed,
            scheduler=self.scheduler,
            grad_clip=self.train.grad_clip or None,
            run=run,
            progress=self.run.progress if progress is None else progress,
            eval_batch_size=self.train.eval_batch_size,
            device=self.run.device,
            hooks=hooks,
            precision=self.train.precision,
            flush_denormals=self.train.flush_denormals,
        )


def _kind_spec(section: dict, key: str, table: dict, where: str, default: str):
    name = section.get(key, default)
    if not isinstance(name, str) or name not in table:
        raise ConfigError(f"{where}.{key} = {name!r} is not one of {', '.join(table)}{cfg._suggest(str(name), table)}")
    spec_cls, builder = table[name]
    return parse_spec(spec_cls, section, where), builder


def parse_spec(cls, data, where):
    return cfg.parse_spec(cls, data, where)


def resolve(config: dict) -> dict:
    """Parse and check every section; return the fully resolved config (all defaults filled)."""
    return _parse_all(config)[0]


def _parse_all(config: dict):
    cfg.check_sections(config)
    run = cfg.parse_spec(cfg.RunSpec, config.get("run", {}), "run")
    data = cfg.parse_spec(cfg.DataSpec, config.get("data", {}), "data")
    model_spec, model_builder = _kind_spec(config.get("model", {}), "kind", MODEL_KINDS, "model", "spiking_mlp")
    rule_spec, rule_builder = _kind_spec(config.get("rule", {}), "name", RULES, "rule", "bptt")
    optim = cfg.parse_spec(OptimSpec, config.get("optim", {}), "optim")
    train = cfg.parse_spec(cfg.TrainSpec, config.get("train", {}), "train")
    resolved = {
        "run": dataclasses.asdict(run),
        "data": dataclasses.asdict(data),
        "model": dataclasses.asdict(model_spec),
        "rule": dataclasses.asdict(rule_spec),
        "optim": dataclasses.asdict(optim),
        "train": dataclasses.asdict(train),
    }
    return resolved, run, data, (model_spec, model_builder), (rule_spec, rule_builder), optim, train


def build_experiment(config: dict) -> Experiment:
    """Check ``config`` fully, seed every generator with ``run.seed``, then build the objects."""
    from neuro.data import load_dataset

    resolved, run, data_spec, (model_spec, model_builder), (rule_spec, rule_builder), optim, train = _parse_all(config)
    if run.device != "cpu" and not torch.cuda.is_available() and run.device.startswith("cuda"):
        raise ConfigError(f"run.device = '{run.device}' but no CUDA device is available here; use device = \"cpu\"")
    if train.precision != "float32" and model_spec.kind not in BF16_MODEL_KINDS:
        raise ConfigError(
            f"train.precision = '{train.precision}' is for software models ({', '.join(BF16_MODEL_KINDS)}); "
            f"model kind {model_spec.kind} simulates or drives physical layers whose numerics it would change: "
            f"use precision = \"float32\""
        )
    seed_everything(run.seed)
    data = load_dataset(
        data_spec.dataset,
        data_spec.root or None,
        val_fraction=data_spec.val_fraction,
        seed=run.seed,
        limit=data_spec.limit or None,
    )
    model = model_builder(model_spec, data).to(run.device)
    rule = rule_builder(rule_spec, data)
    optimizer = build_optimizer(optim, [p for p in model.parameters() if p.requires_grad])
    scheduler = None
    if optim.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(train.epochs, 1))
    rule.check_compatible(model)
    return Experiment(resolved, run, train, data, model, rule, optimizer, scheduler)


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters() if p.requires_grad)
