"""Run an exported network on Lava.  Executed inside ``.venv-lava`` (Python 3.10): imports no torch.

Usage: ``python -I devices/lava_runner.py JOB_DIR`` (``-I``: this file sits next to ``devices/lava_backend.py``,
which must not shadow the ``lava`` package).  The job directory holds (written by
:mod:`devices.lava_backend`)::

    network.nir          NIR graph: Input -> (Affine|Linear -> CubaLIF|LIF)* -> Output (topology, float params)
    fixed_point.json     the explicit fixed-point spec (bit widths, per-layer weight_exp, du, dv, vth, bias_exp)
    fixed_point.npz      per-layer integer weights ``weights_k`` and bias mantissas ``bias_mant_k``
    job.json             {"steps", "neuron": "LIF"|"LIFReset", "reset_interval", "record_state", "debug_hang_s"}
    inputs.npz           ``x`` [steps, n_in] uint8: input spikes on the run's global time line

It builds ``RingBuffer`` source -> ``Dense`` -> ``LIF``/``LIFReset`` -> ... with a
spike recorder per layer and, with ``record_state``, recorders of ``u`` and ``v``
(:func:`recorder_processes`); runs ``steps`` steps with ``Loihi2SimCfg(select_tag="fixed_pt")`` (or
``Loihi2HwCfg`` when lava-loihi is installed) and writes ``spikes_k.npy`` (and ``u_k.npy``,
``v_k.npy``), each [steps, n] int64, and ``result.json`` (run config, versions, timing).
Any failure is written to ``error.json`` as ``{"error": one line, "detail": traceback}``
and the exit status is 1.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np


def _fail(job: Path, message: str, detail: str = "") -> int:
    (job / "error.json").write_text(json.dumps({"error": message, "detail": detail}))
    return 1


def check_graph(graph, spec: dict) -> list[tuple[str, str]]:
    """``[(affine_node, lif_node)]`` in order; raises ValueError for any other topology."""
    import nir

    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise ValueError(f"the NIR graph needs exactly one Input node, found {len(inputs)}")
    pairs, node = [], inputs[0]
    while True:
        nxt = succ.get(node, [])
        if len(nxt) != 1:
            raise ValueError(f"node '{node}' must have exactly one successor (feed-forward chain), has {len(nxt)}")
        node = nxt[0]
        obj = graph.nodes[node]
        if isinstance(obj, nir.Output):
            break
        if not isinstance(obj, (nir.Affine, nir.Linear)):
            raise ValueError(f"node '{node}' is {type(obj).__name__}; only Affine/Linear -> CubaLIF|LIF layers run on Loihi here")
        syn = node
        nxt = succ.get(node, [])
        if len(nxt) != 1 or not isinstance(graph.nodes[nxt[0]], (nir.CubaLIF, nir.LIF)):
            raise ValueError(f"'{syn}' must feed exactly one CubaLIF (or, for a delta synapse, LIF) node")
        node = nxt[0]
        pairs.append((syn, node))
    names = [(lay["synapse"], lay["neuron"]) for lay in spec["layers"]]
    if names != pairs:
        raise ValueError(f"the fixed-point spec lists layers {names} but the NIR graph has {pairs}")
    return pairs


def recorder_processes():
    """Two small Lava processes that write what they record to an ``.npy`` file on the last step.

    Lava's ``Var.get()`` (and so ``RingBuffer`` sinks and ``Monitor``) moves arrays to the
    caller one element at a time, which took longer than the run itself; these recorders
    keep the data in their own process and save it once.  ``SpikeFile`` receives spikes on
    an ``InPort`` (same step, no delay); ``StateFile`` reads a ``Var`` through a ``RefPort``
    in the post-management phase, i.e. after the step's dynamics and reset, as ``Monitor`` does.
    """
    from lava.magma.core.decorator import implements, requires
    from lava.magma.core.model.py.model import PyLoihiProcessModel
    from lava.magma.core.model.py.ports import PyInPort, PyRefPort
    from lava.magma.core.model.py.type import LavaPyType
    from lava.magma.core.process.ports.ports import InPort, RefPort
    from lava.magma.core.process.process import AbstractProcess
    from lava.magma.core.resources import CPU
    from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

    class SpikeFile(AbstractProcess):
        def __init__(self, *, shape, steps: int, path: str) -> None:
            super().__init__(shape=shape, steps=steps, path=path)
            self.a_in = InPort(shape=shape)

    class StateFile(AbstractProcess):
        def __init__(self, *, var, steps: int, path: str) -> None:
            super().__init__(shape=var.shape, steps=steps, path=path)
            self.state = RefPort(var.shape)
            self.state.connect_var(var)

    class _Buffered(PyLoihiProcessModel):
        def __init__(self, proc_params) -> None:
            super().__init__(proc_params)
            self.steps, self.path = proc_params["steps"], proc_params["path"]
            self.buf = np.zeros((self.steps, *proc_params["shape"]), dtype=np.int64)

        def _store(self, data) -> None:
            self.buf[self.time_step - 1] = data
            if self.time_step == self.steps:
                np.save(self.path, self.buf)

    @implements(proc=SpikeFile, protocol=LoihiProtocol)
    @requires(CPU)
    class PySpikeFile(_Buffered):
        a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)

        def run_spk(self) -> None:
            self._store(self.a_in.recv())

    @implements(proc=StateFile, protocol=LoihiProtocol)
    @requires(CPU)
    class PyStateFile(_Buffered):
        state: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, np.int32)

        def post_guard(self) -> bool:
            return True

        def run_post_mgmt(self) -> None:
            self._store(self.state.read())

    return SpikeFile, StateFile, PySpikeFile, PyStateFile


def build_and_run(job: Path) -> dict:
    import nir
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer as SpikeSource
    from lava.proc.lif.process import LIF, LIFReset
    from lava.utils.loihi import is_installed
    from lava.utils.weightutils import SignMode

    t_start = time.perf_counter()
    spec = json.loads((job / "fixed_point.json").read_text())
    run = json.loads((job / "job.json").read_text())
    ints = np.load(job / "fixed_point.npz")
    graph = nir.read(str(job / "network.nir"))
    pairs = check_graph(graph, spec)
    x = np.load(job / "inputs.npz")["x"].astype(np.int32)
    steps = int(run["steps"])
    if x.shape[0] != steps:
        raise ValueError(f"inputs cover {x.shape[0]} steps, the job asks for {steps}")

    SpikeFile, StateFile, PySpikeFile, PyStateFile = recorder_processes()
    source = SpikeSource(data=x.T.copy())  # RingBuffer wants time last
    below = source.s_out
    neurons, recorders = [], {}  # recorder instance -> its model class
    files = {}
    for k, ((syn_name, _), lay) in enumerate(zip(pairs, spec["layers"])):
        w = ints[f"weights_{k}"].astype(np.int32)
        nir_w = np.asarray(graph.nodes[syn_name].weight)
        if nir_w.shape != w.shape:
            raise ValueError(f"layer {k}: NIR weight shape {nir_w.shape} != fixed-point weights {w.shape}")
        dense = Dense(weights=w, weight_exp=int(lay["weight_exp"]), num_weight_bits=8, sign_mode=SignMode.MIXED)
        common = dict(shape=(w.shape[0],), du=int(lay["du"]), dv=int(lay["dv"]), vth=int(lay["vth"]),
                      bias_mant=ints[f"bias_mant_{k}"].astype(np.int32), bias_exp=int(lay["bias_exp"]))
        if run["neuron"] == "LIFReset":
            interval = int(run["reset_interval"])
            lif = LIFReset(**common, reset_interval=interval, reset_offset=(k + 2) % interval)
        else:
            lif = LIF(**common)
        below.connect(dense.s_in)
        dense.a_out.connect(lif.a_in)
        files[f"spikes_{k}"] = job / f"spikes_{k}.npy"
        sink = SpikeFile(shape=(w.shape[0],), steps=steps, path=str(files[f"spikes_{k}"]))
        lif.s_out.connect(sink.a_in)
        recorders[sink] = PySpikeFile
        if run.get("record_state"):
            for var in (lif.u, lif.v):
                files[f"{var.name}_{k}"] = job / f"{var.name}_{k}.npy"
                recorders[StateFile(var=var, steps=steps, path=str(files[f"{var.name}_{k}"]))] = PyStateFile
        neurons.append(lif)
        below = lif.s_out

    hardware = is_installed()
    # The recorders are mapped to their models by instance (Lava's compiler looks instances up first).
    cfg = (Loihi2HwCfg(exception_proc_model_map=recorders) if hardware
           else Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=recorders))
    t0 = time.perf_counter()
    hang = float(run.get("debug_hang_s") or 0)
    if hang:  # test hook: a run that never finishes (Lava's worker processes are alive meanwhile)
        neurons[0].run(condition=RunSteps(num_steps=steps, blocking=False), run_cfg=cfg)
        time.sleep(hang)
    neurons[0].run(condition=RunSteps(num_steps=steps), run_cfg=cfg)
    elapsed = time.perf_counter() - t0
    neurons[0].stop()
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise RuntimeError(f"the run ended without writing {', '.join(missing)}")
    import importlib.metadata as md

    info = {
        "run_config": type(cfg).__name__ + ("" if hardware else '(select_tag="fixed_pt")'),
        "hardware": hardware,
        "lava_nc": md.version("lava-nc"),
        "neuron": run["neuron"],
        "steps": steps,
        "run_s": elapsed,
        "build_s": t0 - t_start,
        "steps_per_s": steps / elapsed if elapsed > 0 else None,
    }
    (job / "result.json").write_text(json.dumps(info))
    return info


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: lava_runner.py JOB_DIR", file=sys.stderr)
        return 2
    job = Path(argv[0])
    try:
        build_and_run(job)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller as one message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return _fail(job, f"{type(exc).__name__}: {first}", traceback.format_exc())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
