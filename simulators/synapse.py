"""Synaptic input ``x W^T + b`` for spike trains: dense matmul or event-driven gather.

For binary spikes ``x [T, batch, n_in]`` (time folded into the batch: ``R = T * batch``
rows), row ``r`` of the synaptic input is the sum of the weight columns of the inputs that
spiked: ``y[r] = b + sum_{c : x[r, c] = 1} W[:, c]``.  The event path computes exactly
that with ``embedding_bag`` (one gather-and-sum per active input, ``nnz * n_out`` adds
instead of ``R * n_in * n_out`` multiply-adds), so it wins when the activity
``nnz / (R n_in)`` is low.

Backward (both paths give the same gradients, to float rounding of the summation order):

- ``dL/dW[:, c] = sum_{r : x[r, c] = 1} dL/dy[r]``: the event path gathers the output
  gradients of the rows where input ``c`` spiked, again with ``embedding_bag``;
- ``dL/dx = dL/dy W`` (a dense matmul, needed when the spikes themselves carry surrogate
  gradients from an earlier layer; skipped when ``x`` needs no gradient);
- ``dL/db = sum_r dL/dy[r]``.

:func:`synaptic_input` with ``path="auto"`` takes the event path only for a forward pass
that needs no gradient (inference, or ``torch.no_grad()``), when the input is binary and
its measured activity (one pass per call) is below :data:`EVENT_MAX_ACTIVITY`, the crossover
activity measured by ``bench/snn_engines.py`` (event forward vs our dense forward, 784-1000-10,
T = 25, batch 128, 2 threads, idle machine; ``bench/RESULTS.md``, issue 19).  A
:class:`~neuro.layers.lif.LIFLayer` on the native engine then runs the fused event kernel of
:func:`simulators.lif.lif_event_forward` (gather and neurons in one pass, no stored currents);
this module's :func:`event_linear` is the differentiable (training) version.  Training stays
dense unless ``path="event"`` is asked for: the event backward (a second gather per weight
column plus the dense ``dL/dx``) measured slower than the dense one at every activity (issue 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SYNAPSE_PATHS = ("auto", "dense", "event")

#: Largest input activity (fraction of nonzero entries) at which ``path="auto"`` uses the
#: event-driven gather: the measured crossover of the event and dense forward (module docstring).
EVENT_MAX_ACTIVITY = 0.28  # bench/RESULTS.md: 28.1 % (2026-12-03), 29.1 % (2026-12-02), idle machine


def _bags(rows: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Offsets of the bags 0..n_bags-1 in a sorted index list ``rows`` (empty bags allowed)."""
    return torch.searchsorted(rows, torch.arange(n_bags, device=rows.device, dtype=rows.dtype))


class _EventLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2, weight, bias):  # type: ignore[override]
        rows, cols = x2.nonzero(as_tuple=True)  # row-major: rows sorted
        if not bool((x2[rows, cols] == 1).all()):  # checks only the nnz active entries
            raise ValueError("the event-driven synapse needs binary spikes (0/1) as input; use path 'dense' or 'auto'")
        w_t = weight.t().contiguous()  # [n_in, n_out]: one contiguous row per input
        y = F.embedding_bag(cols, w_t, _bags(rows, x2.shape[0]), mode="sum")
        if bias is not None:
            y.add_(bias)
        ctx.save_for_backward(rows, cols, weight)
        ctx.shape = x2.shape
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        rows, cols, weight = ctx.saved_tensors
        n_rows, n_in = ctx.shape
        d_x = d_w = d_b = None
        if ctx.needs_input_grad[0]:
            d_x = g @ weight
        if ctx.needs_input_grad[1]:
            order = torch.argsort(cols, stable=True)  # group the events by input column
            d_w = F.embedding_bag(rows[order], g, _bags(cols[order], n_in), mode="sum").t()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            d_b = g.sum(0)
        return d_x, d_w, d_b


def event_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x W^T + b`` for binary ``x [..., n_in]`` by gathering weight columns of active inputs.

    Values of ``x`` other than 0 and 1 would be treated as 1: call it only on spikes
    (:func:`synaptic_input` checks).
    """
    lead = x.shape[:-1]
    y = _EventLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
    return y.reshape(*lead, weight.shape[0])


def spike_activity(x: torch.Tensor) -> tuple[float, bool]:
    """``(activity, binary)``: the fraction of nonzero entries, and whether all of them are 1.

    ``binary`` is only checked (one more pass) when the activity is below the threshold.
    (An explicit ``path="event"`` checks binarity on the active entries only.)
    """
    from simulators import lif_kernel

    k = lif_kernel.kernel() if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) else None
    if k is not None:  # one pass on all threads
        activity, binary = k.activity(x.contiguous())
        return activity, activity < EVENT_MAX_ACTIVITY and binary == 1.0
    n = x.numel()
    nnz = int(torch.count_nonzero(x))
    activity = nnz / n if n else 0.0
    binary = activity < EVENT_MAX_ACTIVITY and int(torch.count_nonzero(x == 1)) == nnz
    return activity, binary


def choose_path(x: torch.Tensor, path: str = "auto") -> str:
    """``"dense"`` or ``"event"`` for input ``x`` (see :data:`EVENT_MAX_ACTIVITY`)."""
    if path not in SYNAPSE_PATHS:
        raise ValueError(f"synapse path must be one of {', '.join(SYNAPSE_PATHS)}, got '{path}'")
    if path == "dense":
        return path
    if path == "event":  # binarity is checked on the active entries inside the event path
        return path
    activity, binary = spike_activity(x.detach())
    return "event" if binary and activity < EVENT_MAX_ACTIVITY else "dense"


def synaptic_input(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   path: str = "auto") -> torch.Tensor:
    """``x W^T + b`` for ``x [T, batch, n_in]`` on the dense or event path (``path``)."""
    if path == "auto" and torch.is_grad_enabled() and (
            weight.requires_grad or x.requires_grad or (bias is not None and bias.requires_grad)):
        path = "dense"  # the event backward measured slower than the dense one (module docstring)
    if choose_path(x, path) == "event":
        return event_linear(x, weight, bias)
    return F.linear(x, weight, bias)
