"""Where the repository's example configs live, and loading one as a config dict."""

from __future__ import annotations

from pathlib import Path

from neuro import config as cfg
from neuro.errors import ConfigError


def examples_dir() -> Path:
    """The repository's ``examples/`` folder (beside the ``neuro`` package)."""
    path = Path(__file__).resolve().parents[1] / "examples"
    if not path.is_dir():
        raise ConfigError(f"examples folder {path} not found; run the demo from a clone of the NeuroHIL repository")
    return path


def example_config(name: str) -> dict:
    """The example config ``examples/<name>`` as a dict (what ``neuro train examples/<name>`` reads)."""
    return cfg.load_toml(examples_dir() / name)
