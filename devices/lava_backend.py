"""Run a fixed-point network on Lava (``Loihi2SimCfg(select_tag="fixed_pt")``) out of process.

The main environment cannot import Lava (other Python, numpy<2).  :func:`run_lava` writes
a job folder (the exported network: NIR graph + fixed-point spec, the input spikes and
the run's settings; npz + json only), starts ``devices/lava_runner.py`` with the Lava
interpreter (:func:`devices.lava_env.lava_python`) in a new process group, waits at most
``timeout_s`` seconds and, on timeout, stops the whole group (Lava's worker processes
included).  Every failure is one :class:`~neuro.errors.DeviceError` line with Lava's own
error text.

Nothing outlives the run: the runner gets this process's pid (``--parent``) and, should this
process end first (``kill -9``, SIGTERM, a crash), stops its group, unlinks the run's
``/dev/shm`` segments and deletes the job folder itself within about a second
(:mod:`devices.lava_runner`, "Cleanup").  On a time limit, SIGINT or any exception here,
:func:`_stop_group` SIGTERMs the runner, which does the same cleanup, and SIGKILLs whatever
is left after a grace period; the job folder is then removed here.

:func:`run_lava_batch` runs many samples in *one* Lava run: the samples are concatenated in
time, and ``LIFReset`` layers zero their state at the step where each layer starts a new
sample (see :mod:`simulators.loihi`, "Timing"), so every sample behaves as if run alone;
the result is rearranged to local time ``[T, batch, n]``, directly comparable with the twin.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from devices.errors import DeviceError
from devices.lava_env import lava_python
from devices.lava_runner import group_members
from simulators.errors import SettingError
from simulators.loihi import local_to_pipelined_steps

RUNNER = Path(__file__).resolve().with_name("lava_runner.py")
TEST_HANG_ENV = "NEUROHIL_LAVA_TEST_HANG_S"  # test hook: default debug_hang_s (a run that hangs), e.g. for kill tests


def check_timeout(timeout_s, what: str = "timeout_s") -> float:
    """``timeout_s`` as a float, or SettingError unless it is a finite number of seconds > 0."""
    try:
        value = float(timeout_s)
    except (TypeError, ValueError):
        raise SettingError(f"{what} must be a number of seconds > 0, got {timeout_s!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingError(f"{what} must be a finite number of seconds > 0, got {timeout_s!r}; "
                           "leave it out for the default (60 s + 10 ms per step)")
    return value


@dataclass
class LavaResult:
    """Per layer spikes (bool) and, if recorded, currents ``u`` / voltages ``v`` (int64).

    :func:`run_lava`: numpy arrays [steps, n] in the run's (pipelined) time;
    :func:`run_lava_batch`: torch tensors [T, batch, n] in local time.
    """

    spikes: list
    currents: list | None
    voltages: list | None
    info: dict
    pid: int  # the runner's pid (= its process group id), for checking that nothing is left


def live_group_members(pgid: int) -> list[int] | None:
    """Running (not zombie) processes of group ``pgid``, from /proc; None where /proc is unavailable.

    The /proc walk is the runner's own (:func:`devices.lava_runner.group_members`, which imports no torch).
    """
    if not os.path.isdir("/proc"):
        return None
    return group_members(pgid)


def _stop_group(pgid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the runner (the group leader ``pgid``), wait up to ``grace_s`` s for its group to end, SIGKILL the rest.

    The runner's SIGTERM handler stops Lava's processes and unlinks their shared-memory blocks
    (:func:`devices.lava_runner.stop_everything`); SIGKILL of the whole group at once would
    leave the blocks in /dev/shm.  The group is SIGTERMed too should the runner be gone already.
    """
    if live_group_members(pgid) == []:
        return
    try:
        os.kill(pgid, signal.SIGTERM)
    except ProcessLookupError:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if live_group_members(pgid) == []:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def require_lava_python() -> Path:
    """The Lava interpreter, or DeviceError saying how to get one."""
    py = lava_python()
    if not py.exists():
        raise DeviceError(
            f"no Lava environment: {py} does not exist; create .venv-lava (`make setup-lava`, Python 3.10) "
            "or point NEUROHIL_LAVA_PYTHON at its python"
        )
    return py


def run_lava(
    export,
    x: np.ndarray | torch.Tensor,
    *,
    neuron: str = "LIF",
    reset_interval: int | None = None,
    record_state: bool = False,
    timeout_s: float = 120.0,
    debug_hang_s: float | None = None,
    workdir: str | Path | None = None,
) -> LavaResult:
    """Run input spikes ``x`` [steps, n_in] through ``export`` on Lava, step by step (pipelined time).

    ``export`` is a :class:`neuro.export.loihi.LoihiExport` (anything with ``save(folder)``,
    ``layers`` and ``check()``).  ``neuron``: ``"LIF"`` or ``"LIFReset"`` (with
    ``reset_interval``).  ``timeout_s``: finite, > 0.  ``debug_hang_s``: test hook, the runner
    sleeps inside a started run (default: ``$NEUROHIL_LAVA_TEST_HANG_S`` or 0).
    """
    if neuron not in ("LIF", "LIFReset"):
        raise ValueError(f"neuron must be 'LIF' or 'LIFReset', got '{neuron}'")
    timeout_s = check_timeout(timeout_s)
    if debug_hang_s is None:
        debug_hang_s = float(os.environ.get(TEST_HANG_ENV) or 0.0)
    export.check()
    py = require_lava_python()
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim != 2 or x.shape[1] != export.layers[0].n_in:
        raise ValueError(f"x must be [steps, {export.layers[0].n_in}], got {x.shape}")
    with tempfile.TemporaryDirectory(prefix="neurohil-lava-", dir=workdir) as tmp:
        job = Path(tmp)
        export.save(job)
        np.savez(job / "inputs.npz", x=(x != 0).astype(np.uint8))
        (job / "job.json").write_text(json.dumps({
            "steps": int(x.shape[0]), "neuron": neuron, "reset_interval": reset_interval,
            "record_state": bool(record_state), "debug_hang_s": float(debug_hang_s),
        }))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        start = time.perf_counter()
        proc = subprocess.Popen([str(py), "-I", str(RUNNER), str(job), "--parent", str(os.getpid())],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, env=env, text=True)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(proc.pid)
            _, err = proc.communicate()
            said = (err or "").strip().splitlines()
            raise DeviceError(
                f"the Lava run did not finish within {timeout_s:.0f} s and was killed (process group {proc.pid}); "
                "Lava hangs on some errors: check the network, or raise timeout_s for long runs"
                + (f"; Lava's last words: {said[-1].strip()}" if said else "")
            ) from None
        finally:
            _stop_group(proc.pid)  # Lava's worker processes, should any outlive the runner
        wall = time.perf_counter() - start
        err_file = job / "error.json"
        if proc.returncode != 0:
            if err_file.exists():
                msg = json.loads(err_file.read_text())["error"]
            else:
                lines = (err or out or "").strip().splitlines()
                msg = lines[-1] if lines else f"exit status {proc.returncode}"
            raise DeviceError(f"Lava run failed: {msg}")
        info = json.loads((job / "result.json").read_text())
        info["wall_s"] = wall
        n = len(export.layers)
        spikes = [np.load(job / f"spikes_{k}.npy") != 0 for k in range(n)]
        currents = [np.load(job / f"u_{k}.npy") for k in range(n)] if record_state else None
        voltages = [np.load(job / f"v_{k}.npy") for k in range(n)] if record_state else None
    return LavaResult(spikes, currents, voltages, info, proc.pid)


def run_lava_batch(export, x: torch.Tensor, *, record_state: bool = False, timeout_s: float | None = None,
                   debug_hang_s: float | None = None) -> LavaResult:
    """Run input spikes ``x`` [T, batch, n_in] as ``batch`` independent samples in one Lava run."""
    T, B, n_in = x.shape
    L = len(export.layers)
    steps = B * T + L + 1
    flat = torch.zeros(steps, n_in, dtype=torch.uint8)
    flat[: B * T] = (x != 0).permute(1, 0, 2).reshape(B * T, n_in).to(torch.uint8)
    if timeout_s is None:
        timeout_s = 60.0 + steps / 100.0  # start-up plus a tenth of the measured ~970 steps/s
    res = run_lava(export, flat, neuron="LIFReset", reset_interval=T, record_state=record_state,
                   timeout_s=timeout_s, debug_hang_s=debug_hang_s)

    def to_local(arrays: list[np.ndarray], dtype) -> list[torch.Tensor]:
        out = []
        for k, a in enumerate(arrays):
            idx = np.concatenate([np.arange(steps)[local_to_pipelined_steps(k, b, T)] for b in range(B)])
            out.append(torch.from_numpy(a[idx].reshape(B, T, -1).transpose(1, 0, 2).copy()).to(dtype))
        return out

    return LavaResult(
        to_local(res.spikes, torch.bool),
        to_local(res.currents, torch.int64) if record_state else None,
        to_local(res.voltages, torch.int64) if record_state else None,
        res.info, res.pid,
    )


class LavaLoihi:
    """The :class:`devices.base.Device` contract over :func:`run_lava_batch`: a deployed network on Lava.

    ``forward(x)`` takes input spikes ``[T, batch, n_in]`` (a spiking device consumes time
    steps) and returns the output layer's spikes ``[T, batch, n_out]`` as float 0/1, without
    gradients; every call is one Lava run, each sample starting from zero state, so
    :meth:`reset` has nothing to clear.  ``last_result`` keeps the full :class:`LavaResult`.
    """

    def __init__(self, export, *, record_state: bool = False, timeout_s: float | None = None) -> None:
        self.export, self.record_state, self.timeout_s = export, record_state, timeout_s
        self.last_result: LavaResult | None = None
        self.runs = 0
        self._open = False

    def open(self) -> None:
        if not self._open:
            require_lava_python()
            self.export.check()
            self._open = True

    def close(self) -> None:
        self._open = False

    def reset(self) -> None:
        return None

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._open:
            raise DeviceError("the Lava device is not open; use `with LavaLoihi(export) as dev:` or call open()")
        self.last_result = run_lava_batch(self.export, x, record_state=self.record_state, timeout_s=self.timeout_s)
        self.runs += 1
        return self.last_result.spikes[-1].float()

    def health(self) -> dict:
        info = self.last_result.info if self.last_result else {}
        return {"runs": self.runs, "run_config": info.get("run_config"), "steps_per_s": info.get("steps_per_s")}

    def __enter__(self) -> LavaLoihi:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
