"""Run an exported network on Lava.  Executed inside ``.venv-lava`` (Python 3.10): imports no torch.

Usage: ``python -I devices/lava_runner.py JOB_DIR [--parent PID]`` (``-I``: this file sits next to
``devices/lava_backend.py``, which must not shadow the ``lava`` package).  The job directory holds (written by
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

Cleanup (``--parent PID``, see :func:`install_cleanup`): the runner leads its own process group
(Lava's workers, its shared-memory manager and Python's resource tracker are all in it).  It
dies with its parent: a watchdog thread polls ``os.getppid()`` every 0.1 s and, once the parent
is gone (``kill -9``, SIGTERM or any other end of ``neuro deploy``), stops the group, unlinks
the run's ``/dev/shm`` segments and deletes the job directory.  SIGTERM, SIGINT or SIGHUP to the
runner itself (the parent's time limit) does the same except deleting the job directory, which
the parent still reads and removes.  ``PR_SET_PDEATHSIG`` is not used: it fires when the
*thread* that started the runner ends, which need not be the parent's end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np


def _fail(job: Path, message: str, detail: str = "") -> int:
    (job / "error.json").write_text(json.dumps({"error": message, "detail": detail}))
    return 1


# --------------------------------------------------------------------------- cleanup
_created_segments: set = set()  # names of the shared-memory segments this process created
_cleanup_lock = threading.Lock()
_WATCH_S = 0.1  # watchdog poll period (s)
_GRACE_S = 2.0  # SIGTERM -> SIGKILL grace for the group's other processes (s)


def _record_segments() -> None:
    """Wrap ``multiprocessing.shared_memory.SharedMemory`` so each segment created here is remembered.

    Lava's ``SharedMemoryManager`` creates its channel buffers in this process (the manager
    server only tracks them) and unlinks them on a normal ``stop()``; after a kill nobody does.
    """
    from multiprocessing import shared_memory

    base = shared_memory.SharedMemory

    class RecordedSharedMemory(base):
        def __init__(self, name=None, create=False, size=0):
            super().__init__(name=name, create=create, size=size)
            if create:
                _created_segments.add(self._name)  # with the leading "/" on POSIX

    shared_memory.SharedMemory = RecordedSharedMemory


def group_members(pgid: int) -> list:
    """Pids of the live (not zombie) processes of group ``pgid``, from /proc ([] without /proc)."""
    out = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(entry))
    return out


def _mapped_segments(pids) -> set:
    """``/dev/shm`` names (``/psm_...``) that processes ``pids`` map."""
    names = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:  # "address perms offset dev inode [path]"; a removed file ends in " (deleted)"
                    parts = line.split(maxsplit=5)
                    if len(parts) == 6 and parts[5].startswith("/dev/shm/"):
                        names.add("/" + parts[5].strip().removesuffix(" (deleted)")[len("/dev/shm/") :])
        except OSError:
            continue
    return names


def _reap() -> None:
    """Collect exited children, so none lingers as a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_everything(job, remove_job: bool) -> None:
    """Stop the other processes of this runner's group, unlink the run's shared memory, optionally delete ``job``.

    Order: note the segments the group maps, SIGTERM the others, wait up to ``_GRACE_S``,
    SIGKILL the rest, reap, unlink every noted segment (``shm_unlink``; unregistered from
    the resource tracker so it does not warn), then remove the job directory.
    """
    me, pgid = os.getpid(), os.getpgrp()
    if pgid == me and not os.path.isdir("/proc"):  # no /proc to list the group: signal it as a whole
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(pgid, signal.SIGTERM)
        time.sleep(_GRACE_S)
    others = [p for p in group_members(pgid) if p != me] if pgid == me else []
    segments = set(_created_segments) | _mapped_segments(others + [me])
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in others:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (_GRACE_S if sig == signal.SIGTERM else 1.0)
        while time.monotonic() < deadline:
            _reap()
            others = [p for p in group_members(pgid) if p != me] if pgid == me else []
            if not others:
                break
            time.sleep(0.02)
        if not others:
            break
    _reap()
    try:
        import _posixshmem
        from multiprocessing import resource_tracker
    except ImportError:  # not POSIX: nothing in /dev/shm
        segments = set()
    for name in segments:
        try:
            _posixshmem.shm_unlink(name)
        except OSError:
            continue  # already gone (Lava's own stop, or another process)
        try:
            resource_tracker.unregister(name, "shared_memory")
        except Exception:  # noqa: BLE001 - the tracker may be dead already
            pass
    if remove_job and job is not None:
        shutil.rmtree(job, ignore_errors=True)


def _die(job, remove_job: bool, status: int) -> None:
    if not _cleanup_lock.acquire(blocking=False):
        return  # the other path is cleaning up and will exit
    try:
        stop_everything(job, remove_job)
    finally:
        os._exit(status)


def install_cleanup(job: Path, parent: int) -> None:
    """Die with ``parent`` (watchdog thread) and on SIGTERM/SIGINT/SIGHUP, cleaning up as :func:`stop_everything`."""
    _record_segments()

    def on_signal(signum, _frame):
        _die(job, remove_job=os.getppid() != parent, status=128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    def watch():
        while os.getppid() == parent:
            time.sleep(_WATCH_S)
        _die(job, remove_job=True, status=1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


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
            raise ValueError(
                f"node '{node}' is {type(obj).__name__}; only Affine/Linear -> CubaLIF|LIF layers run on Loihi here"
            )
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
        common = dict(
            shape=(w.shape[0],),
            du=int(lay["du"]),
            dv=int(lay["dv"]),
            vth=int(lay["vth"]),
            bias_mant=ints[f"bias_mant_{k}"].astype(np.int32),
            bias_exp=int(lay["bias_exp"]),
        )
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
    cfg = (
        Loihi2HwCfg(exception_proc_model_map=recorders)
        if hardware
        else Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=recorders)
    )
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
    parent = None
    if len(argv) == 3 and argv[1] == "--parent" and argv[2].isdigit():
        parent = int(argv[2])
    elif len(argv) != 1:
        print("usage: lava_runner.py JOB_DIR [--parent PID]", file=sys.stderr)
        return 2
    job = Path(argv[0])
    if parent is not None:
        install_cleanup(job, parent)
    try:
        build_and_run(job)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller as one message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return _fail(job, f"{type(exc).__name__}: {first}", traceback.format_exc())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
