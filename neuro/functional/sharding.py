"""Batch shards: random draws that do not depend on how a batch is split across processes.

In data-parallel training (:mod:`neuro.distributed`) a *global* batch of ``N`` samples is split
into contiguous shards, rank ``r`` holding samples ``[start_r, stop_r)``.  For the ranks together
to compute exactly what one process computes on the whole batch, every per-sample random number
(rate-coded input spikes, wrong labels of negative data, dropout masks) must be the one the single
process would draw for that sample.  The helpers here do that by *drawing the global tensor and
keeping the rank's slice*: the shape along the batch dimension is ``N`` instead of ``stop - start``,
so

- the values of a sample are identical to the single process's (same generator, same stream
  position, same layout), and
- every rank consumes the same amount of its generator, so the global torch generator (and any
  generator a rule owns) stays identical on all ranks: rule state that depends on it stays in step,
  and a checkpoint written by rank 0 holds the generator state of every rank.

The cost is drawing ``N / (stop - start)`` times more random numbers than the shard needs (for rate
coding ``T * N * F`` uniforms per step), usually small next to the network's work.

Outside :func:`batch_shard` (single process, or code that is not per-sample) the helpers are exactly
``torch.rand`` / ``torch.randint`` / ``torch.multinomial``.  A draw whose batch size is not the
shard's (code that concatenates positive and negative copies before drawing, for example) cannot be
mapped to the global batch: it is drawn locally and a warning is logged once; training stays valid,
only the bit-for-bit equality with the single process (and the cross-rank generator sync) is lost.

Pure torch; no process groups here (those live in :mod:`neuro.distributed`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

log = logging.getLogger("neuro.distributed")


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of a global batch of ``total`` rows.

    weight: the factor of this rank's mean-over-its-shard gradients and metrics in the global
    mean (``(stop - start) / total``, or ``1 / world`` when every rank computes the whole batch).
    """

    start: int
    stop: int
    total: int
    weight: float = 1.0

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.stop == self.total

    @property
    def replicated(self) -> bool:
        """Every rank computes this whole batch (it has fewer rows than ranks)."""
        return self.whole and self.weight != 1.0


_CURRENT: contextvars.ContextVar[Shard | None] = contextvars.ContextVar("neuro_batch_shard", default=None)
_warned = False


@contextlib.contextmanager
def batch_shard(shard: Shard | None) -> Iterator[Shard | None]:
    """Within this block, per-sample draws of batch size ``shard.size`` are drawn for the global batch."""
    token = _CURRENT.set(shard)
    try:
        yield shard
    finally:
        _CURRENT.reset(token)


def current_shard() -> Shard | None:
    return _CURRENT.get()


def split(total: int, world: int, rank: int) -> Shard:
    """Rank ``rank``'s contiguous part of a global batch of ``total`` rows, sizes differing by at most one.

    A batch with fewer rows than ranks is computed whole by every rank (``weight = 1 / world``), so
    no rank has an empty shard (whose mean loss would be undefined) and all ranks draw alike.
    """
    if world <= 1:
        return Shard(0, total, total, 1.0)
    if total < world:
        return Shard(0, total, total, 1.0 / world)
    start = (rank * total) // world
    stop = ((rank + 1) * total) // world
    return Shard(start, stop, total, (stop - start) / total)


def _global_shape(shape: Sequence[int], batch_dim: int) -> tuple[tuple[int, ...], Shard | None]:
    global _warned
    shape = tuple(int(s) for s in shape)
    shard = _CURRENT.get()
    if shard is None or shard.whole:
        return shape, None
    if shape[batch_dim] != shard.size:
        if not _warned:
            _warned = True
            log.warning("a random draw of batch size %d inside a shard of %d rows is drawn per rank; ranks no longer "
                        "reproduce the single-process run bit for bit", shape[batch_dim], shard.size)
        return shape, None
    full = list(shape)
    full[batch_dim] = shard.total
    return tuple(full), shard


def sharded_draw(draw: Callable[[tuple[int, ...]], torch.Tensor], shape: Sequence[int],
                 batch_dim: int = 0) -> torch.Tensor:
    """``draw(shape)``, computed as ``draw(global_shape).narrow(batch_dim, start, size)`` inside a shard."""
    full, shard = _global_shape(shape, batch_dim)
    out = draw(full)
    if shard is None:
        return out
    return out.narrow(batch_dim, shard.start, shard.size)


def rand(shape: Sequence[int], batch_dim: int = 0, *, generator: torch.Generator | None = None,
         device=None, dtype=None) -> torch.Tensor:
    """Uniform [0, 1) like ``torch.rand(shape)``, per sample independent of the sharding."""
    return sharded_draw(lambda s: torch.rand(s, generator=generator, device=device, dtype=dtype), shape, batch_dim)


def randint(low: int, high: int, shape: Sequence[int], batch_dim: int = 0, *,
            generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Integers in ``[low, high)`` like ``torch.randint``, per sample independent of the sharding."""
    return sharded_draw(lambda s: torch.randint(low, high, s, generator=generator, device=device), shape, batch_dim)


def multinomial_rows(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One category per row of ``probs [batch, C]`` like ``torch.multinomial(probs, 1)[:, 0]``.

    Inside a shard the rows are placed at their global positions in a ``[total, C]`` matrix
    (other rows uniform); torch draws the rows of a matrix independently and in order, so each
    row's draw is the single process's.
    """
    full, shard = _global_shape(probs.shape, 0)
    if shard is None:
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
    padded = torch.ones(full, dtype=probs.dtype, device=probs.device)
    padded[shard.rows] = probs
    return torch.multinomial(padded, 1, generator=generator).squeeze(1)[shard.rows]
