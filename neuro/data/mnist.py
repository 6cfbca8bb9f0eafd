"""MNIST handwritten digits (LeCun, Cortes, Burges), read from the four IDX .gz files.

Files in ``<data root>/mnist/`` (standard IDX, big-endian header; images magic 0x00000803,
labels 0x00000801), original site yann.lecun.com/exdb/mnist/, data license CC BY-SA 3.0:

  train-images-idx3-ubyte.gz  md5 c7dfcf1bfd3481a40f7b3aedbdbd083c (re-assembled from
                              karpathy/convnetjs PNGs; uncompressed md5 6bbc9ace898e44ae57da46a324031adb
                              == the original's)
  train-labels-idx1-ubyte.gz  md5 d53e105ee54ea40749a09fcbcd1e9432 (== original)
  t10k-images-idx3-ubyte.gz   md5 9fb629c4189551a2d022fa330f9573f3 (== original)
  t10k-labels-idx1-ubyte.gz   md5 ec29112dd5afa0611ce80d1b7f02629c (== original)

Full provenance in ``mnist/SOURCE.txt``.  Known facts: 60000 train / 10000 test, 28x28 uint8;
test label counts 980 1135 1032 1010 982 892 958 1028 974 1009.

Splits: the official 60k/10k train/test; val = ``val_fraction`` of the 60k train images
(stratified by class, seeded), carved out of train.  Each split is in a seeded shuffled order
(so ``limit`` takes a random subset).  Scaling: pixels /255 to [0, 1], flattened row-major to
784 features (feature_shape (28, 28)).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from neuro.errors import DataError
from neuro.registry import DATASETS

from .dataset import Dataset
from .paths import data_root, one_line, require_file
from .splits import check_split_args, make_split, stratified_holdout

SUBDIR = "mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
MAGIC_IMAGES = 0x00000803
MAGIC_LABELS = 0x00000801


def _fix(path: Path) -> str:
    return f"re-copy it from ../shared/data/{SUBDIR}"


def read_idx(path: Path, *, images: bool) -> np.ndarray:
    """Read one gzipped IDX file, checking magic, dims and byte count; uint8 [N,28,28] or [N]."""
    kind = "image" if images else "label"
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"MNIST file {path} is not a readable gzip file ({one_line(exc)}); {_fix(path)}") from None
    if len(raw) < 8:
        raise DataError(
            f"MNIST file {path} has only {len(raw)} bytes after gunzip, too short for an IDX header; {_fix(path)}"
        )
    magic = int.from_bytes(raw[:4], "big")
    want = MAGIC_IMAGES if images else MAGIC_LABELS
    if magic != want:
        raise DataError(
            f"MNIST file {path} has magic 0x{magic:08x}, expected 0x{want:08x} for an {kind} file; {_fix(path)}"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"MNIST file {path} ends inside its IDX header; {_fix(path)}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    want_dims = "(N, 28, 28)" if images else "(N,)"
    if (images and (ndim != 3 or dims[1:] != (28, 28))) or (not images and ndim != 1):
        raise DataError(f"MNIST file {path} has dims {dims}, expected {want_dims} for an {kind} file; {_fix(path)}")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(
            f"MNIST file {path} has {len(raw)} bytes after gunzip but its header {dims} implies {expected}; "
            f"the file is truncated or corrupt, {_fix(path)}"
        )
    arr = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    if not images and arr.size and int(arr.max()) > 9:
        raise DataError(f"MNIST file {path} has label {int(arr.max())}, expected 0..9; {_fix(path)}")
    return arr


def _read_pair(folder: Path, root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    ip = require_file(folder / FILES[f"{part}_images"], "MNIST", root)
    lp = require_file(folder / FILES[f"{part}_labels"], "MNIST", root)
    x, y = read_idx(ip, images=True), read_idx(lp, images=False)
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"MNIST {part} files disagree: {ip} has {x.shape[0]} images but {lp} has {y.shape[0]} labels; {_fix(ip)}"
        )
    return x, y.astype(np.int64)


def read_mnist(root=None) -> tuple[Path, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The MNIST folder under the data root and its four arrays ``(x_train, y_train, x_test, y_test)``."""
    base = data_root(root)
    folder = base / SUBDIR
    x_tr, y_tr = _read_pair(folder, base, "train")
    x_te, y_te = _read_pair(folder, base, "test")
    return folder, (x_tr, y_tr, x_te, y_te)


@DATASETS.register("mnist")
def load_mnist(root=None, *, val_fraction: float = 0.1, seed: int = 0, limit: int | None = None) -> Dataset:
    """Load MNIST from ``<data root>/mnist`` (see module docstring for files, splits, scaling)."""
    check_split_args(val_fraction, seed, limit)
    folder, (x_tr, y_tr, x_te, y_te) = read_mnist(root)
    rng = np.random.default_rng(seed)
    keep, val = stratified_holdout(y_tr, val_fraction, rng)
    test = rng.permutation(y_te.size)
    source = f"MNIST IDX files in {folder} ({y_tr.size} train incl. val, {y_te.size} test; CC BY-SA 3.0; /255)"
    return mnist_dataset("mnist", (x_tr, y_tr, x_te, y_te), (keep, val, test), limit, source)


def mnist_dataset(name: str, arrays, indices, limit: int | None, source: str) -> Dataset:
    """A :class:`Dataset` of MNIST arrays ``(x_train, y_train, x_test, y_test)`` and the row indices
    ``(train, val, test)`` (train and val index the training file), pixels scaled by 1/255."""
    x_tr, y_tr, x_te, y_te = arrays
    train, val, test = indices
    return Dataset(
        name=name,
        train=make_split(x_tr, y_tr, train, limit, 255.0),
        val=make_split(x_tr, y_tr, val, limit, 255.0),
        test=make_split(x_te, y_te, test, limit, 255.0),
        n_features=784,
        n_classes=10,
        feature_shape=(28, 28),
        class_names=tuple(str(i) for i in range(10)),
        source=source,
    )
