"""Yin-Yang dataset (Kriener, Goeltz, Petrovici 2021, arXiv:2102.08211, doi 10.1145/3517343.3517380).

2-D toy classification for SNN / bio-plausible learning.  Each sample is (x, y, 1-x, 1-y) in
[0, 1] (4 features, used as given: no rescaling), 3 classes ("yin", "yang", "dot").
Files: ``<data root>/yin_yang/{train,validation,test}_{samples,labels}.npy`` -- the publication
data of "Fast and deep" (Goeltz, Kriener et al. 2021), copied from
github.com/lkriener/yin_yang_data_set (publication_data/), license MIT (c) 2020 lkriener.
Sizes 5000 / 1000 / 1000.

The publication's own train/validation/test files are used as is: ``val_fraction`` and
``seed`` are ignored; ``limit`` keeps the first ``limit`` rows of each file (the files are
i.i.d. samples, so that is a random subset).
"""

from __future__ import annotations

import numpy as np

from neuro.errors import DataError
from neuro.registry import DATASETS

from .dataset import Dataset
from .paths import data_root, one_line, require_file
from .splits import check_split_args, make_split

SUBDIR = "yin_yang"
CLASS_NAMES = ("yin", "yang", "dot")
PARTS = {"train": "train", "val": "validation", "test": "test"}


def _load_npy(path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"Yin-Yang file {path} is not a readable .npy array ({one_line(exc)}); re-copy it from "
            f"../shared/data/{SUBDIR}"
        ) from None


def _read_part(base, part: str) -> tuple[np.ndarray, np.ndarray]:
    fix = f"re-copy it from ../shared/data/{SUBDIR}"
    sp = require_file(base / SUBDIR / f"{part}_samples.npy", "Yin-Yang", base)
    lp = require_file(base / SUBDIR / f"{part}_labels.npy", "Yin-Yang", base)
    x, y = _load_npy(sp), _load_npy(lp)
    if x.ndim != 2 or x.shape[1] != 4 or x.dtype.kind not in "fiu":
        raise DataError(
            f"Yin-Yang file {sp} holds a {x.dtype} array of shape {x.shape}, expected numbers of shape (N, 4); {fix}"
        )
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(
            f"Yin-Yang file {lp} holds a {y.dtype} array of shape {y.shape}, expected integers of shape (N,); {fix}"
        )
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"Yin-Yang files disagree: {sp} has {x.shape[0]} samples but {lp} has {y.shape[0]} labels; {fix}"
        )
    if not np.all(np.isfinite(x)):
        raise DataError(f"Yin-Yang file {sp} contains NaN or inf; {fix}")
    if y.size and (y.min() < 0 or y.max() > 2):
        raise DataError(f"Yin-Yang file {lp} has labels outside 0..2 (yin, yang, dot); {fix}")
    return x, y.astype(np.int64)


@DATASETS.register("yinyang")
def load_yinyang(root=None, *, val_fraction: float = 0.1, seed: int = 0, limit: int | None = None) -> Dataset:
    """Load the Yin-Yang publication splits (``val_fraction`` and ``seed`` are ignored)."""
    check_split_args(val_fraction, seed, limit)
    base = data_root(root)
    splits = {}
    for key, part in PARTS.items():
        x, y = _read_part(base, part)
        splits[key] = make_split(x, y, np.arange(y.size), limit)
    return Dataset(
        name="yinyang",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        n_features=4,
        n_classes=3,
        feature_shape=(4,),
        class_names=CLASS_NAMES,
        source=f"Yin-Yang publication splits in {base / SUBDIR} (Kriener et al. 2021, MIT; used as given)",
    )
