"""Bring your own data: torch ``Dataset`` / ``DataLoader`` objects as a NeuroHIL :class:`Dataset`.

``from_torch(train, test=None, val=None, n_classes=None, name="custom")`` reads every sample once
(features flattened to float32 ``[N, F]``, labels to int64 ``[N]``) and holds them in memory, as the
built-in datasets are held, so batch order stays a function of ``(seed, epoch)`` and runs resume
bit-for-bit.  ``train``, ``val`` and ``test`` may each be a map-style or iterable ``Dataset`` of
``(x, y)`` pairs, a ``DataLoader`` yielding ``(x_batch, y_batch)``, or a ``(x, y)`` pair of tensors.
Features are used as given: the spiking models expect them in ``[0, 1]`` (rate coding), the physical
ones any real values.  A missing ``val`` or ``test`` is an empty split.
"""

from __future__ import annotations

import torch

from neuro.data.dataset import Dataset, Split
from neuro.errors import DataError


def _as_split(source, what: str) -> Split:
    if source is None:
        return None
    if isinstance(source, (tuple, list)) and len(source) == 2 and all(isinstance(t, torch.Tensor) for t in source):
        xs, ys = [source[0]], [source[1]]
    elif isinstance(source, torch.utils.data.DataLoader):
        xs, ys = [], []
        for item in source:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise DataError(f"the {what} DataLoader must yield (x, y) batches, got {type(item).__name__}")
            xs.append(torch.as_tensor(item[0]))
            ys.append(torch.as_tensor(item[1]).reshape(-1))
    elif isinstance(source, torch.utils.data.Dataset) or hasattr(source, "__iter__"):
        xs, ys = [], []
        for k, item in enumerate(source):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise DataError(f"sample {k} of the {what} dataset is not an (x, y) pair (got {type(item).__name__})")
            xs.append(torch.as_tensor(item[0]).unsqueeze(0))
            ys.append(torch.as_tensor(item[1]).reshape(1))
    else:
        raise DataError(
            f"{what} data must be a torch Dataset, a DataLoader or an (x, y) pair of tensors, "
            f"got {type(source).__name__}"
        )
    if not xs:
        raise DataError(f"the {what} data holds no samples")
    x = torch.cat([t.reshape(t.shape[0], -1) for t in xs]).to(torch.float32)
    y = torch.cat(ys)
    if y.dtype.is_floating_point and not torch.equal(y, y.round()):
        raise DataError(f"{what} labels must be class indices (integers), got fractional values")
    return Split(x, y.to(torch.int64))


def from_torch(
    train,
    test=None,
    val=None,
    *,
    n_classes: int | None = None,
    name: str = "custom",
    class_names: tuple[str, ...] | None = None,
) -> Dataset:
    """A :class:`Dataset` from torch data (see the module docstring)."""
    tr = _as_split(train, "train")
    parts = {"train": tr}
    for what, src in (("val", val), ("test", test)):
        parts[what] = _as_split(src, what) if src is not None else Split(tr.x[:0], tr.y[:0])
    n_features = tr.x.shape[1]
    for what, split in parts.items():
        if split.x.shape[1] != n_features:
            raise DataError(f"the {what} data has {split.x.shape[1]} features per sample, the train data {n_features}")
    if n_classes is None:
        n_classes = int(max(int(s.y.max()) for s in parts.values() if len(s))) + 1
    names = tuple(class_names) if class_names else tuple(str(c) for c in range(n_classes))
    return Dataset(
        name=name,
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        n_features=n_features,
        n_classes=n_classes,
        feature_shape=(n_features,),
        class_names=names,
        source=f"user data ({len(tr)} train, {len(parts['val'])} val, {len(parts['test'])} test samples)",
    )


def as_dataset(data) -> Dataset:
    """``data`` itself if it is a :class:`Dataset` (or None: a trainer used only to step or evaluate by hand);
    a torch ``DataLoader``/``Dataset`` becomes the train split."""
    if (
        data is None
        or isinstance(data, Dataset)
        or all(hasattr(data, a) for a in ("train", "val", "test", "n_features", "n_classes"))
    ):
        return data
    if isinstance(data, (torch.utils.data.Dataset, torch.utils.data.DataLoader)):
        return from_torch(data)
    raise DataError(f"data must be a neuro.data.Dataset or a torch Dataset/DataLoader, got {type(data).__name__}")
