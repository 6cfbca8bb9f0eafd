"""Outputs of hardware-backed layers: measured values that refuse backpropagation.

A layer that runs on a device (or on a simulator standing in for a black-box physical
system) computes its forward under ``torch.no_grad()``.  If its input carried gradients,
its output is wrapped so that a backward pass that tries to reach the input raises a
:class:`~neuro.errors.HardwareGradientError` that names the layer and suggests a rule
that does not need gradients through it.  If nothing upstream needs gradients the output
is a plain tensor and costs nothing.
"""

from __future__ import annotations

import torch

from neuro.errors import HardwareGradientError


class _RefuseBackprop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, measured, upstream, where: str):  # type: ignore[override]
        ctx.where = where
        return measured.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        raise HardwareGradientError(
            f"cannot backpropagate through {ctx.where}: it is measured, not differentiable; "
            "train with a rule that does not need gradients through it (mfff, pat) or detach its input"
        )


def measured_output(measured: torch.Tensor, upstream: torch.Tensor, where: str) -> torch.Tensor:
    """Return ``measured`` (computed without a graph) so that backprop to ``upstream`` fails clearly.

    ``where`` names the layer and substrate for the error message, e.g.
    ``"layer 'blocks.1.physical' on serial device /dev/pts/3"``.
    """
    measured = measured.detach()
    if torch.is_grad_enabled() and upstream.requires_grad:
        return _RefuseBackprop.apply(measured, upstream, where)
    return measured
