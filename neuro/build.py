"""From a config dict to the objects of an experiment: data, model, rule, optimizer, trainer.

``model.kind`` and ``rule.name`` are looked up in :data:`neuro.registry.MODEL_KINDS` and
:data:`neuro.registry.RULES`, where each entry registers its spec class and builder beside
its code (e.g. ``@RULES.register("ff", spec=FFSpec)`` in :mod:`neuro.rules.ff`).  Builders
receive their parsed spec and the dataset, and return a fresh object.  A model kind whose
layers keep float32 state under bf16 autocast registers with ``bf16=True``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from neuro import config as cfg
from neuro.errors import ConfigError
from neuro.registry import MODEL_KINDS, RULES
from neuro.rules.base import Rule
from neuro.runs import Run
from neuro.trainer import Trainer, seed_everything


@dataclass
class OptimSpec:
    """``[optim]``: any ``torch.optim`` optimizer by name (case-insensitive), its learning rate,
    an LR schedule over the run's ``E`` epochs ("constant"; "cosine"; "linear_cooldown": constant for the
    first half, then ``lr * 2 (E - e) / E`` after epoch ``e > E / 2``, loeweX's FF schedule), and extra keyword
    arguments of that optimizer in ``[optim.options]`` (e.g. ``betas``, ``momentum``).

    ``[optim.groups.<prefix>]`` gives the parameters whose name (``model.named_parameters()``)
    starts with ``<prefix>`` their own settings, e.g. ``[optim.groups.readout] lr = 0.01``,
    ``weight_decay = 0.003``; every other parameter uses the top-level ones.  The first prefix that
    matches (in the order written) wins; a prefix that matches nothing is an error.

    hardware_lr: learning rate of the hardware parameters of physical layers (parameters named
    ``...hardware.<name>``: phases, control inputs; in their device units), a parameter group of its own
    (0: the same ``lr`` as every other parameter; a prefix group takes precedence).  Perturbative (SPSA)
    estimates over thousands of phases are noisy, and an adaptive optimizer turns each into a step of about
    ``lr`` per phase: a smaller rate for them keeps the measured features under the digital layers from wandering.
    """

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine", "linear_cooldown"] = "constant"
    options: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)
    hardware_lr: float = 0.0

    def check(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if not self.hardware_lr >= 0:
            raise ConfigError(f"optim.hardware_lr must be >= 0 (0: same as optim.lr), got {self.hardware_lr}")


HARDWARE_GROUP = "<hardware>"  # bucket key of physical layers' parameters under optim.hardware_lr


def is_hardware_parameter(name: str) -> bool:
    """Whether the parameter called ``name`` (as in ``model.named_parameters()``) lives on a physical layer."""
    return "hardware" in name.split(".")[:-1]


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    names = {
        n.lower(): n
        for n in dir(torch.optim)
        if isinstance(getattr(torch.optim, n), type)
        and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
        and n != "Optimizer"
    }
    key = name.lower()
    if key not in names:
        raise ConfigError(
            f"optim.name = '{name}' is not a torch.optim optimizer{cfg._suggest(key, names)}; e.g. adam, adamw, sgd"
        )
    return getattr(torch.optim, names[key])


def _check_options(cls, options: dict, where: str) -> dict:
    accepted = set(inspect.signature(cls).parameters) - {"params", "self"}
    for key in options:
        if key not in accepted:
            raise ConfigError(
                f"{where}: optimizer {cls.__name__} has no option '{key}'{cfg._suggest(key, accepted)}; it accepts "
                f"{', '.join(sorted(accepted))}"
            )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


def parameter_groups(spec: OptimSpec, model_or_named) -> list:
    """The trainable parameters for :func:`build_optimizer`, split by ``spec.groups`` name prefixes and
    ``spec.hardware_lr``.

    ``model_or_named``: a module (its trainable ``named_parameters()``) or ``(name, parameter)`` pairs.  Without
    groups or a hardware rate: one plain list.  Otherwise the default group first (top-level settings), then one
    group per prefix with its overrides, then the hardware parameters no prefix claimed (``lr = hardware_lr``);
    empty groups are dropped, but a prefix that matches no parameter is a ConfigError.
    """
    if isinstance(model_or_named, nn.Module):
        named_params = [(n, p) for n, p in model_or_named.named_parameters() if p.requires_grad]
    else:
        named_params = list(model_or_named)
    hardware = [p for n, p in named_params if is_hardware_parameter(n)] if spec.hardware_lr else []
    if not spec.groups and not hardware:
        return [p for _, p in named_params]
    cls = optimizer_class(spec.name)
    prefixes = list(spec.groups)
    for prefix, settings in spec.groups.items():
        if not isinstance(settings, dict):
            raise ConfigError(f"optim.groups.{prefix} must be a table of settings (e.g. lr = 0.01), got {settings!r}")
    buckets: dict[str | None, list] = {None: [], **{p: [] for p in prefixes}}
    names = []
    for name, param in named_params:
        names.append(name)
        key = next((p for p in prefixes if name.startswith(p)), None)
        if key is None and spec.hardware_lr and is_hardware_parameter(name):
            key = HARDWARE_GROUP
        buckets.setdefault(key, []).append(param)
    unmatched = [p for p in prefixes if not buckets[p]]
    if unmatched:
        sample = ", ".join(sorted({n.split(".")[0] for n in names})[:8])
        raise ConfigError(
            f"optim.groups: no trainable parameter name starts with {', '.join(map(repr, unmatched))}; "
            f"names start with: {sample}"
        )
    groups = [{"params": buckets[None]}] if buckets[None] else []
    for prefix in prefixes:
        groups.append({"params": buckets[prefix], **_check_options(cls, spec.groups[prefix], f"optim.groups.{prefix}")})
    if buckets.get(HARDWARE_GROUP):
        groups.append({"params": buckets[HARDWARE_GROUP], "lr": float(spec.hardware_lr)})
    return groups


def linear_cooldown(epoch: int, epochs: int) -> float:
    """LR factor for the epoch after ``epoch`` completed ones (``e = epoch + 1`` counted from 1) of ``epochs``:
    1 while ``e <= epochs // 2``, then ``2 (1 + epochs - e) / epochs`` (loeweX's linear cooldown)."""
    e = epoch + 1
    if e <= epochs // 2:
        return 1.0
    return 2.0 * (1 + epochs - e) / max(epochs, 1)


def build_optimizer(spec: OptimSpec, params) -> torch.optim.Optimizer:
    """The optimizer for ``params``: a list of tensors, or of torch param-group dicts (see :func:`parameter_groups`)."""
    cls = optimizer_class(spec.name)
    kwargs = dict(spec.options)
    kwargs["lr"] = spec.lr
    if spec.weight_decay:
        kwargs["weight_decay"] = spec.weight_decay
    kwargs = _check_options(cls, kwargs, "optim")
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


def _kind_spec(section: dict, key: str, registry, where: str, default: str):
    entry = registry.get(section.get(key, default), where=f"{where}.{key}")
    return parse_spec(entry.spec, section, where), entry.obj


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
    if train.precision != "float32" and not MODEL_KINDS.get(model_spec.kind).meta.get("bf16", False):
        bf16_kinds = [e.name for e in MODEL_KINDS.entries() if e.meta.get("bf16")]
        raise ConfigError(
            f"train.precision = '{train.precision}' is for software models ({', '.join(bf16_kinds)}); "
            f"model kind {model_spec.kind} simulates or drives physical layers whose numerics it would change: "
            f'use precision = "float32"'
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
    optimizer = build_optimizer(optim, parameter_groups(optim, model))
    scheduler = None
    if optim.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(train.epochs, 1))
    elif optim.schedule == "linear_cooldown":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(linear_cooldown, epochs=train.epochs))
    rule.check_compatible(model)
    return Experiment(resolved, run, train, data, model, rule, optimizer, scheduler)


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters() if p.requires_grad)
