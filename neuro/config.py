"""Configuration: TOML files and ``key=value`` overrides, checked against typed specs.

A config is a TOML document with the sections ``[run]``, ``[data]``, ``[model]``,
``[rule]``, ``[optim]`` and ``[train]``.  Each section is parsed into a dataclass
(a *spec*) whose fields, types and defaults are the documentation of what is allowed.
Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` with one
line naming the key, what was wrong and (for typos) the closest valid key.

TOML has no null: optional numbers use ``0`` for "none" where the spec says so.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from neuro.errors import ConfigError
from simulators.registry import did_you_mean

Precision = typing.Literal["float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)

T = TypeVar("T")

SECTIONS = ("run", "data", "model", "rule", "optim", "train", "continual")  # [continual]: neuro.continual


@dataclasses.dataclass
class RunSpec:
    """``[run]``: name of the run directory, global seed, output folder, torch device."""

    name: str = "run"
    seed: int = 0
    out_dir: str = "runs"
    device: str = "cpu"
    progress: bool = True


@dataclasses.dataclass
class DataSpec:
    """``[data]``: dataset name, data folder (empty: NEUROHIL_DATA or ../shared/data),
    validation fraction, and an optional per-split sample limit (0: all)."""

    dataset: str = "digits"
    root: str = ""
    val_fraction: float = 0.1
    limit: int = 0

    def check(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.limit < 0:
            raise ConfigError(f"data.limit must be >= 0 (0 means no limit), got {self.limit}")


@dataclasses.dataclass
class TrainSpec:
    """``[train]``: epochs, batch size, gradient clipping (0: off), evaluation batch size, precision.

    precision: "float32", or "bfloat16" for mixed precision: training steps and evaluation
        run under ``torch.autocast`` with bf16, so matrix products use bf16 operands (on CPUs
        with AMX or AVX512-BF16 several times faster) while parameters, gradients, optimizer
        state, layer activities and LIF state stay float32.  Only for the software model
        kinds mlp and spiking_mlp (a simulated physical layer's numerics would change).
    flush_denormals: flush subnormal floats to zero while training (see
        :class:`neuro.trainer.Trainer`; keeps a long CPU run from slowing down several-fold).
    tensorboard: also write every epoch's numbers as TensorBoard scalars to ``runs/<name>/tensorboard/``
        (needs the ``tensorboard`` package; ``metrics.jsonl`` and ``metrics.csv`` are always written).
    """

    epochs: int = 10
    batch_size: int = 64
    grad_clip: float = 0.0
    eval_batch_size: int = 1000
    precision: Precision = "float32"
    flush_denormals: bool = True
    tensorboard: bool = False

    def check(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"train.epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.grad_clip < 0:
            raise ConfigError(f"train.grad_clip must be >= 0 (0 turns clipping off), got {self.grad_clip}")


def load_toml(path: str | os.PathLike) -> dict:
    """Read a TOML config file; a missing file or a syntax error is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass the path of a .toml file (see examples/)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None


def parse_value(text: str) -> Any:
    """Parse the right side of ``key=value`` as a TOML value; bare words become strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides (nested keys with dots) to a copy of ``config``."""
    out = _deep_copy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value (e.g. train.epochs=5)")
        key, _, text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if len(parts) < 2:
            raise ConfigError(f"override key '{key}' needs a section, e.g. train.epochs=5 or model.lif.tau_mem=0.02")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{p}' is a value, not a table")
        node[parts[-1]] = parse_value(text.strip())
    return out


def apply_unsets(config: dict, keys: list[str]) -> dict:
    """A copy of ``config`` without the ``section.key`` entries in ``keys`` (their defaults then apply)."""
    out = _deep_copy(config)
    for key in keys:
        parts = [p for p in key.strip().split(".") if p]
        if len(parts) < 2:
            raise ConfigError(f"--unset '{key}' needs a section and a key, e.g. --unset rule.variant")
        node = out
        for p in parts[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict) or parts[-1] not in node:
            raise ConfigError(f"--unset '{key}': the config has no such setting")
        del node[parts[-1]]
    return out


def agrees_with(requested, saved) -> bool:
    """Whether a saved run's config ``saved`` has every value that ``requested`` sets (tables compared key by key).

    A run writes its config with every default filled in, so keys only ``saved`` has are not compared; a key
    that ``requested`` sets and ``saved`` lacks does not agree.  Used to continue a stopped run only when it was
    started with the same settings.
    """
    if isinstance(requested, dict):
        return isinstance(saved, dict) and all(k in saved and agrees_with(v, saved[k]) for k, v in requested.items())
    return requested == saved


def _deep_copy(d: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def check_sections(config: dict) -> None:
    for key in config:
        if key not in SECTIONS:
            raise ConfigError(
                f"unknown config section [{key}]{_suggest(key, SECTIONS)}; sections are {', '.join(SECTIONS)}"
            )
        if not isinstance(config[key], dict):
            raise ConfigError(f"config key '{key}' must be a table [{key}], got a {type(config[key]).__name__}")


def _suggest(word: str, options) -> str:
    return did_you_mean(word, options)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def choices(tp) -> tuple:
    """The allowed values of a ``typing.Literal`` type (e.g. a spec field's annotation)."""
    return tuple(typing.get_args(tp))


def _coerce(value: Any, tp, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            shown = ", ".join(str(a) for a in allowed)
            hint = _suggest(str(value), [str(a) for a in allowed])
            raise ConfigError(f"{where} = {value!r} is not one of {shown}{hint}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        errors = []
        for arg in args:
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if errors else ConfigError(f"{where}: bad value {value!r}")
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list of {_type_name(item_tp)}, got {value!r}")
        items = [_coerce(v, item_tp, f"{where}[{k}]") for k, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table of settings, got {value!r}")
        return parse_spec(tp, value, where)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        return value
    return value


def parse_spec(cls: type[T], data: dict, where: str) -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types; ``where`` prefixes errors.

    A spec may define ``check(self)`` for range checks; it is called after parsing.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"unknown key '{where}.{key}'{_suggest(key, fields)}; valid keys: {', '.join(fields)}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        spec = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{where}] {exc}") from None
    check = getattr(spec, "check", None)
    if callable(check):
        check()
    return spec


def spec_to_dict(spec) -> dict:
    """A spec as a plain dict (for writing the resolved config)."""
    return dataclasses.asdict(spec)
