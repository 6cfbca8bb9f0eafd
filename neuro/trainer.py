"""The trainer: the same loop for every learning rule.

For each batch: zero the gradients, let the rule write pseudo-gradients
(``rule.step``), optionally clip them, and take one optimizer step.  At the end of each
epoch: evaluate on the validation split, log a record to ``metrics.jsonl``, and write a
checkpoint (atomically) that holds everything needed to continue bit-for-bit: model,
optimizer, scheduler, rule state, epoch, step and all random-number-generator states.
Batch order in epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees exactly
the batches an uninterrupted run would.

Metrics a rule returns are averaged over the epoch's batches, except keys starting with
``n_`` (counts, e.g. ``n_physical_evals``), which are summed.

Divergence: a non-finite learning rate is refused before the first step; a non-finite
loss stops training at that batch, and non-finite parameters at an epoch's end stop it before
the checkpoint is written.  Both raise :class:`~neuro.errors.NeuroError`; the last good
checkpoint (of the last finished epoch) stays on disk.

Checkpoints hold only tensors and plain values (dicts, lists, tuples, str, int, float, bool,
None): the RNG states are stored as tensors and lists (:func:`rng_state`), and
:func:`load_checkpoint` reads them with ``torch.load(weights_only=True)``, which refuses to
construct any other object, so a shared run directory cannot run code through its
``checkpoint.pt``.  Checkpoints of earlier versions, whose NumPy RNG state is an ndarray, are
read with only NumPy's numeric-array reconstruction allowed in addition.

Data-parallel (issue 16, :mod:`neuro.distributed`): under torchrun each rank takes its shard of
every global batch, the gradients are all-reduced before ``optimizer.step()``, metrics and
evaluation totals are reduced over the ranks, and only rank 0 writes checkpoints and metrics.
In one process these hooks do nothing.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from neuro import distributed
from neuro.config import PRECISIONS
from neuro.errors import CheckpointError, NeuroError
from neuro.functional.sharding import batch_shard
from neuro.progress import progress_bar
from neuro.rules.base import Batch, Rule
from neuro.runs import Run

CHECKPOINT_FORMAT = "neurohil-checkpoint-1"
EpochHook = Callable[["Trainer", dict], None]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, NumPy and torch global generator states as plain values and tensors (safe to load).

    ``python``: ``random.getstate()`` (a tuple of ints); ``numpy``: the legacy MT19937 state
    as ``{"name", "keys" (int64 tensor of the 624 uint32 words), "pos", "has_gauss", "gauss"}``;
    ``torch``: ``torch.get_rng_state()`` (uint8 tensor).
    """
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {
        "name": str(name),
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`; also takes the NumPy state of earlier checkpoints (a tuple with an ndarray)."""
    py = state["python"]
    random.setstate((int(py[0]), tuple(int(v) for v in py[1]), py[2]))
    npst = state["numpy"]
    if isinstance(npst, dict):
        keys = npst["keys"].numpy() if isinstance(npst["keys"], torch.Tensor) else npst["keys"]
        keys = np.asarray(keys).astype(np.uint32)
        npst = (npst["name"], keys, int(npst["pos"]), int(npst["has_gauss"]), float(npst["gauss"]))
    np.random.set_state(npst)
    torch.set_rng_state(state["torch"])


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, order: torch.Tensor | None = None) -> Iterator[Batch]:
    n = x.shape[0]
    idx = order if order is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        sel = idx[start : start + batch_size]
        yield Batch(x[sel], y[sel], sel)


class Trainer:
    """Train ``model`` with ``rule`` and ``optimizer`` on ``data`` (a :class:`neuro.data.Dataset`).

    epochs: total number of epochs (a resumed run continues up to this).
    grad_clip: max global L2 norm of the pseudo-gradients (``None``: no clipping).
    run: where metrics and checkpoints go (``None``: nowhere, e.g. in tests).
    hooks: callables ``hook(trainer, record)`` run at each epoch end before the record is
        logged; they may add entries to ``record``.
    precision: "float32", or "bfloat16": ``rule.step`` and ``rule.evaluate`` run under
        ``torch.autocast`` (bf16 matrix products, float32 parameters, gradients and optimizer).
    flush_denormals: during :meth:`fit`, CPU float arithmetic flushes subnormal numbers
        (magnitude below 1.2e-38 in float32) to zero, and the mode is switched off again after.
        Adam's moment estimates of parameters that get no gradient (dead ReLUs) decay
        geometrically into the subnormal range after about 800 steps, and on x86 every
        operation on a subnormal takes a slow path: on the 13.7 M-parameter 4 x 2000 MLP the
        optimizer step went from 25 ms to 300 ms.  Only values that small are changed.
    """

    def __init__(
        self,
        model: nn.Module,
        rule: Rule,
        optimizer: torch.optim.Optimizer,
        data,
        *,
        epochs: int,
        batch_size: int,
        seed: int = 0,
        scheduler=None,
        grad_clip: float | None = None,
        run: Run | None = None,
        progress: bool = True,
        eval_batch_size: int = 1000,
        device: str | torch.device = "cpu",
        hooks: tuple[EpochHook, ...] = (),
        precision: str = "float32",
        flush_denormals: bool = True,
    ) -> None:
        if epochs < 0 or batch_size < 1:
            raise NeuroError(f"epochs must be >= 0 and batch_size >= 1 (got {epochs}, {batch_size})")
        from neuro.data.torch_data import as_dataset

        self.model, self.rule, self.optimizer = model, rule, optimizer
        self.data = as_dataset(data)  # a neuro Dataset, or torch Dataset/DataLoader as the train split
        self.epochs, self.batch_size, self.seed = int(epochs), int(batch_size), int(seed)
        self.scheduler, self.grad_clip, self.run = scheduler, grad_clip, run
        self.progress, self.eval_batch_size = progress, int(eval_batch_size)
        self.device = torch.device(device)
        self.hooks = tuple(hooks)
        if precision not in PRECISIONS:
            raise NeuroError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.flush_denormals = bool(flush_denormals)
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        rule.check_compatible(model)  # the rule's own checks (FF, mfff, pat override it), not only the base ones
        distributed.broadcast_module(model)  # DISTRIBUTED: all ranks start from rank 0's weights (no-op in one process)

    def autocast(self):
        """The mixed-precision context of training steps and evaluation (off for float32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16")

    # ------------------------------------------------------------------ training
    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The batch order of ``epoch`` (1-based): a function of ``(seed, epoch)`` only."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.data.train), generator=g)

    def train_epoch(self) -> dict:
        epoch = self.epoch + 1
        self.model.train()
        split = self.data.train
        order = self.epoch_order(epoch)
        n_batches = math.ceil(len(split) / self.batch_size)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        start = time.perf_counter()
        bar = progress_bar(total=len(split), desc=f"epoch {epoch}/{self.epochs}", unit="sample", enabled=self.progress)
        try:
            for batch in batches(split.x, split.y, self.batch_size, order):
                n_global = batch.y.numel()
                shard = distributed.shard(n_global)  # DISTRIBUTED: this rank's rows of the global batch
                batch = Batch(
                    batch.x[shard.rows].to(self.device),
                    batch.y[shard.rows].to(self.device),
                    batch.index[shard.rows].to(self.device),
                )
                # a rule may ask for several optimizer steps per batch (``inner_steps``, e.g. PhyLL's 10)
                for _ in range(max(1, int(getattr(self.rule, "inner_steps", 1)))):
                    self.optimizer.zero_grad(set_to_none=True)
                    with self.autocast(), batch_shard(shard):
                        metrics = self.rule.step(self.model, batch)
                        # DISTRIBUTED: g = sum_r (n_r / N) g_r over the ranks (no-op in one process)
                        distributed.all_reduce_grads(p for g in self.optimizer.param_groups for p in g["params"])
                    if "loss" in metrics and not math.isfinite(float(metrics["loss"])):
                        self._diverged(f"the loss is {float(metrics['loss'])} at step {self.step + 1} (epoch {epoch})")
                    if self.grad_clip:
                        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
                        torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                    self.optimizer.step()
                    self.step += 1
                    for k, v in metrics.items():  # DISTRIBUTED: means weighted by n_r / N, counts summed (below)
                        sums[k] = sums.get(k, 0.0) + (float(v) if k.startswith("n_") else shard.weight * float(v))
                        counts[k] = counts.get(k, 0) + 1
                bar.update(n_global)
                if "loss" in metrics:
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        finally:
            bar.close()
        if self.scheduler is not None:
            self.scheduler.step()
        sums = distributed.reduce_sums(sums)  # DISTRIBUTED: over the ranks (no-op in one process)
        elapsed = time.perf_counter() - start
        record = {"event": "epoch", "epoch": epoch, "step": self.step}
        for k, total in sums.items():
            record[k if k.startswith("n_") else f"train_{k}"] = total if k.startswith("n_") else total / counts[k]
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["time_s"] = elapsed
        record["samples_per_s"] = len(split) / elapsed if elapsed > 0 else None
        record["batches"] = n_batches
        return record

    def fit(self) -> list[dict]:
        """Train from the current epoch up to ``epochs``; return the epoch records.

        Raises NeuroError for a non-finite learning rate, and when training diverges (module
        docstring); the checkpoint of the last finished epoch is kept.
        """
        for group in self.optimizer.param_groups:
            lr = float(group["lr"])
            if not math.isfinite(lr) or lr < 0:
                raise NeuroError(f"the learning rate is {lr}; optim.lr must be a finite number > 0 (e.g. 0.001)")
        if self.flush_denormals:
            torch.set_flush_denormal(True)
        try:
            return self._fit()
        finally:
            if self.flush_denormals:
                torch.set_flush_denormal(False)

    def _fit(self) -> list[dict]:
        out = []
        while self.epoch < self.epochs:
            record = self.train_epoch()
            bad = [name for name, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
            if bad:
                self._diverged(
                    f"parameter {bad[0]} is not finite after epoch {self.epoch + 1}"
                    + (f" ({len(bad)} parameters)" if len(bad) > 1 else "")
                )
            self.epoch += 1
            if len(self.data.val):
                val = self.evaluate("val")
                record["val_loss"], record["val_accuracy"] = val["loss"], val["accuracy"]
            for hook in self.hooks:
                hook(self, record)
            if self.run is not None:
                self.run.log(record)
                self.save_checkpoint(self.run.checkpoint_path)
            out.append(record)
        return out

    def _diverged(self, what: str) -> None:
        kept = (
            f"the checkpoint of epoch {self.epoch} is kept ({self.run.checkpoint_path})"
            if self.run is not None and self.epoch > 0 and self.run.checkpoint_path.is_file()
            else "no checkpoint was written"
        )
        raise NeuroError(f"training diverged: {what}; {kept}; lower optim.lr or set train.grad_clip")

    # ---------------------------------------------------------------- evaluation
    def evaluation_seed(self, split: str) -> int:
        """The seed of the random draws (e.g. rate-coded input spikes) while evaluating ``split``:
        a function of the run's seed and the split only, so every evaluation of the same weights
        (during training, ``neuro eval``, after a resume) sees the same inputs."""
        return (self.seed * 1_000_003 + 7_919 * (1 + ("train", "val", "test").index(split))) % 2**63

    @torch.no_grad()
    def evaluate(self, split: str = "test") -> dict:
        """Mean cross-entropy loss and accuracy of ``rule.predict`` on a split.

        Deterministic: the global random generators are forked and seeded with
        :meth:`evaluation_seed` for the evaluation and restored after it, so evaluating neither
        depends on nor disturbs the training's random stream.
        """
        if split not in ("train", "val", "test"):
            raise NeuroError(f"split must be train, val or test, got {split!r}")
        data = getattr(self.data, split)
        self.model.eval()
        totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
        devices = [self.device] if self.device.type == "cuda" else []
        bar = progress_bar(total=len(data), desc=f"evaluating {split}", unit="sample", enabled=self.progress)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.evaluation_seed(split))
            try:
                for batch in batches(data.x, data.y, self.eval_batch_size):
                    shard = distributed.shard(batch.y.numel())  # DISTRIBUTED: each rank evaluates its rows
                    batch = Batch(batch.x[shard.rows].to(self.device), batch.y[shard.rows].to(self.device))
                    with self.autocast(), batch_shard(shard):
                        scores = self.rule.evaluate(self.model, batch)
                    share = (
                        shard.weight if shard.replicated else 1.0
                    )  # a batch all ranks compute whole counts 1/world each
                    for k2, v in scores.items():
                        totals[k2] = totals.get(k2, 0.0) + share * v
                    bar.update(batch.y.numel())
            finally:
                bar.close()
        totals = distributed.reduce_sums(totals)  # DISTRIBUTED
        self.model.train()
        n = max(totals["count"], 1.0)
        return {"loss": totals["loss_sum"] / n, "accuracy": totals["correct"] / n, "count": int(totals["count"])}

    # --------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "step": self.step,
            "seed": self.seed,
            "model": self.model.state_dict(),
            "optimizer_name": type(self.optimizer).__name__,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rule": self.rule.state_dict(),
            "rng": rng_state(),
        }

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write the checkpoint atomically (a crash mid-write leaves the previous one intact)."""
        path = Path(path)
        if not distributed.is_main():  # DISTRIBUTED: rank 0 writes; its state is every rank's state
            return path
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as fh:  # through a Python file, a full disk is an OSError (ENOSPC)
                torch.save(self.state_dict(), fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:  # RuntimeError: torch's own writer failing
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[0]
            kept = (
                "the previous checkpoint is intact (`neuro train --resume` continues from it)"
                if path.is_file()
                else "no checkpoint was written"
            )
            raise CheckpointError(
                f"cannot write checkpoint {path}: {why}; {kept}; free disk space or check the folder's permissions"
            ) from None
        return path

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise CheckpointError(
                f"not a NeuroHIL checkpoint (it holds a {type(state).__name__}, expected a dict of "
                f"format {CHECKPOINT_FORMAT})"
            )
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"not a NeuroHIL checkpoint (format {state.get('format')!r}, expected {CHECKPOINT_FORMAT})"
            )
        missing = [k for k in ("model", "optimizer", "epoch", "step", "rng") if k not in state]
        if missing:
            raise CheckpointError(f"the checkpoint lacks {', '.join(missing)}; it is incomplete or damaged: retrain")
        try:
            self.model.load_state_dict(state["model"])
        except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"checkpoint does not fit this model ({first}); was the config changed?") from None
        self._load_optimizer(state)
        try:
            if self.scheduler is not None and state.get("scheduler") is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            self.rule.load_state_dict(state.get("rule") or {})
            self.epoch, self.step = int(state["epoch"]), int(state["step"])
            set_rng_state(state["rng"])
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise CheckpointError(
                f"the checkpoint's training state does not fit ({type(exc).__name__}: {first}); "
                "was the config changed (optim.schedule, rule)? resume with the run's own "
                "settings"
            ) from None

    def _load_optimizer(self, state: dict) -> None:
        """Load the optimizer state, refusing one saved by another optimizer (``optim.name`` changed)."""
        ours, saved = type(self.optimizer).__name__, state.get("optimizer_name")
        groups = state["optimizer"].get("param_groups") if isinstance(state["optimizer"], dict) else None
        fix = f"resume with the run's optim.name ({saved or 'as trained'}), or start a new run"
        if saved is not None and saved != ours:
            raise CheckpointError(
                f"the checkpoint's optimizer state is for {saved}, this run builds {ours} (optim.name changed?); {fix}"
            )
        if not isinstance(groups, list) or len(groups) != len(self.optimizer.param_groups):
            raise CheckpointError(f"the checkpoint's optimizer state does not fit {ours}; {fix}")
        for g_saved, g_ours in zip(groups, self.optimizer.param_groups):
            keys_saved = set(g_saved) - {"params"} if isinstance(g_saved, dict) else set()
            if keys_saved != set(g_ours) - {"params"}:
                other = sorted(keys_saved ^ (set(g_ours) - {"params"}))
                raise CheckpointError(
                    f"the checkpoint's optimizer state was written by another optimizer than {ours} "
                    f"(settings differ: {', '.join(other[:4])}; optim.name changed?); {fix}"
                )
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise CheckpointError(f"the checkpoint's optimizer state does not fit {ours} ({first}); {fix}") from None

    def resume(self, path: str | os.PathLike) -> None:
        """Continue from a checkpoint written by :meth:`save_checkpoint`."""
        self.load_state_dict(load_checkpoint(path))


def _legacy_numpy_globals() -> dict:
    """``{"module.name": object}`` that unpickling a NumPy array needs (earlier checkpoints' RNG state).

    Safe to allow: ``_reconstruct`` makes an empty ``ndarray``, ``dtype`` a data type, and the
    numeric dtype classes (bool, integers, floats; not ``object``) restore its fields.
    """
    from numpy._core import multiarray

    out = {
        "numpy._core.multiarray._reconstruct": multiarray._reconstruct,
        "numpy.ndarray": np.ndarray,
        "numpy.dtype": np.dtype,
    }
    for code in "?bBhHiIlLqQefdg":
        cls = type(np.dtype(code))
        out[f"{cls.__module__}.{cls.__name__}"] = cls
    return out


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint safely: ``torch.load(weights_only=True)``, no pickled code runs (module docstring).

    A file that needs any other object is refused with a :class:`CheckpointError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; the run has not finished an epoch yet")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # needs globals beyond plain values: see which
    except Exception as exc:  # noqa: BLE001 - any other failure means the file is unusable
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(exc).__name__}); delete it and retrain"
        ) from None
    try:
        needed = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(exc).__name__}); delete it and retrain"
        ) from None
    legacy = _legacy_numpy_globals()
    refused = [g for g in needed if g not in legacy]
    if refused:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain values ({', '.join(sorted(refused)[:3])}); "
            "refusing to unpickle it, since that could run code: use checkpoints written by NeuroHIL, or retrain"
        )
    try:
        with torch.serialization.safe_globals(list(legacy.values())):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"checkpoint {path} cannot be read safely ({type(exc).__name__}: {first}); retrain"
        ) from None
