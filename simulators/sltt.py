"""Memory-bounded training of feed-forward LIF stacks: spatial learning through time (SLTT).

SLTT (Meng et al., "Towards memory- and time-efficient backpropagation for training
spiking neural networks", ICCV 2023) drops the temporal part of the surrogate-gradient
graph: the state a neuron carries from step ``t-1`` into step ``t`` (membrane ``v`` and
synaptic current ``i``) is treated as a constant.  What is left is BPTT's *spatial term*

.. math::

    \\frac{\\partial L}{\\partial W_l} \\approx \\sum_t
        \\frac{\\partial L}{\\partial y_L[t]}\\, \\frac{\\partial y_L[t]}{\\partial W_l}\\Big|_{s[t-1]\\ \\text{fixed}}

in which every step's gradient is a product of same-step Jacobians only (through the
layers, not through time), so it can be computed and accumulated step by step while the
network runs, and nothing of earlier steps has to be kept.

The loss may depend on the whole output sequence (e.g. cross-entropy of spike counts), so
:func:`sltt_backward` makes two passes: (1) run the network without a graph, keeping only
the output layer's spikes and membrane ``[T, batch, n_out]`` (small), and take
``g[t] = dL/dy_L[t]`` from the loss; (2) run again step by step with the carried states
detached, and back-propagate ``<g[t], y_L[t]>`` at each step into the parameters' ``.grad``.
Peak memory is that of one step's graph (``O(batch * width)``), independent of ``T``,
plus the output sequence; the price is a second forward pass.  The inputs are read as
an iterable of steps (made twice), so a stored train ``x.unbind(0)`` and a generator that
re-creates the spikes from a seed both work.

With ``current_delay=True`` the input of step ``t`` reaches the membrane only at ``t+1``,
through the carried current: SLTT gives no gradient to it, so that option is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from simulators.lif import LIFParameters, LIFState, lif_step


@dataclass
class SLTTLayer:
    """One fully connected LIF layer: ``weight [out, in]`` (volts per input unit), ``bias``, params."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    params: LIFParameters


def _run(layers: Sequence[SLTTLayer], steps: Iterable[torch.Tensor], on_step: Callable | None):
    states: list[LIFState | None] = [None] * len(layers)
    for t, x in enumerate(steps):
        h = x
        for k, layer in enumerate(layers):
            cur = F.linear(h, layer.weight, layer.bias)
            s = states[k]
            if s is None:
                s = LIFState(torch.full_like(cur, layer.params.v_leak), torch.zeros_like(cur))
            z, s = lif_step(cur, LIFState(s.v.detach(), s.i.detach()), layer.params)
            states[k] = s
            h = z
        on_step(t, z, s.v)


def sltt_backward(
    layers: Sequence[SLTTLayer],
    make_steps: Callable[[], Iterable[torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Accumulate SLTT gradients into ``.grad`` of the layers' weights and biases.

    ``make_steps()`` yields the input of each step ``[batch, n_in]`` (called twice, must give
    the same values).  ``loss_fn(spikes, membrane)`` maps the output layer's sequences
    ``[T, batch, n_out]`` to a scalar loss.  Returns ``(loss, spikes, membrane)`` of the
    output layer (no graph attached).
    """
    for layer in layers:
        if layer.params.current_delay:
            raise ValueError("SLTT needs current_delay=False: with a delayed current no gradient reaches "
                             "the input within a step")
    out_z: list[torch.Tensor] = []
    out_v: list[torch.Tensor] = []
    with torch.no_grad():
        _run(layers, make_steps(), lambda t, z, v: (out_z.append(z), out_v.append(v)))
    spikes = torch.stack(out_z).requires_grad_()
    membrane = torch.stack(out_v).requires_grad_()
    with torch.enable_grad():
        loss = loss_fn(spikes, membrane)
        g_z, g_v = torch.autograd.grad(loss, [spikes, membrane], allow_unused=True)
    g_z = torch.zeros_like(spikes) if g_z is None else g_z
    g_v = torch.zeros_like(membrane) if g_v is None else g_v

    def backward_step(t, z, v):
        pairs = [(y, g[t]) for y, g in ((z, g_z), (v, g_v)) if y.requires_grad]
        if pairs:
            torch.autograd.backward([y for y, _ in pairs], [g for _, g in pairs])

    with torch.enable_grad():
        _run(layers, make_steps(), backward_step)
    return loss.detach(), spikes.detach(), membrane.detach()
