"""Hillenbrand vowels: formant measurements of 12 American English vowels.

Hillenbrand, Getty, Clark & Wheeler (1995), "Acoustic characteristics of American English
vowels", J. Acoust. Soc. Am. 97(5).  Data "(c) 1995 James Hillenbrand", originally from
homepages.wmich.edu/~hillenbr/voweldata.html; no license is stated, so cite the paper.
Read from ``<data root>/hillenbrand_vowels/vowdata.dat`` (1668 tokens, 139 talkers:
45 men, 48 women, 27 boys, 19 girls; see SOURCE.txt there).

Rows: data lines match ``^[mwbg]\\d\\d[a-z]{2}\\s``; the filename code is speaker group
(m/w/b/g), talker number (2 digits), vowel (2 letters).  vowdata.dat has 16 columns:
1 filename, 2 duration ms, 3 f0, 4-7 F1-F4 at steady state, 8-10 F1-F3 at 20 %, 11-13 at 50 %,
14-16 at 80 % of vowel duration (0 = not measurable).

Features used by default: columns 3, 4, 5, 6 = f0, F1, F2, F3 at steady state (Hz), 4 features.
Tokens with a 0 in any used column are dropped (51 of 1668 with the defaults); the count is
stated in ``Dataset.source``.  Classes: the 12 vowel codes, alphabetical
(ae ah aw eh ei er ih iy oa oo uh uw).  A talker is group letter + number (``m01``, ``b01``
are different people).

Splits are BY TALKER (no talker in two splits): within each group (m/w/b/g) a seeded
permutation of its talkers gives 15 % to val and 15 % to test, the rest (~70 %) to train;
``val_fraction`` is ignored.  Features are z-scored with the mean/std of the whole train split
(computed on train only, before ``limit``).  ``limit`` keeps the first samples after a seeded
shuffle.  :func:`load_vowels_with_talkers` also returns the talker id of every sample.
"""

from __future__ import annotations

import re

import numpy as np

from neuro.errors import ConfigError, DataError
from neuro.registry import DATASETS

from .dataset import Dataset
from .paths import data_root, one_line, require_file
from .splits import check_split_args, group_split, make_split

SUBDIR = "hillenbrand_vowels"
FILENAME = "vowdata.dat"
N_COLUMNS = 16
VOWELS = ("ae", "ah", "aw", "eh", "ei", "er", "ih", "iy", "oa", "oo", "uh", "uw")
# feature name -> 0-based column index in a vowdata.dat row (column 0 is the filename)
COLUMNS = {
    "dur": 1,
    "f0": 2,
    "F1": 3,
    "F2": 4,
    "F3": 5,
    "F4": 6,
    "F1@20": 7,
    "F2@20": 8,
    "F3@20": 9,
    "F1@50": 10,
    "F2@50": 11,
    "F3@50": 12,
    "F1@80": 13,
    "F2@80": 14,
    "F3@80": 15,
}
DEFAULT_FEATURES = ("f0", "F1", "F2", "F3")
VAL_TEST_FRACTIONS = (0.15, 0.15)
_ROW = re.compile(r"^[mwbg]\d\d[a-z]{2}\s")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def parse_vowdata(path) -> tuple[list[str], np.ndarray]:
    """Return (filename codes, int64 array [rows, 15] of columns 2..16) from vowdata.dat."""
    fix = f"re-copy it from ../shared/data/{SUBDIR}"
    try:
        text = path.read_bytes().decode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"vowel file {path} cannot be read as ASCII text ({one_line(exc)}); {fix}") from None
    names, rows = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not _ROW.match(line):
            continue
        fields = line.split()
        if len(fields) != N_COLUMNS:
            raise DataError(f"vowel file {path} line {lineno} has {len(fields)} columns, expected {N_COLUMNS}; {fix}")
        if fields[0][3:5] not in VOWELS:
            raise DataError(f"vowel file {path} line {lineno} has unknown vowel code {fields[0][3:5]!r}; {fix}")
        try:
            row = [int(v) for v in fields[1:]]
        except ValueError:
            raise DataError(f"vowel file {path} line {lineno} has a non-integer value; {fix}") from None
        big = next((v for v in row if not _INT64_MIN <= v <= _INT64_MAX), None)
        if big is not None:
            shown = str(big) if len(str(big)) <= 24 else f"{str(big)[:12]}...({len(str(big))} digits)"
            raise DataError(f"vowel file {path} line {lineno} has an integer too large for int64 ({shown}); {fix}")
        rows.append(row)
        names.append(fields[0])
    if not rows:
        raise DataError(f"vowel file {path} has no data rows (lines like 'm01ae 323 174 ...'); {fix}")
    return names, np.asarray(rows, dtype=np.int64)


def load_vowels_with_talkers(
    root=None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    features: tuple[str, ...] = DEFAULT_FEATURES,
) -> tuple[Dataset, dict[str, tuple[str, ...]]]:
    """Like :func:`load_vowels`, plus {"train"|"val"|"test": talker id of each sample, aligned with the Split rows}."""
    check_split_args(val_fraction, seed, limit)
    unknown = [f for f in features if f not in COLUMNS]
    if unknown or not features:
        raise ConfigError(f"unknown vowel features {unknown or features!r}; choose from {', '.join(COLUMNS)}")
    base = data_root(root)
    path = require_file(base / SUBDIR / FILENAME, "vowel", base)
    names, table = parse_vowdata(path)
    cols = [COLUMNS[f] - 1 for f in features]  # table omits the filename column
    x_all = table[:, cols].astype(np.float64)
    ok = np.all(x_all != 0, axis=1)
    n_dropped = int((~ok).sum())
    names = [n for n, k in zip(names, ok) if k]
    x = x_all[ok]
    if x.shape[0] == 0:
        raise DataError(
            f"vowel file {path} has no rows with all of {', '.join(features)} measured; "
            f"{'re-copy it from ../shared/data/' + SUBDIR}"
        )
    y = np.array([VOWELS.index(n[3:5]) for n in names], dtype=np.int64)
    talkers = np.array([n[:3] for n in names])
    groups = np.array([n[0] for n in names])
    rng = np.random.default_rng(seed)
    idx = dict(zip(("train", "val", "test"), group_split(talkers, groups, VAL_TEST_FRACTIONS, rng)))
    if idx["train"].size == 0:
        raise DataError(f"vowel file {path} has too few talkers to split; {'re-copy it from ../shared/data/' + SUBDIR}")
    mean = x[idx["train"]].mean(axis=0)
    std = x[idx["train"]].std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    splits = {k: make_split(z, y, v, limit) for k, v in idx.items()}
    talker_ids = {k: tuple(talkers[v[:limit] if limit else v]) for k, v in idx.items()}
    n_talk = {k: len(set(t)) for k, t in ((k, talkers[v]) for k, v in idx.items())}
    ds = Dataset(
        name="vowels",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        n_features=len(features),
        n_classes=len(VOWELS),
        feature_shape=(len(features),),
        class_names=VOWELS,
        source=(
            f"Hillenbrand et al. 1995 JASA 97(5), {path}: features {','.join(features)} (z-scored on train); "
            f"dropped {n_dropped} of {len(ok)} tokens with 0 (not measurable) in a used column; "
            f"split by talker {n_talk['train']}/{n_talk['val']}/{n_talk['test']}"
        ),
    )
    return ds, talker_ids


@DATASETS.register("vowels")
def load_vowels(
    root=None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    features: tuple[str, ...] = DEFAULT_FEATURES,
) -> Dataset:
    """Load the Hillenbrand vowels (see module docstring: columns, dropped rows, talker split, z-scoring)."""
    return load_vowels_with_talkers(root, val_fraction=val_fraction, seed=seed, limit=limit, features=features)[0]
