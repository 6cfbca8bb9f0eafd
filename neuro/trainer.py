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
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from neuro.config import PRECISIONS
from neuro.errors import CheckpointError, NeuroError
from neuro.progress import progress_bar
from neuro.rules.base import Batch, Rule, check_compatible
from neuro.runs import Run

CHECKPOINT_FORMAT = "neurohil-checkpoint-1"
EpochHook = Callable[["Trainer", dict], None]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, order: torch.Tensor | None = None) -> Iterator[Batch]:
    n = x.shape[0]
    idx = order if order is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        sel = idx[start : start + batch_size]
        yield Batch(x[sel], y[sel])


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
        self.model, self.rule, self.optimizer = model, rule, optimizer
        self.data = data
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
        check_compatible(rule, model)

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
                batch = Batch(batch.x.to(self.device), batch.y.to(self.device))
                # a rule may ask for several optimizer steps per batch (``inner_steps``, e.g. PhyLL's 10)
                for _ in range(max(1, int(getattr(self.rule, "inner_steps", 1)))):
                    self.optimizer.zero_grad(set_to_none=True)
                    with self.autocast():
                        metrics = self.rule.step(self.model, batch)
                    if self.grad_clip:
                        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
                        torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                    self.optimizer.step()
                    self.step += 1
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                        counts[k] = counts.get(k, 0) + 1
                bar.update(batch.y.numel())
                if "loss" in metrics:
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        finally:
            bar.close()
        if self.scheduler is not None:
            self.scheduler.step()
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
        """Train from the current epoch up to ``epochs``; return the epoch records."""
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

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, split: str = "test") -> dict:
        """Mean cross-entropy loss and accuracy of ``rule.predict`` on a split."""
        data = getattr(self.data, split)
        self.model.eval()
        totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
        for batch in batches(data.x, data.y, self.eval_batch_size):
            batch = Batch(batch.x.to(self.device), batch.y.to(self.device))
            with self.autocast():
                scores = self.rule.evaluate(self.model, batch)
            for k, v in scores.items():
                totals[k] = totals.get(k, 0.0) + v
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
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rule": self.rule.state_dict(),
            "rng": rng_state(),
        }

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write the checkpoint atomically (a crash mid-write leaves the previous one intact)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        return path

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"not a NeuroHIL checkpoint (format {state.get('format')!r}, expected {CHECKPOINT_FORMAT})")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"checkpoint does not fit this model ({first}); was the config changed?") from None
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.rule.load_state_dict(state.get("rule") or {})
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        set_rng_state(state["rng"])

    def resume(self, path: str | os.PathLike) -> None:
        """Continue from a checkpoint written by :meth:`save_checkpoint`."""
        self.load_state_dict(load_checkpoint(path))


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; the run has not finished an epoch yet")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(exc).__name__}); delete it and retrain") from None
