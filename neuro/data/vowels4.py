"""``vowels4``: the 4-class vowel task of Shen et al. (Nature Photonics 11, 441 (2017)) on Hillenbrand data.

Shen et al. classified 4 vowels from 4 log-area-ratio coefficients of the audio (76.7 % on chip, 91.7 % on a
digital computer).  The audio is not in our data folder (``<data root>/hillenbrand_vowels``, see SOURCE.txt
there: Hillenbrand, Getty, Clark & Wheeler 1995, JASA 97(5)), so this task uses the usual substitute, the
formants:

- classes: ``ae`` (had), ``ah`` (hod), ``iy`` (heed), ``uw`` (who'd), in this order (labels 0..3);
- features: f0, F1, F2, F3 at steady state (vowdata.dat columns 3-6, Hz), 4 features; a token with any of
  them 0 (not measurable) is dropped (the count is in ``Dataset.source``);
- scaling: ``z = (log f - mean_train) / std_train`` per feature (natural log of Hz, mean and std of the
  train split only);
- split BY TALKER, never shared between splits: within each talker group (men, women, boys, girls) a
  permutation of its talkers seeded by ``split_seed`` (default 0, independent of the run seed so that
  seeds of a table vary the training, not the test set) gives ``round(0.15 n)`` talkers to val and
  ``round(0.30 n)`` to test (:func:`neuro.data.splits.group_split`), the rest (about 55 %) to train.
  With the defaults: 76 / 21 / 42 talkers, 291 / 79 / 164 tokens (22 of 556 dropped).
"""

from __future__ import annotations

import numpy as np

from neuro.errors import DataError
from neuro.registry import DATASETS

from .dataset import Dataset
from .paths import data_root, require_file
from .splits import check_split_args, group_split, make_split
from .vowels import COLUMNS, FILENAME, SUBDIR, parse_vowdata

CLASSES = ("ae", "ah", "iy", "uw")
FEATURES = ("f0", "F1", "F2", "F3")
FRACTIONS = (0.15, 0.30)  # (val, test) fractions of the talkers of each group
SPLIT_SEED = 0


def load_vowels4_with_talkers(root=None, *, val_fraction: float = 0.1, seed: int = 0, limit: int | None = None,
                              split_seed: int = SPLIT_SEED) -> tuple[Dataset, dict[str, tuple[str, ...]]]:
    """The ``vowels4`` dataset and the talker of every sample per split (module docstring).

    ``val_fraction`` and ``seed`` are accepted for the common loader signature and ignored (the split is by
    talker, seeded by ``split_seed``); ``limit`` keeps the first samples of each (shuffled) split.
    """
    check_split_args(val_fraction, seed, limit)
    base = data_root(root)
    path = require_file(base / SUBDIR / FILENAME, "vowel", base)
    names, table = parse_vowdata(path)
    keep = np.array([n[3:5] in CLASSES for n in names])
    cols = [COLUMNS[f] - 1 for f in FEATURES]
    x_all = table[:, cols].astype(np.float64)
    ok = keep & np.all(x_all > 0, axis=1)
    n_dropped = int((keep & ~ok).sum())
    names = [n for n, k in zip(names, ok) if k]
    x = np.log(x_all[ok])
    if x.shape[0] == 0:
        raise DataError(f"vowel file {path} has no {'/'.join(CLASSES)} tokens with f0-F3 measured; "
                        f"re-copy it from ../shared/data/{SUBDIR}")
    y = np.array([CLASSES.index(n[3:5]) for n in names], dtype=np.int64)
    talkers = np.array([n[:3] for n in names])
    groups = np.array([n[0] for n in names])
    idx = dict(zip(("train", "val", "test"), group_split(talkers, groups, FRACTIONS,
                                                           np.random.default_rng(int(split_seed)))))
    if idx["train"].size == 0 or idx["test"].size == 0:
        raise DataError(f"vowel file {path} has too few talkers to split; re-copy it from ../shared/data/{SUBDIR}")
    mean, std = x[idx["train"]].mean(axis=0), x[idx["train"]].std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    splits = {k: make_split(z, y, v, limit) for k, v in idx.items()}
    talker_ids = {k: tuple(talkers[v[:limit] if limit else v]) for k, v in idx.items()}
    n_talk = {k: len(set(talkers[v])) for k, v in idx.items()}
    ds = Dataset(
        name="vowels4", train=splits["train"], val=splits["val"], test=splits["test"],
        n_features=len(FEATURES), n_classes=len(CLASSES), feature_shape=(len(FEATURES),), class_names=CLASSES,
        source=(f"Hillenbrand et al. 1995 JASA 97(5), {path}: vowels {','.join(CLASSES)} (Shen et al. 2017's 4 "
                f"classes), features log {','.join(FEATURES)} at steady state (z-scored on train); dropped "
                f"{n_dropped} of {int(keep.sum())} tokens with 0 in a used column; split by talker "
                f"{n_talk['train']}/{n_talk['val']}/{n_talk['test']} (split_seed {split_seed})"),
    )
    return ds, talker_ids


@DATASETS.register("vowels4")
def load_vowels4(root=None, *, val_fraction: float = 0.1, seed: int = 0, limit: int | None = None) -> Dataset:
    """Shen et al.'s 4 vowel classes from Hillenbrand formants, talker-disjoint splits (module docstring)."""
    return load_vowels4_with_talkers(root, val_fraction=val_fraction, seed=seed, limit=limit)[0]
