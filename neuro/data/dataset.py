"""The two containers every loader returns: :class:`Split` and :class:`Dataset`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from neuro.errors import DataError


@dataclass(frozen=True)
class Split:
    """One split, all in memory: ``x`` float32 [N, F] (flattened, scaled), ``y`` int64 [N]."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or self.x.dim() != 2 or self.x.dtype != torch.float32:
            raise DataError(f"Split.x must be a float32 tensor [N, F], got {_describe(self.x)}; fix the loader")
        if not isinstance(self.y, torch.Tensor) or self.y.dim() != 1 or self.y.dtype != torch.int64:
            raise DataError(f"Split.y must be an int64 tensor [N], got {_describe(self.y)}; fix the loader")
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"Split has {self.x.shape[0]} samples but {self.y.shape[0]} labels; fix the loader")

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Dataset:
    """A named dataset with train/val/test splits and the facts needed to build and plot a model.

    ``feature_shape`` is for plotting only ((8, 8) digits, (28, 28) MNIST, (F,) otherwise);
    ``source`` is a one-line provenance note (files or package, and any rows dropped).
    """

    name: str
    train: Split
    val: Split
    test: Split
    n_features: int
    n_classes: int
    feature_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            s = getattr(self, part)
            if s.x.shape[1] != self.n_features:
                raise DataError(
                    f"{self.name} {part} split has {s.x.shape[1]} features, expected {self.n_features}; fix the loader"
                )
            if len(s) and (int(s.y.min()) < 0 or int(s.y.max()) >= self.n_classes):
                raise DataError(f"{self.name} {part} labels outside 0..{self.n_classes - 1}; fix the loader")
        if math.prod(self.feature_shape) != self.n_features:
            raise DataError(
                f"{self.name} feature_shape {self.feature_shape} does not hold {self.n_features} features; fix the "
                "loader"
            )
        if len(self.class_names) != self.n_classes:
            raise DataError(
                f"{self.name} has {len(self.class_names)} class names for {self.n_classes} classes; fix the loader"
            )


def _describe(t: object) -> str:
    if isinstance(t, torch.Tensor):
        return f"{t.dtype} tensor of shape {tuple(t.shape)}"
    return type(t).__name__
