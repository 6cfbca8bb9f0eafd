"""``vowels_phyll``: the Hillenbrand vowel task as Momeni et al. (Science 2023) posed it for PhyLL.

The authors' ``Acoustic/acoustics_pnn.py`` (github MomeniAli/PhyLL) uses the women's tokens of 7
vowels (ae ah aw er ih iy uw) with 12 features: F1-F3 at steady state and at 20 %, 50 % and 80 % of
the vowel's duration (vowdata.dat columns 4-6, 8-16), 258 tokens in their file (37 per vowel, 36 for
the last), z-scored and shifted to be non-negative, a random 80/20 train/test split per seed.

Here, from ``<data root>/hillenbrand_vowels/vowdata.dat`` (see :mod:`neuro.data.vowels`): women's
tokens of those vowels with all 12 features measured (316 of 336; 37 for ``er``), balanced to the
smallest class by keeping each vowel's first tokens in talker order (37 per vowel, 259 tokens; the
authors' file has one fewer), then a seeded random permutation gives ``round(0.8 N)`` to train and
the rest to test; no validation split.  Features are z-scored with the train mean/std and shifted
by the train minimum (train values >= 0; the authors used the statistics of all tokens).  Classes
in the order above.  The authors prepend 8 zero inputs and write the label over the first 7:
that is the model's job (``model.input_pad = 8``), not the dataset's.
"""

from __future__ import annotations

import numpy as np

from neuro.errors import DataError
from neuro.registry import DATASETS

from .dataset import Dataset
from .paths import data_root, require_file
from .splits import make_split
from .vowels import COLUMNS, FILENAME, SUBDIR, parse_vowdata

VOWELS = ("ae", "ah", "aw", "er", "ih", "iy", "uw")
FEATURES = ("F1", "F2", "F3", "F1@20", "F2@20", "F3@20", "F1@50", "F2@50", "F3@50", "F1@80", "F2@80", "F3@80")
TRAIN_FRACTION = 0.8


def load_vowels_phyll(root=None, *, seed: int = 0, limit: int | None = None) -> Dataset:
    base = data_root(root)
    path = require_file(base / SUBDIR / FILENAME, "vowel", base)
    names, table = parse_vowdata(path)
    cols = [COLUMNS[f] - 1 for f in FEATURES]
    keep = [i for i, n in enumerate(names) if n[0] == "w" and n[3:5] in VOWELS and np.all(table[i, cols] != 0)]
    by_class = {v: [i for i in keep if names[i][3:5] == v] for v in VOWELS}
    n_each = min(len(v) for v in by_class.values())
    if n_each < 2:
        raise DataError(
            f"vowel file {path} has too few women's tokens of {', '.join(VOWELS)}; "
            f"re-copy it from ../shared/data/{SUBDIR}"
        )
    rows = [i for v in VOWELS for i in sorted(by_class[v], key=lambda i: names[i])[:n_each]]
    x = table[rows][:, cols].astype(np.float64)
    y = np.array([VOWELS.index(names[i][3:5]) for i in rows], dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(len(rows))
    n_train = int(np.floor(TRAIN_FRACTION * len(rows) + 0.5))
    tr, te = perm[:n_train], perm[n_train:]
    mean, std = x[tr].mean(axis=0), x[tr].std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    z = z - z[tr].min()
    return Dataset(
        name="vowels_phyll",
        train=make_split(z, y, tr, limit),
        val=make_split(z, y, tr[:0], None),
        test=make_split(z, y, te, limit),
        n_features=len(FEATURES),
        n_classes=len(VOWELS),
        feature_shape=(len(FEATURES),),
        class_names=VOWELS,
        source=(
            f"Hillenbrand et al. 1995, {path}: women, vowels {' '.join(VOWELS)}, 12 formant features, "
            f"{n_each} tokens per vowel ({len(rows)}), random 80/20 split (seed {seed}), PhyLL protocol"
        ),
    )


@DATASETS.register("vowels_phyll")
def _load_registered_vowels_phyll(root=None, *, val_fraction: float = 0.1, seed: int = 0, limit: int | None = None):
    """Registry entry: the authors' split has no validation part, so ``val_fraction`` is ignored."""
    return load_vowels_phyll(root, seed=seed, limit=limit)
