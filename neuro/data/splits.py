"""Deterministic, seeded split helpers shared by the loaders.

All randomness comes from ``numpy.random.default_rng(seed)`` (PCG64), whose streams are the
same on every platform, so the same (dataset, seed, val_fraction) gives identical tensors.
"""

from __future__ import annotations

import numpy as np
import torch

from neuro.errors import ConfigError

from .dataset import Split


def check_split_args(val_fraction: float, seed: int, limit: int | None) -> None:
    """Raise ConfigError for a val_fraction outside [0, 1), a negative seed or a limit < 1."""
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not 0.0 <= float(val_fraction) < 1.0
    ):
        raise ConfigError(f"data.val_fraction must be a number in [0, 1), got {val_fraction!r}; use e.g. 0.1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"data.seed must be a non-negative integer, got {seed!r}; use e.g. 0")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ConfigError(
            f"data.limit must be a positive integer or null, got {limit!r}; use e.g. 1000 or leave it unset"
        )


def _count(fraction: float, n: int) -> int:
    return int(np.floor(fraction * n + 0.5))


def stratified_holdout(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split indices of ``y`` into (rest, holdout); holdout takes round(fraction * n_c) of each class.

    Both index arrays come back in a seeded shuffled order (so a ``limit`` prefix is a random subset).
    """
    rest, hold = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(idx.size)]
        k = _count(fraction, idx.size)
        hold.append(idx[:k])
        rest.append(idx[k:])
    rest_a = np.concatenate(rest) if rest else np.zeros(0, np.int64)
    hold_a = np.concatenate(hold) if hold else np.zeros(0, np.int64)
    return rest_a[rng.permutation(rest_a.size)], hold_a[rng.permutation(hold_a.size)]


def group_split(
    groups: np.ndarray, strata: np.ndarray, fractions: tuple[float, float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assign whole groups (e.g. talkers) to (train, val, test); no group lands in two splits.

    ``groups[i]`` is the group of sample i, ``strata[i]`` its stratum (e.g. man/woman/boy/girl);
    within each stratum a seeded permutation of its groups gives round(f * n) groups to val and
    to test (``fractions`` = (val, test)), the rest to train.  Returns shuffled sample indices.
    """
    uniq = np.unique(groups)
    stratum_of = {g: strata[np.flatnonzero(groups == g)[0]] for g in uniq}
    val_g, test_g = [], []
    for s in np.unique(strata):
        gs = np.array(sorted(g for g in uniq if stratum_of[g] == s))
        gs = gs[rng.permutation(gs.size)]
        n_val, n_test = _count(fractions[0], gs.size), _count(fractions[1], gs.size)
        val_g.extend(gs[:n_val])
        test_g.extend(gs[n_val : n_val + n_test])
    in_val, in_test = np.isin(groups, val_g), np.isin(groups, test_g)
    out = []
    for mask in (~in_val & ~in_test, in_val, in_test):
        idx = np.flatnonzero(mask)
        out.append(idx[rng.permutation(idx.size)])
    return out[0], out[1], out[2]


def make_split(x: np.ndarray, y: np.ndarray, idx: np.ndarray, limit: int | None, divide_by: float = 1.0) -> Split:
    """Build a Split from rows ``idx`` (first ``limit`` of them), x as float32 [N, F] divided by ``divide_by``."""
    if limit is not None:
        idx = idx[:limit]
    xs = x[idx].reshape(len(idx), int(np.prod(x.shape[1:]))).astype(np.float32)  # also for an empty split
    if divide_by != 1.0:
        xs /= np.float32(divide_by)
    return Split(torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(np.asarray(y[idx], dtype=np.int64)))
