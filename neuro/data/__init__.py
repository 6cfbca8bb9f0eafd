"""Datasets for NeuroHIL, all in memory as float32 features and int64 labels.

``load_dataset(name, root, val_fraction=, seed=, limit=)`` (a name of :data:`neuro.registry.DATASETS`,
where each loader registers beside its code) returns a :class:`Dataset` with
deterministic train/val/test :class:`Split` s (same name, seed, val_fraction -> identical
tensors on any machine).  Names: digits (scikit-learn, offline), mnist, vowels (Hillenbrand
1995), yinyang (Kriener et al. 2021); the last three read files under :func:`data_root`.
Scaling and split rules are documented in each module (digits.py, mnist.py, vowels.py,
yinyang.py).  ``limit`` keeps at most that many samples per split, for fast tests.
"""

from __future__ import annotations

import os

from neuro.registry import DATASETS

from .dataset import Dataset, Split
from .paths import data_root
from .splits import check_split_args

__all__ = ["DATASETS", "Dataset", "Split", "data_root", "dataset_names", "load_dataset"]


def dataset_names() -> tuple[str, ...]:
    """The registered dataset names (digits, mnist, vowels, yinyang, ...)."""
    return DATASETS.names()


def load_dataset(name: str, root: str | os.PathLike | None = None, *, val_fraction: float = 0.1, seed: int = 0,
                 limit: int | None = None) -> Dataset:
    """Load the dataset registered as ``name`` (case-insensitive); ``root`` is ignored for digits."""
    key = name.strip().lower() if isinstance(name, str) else name
    entry = DATASETS.get(key, where="data.dataset")
    check_split_args(val_fraction, seed, limit)
    return entry.obj(root, val_fraction=val_fraction, seed=seed, limit=limit)
