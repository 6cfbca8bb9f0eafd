"""Datasets for NeuroHIL, all in memory as float32 features and int64 labels.

``load_dataset(name, root, val_fraction=, seed=, limit=)`` returns a :class:`Dataset` with
deterministic train/val/test :class:`Split` s (same name, seed, val_fraction -> identical
tensors on any machine).  Names: digits (scikit-learn, offline), mnist, vowels (Hillenbrand
1995), yinyang (Kriener et al. 2021); the last three read files under :func:`data_root`.
Scaling and split rules are documented in each module (digits.py, mnist.py, vowels.py,
yinyang.py).  ``limit`` keeps at most that many samples per split, for fast tests.
"""

from __future__ import annotations

import os

from neuro.errors import ConfigError

from .dataset import Dataset, Split
from .digits import load_digits
from .mnist import load_mnist
from .paths import data_root
from .splits import check_split_args
from .vowels import load_vowels
from .vowels_phyll import load_vowels_phyll
from .yinyang import load_yinyang

DATASET_NAMES: tuple[str, ...] = ("digits", "mnist", "vowels", "vowels_phyll", "yinyang")

__all__ = ["DATASET_NAMES", "Dataset", "Split", "data_root", "load_dataset"]


def load_dataset(name: str, root: str | os.PathLike | None = None, *, val_fraction: float = 0.1, seed: int = 0,
                 limit: int | None = None) -> Dataset:
    """Load dataset ``name`` (one of DATASET_NAMES); ``root`` is ignored for digits."""
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    check_split_args(val_fraction, seed, limit)
    if key == "digits":
        return load_digits(val_fraction=val_fraction, seed=seed, limit=limit)
    if key == "mnist":
        return load_mnist(root, val_fraction=val_fraction, seed=seed, limit=limit)
    if key == "vowels":
        return load_vowels(root, val_fraction=val_fraction, seed=seed, limit=limit)
    if key == "vowels_phyll":
        return load_vowels_phyll(root, seed=seed, limit=limit)
    return load_yinyang(root, val_fraction=val_fraction, seed=seed, limit=limit)
