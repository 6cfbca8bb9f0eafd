"""Photonic peers (issue 21): our MZI meshes beside neurophox's and torchonn's, in one run.

Runs in the peers environment (``make setup-peers`` creates ``.venv-peers``: torch 2.13.0 CPU, torchonn,
neurophox with TensorFlow; never in the main environment)::

    PYTHONPATH=. .venv-peers/bin/python -m bench.photonic_peers                 # everything
    PYTHONPATH=. .venv-peers/bin/python -m bench.photonic_peers --parts decomposition noise
    PYTHONPATH=. .venv-peers/bin/python -m bench.photonic_peers --check-imports # which peers import, or why not

Parts (a peer that does not install or import is reported with its exact error, the rest still runs):

1. ``decomposition`` (neurophox): for Haar-random unitaries ``U`` (``scipy.stats.unitary_group``, seeded), the
   matrix our Clements decomposition reconstructs (``decompose`` then ``mesh_matrix``) against ``U``, and against
   neurophox's own rectangular (Clements) mesh: a neurophox ``RMNumpy`` mesh with its random phases gives
   ``U_n = mesh.matrix``; we decompose ``U_n`` and compare our reconstruction with it; where neurophox exposes its
   own decomposition (``neurophox.helpers.clements_decomposition``) of ``U``, the matrix its phases give in its
   own mesh model is compared with ours.  Phases differ by convention; only matrices are compared.
2. ``noise`` (torchonn): the same real weight matrix ``W [n, n]`` and inputs on our SVD layer
   (``PhotonicSubstrate.program``, homodyne detection, per-shot ``phase_noise = sigma``) and on torchonn's
   ``MZIBlockLinear`` (``mode="phase"``, one ``n x n`` block, Clements, ``set_phase_variation(sigma)``): mean
   output (bias against ``W x``) and relative RMS output error ``sqrt(E|y - W x|^2 / E|W x|^2)`` over draws.
   The two models differ in what a phase is, so equal numbers are not expected: torchonn's mesh is a real
   orthogonal product of Givens rotations whose angle is the phase (noise truncated at +-2 sigma, on U and V only,
   one draw per forward call, shared by the batch); ours is complex MZIs with an internal phase ``theta``
   (acting at half angle, ``cos(theta/2)``) and an external ``phi`` each, plus output phases, every phase
   shifter of both meshes with a fresh draw per sample.
3. ``timing``: forward throughput (samples/s, batch ``B``) at ``n = 16, 64, 256`` of our mesh
   (``mesh_field`` ``auto``, i.e. the weight-stationary unitary path, and ``columns``), of torchonn's
   ``MZIBlockLinear`` in phase mode (one ``n x n`` block; it rebuilds its matrices from the phases on every call)
   and of a dense complex matmul (the roofline), all in this process.  torchonn's phase mode is not
   differentiable (it writes ``.data``), so training steps are timed by ``bench/photonic.py`` only.
   The 1-minute load average is recorded; a timing with load > 1.5 is marked invalid.

Writes JSON lines (``--out``) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

from bench.photonic import _time
from simulators.photonic import PhotonicOptions, PhotonicSubstrate, decompose, mesh_field, mesh_matrix, mesh_spec

LOAD_LIMIT = 1.5
STANDINS = Path(__file__).resolve().parent / "peer_standins"


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:400]


def import_peer(name: str):
    """``(module, None)`` or ``(None, exact error)``.  torchonn's utilities import torchvision at import time; if
    the real one does not import (CUDA build against CPU torch), the stand-in of ``bench/peer_standins`` is used."""
    if name == "torchonn":
        try:
            import torchvision  # noqa: F401
        except Exception:  # noqa: BLE001 - any failure: use the stand-in
            for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
                del sys.modules[key]
            sys.path.insert(0, str(STANDINS))
    try:
        mod = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - report whatever the peer raises
        return None, _error(exc)
    if name == "torchonn":
        _cpu_only_torchonn()
    return mod, None


class _NoCuda:
    """Placeholder for torchonn's CUDA extension: its CPU code looks up the CUDA functions by name (and raises
    ``NameError: name 'matrix_parametrization_cuda' is not defined`` without the extension) before choosing the
    CPU path; they are never called for CPU tensors."""

    def __getattr__(self, name):
        def missing(*args, **kwargs):
            raise RuntimeError(f"torchonn CUDA extension function {name} is not built here (CPU only)")

        return missing


def _cpu_only_torchonn() -> None:
    mp = importlib.import_module("torchonn.op.matrix_parametrization")
    if not hasattr(mp, "matrix_parametrization_cuda"):
        mp.matrix_parametrization_cuda = _NoCuda()


def check_imports() -> dict:
    out = {}
    for name in ("torchonn", "neurophox"):
        mod, err = import_peer(name)
        version = None
        if mod is not None:
            try:
                from importlib.metadata import version as _v

                version = _v(name)
            except Exception:  # noqa: BLE001
                version = getattr(mod, "__version__", "?")
        out[name] = {"ok": mod is not None, "version": version, "error": err}
    return out


# ------------------------------------------------------------------ 1. decomposition vs neurophox
def haar(n: int, seed: int) -> np.ndarray:
    from scipy.stats import unitary_group

    return unitary_group.rvs(n, random_state=seed)


def ours_reconstruct(u: np.ndarray, kind: str = "clements") -> np.ndarray:
    theta, phi, out = decompose(u, kind)
    return mesh_matrix(mesh_spec(u.shape[0], kind), theta, phi, out).numpy()


def neurophox_part(sizes: list[int], seed: int = 0) -> dict:
    mod, err = import_peer("neurophox")
    if mod is None:
        return {"error": err}
    rows = []
    for n in sizes:
        row = {"n": n}
        u = haar(n, seed + n)
        row["ours_vs_haar"] = float(np.abs(ours_reconstruct(u) - u).max())
        try:
            from neurophox.numpy import RMNumpy

            np.random.seed(seed + n)
            mesh = RMNumpy(units=n)
            un = np.asarray(mesh.matrix, dtype=np.complex128)
            row["neurophox_mesh_unitarity"] = float(np.abs(un.conj().T @ un - np.eye(n)).max())
            row["ours_vs_neurophox_mesh"] = float(np.abs(ours_reconstruct(un) - un).max())
        except Exception as exc:  # noqa: BLE001
            row["neurophox_mesh_error"] = _error(exc)
            row["neurophox_mesh_traceback"] = traceback.format_exc(limit=3)[-600:]
        try:
            row.update(_neurophox_decomposition(u))
        except Exception as exc:  # noqa: BLE001
            row["neurophox_decomposition_error"] = _error(exc)
        rows.append(row)
    return {"rows": rows}


def _neurophox_decomposition(u: np.ndarray) -> dict:
    """neurophox's ``clements_decomposition`` of ``u`` rebuilt in its own mesh model (``RMNumpy`` with the
    returned phases), compared with ``u`` and with our reconstruction."""
    from neurophox.helpers import clements_decomposition
    from neurophox.numpy import MeshPhases, RMNumpy

    n = u.shape[0]
    theta, phi, gamma = clements_decomposition(u)
    phases = MeshPhases(theta=theta, phi=phi, gamma=np.angle(gamma))
    rebuilt = np.asarray(RMNumpy(units=n, phases=phases).matrix, dtype=np.complex128)
    return {"neurophox_decomposition_vs_haar": float(np.abs(rebuilt - u).max()),
            "neurophox_vs_ours": float(np.abs(rebuilt - ours_reconstruct(u)).max())}


# ------------------------------------------------------------------ 2. noise statistics vs torchonn
def _torchonn_layer(n: int, w: torch.Tensor, kind: str = "clements"):
    from torchonn.layers import MZIBlockLinear

    layer = MZIBlockLinear(n, n, bias=False, miniblock=(1, 1, n, n), mode="phase", decompose_alg=kind,
                           device=torch.device("cpu"))
    layer.weight.data.copy_(w.reshape(layer.weight.shape))
    layer.sync_parameters(src="weight")
    return layer


def noise_part(sizes: list[int], sigmas: list[float], draws: int, seed: int = 0) -> dict:
    mod, err = import_peer("torchonn")
    rows = []
    for n in sizes:
        g = torch.Generator().manual_seed(seed + n)
        w = torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
        x = torch.rand(8, n, generator=g, dtype=torch.float64) * 2 - 1
        ideal = x @ w.T
        ref_power = float((ideal ** 2).mean())
        for sigma in sigmas:
            row = {"n": n, "sigma_rad": sigma, "draws": draws}
            sub = PhotonicSubstrate(PhotonicOptions(n_in=n, n_out=n, detection="homodyne", phase_noise=sigma,
                                                    seed=seed))
            scale = sub.program(w)
            ys = torch.stack([scale * sub.forward(x).double() for _ in range(draws)])
            row["ours_noiseless_err"] = float((scale * sub.exact_forward(x) - ideal).abs().max())
            row["ours_rel_rms"] = math.sqrt(float(((ys - ideal) ** 2).mean()) / ref_power)
            row["ours_rel_bias"] = math.sqrt(float(((ys.mean(0) - ideal) ** 2).mean()) / ref_power)
            if mod is None:
                row["torchonn_error"] = err
            else:
                try:
                    layer = _torchonn_layer(n, w.float())
                    xf = x.float()
                    with torch.no_grad():
                        layer.set_phase_variation(0.0)
                        row["torchonn_noiseless_err"] = float((layer(xf).double() - ideal).abs().max())
                        layer.set_phase_variation(sigma)
                        yt = torch.stack([layer(xf).double() for _ in range(draws)])
                    row["torchonn_rel_rms"] = math.sqrt(float(((yt - ideal) ** 2).mean()) / ref_power)
                    row["torchonn_rel_bias"] = math.sqrt(float(((yt.mean(0) - ideal) ** 2).mean()) / ref_power)
                    row["ratio_ours_over_torchonn"] = row["ours_rel_rms"] / max(row["torchonn_rel_rms"], 1e-300)
                except Exception as exc:  # noqa: BLE001
                    row["torchonn_error"] = _error(exc)
            rows.append(row)
    return {"rows": rows}


# ------------------------------------------------------------------ 3. timing
def timing_part(sizes: list[int], batch: int, iters: int, repeat: int, seed: int = 0) -> dict:
    mod, err = import_peer("torchonn")
    rows = []
    for n in sizes:
        spec = mesh_spec(n, "clements")
        g = torch.Generator().manual_seed(seed)
        theta = 2 * math.pi * torch.rand(spec.n_mzi, generator=g)
        phi = 2 * math.pi * torch.rand(spec.n_mzi, generator=g)
        out = 2 * math.pi * torch.rand(n, generator=g)
        x = torch.randn(batch, n, generator=g, dtype=torch.complex64)
        xr = torch.randn(batch, n, generator=g)
        w = torch.randn(n, n, generator=g, dtype=torch.complex64) / math.sqrt(n)
        row = {"n": n, "batch": batch}
        with torch.no_grad():
            args = (x, spec, theta, phi, out)
            fns = {"ours_auto": lambda a=args: mesh_field(*a),
                   "ours_columns": lambda a=args: mesh_field(*a, method="columns"),
                   "dense_complex": lambda x=x, w=w: x @ w.T}
            if mod is not None:
                try:
                    layer = _torchonn_layer(n, torch.randn(n, n, generator=g) / math.sqrt(n))
                    fns["torchonn_phase"] = lambda layer=layer, xr=xr: layer(xr)
                except Exception as exc:  # noqa: BLE001
                    row["torchonn_error"] = _error(exc)
            else:
                row["torchonn_error"] = err
            for name, fn in fns.items():
                slow = name in ("torchonn_phase", "ours_columns") and n >= 256
                sec = _time(fn, 1 if slow else iters, min(repeat, 3) if slow else repeat)
                row[f"{name}_samples_per_s"] = batch / sec
        row["ours_auto_over_dense_time"] = row["dense_complex_samples_per_s"] / row["ours_auto_samples_per_s"]
        if "torchonn_phase_samples_per_s" in row:
            ours, theirs = row["ours_auto_samples_per_s"], row["torchonn_phase_samples_per_s"]
            row["ours_auto_speedup_over_torchonn"] = ours / theirs
        rows.append(row)
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.photonic_peers", description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", default=["decomposition", "noise", "timing"],
                   choices=["decomposition", "noise", "timing"])
    p.add_argument("--check-imports", action="store_true", help="only report which peers import (or why not)")
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256], help="timing: mesh sizes")
    p.add_argument("--decomposition-sizes", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    p.add_argument("--noise-sizes", type=int, nargs="+", default=[8, 16])
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.01, 0.05, 0.1])
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="append one JSON object per part to this file")
    args = p.parse_args(argv)
    imports = check_imports()
    print("# peers:", json.dumps(imports))
    if args.check_imports:
        return 0
    torch.set_num_threads(args.threads)
    env = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "load_before": os.getloadavg()[0], "peers": imports}
    results = {}
    if "decomposition" in args.parts:
        results["decomposition"] = r = neurophox_part(args.decomposition_sizes)
        print("\n## decomposition (max |entry difference|)\n", json.dumps(r, indent=1))
    if "noise" in args.parts:
        results["noise"] = r = noise_part(args.noise_sizes, args.sigmas, args.draws)
        print("\n## phase noise: relative RMS output error\n")
        print("| n | sigma [rad] | ours rel. RMS | torchonn rel. RMS | ours / torchonn | ours bias | torchonn bias |")
        print("|---|---|---|---|---|---|---|")
        for row in r["rows"]:
            nan = float("nan")
            print(f"| {row['n']} | {row['sigma_rad']} | {row['ours_rel_rms']:.4g} | "
                  f"{row.get('torchonn_rel_rms', nan):.4g} | {row.get('ratio_ours_over_torchonn', nan):.3g} | "
                  f"{row['ours_rel_bias']:.3g} | {row.get('torchonn_rel_bias', nan):.3g} |")
    if "timing" in args.parts:
        results["timing"] = r = timing_part(args.sizes, args.batch, args.iters, args.repeat)
        env["load_after"] = os.getloadavg()[0]
        env["valid"] = max(env["load_before"], env["load_after"]) <= LOAD_LIMIT
        print(f"\n## forward throughput [samples/s], batch {args.batch}, {env['threads']} thread(s); load "
              f"{env['load_before']:.2f} -> {env['load_after']:.2f}: {'valid' if env['valid'] else 'INVALID (load)'}\n")
        print("| n | ours (auto) | ours (columns) | torchonn MZIBlockLinear (phase) | dense complex | ours/dense time "
              "| ours vs torchonn |")
        print("|---|---|---|---|---|---|---|")
        for row in r["rows"]:
            print(f"| {row['n']} | {row['ours_auto_samples_per_s']:.3g} | {row['ours_columns_samples_per_s']:.3g} | "
                  f"{row.get('torchonn_phase_samples_per_s', float('nan')):.3g} | "
                  f"{row['dense_complex_samples_per_s']:.3g} | {row['ours_auto_over_dense_time']:.1f}x | "
                  f"{row.get('ours_auto_speedup_over_torchonn', float('nan')):.1f}x faster |")
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            for part, value in results.items():
                fh.write(json.dumps({"part": part, **env, **value}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
