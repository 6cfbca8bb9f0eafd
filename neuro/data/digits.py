"""scikit-learn's 8x8 handwritten digits (``sklearn.datasets.load_digits``; ships with sklearn, offline).

1797 images, 10 classes, pixel values 0..16 scaled by /16 to [0, 1]; features are the 64
pixels row-major (feature_shape (8, 8)).  Splits: test = 20 % stratified holdout, val =
``val_fraction`` of the rest (stratified), train = the remainder; all drawn from
``numpy.random.default_rng(seed)``, so the test set is fixed by the seed alone.
"""

from __future__ import annotations

import numpy as np

from neuro.errors import DataError
from neuro.registry import DATASETS

from .dataset import Dataset
from .splits import check_split_args, make_split, stratified_holdout

TEST_FRACTION = 0.2


def load_digits(*, val_fraction: float = 0.1, seed: int = 0, limit: int | None = None) -> Dataset:
    """Load the digits dataset (see module docstring for splits and scaling)."""
    check_split_args(val_fraction, seed, limit)
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError:
        raise DataError(
            "the digits dataset needs scikit-learn, which is not installed; run `pip install scikit-learn`"
        ) from None
    bunch = _sk_load_digits()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    rest, test = stratified_holdout(y, TEST_FRACTION, rng)
    keep, val = stratified_holdout(y[rest], val_fraction, rng)
    return Dataset(
        name="digits",
        train=make_split(x, y, rest[keep], limit, 16.0),
        val=make_split(x, y, rest[val], limit, 16.0),
        test=make_split(x, y, test, limit, 16.0),
        n_features=64,
        n_classes=10,
        feature_shape=(8, 8),
        class_names=tuple(str(i) for i in range(10)),
        source="sklearn.datasets.load_digits (UCI optdigits test part, 1797 images 8x8, /16)",
    )


@DATASETS.register("digits")
def _load_registered_digits(
    root=None, *, val_fraction: float = 0.1, seed: int = 0, limit: int | None = None
) -> Dataset:
    """Registry entry: digits ship with scikit-learn, so ``root`` is ignored."""
    return load_digits(val_fraction=val_fraction, seed=seed, limit=limit)
