"""Task streams for continual learning: a sequence of :class:`~neuro.data.Dataset` s seen one after another.

A :class:`TaskStream` holds :class:`Task` s that build their data on demand (ten permuted copies
of MNIST would hold 2.2 GB at once; a task's data are built when it is trained or evaluated).
Labels always index one shared output layer of ``n_classes`` units; ``scenario`` says what
the learner is told at test time:

* ``domain``: nothing (the input distribution changes, the label set does not; permuted MNIST);
* ``class``: nothing, and each task brings new classes (split MNIST / split digits, one head);
* ``task``: the task identity, so scores are compared only among ``Task.classes``.

Streams:

* :func:`permuted`: task ``k`` applies a fixed pixel permutation ``pi_k`` to every image,
  ``x'_i = x_(pi_k(i))``; ``pi_k`` is drawn from ``numpy.random.default_rng([seed, k])``, so a
  permutation depends only on ``(seed, k)``; the task order is shuffled with
  ``default_rng([seed, 1_000_003])`` when ``shuffle_order`` (the authors of HLOP shuffle the
  order of their 10 permutations with a seed).  Every task, the first included, is permuted.
* :func:`split_classes`: task ``k`` holds the samples of classes ``groups[k]``
  (default: consecutive pairs 0-1, 2-3, ...), labels unchanged.
* :func:`dataset_list`: one task per dataset (same number of features); labels either shared
  (``labels="shared"``: the same head units, as in domain-incremental) or offset so that task
  ``k``'s classes follow those of task ``k - 1`` (``labels="offset"``).
* :func:`permuted_mnist`, :func:`split_mnist`, :func:`split_digits`: the usual benchmarks,
  loaded through :func:`neuro.data.load_dataset` (MNIST from ``<data root>/mnist``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch

from neuro.errors import ConfigError, DataError

from .dataset import Dataset, Split

Scenario = Literal["domain", "class", "task"]
SCENARIOS = ("domain", "class", "task")


@dataclass(frozen=True)
class Task:
    """One task: its name, the classes it holds (indices into the shared head) and a data builder."""

    name: str
    classes: tuple[int, ...]
    build: Callable[[], Dataset] = field(repr=False, compare=False)

    def dataset(self) -> Dataset:
        """The task's train/val/test splits (built now; not cached)."""
        return self.build()


@dataclass(frozen=True)
class TaskStream:
    """Tasks in training order, sharing one output layer of ``n_classes`` units."""

    name: str
    tasks: tuple[Task, ...]
    scenario: Scenario
    n_features: int
    n_classes: int
    description: str = ""

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ConfigError(f"stream scenario '{self.scenario}' is not one of {', '.join(SCENARIOS)}")
        if not self.tasks:
            raise ConfigError(f"task stream {self.name} has no tasks")

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, k: int) -> Task:
        return self.tasks[k]

    def class_mask(self, k: int) -> torch.Tensor | None:
        """Boolean [n_classes] of the scores compared for task ``k`` (``None``: all, unless task-incremental)."""
        if self.scenario != "task":
            return None
        mask = torch.zeros(self.n_classes, dtype=torch.bool)
        mask[list(self.tasks[k].classes)] = True
        return mask

    def joint(self) -> Dataset:
        """All tasks' splits concatenated (the multitask upper bound trains on this)."""
        parts = [t.dataset() for t in self.tasks]
        first = parts[0]

        def cat(name: str) -> Split:
            return Split(torch.cat([getattr(p, name).x for p in parts]), torch.cat([getattr(p, name).y for p in parts]))

        return replace(first, name=f"{self.name}-joint", train=cat("train"), val=cat("val"), test=cat("test"),
                       source=f"{len(parts)} tasks of {self.name} concatenated")


# ---------------------------------------------------------------- transformations
def _map_splits(base: Dataset, name: str, fn: Callable[[Split], Split], source: str, **changes) -> Dataset:
    return replace(base, name=name, train=fn(base.train), val=fn(base.val), test=fn(base.test), source=source,
                   **changes)


def permutation(n_features: int, seed: int, k: int) -> np.ndarray:
    """The pixel permutation of task ``k`` of a permuted stream with ``seed`` (a function of both only)."""
    return np.random.default_rng([int(seed), int(k)]).permutation(n_features)


def task_order(n_tasks: int, seed: int, shuffle: bool) -> list[int]:
    if not shuffle:
        return list(range(n_tasks))
    return [int(i) for i in np.random.default_rng([int(seed), 1_000_003]).permutation(n_tasks)]


def permuted(base: Dataset, n_tasks: int, *, seed: int = 0, shuffle_order: bool = True) -> TaskStream:
    """``n_tasks`` fixed pixel permutations of ``base`` (domain-incremental; see the module docstring)."""
    if n_tasks < 1:
        raise ConfigError(f"a permuted stream needs >= 1 task, got {n_tasks}")
    tasks = []
    for k in task_order(n_tasks, seed, shuffle_order):
        perm = torch.from_numpy(permutation(base.n_features, seed, k))

        def build(perm=perm, k=k) -> Dataset:
            return _map_splits(base, f"{base.name}-perm{k}", lambda s: Split(s.x[:, perm].contiguous(), s.y),
                               f"{base.source}; pixels permuted (stream seed {seed}, permutation {k})")

        tasks.append(Task(f"perm{k}", tuple(range(base.n_classes)), build))
    return TaskStream(f"permuted-{base.name}", tuple(tasks), "domain", base.n_features, base.n_classes,
                      f"{n_tasks} pixel permutations of {base.name} (seed {seed})")


def split_classes(base: Dataset, groups: Sequence[Sequence[int]] | None = None, *, classes_per_task: int = 2,
                  scenario: Scenario = "class", seed: int = 0, shuffle_order: bool = False) -> TaskStream:
    """``base`` split by class into tasks (``groups``, or consecutive runs of ``classes_per_task`` classes)."""
    if groups is None:
        if base.n_classes % classes_per_task:
            raise ConfigError(f"{base.name} has {base.n_classes} classes, not a multiple of classes_per_task = "
                              f"{classes_per_task}; choose a divisor of {base.n_classes}")
        groups = [tuple(range(i, i + classes_per_task)) for i in range(0, base.n_classes, classes_per_task)]
    groups = [tuple(int(c) for c in g) for g in groups]
    flat = [c for g in groups for c in g]
    if len(set(flat)) != len(flat) or any(not 0 <= c < base.n_classes for c in flat):
        raise ConfigError(f"class groups {groups} must be disjoint classes of 0..{base.n_classes - 1}")
    order = task_order(len(groups), seed, shuffle_order)
    tasks = []
    for k in order:
        group = groups[k]
        keep = torch.tensor(group)

        def select(s: Split, keep=keep) -> Split:
            m = torch.isin(s.y, keep)
            return Split(s.x[m].contiguous(), s.y[m].contiguous())

        def build(group=group, select=select) -> Dataset:
            return _map_splits(base, f"{base.name}-{'-'.join(map(str, group))}", select,
                               f"{base.source}; classes {group} only")

        tasks.append(Task("-".join(map(str, group)), group, build))
    return TaskStream(f"split-{base.name}", tuple(tasks), scenario, base.n_features, base.n_classes,
                      f"{base.name} split into class groups {[groups[k] for k in order]}")


def dataset_list(datasets: Sequence[Dataset], *, labels: Literal["shared", "offset"] = "offset",
                 scenario: Scenario | None = None) -> TaskStream:
    """One task per dataset (equal feature counts).  ``labels="offset"`` gives task ``k`` the head units
    after those of tasks ``< k`` (class- or task-incremental); ``"shared"`` reuses units 0.. (domain)."""
    if not datasets:
        raise ConfigError("a dataset-list stream needs at least one dataset")
    n_features = datasets[0].n_features
    for d in datasets:
        if d.n_features != n_features:
            raise DataError(f"dataset {d.name} has {d.n_features} features but {datasets[0].name} has {n_features}; "
                            "a stream's tasks must share the input size")
    shifts, offset = [], 0
    for d in datasets:
        shifts.append(offset if labels == "offset" else 0)
        offset += d.n_classes
    n_classes = offset if labels == "offset" else max(d.n_classes for d in datasets)
    tasks = []
    for d, shift in zip(datasets, shifts):
        classes = tuple(range(shift, shift + d.n_classes))
        names = [f"c{i}" for i in range(n_classes)]
        names[shift : shift + d.n_classes] = d.class_names

        def build(d=d, shift=shift, names=tuple(names)) -> Dataset:
            return _map_splits(d, d.name, lambda s: Split(s.x, s.y + shift), d.source, n_classes=n_classes,
                               class_names=names)

        tasks.append(Task(d.name, classes, build))
    stream = TaskStream("datasets", tuple(tasks), scenario or ("class" if labels == "offset" else "domain"),
                        n_features, n_classes, "tasks: " + ", ".join(d.name for d in datasets))
    return stream


# ------------------------------------------------------------------- benchmarks
def permuted_mnist(root=None, n_tasks: int = 10, *, seed: int = 0, shuffle_order: bool = True, limit: int | None = None,
                   val_fraction: float = 0.0) -> TaskStream:
    """Permuted MNIST (60k/10k per task, or ``limit`` per split)."""
    from neuro.data import load_dataset

    base = load_dataset("mnist", root, val_fraction=val_fraction, seed=seed, limit=limit)
    return permuted(base, n_tasks, seed=seed, shuffle_order=shuffle_order)


def split_mnist(root=None, *, scenario: Scenario = "class", seed: int = 0, limit: int | None = None,
                val_fraction: float = 0.0) -> TaskStream:
    """Split MNIST: 5 tasks of 2 digits (0-1, 2-3, 4-5, 6-7, 8-9)."""
    from neuro.data import load_dataset

    return split_classes(load_dataset("mnist", root, val_fraction=val_fraction, seed=seed, limit=limit),
                         scenario=scenario, seed=seed)


def split_digits(*, scenario: Scenario = "class", seed: int = 0, val_fraction: float = 0.0) -> TaskStream:
    """Split digits (scikit-learn 8x8): 5 tasks of 2 digits."""
    from neuro.data import load_dataset

    return split_classes(load_dataset("digits", val_fraction=val_fraction, seed=seed), scenario=scenario, seed=seed)


__all__ = ["SCENARIOS", "Task", "TaskStream", "dataset_list", "permutation", "permuted", "permuted_mnist",
           "split_classes", "split_digits", "split_mnist", "task_order"]
