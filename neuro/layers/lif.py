"""A fully connected layer of CUBA LIF neurons (see :mod:`simulators.lif` for the equations)."""

from __future__ import annotations

import torch
from torch import nn

from neuro.errors import ConfigError, IncompatibleError
from neuro.layers.capabilities import Capabilities
from simulators.errors import IncompatibleSettingError, UnknownNameError
from simulators.lif import LIF_ENGINES, LIFParameters, LIFState, LIFTrace, lif_event_forward, lif_fused_output
from simulators.synapse import SYNAPSE_PATHS, choose_path, synaptic_input


def engine_names() -> tuple[str, ...]:
    """The registered LIF engines (``native``, ``reference``, ``snntorch``, ``norse``, ...)."""
    return LIF_ENGINES.names()


def lookup_engine(engine: str):
    try:
        return LIF_ENGINES.get(engine)
    except UnknownNameError as exc:
        raise ConfigError(str(exc)) from None


def run_engine(engine: str, currents: torch.Tensor, p: LIFParameters, state: LIFState | None) -> LIFTrace:
    """Simulate LIF dynamics for ``currents`` [T, batch, n] on the named engine."""
    fn = lookup_engine(engine).obj
    try:
        return fn(currents, p, state)
    except IncompatibleSettingError as exc:
        raise IncompatibleError(str(exc)) from None


def check_engine(engine: str, p: LIFParameters) -> None:
    """Fail now (IncompatibleError, one line) if ``engine`` cannot run ``p`` exactly."""
    check = lookup_engine(engine).meta.get("check")
    if check is not None:
        try:
            check(p)
        except IncompatibleSettingError as exc:
            raise IncompatibleError(str(exc)) from None


class LIFLayer(nn.Module):
    """``x [T, batch, in] -> spikes [T, batch, out]``: a linear synapse then LIF neurons.

    The synaptic input ``W x[t] + b`` is computed for all time steps at once (time folded
    into the batch): one dense matmul, or for sparse binary spikes the event-driven gather
    of :mod:`simulators.synapse` (``synapse="auto"`` picks from the measured activity;
    ``"dense"`` / ``"event"`` force a path).  The neuron dynamics then run on the chosen
    engine.  With
    ``params.spiking=False`` the layer is a leaky integrator and :meth:`forward` returns
    its membrane potential instead of spikes.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        params: LIFParameters | None = None,
        *,
        bias: bool = False,
        engine: str = "native",
        synapse: str = "auto",
    ) -> None:
        super().__init__()
        if synapse not in SYNAPSE_PATHS:
            raise ConfigError(f"unknown synapse path '{synapse}'; choose one of {', '.join(SYNAPSE_PATHS)}")
        self.synapse = synapse
        lookup_engine(engine)
        self.params = params or LIFParameters()
        self.engine = engine
        check_engine(engine, self.params)
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(differentiable=True, time_stepped=True, substrate=f"simulator:lif-{self.engine}")

    def forward_trace(self, x: torch.Tensor, state: LIFState | None = None) -> LIFTrace:
        """Spikes and membrane [T, batch, out] and the final state."""
        self._check_input(x)
        currents = synaptic_input(x, self.linear.weight, self.linear.bias, self.synapse)
        # Under bfloat16 autocast (train.precision) only the synapse's matmul runs in bf16:
        # membrane and synaptic state integrate in float32 (or the input's wider type).
        currents = currents.to(torch.promote_types(currents.dtype, torch.float32))
        return run_engine(self.engine, currents, self.params, state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.engine == "native":
            return self._forward_native(x)
        trace = self.forward_trace(x)
        return trace.spikes if self.params.spiking else trace.membrane

    def _forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """The fused engine's fast path: only the layer's output is written, never the other trace.

        Without gradients, an event-driven synapse (``"event"``, or ``"auto"`` below the measured
        crossover activity) runs gather and neurons in one kernel with no stored currents; the dense
        synapse's currents buffer is overwritten by the output (only the current state is kept).
        """
        self._check_input(x)
        w, b, p = self.linear.weight, self.linear.bias, self.params
        output = "spikes" if p.spiking else "membrane"
        grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or (b is not None and b.requires_grad))
        path = self.synapse
        if not grad and path != "dense":
            path = choose_path(x, path)  # measures the input's activity once
            if path == "event":
                res = lif_event_forward(x, w, b, p, output=output)
                if res is not None:
                    return res[0]
        currents = synaptic_input(x, w, b, path)
        currents = currents.to(torch.promote_types(currents.dtype, torch.float32))
        out, _ = lif_fused_output(currents, p, None, output=output, overwrite=True)
        return out

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.linear.in_features:
            raise ValueError(
                f"LIFLayer expects input [time, batch, {self.linear.in_features}], got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        p = self.params
        return (
            f"engine={self.engine}, synapse={self.synapse}, tau_mem={p.tau_mem}s, tau_syn={p.tau_syn}s, dt={p.dt}s, "
            f"v_th={p.v_th}, reset={p.reset}, spiking={p.spiking}"
        )
