"""MNIST with the classic fixed split of Scellier & Bengio's (and LeCun's) experiments: ``mnist_first50k``.

``data.dataset = "mnist_first50k"``: train = the *first* 50 000 images of the official training file,
val = images 50 000 .. 59 999 of that file, test = the official 10 000 test images.  Unlike ``mnist``
(a stratified, seeded ``val_fraction`` holdout) the split does not depend on the seed, and
``data.val_fraction`` is ignored.  Files, checks and scaling (/255, 784 features) are those of
:mod:`neuro.data.mnist`.  Each split is in a seeded shuffled order so that ``data.limit`` takes a
random subset of it (the trainer shuffles every epoch anyway).
"""

from __future__ import annotations

import numpy as np

from neuro.registry import DATASETS

from .dataset import Dataset
from .mnist import mnist_dataset, read_mnist
from .splits import check_split_args

N_TRAIN = 50_000


@DATASETS.register("mnist_first50k")
def load_mnist_first50k(root=None, *, val_fraction: float = 0.1, seed: int = 0, limit: int | None = None) -> Dataset:
    """Load MNIST with train = images 0..49 999, val = 50 000..59 999, test = official test set."""
    check_split_args(val_fraction, seed, limit)
    folder, (x_tr, y_tr, x_te, y_te) = read_mnist(root)
    rng = np.random.default_rng(seed)
    n = y_tr.size
    train = np.arange(min(N_TRAIN, n))[rng.permutation(min(N_TRAIN, n))]
    val = N_TRAIN + rng.permutation(max(n - N_TRAIN, 0))
    test = rng.permutation(y_te.size)
    source = f"MNIST IDX files in {folder}: train = first {N_TRAIN} of {n}, val = the rest, test = {y_te.size} (/255)"
    return mnist_dataset("mnist_first50k", (x_tr, y_tr, x_te, y_te), (train, val, test), limit, source)
