"""NIR export and import: :func:`to_nir`, :func:`from_nir`, :func:`write_nir`, :func:`read_nir`.

NIR (the Neuromorphic Intermediate Representation, ``nir`` 1.0) describes neurons by
continuous-time equations, in seconds:

- ``LIF``:     ``tau dv/dt = (v_leak - v) + r I``; spike and reset to ``v_reset`` at ``v > v_threshold``
- ``CubaLIF``: ``tau_syn dI/dt = -I + w_in S``, ``tau_mem dv/dt = (v_leak - v) + r I``; same spike rule
- ``LI`` / ``CubaLI``: the same without threshold;  ``IF``: ``dv/dt = r I``
- ``Affine`` ``y = W x + b``, ``Linear`` ``y = W x``, ``Input``, ``Output``.

It fixes neither the time step nor the discretization nor the reset's timing, so those
travel beside the graph: :func:`to_nir` writes, in ``graph.metadata``, ``dt`` (seconds) and
the units, and on every neuron node ``metadata["neurohil_lif"]`` (a JSON string with the
full :class:`~simulators.lif.LIFParameters`), so that ours -> file -> ours is exact.

Mapping of one of our layers (weights ``W``, parameters ``p``; ``alpha``, ``beta``,
``gamma`` as in :mod:`simulators.lif`) to NIR, for either integrator:

==========================  ===================================================
ours                        NIR node
==========================  ===================================================
Linear ``W`` (and bias)     ``Linear(W)`` / ``Affine(W, b)``
tau_syn, tau_mem, v_*       ``CubaLIF(tau_syn, tau_mem, v_leak, v_threshold, v_reset)``
                            (``LIF(tau=tau_mem, ...)`` for a delta synapse)
input gain gamma            ``r = gamma / (1 - beta)`` (1 for ``input_gain="leak"``)
current jump ``i += x``     ``w_in = 1 / (1 - alpha)`` (``tau_syn dI/dt = -I + w_in S``
                            over one step adds ``(1 - alpha) w_in S``)
spiking=False               ``CubaLI`` / ``LI``
==========================  ===================================================

Import of a foreign graph (no ``neurohil_lif`` metadata) discretizes those equations with
step ``dt`` (argument) and ``integrator`` (default Euler, as snnTorch and Norse step), folds
the per-neuron factors ``r (1 - alpha) w_in`` (``r`` without a synapse, ``dt r`` for ``IF``)
into the preceding weights, and resets to ``v_reset`` at the spike's step (``reset="zero"``).
Time constants and thresholds must be uniform within a layer.

Reset (decision, issue 22).  NIR 1.0 neurons reset *to* ``v_reset``; it has no field for
our default ``reset = "subtract"`` (``v -= v_th`` at a spike), and every peer tool reads a
``LIF``/``CubaLIF`` node as reset-to-``v_reset``: a subtract-reset layer exported as such runs
differently elsewhere (Norse reproduced 70.6 % of the spikes of one such network).  So
:func:`to_nir` still writes the node (its ``neurohil_lif`` metadata keeps ``reset = "subtract"``,
so ours -> file -> ours stays exact) but also ``metadata["neurohil_reset"] = "subtract"`` and
warns with :class:`NIRResetWarning`, naming the layer and the fix: train with
``[model.lif] reset = "zero"`` (and ``v_reset = 0``) for a graph other tools reproduce.
``to_nir(model, strict=True)`` refuses such a model with a :class:`~neuro.errors.ConfigError`
instead.  Reset-to-zero layers export without a word.  :func:`from_nir` of a foreign graph
always resets to ``v_reset`` (``reset="zero"``), as NIR says.

Unsupported nodes: :func:`from_nir` imports chains ``Input -> (Affine|Linear -> neuron)* ->
Output`` with neuron one of ``LIF``, ``CubaLIF``, ``LI``, ``CubaLI``, ``IF``; any other node
(``Threshold``, ``Scale``, ``Delay``, a second ``Linear``, ...), or a synapse not followed by
a neuron, is refused with one line naming the node.

Peer dialects (``dialect=``), found by reading the installed exporters:

- ``"snntorch"`` (snnTorch 1.0 ``export_to_nir``): standard NIR semantics at a hard-coded
  ``dt = 1e-4`` s (``tau = dt / (1 - beta)``, ``r = tau / dt``, ``w_in = tau_syn / dt``), so
  import with ``dt=1e-4``.  The reset mechanism is not exported (always ``v_reset = 0``).
- ``"norse"`` (Norse 1.1 ``norse.torch.to_nir``): writes ``tau = dt / tau_inv`` = ``dt * tau``
  (seconds times ``dt``) and ``CubaLIF`` with ``w_in = 1`` although ``LIFCell``'s current
  jumps by the input (``i += x``); the dialect undoes both (``tau = tau_field / dt``, weight
  factor ``w_in r``).  Norse does not export ``v_reset`` (read as 0) nor its reset method.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from neuro.errors import ConfigError
from neuro.layers.chain import SpikingChain
from neuro.layers.lif import LIFLayer
from neuro.layers.spiking_mlp import SpikingMLP
from simulators.lif import LIFParameters
from simulators.surrogate import Surrogate

if TYPE_CHECKING:  # nir is imported where it is used (it pulls in h5py)
    import nir

DIALECTS = ("nir", "snntorch", "norse")
_META_KEY = "neurohil_lif"
_RESET_KEY = "neurohil_reset"
NEURON_KINDS = ("LIF", "CubaLIF", "LI", "CubaLI", "IF")
SYNAPSE_KINDS = ("Affine", "Linear")


class NIRResetWarning(UserWarning):
    """A layer's reset cannot be said in NIR: other tools will run the exported graph differently."""


# ------------------------------------------------------------------------ export
def _layers_of(model: nn.Module) -> list[LIFLayer]:
    if isinstance(model, LIFLayer):
        return [model]
    if isinstance(model, (SpikingChain, SpikingMLP)):
        return list(model.layers)
    raise ConfigError(f"to_nir exports a LIFLayer, SpikingChain or SpikingMLP, got {type(model).__name__}")


def _params_json(p: LIFParameters) -> str:
    d = dataclasses.asdict(p)
    d["surrogate"] = {"name": p.surrogate.name, "slope": p.surrogate.slope}
    return json.dumps(d)


def _params_from_json(text) -> LIFParameters:
    d = json.loads(text.decode() if isinstance(text, bytes) else str(text))
    d["surrogate"] = Surrogate(**d["surrogate"])
    return LIFParameters(**d)


def _neuron_node(p: LIFParameters, n: int):
    import nir

    def full(v: float) -> np.ndarray:
        return np.full(n, v, dtype=np.float64)

    r = full(p.gamma / (1.0 - p.beta)) if p.beta != 1.0 else full(p.gamma / p.dt)
    meta = {_META_KEY: _params_json(p)}
    if p.spiking and p.reset == "subtract":
        meta[_RESET_KEY] = "subtract"  # not NIR: peers read v_reset
    if math.isinf(p.tau_mem):  # no leak: integrate-and-fire, dv/dt = r I
        if p.tau_syn is not None or not p.spiking:
            raise ConfigError("NIR has IF only without a synapse and with spikes; tau_mem = inf needs tau_syn = 0")
        return nir.IF(r=r, v_threshold=full(p.v_th), v_reset=full(p.v_reset), metadata=meta)
    common = dict(r=r, v_leak=full(p.v_leak))
    if p.tau_syn is None:
        if p.spiking:
            return nir.LIF(
                tau=full(p.tau_mem), v_threshold=full(p.v_th), v_reset=full(p.v_reset), metadata=meta, **common
            )
        return nir.LI(tau=full(p.tau_mem), metadata=meta, **common)
    syn = dict(tau_syn=full(p.tau_syn), tau_mem=full(p.tau_mem), w_in=full(1.0 / (1.0 - p.alpha)))
    if p.spiking:
        return nir.CubaLIF(v_threshold=full(p.v_th), v_reset=full(p.v_reset), metadata=meta, **syn, **common)
    return nir.CubaLI(metadata=meta, **syn, **common)


def to_nir(model: nn.Module, *, strict: bool = False) -> nir.NIRGraph:
    """The NIR graph of ``model`` (a LIFLayer, SpikingChain or SpikingMLP); parameters in float64.

    A spiking layer with ``reset = "subtract"`` gets :class:`NIRResetWarning` (``strict=True``:
    ConfigError), see the module docstring "Reset".

    Nodes ``input``, ``fc0``, ``lif0``, ``fc1``, ``lif1``, ..., ``output`` in a chain.  For a
    SpikingMLP the graph starts after the encoder and ends before the readout: its input is
    the encoded spike train ``[T, batch, n_in]``, its output the last layer's spikes (or
    membrane).  ``graph.metadata``: ``dt`` (s, of the first layer), ``time_unit`` "s",
    ``voltage_unit`` (normalized volts) and ``producer``.
    """
    import nir

    layers = _layers_of(model)
    subtract = [k for k, layer in enumerate(layers) if layer.params.spiking and layer.params.reset == "subtract"]
    if subtract:
        which = ", ".join(f"lif{k}" for k in subtract)
        msg = (
            f"layer(s) {which} reset by subtraction (v -= v_th), which NIR cannot express: Norse, snnTorch, Lava "
            f"and other NIR readers will reset to v_reset = 0 instead and give other spikes (NeuroHIL reads it back "
            f'exactly); for a portable graph train with [model.lif] reset = "zero" and v_reset = 0'
        )
        if strict:
            raise ConfigError(msg)
        warnings.warn(msg, NIRResetWarning, stacklevel=2)
    nodes: dict = {"input": nir.Input(input_type={"input": np.array([layers[0].linear.in_features])})}
    edges = []
    prev = "input"
    for k, layer in enumerate(layers):
        w = layer.linear.weight.detach().double().cpu().numpy()
        b = layer.linear.bias
        fc = nir.Affine(weight=w, bias=b.detach().double().cpu().numpy()) if b is not None else nir.Linear(weight=w)
        nodes[f"fc{k}"] = fc
        nodes[f"lif{k}"] = _neuron_node(layer.params, w.shape[0])
        edges += [(prev, f"fc{k}"), (f"fc{k}", f"lif{k}")]
        prev = f"lif{k}"
    nodes["output"] = nir.Output(output_type={"output": np.array([layers[-1].linear.out_features])})
    edges.append((prev, "output"))
    meta = {
        "dt": float(layers[0].params.dt),
        "time_unit": "s",
        "voltage_unit": "V (normalized: v_threshold = 1 by default)",
        "producer": "neurohil",
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


# ------------------------------------------------------------------------ import
def _chain_order(graph) -> list[str]:
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    inputs = [k for k, v in graph.nodes.items() if type(v).__name__ == "Input"]
    if len(inputs) != 1:
        raise ConfigError(f"from_nir needs exactly one Input node, found {len(inputs)}")
    order, node = [], inputs[0]
    seen = set()
    while True:
        order.append(node)
        seen.add(node)
        nxt = succ.get(node, [])
        if not nxt:
            break
        if len(nxt) > 1:
            raise ConfigError(f"from_nir supports feed-forward chains; node '{node}' has {len(nxt)} successors")
        node = nxt[0]
        if node in seen:
            raise ConfigError(f"from_nir supports feed-forward chains; node '{node}' closes a loop (recurrence)")
    return order


def _vec(value, n: int) -> np.ndarray:
    a = np.asarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    return np.broadcast_to(a.reshape(-1) if a.ndim else a, (n,)).astype(np.float64)


def _uniform(name: str, node_name: str, value, n: int) -> float:
    v = _vec(value, n)
    if not np.all(v == v[0]):
        raise ConfigError(f"NIR node '{node_name}': {name} differs between neurons; LIFLayer needs one value per layer")
    return float(v[0])


def _import_neuron(name: str, node, n: int, dt: float, dialect: str, base: dict) -> tuple[LIFParameters, np.ndarray]:
    """Our parameters for one NIR neuron node and the per-neuron weight factor."""
    kind = type(node).__name__
    if kind not in NEURON_KINDS:
        raise ConfigError(_unsupported(name, kind))
    tscale = 1.0 / dt if dialect == "norse" else 1.0  # Norse writes dt * tau
    r = _vec(node.r, n)
    v_reset = _vec(node.v_reset, n) if getattr(node, "v_reset", None) is not None else np.zeros(n)
    kw = dict(base, dt=dt, v_reset=_uniform("v_reset", name, v_reset, n))
    if kind != "IF":
        kw["v_leak"] = _uniform("v_leak", name, node.v_leak, n)
    if kind in ("LIF", "CubaLIF", "IF"):
        kw["v_th"] = _uniform("v_threshold", name, node.v_threshold, n)
    else:
        kw["spiking"] = False
    try:
        if kind in ("LIF", "LI"):
            p = LIFParameters(
                tau_mem=_uniform("tau", name, node.tau, n) * tscale, tau_syn=None, input_gain="leak", **kw
            )
            return p, r
        if kind in ("CubaLIF", "CubaLI"):
            p = LIFParameters(
                tau_mem=_uniform("tau_mem", name, node.tau_mem, n) * tscale,
                tau_syn=_uniform("tau_syn", name, node.tau_syn, n) * tscale,
                input_gain="leak",
                **kw,
            )
            w_in = _vec(node.w_in, n)
            jump = 1.0 if dialect == "norse" else (1.0 - p.alpha)  # Norse's LIFCell adds the input to i
            return p, r * w_in * jump
        if kind == "IF":
            p = LIFParameters(tau_mem=math.inf, tau_syn=None, input_gain="unit", **kw)
            return p, dt * r
    except ValueError as exc:
        raise ConfigError(f"NIR node '{name}' ({kind}) at dt = {dt} s: {exc}") from None
    raise ConfigError(_unsupported(name, kind))


def _unsupported(name: str, kind: str, after: str | None = None) -> str:
    where = f" after '{after}'" if after else ""
    return (
        f"NIR node '{name}' is a {kind}{where}, which from_nir does not import; it imports chains "
        f"Input -> (Affine|Linear -> {'|'.join(NEURON_KINDS)})* -> Output"
    )


def from_nir(
    graph,
    *,
    dt: float | None = None,
    dialect: str = "nir",
    integrator: str = "euler",
    reset: str = "zero",
    detach_reset: bool = True,
    engine: str = "native",
    surrogate: Surrogate | None = None,
) -> SpikingChain:
    """A :class:`SpikingChain` running ``graph`` on our engine (float32 weights).

    Graphs written by :func:`to_nir` carry their own parameters (all other arguments are
    ignored except ``engine``).  For foreign graphs ``dt`` (seconds) is required -- NIR has no
    time step -- and ``dialect`` names the exporter's conventions (module docstring);
    ``integrator``, ``reset``, ``detach_reset`` and ``surrogate`` are ours to choose.
    """
    if dialect not in DIALECTS:
        raise ConfigError(f"unknown NIR dialect '{dialect}'; choose one of {', '.join(DIALECTS)}")
    order = _chain_order(graph)
    nodes = [graph.nodes[k] for k in order]
    kinds = [type(n).__name__ for n in nodes]
    if kinds[-1] != "Output":
        raise ConfigError(f"from_nir needs the chain to end in an Output node, it ends in {kinds[-1]}")
    for k in range(1, len(nodes) - 1):  # every node checked before any is read
        kind, prev = kinds[k], kinds[k - 1]
        synapse_slot = prev == "Input" or prev in NEURON_KINDS
        if synapse_slot and kind not in SYNAPSE_KINDS:
            raise ConfigError(
                _unsupported(order[k], kind, order[k - 1])
                if kind not in NEURON_KINDS
                else f"NIR node '{order[k]}' ({kind}) follows '{order[k - 1]}' without a weight node; "
                "from_nir needs Affine/Linear before every neuron node"
            )
        if not synapse_slot and kind not in NEURON_KINDS:
            raise ConfigError(_unsupported(order[k], kind, order[k - 1]))
    if kinds[-2] in SYNAPSE_KINDS:
        raise ConfigError(
            f"NIR node '{order[-2]}' ({kinds[-2]}) feeds the Output without a neuron node; from_nir "
            f"needs a neuron ({', '.join(NEURON_KINDS)}) after every Affine/Linear"
        )
    if len(nodes) < 4:
        raise ConfigError(
            "the NIR graph has no layer (Input -> Output); from_nir needs at least Affine/Linear -> neuron"
        )
    neurons = [n for n, k in zip(nodes, kinds) if k in NEURON_KINDS]
    ours = bool(neurons) and all(_META_KEY in (getattr(n, "metadata", None) or {}) for n in neurons)
    meta = getattr(graph, "metadata", {}) or {}
    if dt is None:
        if "dt" not in meta:
            raise ConfigError(
                "this NIR graph carries no time step; pass dt= in seconds (snnTorch 1.0 exports assume "
                "dt = 1e-4, Norse 1.1 exports dt = 1e-3 by default)"
            )
        dt = float(meta["dt"])
    base = dict(integrator=integrator, reset=reset, detach_reset=detach_reset, surrogate=surrogate or Surrogate())
    layers: list[LIFLayer] = []
    k = 1
    while kinds[k] != "Output":
        fc, neuron = nodes[k], nodes[k + 1] if k + 1 < len(nodes) else None
        if kinds[k] not in ("Affine", "Linear") or neuron is None:
            raise ConfigError(f"from_nir expects Affine/Linear then a neuron node; got {kinds[k]} at '{order[k]}'")
        w = np.asarray(fc.weight, dtype=np.float64)
        b = np.asarray(fc.bias, dtype=np.float64) if kinds[k] == "Affine" else None
        n = w.shape[0]
        if ours:
            p = _params_from_json(neuron.metadata[_META_KEY])
            scale = None
        else:
            p, scale = _import_neuron(order[k + 1], neuron, n, dt, dialect, base)
        if scale is not None:
            w = w * scale[:, None]
            b = b * scale if b is not None else None
        layer = LIFLayer(w.shape[1], n, p, bias=b is not None, engine=engine)
        with torch.no_grad():
            layer.linear.weight.copy_(torch.from_numpy(w))
            if b is not None:
                layer.linear.bias.copy_(torch.from_numpy(b))
        layers.append(layer)
        k += 2
    return SpikingChain(layers)


def write_nir(model: nn.Module, path: str | Path, *, strict: bool = False) -> Path:
    """Write :func:`to_nir` of ``model`` to a ``.nir`` (HDF5) file; returns the path (``strict`` as for to_nir)."""
    import nir

    path = Path(path)
    graph = to_nir(model, strict=strict)
    try:
        nir.write(str(path), graph)
    except OSError as exc:
        raise ConfigError(f"cannot write NIR file {path}: {exc.strerror or exc}") from None
    return path


def read_nir(path: str | Path, **kwargs) -> SpikingChain:
    """Read a ``.nir`` file and :func:`from_nir` it (``kwargs`` as for :func:`from_nir`)."""
    import nir

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"NIR file {path} does not exist")
    try:
        graph = nir.read(str(path))
    except Exception as exc:  # noqa: BLE001 - h5py/nir raise many kinds; report one line
        raise ConfigError(f"cannot read NIR file {path}: {type(exc).__name__}: {exc}") from None
    return from_nir(graph, **kwargs)
