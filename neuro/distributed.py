"""Data-parallel training with ``torch.distributed``: process group, shards, all-reduce, rank-0 IO.

Launch with torchrun (``torchrun --nproc-per-node N -m neuro train CONFIG``, or the shortcut
``neuro train --nproc N CONFIG``); each process ("rank") builds the same model from the same seed,
and :class:`~neuro.trainer.Trainer` then, for every *global* batch of ``train.batch_size`` samples
(the single process's batches, same order):

1. gives rank ``r`` its contiguous shard ``[start_r, stop_r)`` of ``n_r`` samples
   (:func:`neuro.functional.sharding.split`; per-sample random numbers are drawn for the global batch,
   so they equal the single process's, see :mod:`neuro.functional.sharding`);
2. lets the rule write its pseudo-gradients ``g_r`` (means over the shard) into ``.grad``;
3. all-reduces them (:func:`all_reduce_grads`, flattened into buckets of ``bucket_mb``), weighted by
   the shard sizes: ``g = sum_r (n_r / N) g_r``, which is the gradient of the mean over the global
   batch of ``N = sum_r n_r`` samples, i.e. what one process computes (up to float rounding);
4. takes the optimizer step, identical on every rank since the gradients are.

This works for every rule because every rule writes ``.grad`` and none steps the optimizer
(:mod:`neuro.rules.base`); BPTT takes the same path (the all-reduce happens after the whole
backward pass, where DDP would overlap it with the backward; for the small networks here the
difference is the overlap, not the result).  A rule with an optimizer of its own (``pat``'s fitted
twins) reduces those gradients with the same call inside its step.  Metrics: a rank's per-batch
means are weighted by ``n_r / N`` and summed over ranks (counts ``n_*`` are summed), once per epoch.

What stays consistent across ranks, and why: parameters (broadcast from rank 0 at the start, then
identical updates), optimizer and scheduler state (identical inputs), the global torch generator and
rules' generators (mfff's SPSA directions, FF's noise seeds; every rank draws the same amounts), so
rank 0's checkpoint is every rank's state and a run resumes with any number of processes.  Only
rank 0 writes the run directory (config, metrics, checkpoints, report): :func:`is_main`.

Hardware in the loop: a substrate spec may contain ``{rank}`` (global rank) or ``{local_rank}``
(rank on this host), e.g. ``serial:/dev/ttyUSB{rank}``: each rank opens its own device
(:func:`expand_rank`).  A failing device raises on its rank, which stops; the other ranks' next
collective fails at once (the connection closes) and the launcher ends the job.  A rank that hangs
without exiting is caught by the collective timeout (``NEUROHIL_DIST_TIMEOUT`` seconds, default 300).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from neuro.errors import NeuroError
from neuro.functional.sharding import Shard, split

#: bucket size of the gradient all-reduce (MiB of float32 per collective call)
BUCKET_MB = 25.0
DEFAULT_TIMEOUT_S = 300.0


class DistributedError(NeuroError):
    """A rank failed (its own error, prefixed with the rank) or lost contact with the others."""


class PeerLostError(DistributedError):
    """A collective failed on this rank because another rank stopped (or the network failed)."""


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Started by torchrun (or another launcher that sets ``RANK`` and ``WORLD_SIZE``)?"""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def context() -> Context:
    """Rank, world size and local rank of this process (world 1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return Context()


def rank() -> int:
    return context().rank


def world_size() -> int:
    return context().world


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one process that writes files."""
    return context().is_main


def timeout_s() -> float:
    text = os.environ.get("NEUROHIL_DIST_TIMEOUT", "")
    try:
        return float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise DistributedError(f"NEUROHIL_DIST_TIMEOUT must be a number of seconds, got '{text}'") from None


def init_from_env(device: str = "cpu") -> Context:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``): gloo for CPU training, NCCL for CUDA devices."""
    if not launched():
        return Context()
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s()))
    return context()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def expand_rank(text: str) -> str:
    """``text`` with ``{rank}`` and ``{local_rank}`` replaced by this process's ranks (substrate specs)."""
    if "{" not in text:
        return text
    ctx = context()
    r = ctx.rank if ctx.active else env_rank()
    lr = ctx.local_rank if ctx.active else int(os.environ.get("LOCAL_RANK", r))
    return text.replace("{rank}", str(r)).replace("{local_rank}", str(lr))


def shard(total: int) -> Shard:
    """This rank's shard of a global batch of ``total`` samples (the whole batch in one process)."""
    ctx = context()
    return split(total, ctx.world, ctx.rank)


# ------------------------------------------------------------------ collectives
def _collective(what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, dist.DistError) as exc:  # gloo/NCCL: connection closed by peer, timeout, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise PeerLostError(
            f"rank {rank()}: {what} failed, another rank stopped or the network failed ({first})"
        ) from None


def _buckets(tensors: Sequence[torch.Tensor], bucket_bytes: int) -> Iterable[list[torch.Tensor]]:
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        if bucket and (size + t.numel() * t.element_size() > bucket_bytes
                       or t.dtype != bucket[0].dtype or t.device != bucket[0].device):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel() * t.element_size()
    if bucket:
        yield bucket


def all_reduce_grads(params: Iterable[torch.Tensor], weight: float | None = None, *,
                     bucket_mb: float = BUCKET_MB) -> int:
    """Replace every ``p.grad`` by ``sum_r weight_r * p.grad_r`` over the ranks; return the bytes reduced.

    ``weight``: this rank's factor (default: the current shard's ``n_r / N``, see
    :mod:`neuro.functional.sharding`).  A parameter without a gradient on every rank keeps
    ``grad = None`` (the optimizer skips it, as in one process); one with a gradient on some ranks
    only gets zeros on the others.  Gradients are flattened into buckets of ``bucket_mb`` MiB, one
    all-reduce call each.  A no-op (returns 0) without a process group.
    """
    ctx = context()
    if not ctx.active:
        return 0
    if weight is None:
        from neuro.functional.sharding import current_shard

        current = current_shard()
        weight = current.weight if current is not None else 1.0 / ctx.world
    params = [p for p in params]
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
    _collective("all-reduce of the gradient mask", dist.all_reduce, has)
    grads = []
    for p, h in zip(params, has.tolist()):
        if not h:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    total = 0
    for bucket in _buckets(grads, int(bucket_mb * 2**20)):
        flat = torch.cat([g.reshape(-1) for g in bucket]).mul_(weight)
        _collective("gradient all-reduce", dist.all_reduce, flat)
        total += flat.numel() * flat.element_size()
        offset = 0
        for g in bucket:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
    return total


def grad_bytes(params: Iterable[torch.Tensor]) -> int:
    """Bytes one step's all-reduce moves per rank (the size of the gradients that exist)."""
    return sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)


def reduce_sums(sums: dict[str, float]) -> dict[str, float]:
    """Sum a dict of numbers over the ranks (same keys on every rank), in float64."""
    ctx = context()
    if not ctx.active or not sums:
        return dict(sums)
    keys = sorted(sums)
    values = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64)
    _collective("metric reduction", dist.all_reduce, values)
    return dict(zip(keys, values.tolist()))


def broadcast_tensors(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` (in place) with rank ``src``'s values."""
    if not context().active:
        return
    for t in tensors:
        if t.dtype == torch.bool:  # gloo has no bool: go through uint8
            tmp = t.data.to(torch.uint8)
            _collective("broadcast", dist.broadcast, tmp, src)
            t.data.copy_(tmp.bool())
        else:
            _collective("broadcast", dist.broadcast, t.data, src)


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Parameters and buffers of ``module`` from rank ``src`` (as DDP does at construction)."""
    broadcast_tensors([*module.parameters(), *module.buffers()], src)


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` (any picklable value) on every rank; ``obj`` itself in one process."""
    if not context().active:
        return obj
    box = [obj]
    _collective("broadcast", dist.broadcast_object_list, box, src)
    return box[0]


def barrier() -> None:
    if context().active:
        _collective("barrier", dist.barrier)
