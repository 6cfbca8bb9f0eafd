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
2. ``noise`` (torchonn): the same real weight matrix ``W [n, n]`` (Gaussian / sqrt(n)) and 8 inputs in [-1, 1];
   relative RMS output error ``sqrt(E|y - W x|^2 / E|W x|^2)`` (with its Monte Carlo standard error over the
   independent draws) and relative bias, for

   - ``torchonn``: ``MZIBlockLinear`` (``mode="phase"``, one ``n x n`` block, Clements, ``set_phase_variation(s)``).
     Its model (torchonn 0.0.8 source): ``W = U diag(S_scale cos(phase_S)) V``, ``U`` and ``V`` real products of
     ``n(n-1)/2`` Givens rotations ``[[cos p, -sin p], [sin p, cos p]]`` whose angle ``p`` is the phase (and +-1
     signs); every ``p`` of ``U`` and ``V`` gets ``s z``, ``z`` standard normal truncated to ``|z| < 2``
     (``gen_gaussian_noise``: the first of 4 candidates inside, else the first candidate: p = 4e-6), ``phase_S``
     noise-free ("assumed to be protected"), one draw of ``W`` per forward call shared by the batch, float32;
   - ``reference``: that stated model on our own numpy Givens mesh (:class:`GivensReference`) with the phases
     torchonn's layer holds: checks torchonn against its stated model;
   - ``ours_matched``: our SVD layer (``program(W)``, homodyne) with ``phase_noise = 2 s``,
     ``phase_noise_model = "mixing"`` and ``phase_noise_trunc = 2``: push-pull noise on each MZI's internal phase
     only: ``delta = 2 s z`` applied push-pull gives ``T -> Rot(-delta/2) T = Rot(-s z) T``, a change of the
     mixing angle ``theta/2`` by ``s z``, ``z`` truncated at 2: the Givens-angle noise of torchonn
     (``ours_matched_per_call``: the same with one draw per call shared by the batch, through :func:`layer_field`);
   - ``ours``: the default model, ``phase_noise = s`` on every phase shifter (``theta``, ``phi``, output phases)
     of both meshes, untruncated, a draw per sample: ``theta`` acts at half angle and with a common phase, and
     the pure phase errors land (to first order) in the quadrature homodyne detection discards.

   First-order predictions ``sqrt(Var(e) sum_k |dy/de_k|^2 / sum|W x|^2)`` from central differences of each
   model (``predicted_*``); ``Var(e) = 0.77374 s^2`` for a 2-std truncated normal.  Predicted ratio
   ours / torchonn ``= sqrt(A_ours / (0.77374 A_torchonn))`` (``= 1 / (2 sqrt(0.77374)) = 0.5684`` when
   ``A_torchonn = 4 A_ours``, as measured); ours_matched / torchonn ``= 1`` to every order.
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
import dataclasses
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
from simulators.photonic import (
    PhotonicOptions,
    PhotonicSubstrate,
    decompose,
    detect,
    layer_field,
    mesh_field,
    mesh_matrix,
    mesh_spec,
    phase_shots,
)

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


TRUNC = 2.0
"""torchonn truncates its phase-noise draws at +-2 std (``gen_gaussian_noise(..., trunc_range=(-2 s, 2 s))``)."""


def trunc_var_factor(c: float) -> float:
    """``Var(z | |z| < c) = 1 - 2 c g(c) / (2 G(c) - 1)`` for a standard normal ``z`` (``g``/``G``: pdf/cdf);
    0.77371 at ``c = 2``."""
    pdf = math.exp(-0.5 * c * c) / math.sqrt(2 * math.pi)
    return 1.0 - 2 * c * pdf / math.erf(c / math.sqrt(2))


def givens_mesh(phi: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Independent reference of torchonn's real Clements mesh (its documented model, our code): ``n`` columns;
    column ``i`` rotates rows ``(j, j+1)``, ``j = i mod 2, i mod 2 + 2, ...``, by the Givens rotation
    ``[[cos p, -sin p], [sin p, cos p]]`` with angle ``p = phi[j, i]`` (rad), left-multiplied in column order;
    the signs ``delta [n]`` (+-1) multiply row ``n-1`` after the first column and row ``0`` at the end (even
    ``n``; odd ``n``: row ``n-1`` before the first column, row ``0`` before the last)."""
    n = delta.shape[0]
    u = np.eye(n)
    for i in range(n):
        if i == 0 and n % 2 == 1:
            u[-1] *= delta[-1]
        for j in range(i % 2, n - 1, 2):
            c, s = math.cos(phi[j, i]), math.sin(phi[j, i])
            u[j], u[j + 1] = c * u[j] - s * u[j + 1], s * u[j] + c * u[j + 1]
        if i == 0 and n % 2 == 0:
            u[-1] *= delta[-1]
        if i == n - 2 and n % 2 == 1:
            u[0] *= delta[0]
    if n % 2 == 0:
        u[0] *= delta[0]
    return u


class GivensReference:
    """torchonn's stated phase-noise model on our own real Givens mesh (:func:`givens_mesh`), with the phases
    torchonn's layer holds (``phase_U``, ``phase_V``, ``delta_list_U/V``, ``phase_S``, ``S_scale``):
    ``W = U(phi_U + e_U) diag(S_scale cos(phase_S)) V(phi_V + e_V)``, every ``e ~ s z``, ``z`` standard normal
    truncated to ``|z| < 2`` (numpy rejection sampling), ``phase_S`` noise-free, one draw of ``W`` per call."""

    def __init__(self, layer) -> None:
        def vec(t):
            return t.detach().double().reshape(-1).numpy()

        self.v2m = layer.decomposer.v2m
        self.pu, self.pv = vec(layer.phase_U), vec(layer.phase_V)
        self.du, self.dv = vec(layer.delta_list_U), vec(layer.delta_list_V)
        self.s = vec(layer.phase_S.cos() * layer.S_scale)

    def matrix(self, pu: np.ndarray, pv: np.ndarray) -> np.ndarray:
        m = lambda p: self.v2m(torch.from_numpy(p)).numpy()  # noqa: E731 - vector -> checkerboard [n, n]
        return givens_mesh(m(pu), self.du) @ np.diag(self.s) @ givens_mesh(m(pv), self.dv)

    def draw(self, sigma: float, rng: np.random.Generator) -> np.ndarray:
        def tn(size):
            z = rng.standard_normal(size)
            bad = np.abs(z) >= TRUNC
            while bad.any():
                z[bad] = rng.standard_normal(int(bad.sum()))
                bad = np.abs(z) >= TRUNC
            return sigma * z

        return self.matrix(self.pu + tn(self.pu.shape), self.pv + tn(self.pv.shape))

    def sensitivity(self, x: np.ndarray, eps: float = 1e-6) -> float:
        """``sum_k |dW/dp_k x|^2`` over every noisy phase ``p_k`` (both meshes) and the inputs: first order,
        ``E|y - W x|^2 = Var(e) * sensitivity`` (central differences, float64)."""
        total = 0.0
        for which in range(2):
            for k in range(self.pu.size if which == 0 else self.pv.size):
                plus, minus = [self.pu.copy(), self.pv.copy()], [self.pu.copy(), self.pv.copy()]
                plus[which][k] += eps
                minus[which][k] -= eps
                d = (self.matrix(*plus) - self.matrix(*minus)) / (2 * eps)
                total += float(((x @ d.T) ** 2).sum())
        return total


def ours_sensitivity(opt: PhotonicOptions, settings: dict, x: torch.Tensor, scale: float,
                     eps: float = 1e-6) -> dict[str, float]:
    """``sum_h |d(scale * y)/d e_h|^2`` over every heater ``h`` the noise model ``opt`` draws for (a unit shot on
    heater ``h`` through :func:`layer_field`, push-pull included) and the inputs, homodyne ``y``, split by heater
    kind (``theta``, ``phi``, ``out``; both meshes); first order, ``E|y - W x|^2 = Var(e) * sum``."""
    total = {"theta": 0.0, "phi": 0.0, "out": 0.0}
    specs = opt.specs()
    for mesh, spec in specs.items():
        n_heat = spec.n_mzi if opt.phase_noise_model == "mixing" else spec.n_heaters
        for h in range(n_heat):
            ys = []
            for sign in (1.0, -1.0):
                shots = {m: torch.zeros(x.shape[0], s.n_heaters, dtype=torch.float64) for m, s in specs.items()}
                shots[mesh][:, h] = sign * eps
                ys.append(detect(layer_field(x, settings, opt, shots=shots, ideal=True), opt))
            kind = "theta" if h < spec.n_mzi else "phi" if h < 2 * spec.n_mzi else "out"
            total[kind] += float((((ys[0] - ys[1]) * (scale / (2 * eps))) ** 2).sum())
    return total


def _stats(y: torch.Tensor, ideal: torch.Tensor, ref_power: float) -> dict:
    """``y [draws, batch, n]``: relative RMS error ``sqrt(mean|y - Wx|^2 / mean|Wx|^2)`` with its standard error
    (delta method over the per-draw means: the draws are independent, the samples of one draw need not be) and
    the relative bias ``sqrt(mean_x |E y - Wx|^2 / mean|Wx|^2)``."""
    per_draw = ((y - ideal) ** 2).mean(dim=(1, 2))
    m = float(per_draw.mean())
    se_m = float(per_draw.std()) / math.sqrt(per_draw.numel())
    rel = math.sqrt(m / ref_power)
    bias = math.sqrt(float(((y.mean(0) - ideal) ** 2).mean()) / ref_power)
    return {"rel_rms": rel, "rel_rms_se": rel * 0.5 * se_m / m, "rel_bias": bias}


def _ratio(a: dict, b: dict) -> tuple[float, float]:
    r = a["rel_rms"] / b["rel_rms"]
    return r, r * math.hypot(a["rel_rms_se"] / a["rel_rms"], b["rel_rms_se"] / b["rel_rms"])


def noise_part(sizes: list[int], sigmas: list[float], draws: int, seed: int = 0) -> dict:
    """Relative RMS output error of four noisy layers with the same ``W`` and inputs (module docstring, part 2):
    ``ours`` (default per-shot model, std ``sigma`` on every phase shifter), ``ours_matched`` (torchonn's model
    in our simulator: ``phase_noise = 2 sigma``, ``phase_noise_model = "mixing"``, ``phase_noise_trunc = 2``),
    ``torchonn`` and ``reference`` (:class:`GivensReference`), plus the first-order predictions of each from the
    sensitivities (``predicted_*``; ``c = trunc_var_factor(2)``)."""
    mod, err = import_peer("torchonn")
    c_tr = trunc_var_factor(TRUNC)
    rows = []
    for n in sizes:
        g = torch.Generator().manual_seed(seed + n)
        w = torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
        x = torch.rand(8, n, generator=g, dtype=torch.float64) * 2 - 1
        ideal = x @ w.T
        ref_power = float((ideal ** 2).mean())
        total_power = float((ideal ** 2).sum())
        layer = ref = None
        base = PhotonicOptions(n_in=n, n_out=n, detection="homodyne", seed=seed)
        matched_opt = dataclasses.replace(base, phase_noise_model="mixing", phase_noise_trunc=TRUNC)
        probe = PhotonicSubstrate(base)
        scale = probe.program(w)
        settings = probe._radians({}, torch.float64)  # the written (float32) settings, in rad
        split = {"ours": ours_sensitivity(base, settings, x, scale),
                 "ours_matched": ours_sensitivity(matched_opt, settings, x, scale)}
        sens = {key: sum(v.values()) for key, v in split.items()}
        kinds = {f"sensitivity_{key}_{kind}": v for key, d in split.items() for kind, v in d.items()}
        if mod is not None:
            try:
                layer = _torchonn_layer(n, w.float())
                ref = GivensReference(layer)
                sens["torchonn"] = ref.sensitivity(x.numpy())
            except Exception as exc:  # noqa: BLE001
                err = _error(exc)
        for si, sigma in enumerate(sigmas):
            row = {"n": n, "sigma_rad": sigma, "draws": draws, "batch": int(x.shape[0]), "power": total_power, **kinds}
            rs = seed + 1000 * n + 10 * si  # independent draws for every row
            # ours, default model: per-shot N(0, sigma^2) on every phase shifter of both meshes, a draw per sample
            sub = PhotonicSubstrate(dataclasses.replace(base, phase_noise=sigma, seed=rs + 1))
            sub.program(w)
            row["ours_noiseless_err"] = float((scale * sub.exact_forward(x) - ideal).abs().max())
            ys = torch.stack([scale * sub.forward(x).double() for _ in range(draws)])
            stats = {"ours": _stats(ys, ideal, ref_power)}
            # ours, matched to torchonn's model (mixing-angle noise of std sigma truncated at 2 std)
            sub = PhotonicSubstrate(dataclasses.replace(matched_opt, phase_noise=2 * sigma, seed=rs + 2))
            sub.program(w)
            ys = torch.stack([scale * sub.forward(x).double() for _ in range(draws)])
            stats["ours_matched"] = _stats(ys, ideal, ref_power)
            # the same, one draw per call shared by the batch (torchonn's granularity), through the functional core
            gen = torch.Generator().manual_seed(rs + 3)
            ys = []
            for _ in range(draws):
                shot = phase_shots(matched_opt, 1, 2 * sigma, gen)
                shots = {m: v.expand(x.shape[0], -1) for m, v in shot.items()}
                ys.append(scale * detect(layer_field(x, settings, matched_opt, shots=shots, ideal=True), matched_opt))
            stats["ours_matched_per_call"] = _stats(torch.stack(ys), ideal, ref_power)
            var = {"ours": sigma ** 2, "ours_matched": c_tr * (2 * sigma) ** 2, "torchonn": c_tr * sigma ** 2}
            for key, a in sens.items():
                row[f"predicted_{key}_rel_rms"] = math.sqrt(var[key] * a / total_power)
            if layer is None:
                row["torchonn_error"] = err
            else:
                try:
                    xf = x.float()
                    torch.manual_seed(rs + 4)  # torchonn draws from torch's global generator
                    with torch.no_grad():
                        layer.set_phase_variation(0.0)
                        row["torchonn_noiseless_err"] = float((layer(xf).double() - ideal).abs().max())
                        row["reference_vs_torchonn_noiseless"] = float(np.abs(
                            ref.matrix(ref.pu, ref.pv) - layer.transform_weight()["weight"].double().numpy()).max())
                        layer.set_phase_variation(sigma)
                        yt = torch.stack([layer(xf).double() for _ in range(draws)])
                    stats["torchonn"] = _stats(yt, ideal, ref_power)
                    rng = np.random.default_rng(rs + 5)
                    xn = x.numpy()
                    yr = torch.from_numpy(np.stack([xn @ ref.draw(sigma, rng).T for _ in range(draws)]))
                    stats["reference"] = _stats(yr, ideal, ref_power)
                except Exception as exc:  # noqa: BLE001
                    row["torchonn_error"] = _error(exc)
            for key, st in stats.items():
                row.update({f"{key}_{k}": v for k, v in st.items()})
            if "torchonn" in stats:
                t = stats["torchonn"]
                for key in ("ours", "ours_matched", "ours_matched_per_call", "reference"):
                    r, se = _ratio(stats[key], t)
                    row[f"ratio_{key}_over_torchonn"], row[f"ratio_{key}_over_torchonn_se"] = r, se
                row["sensitivity_torchonn"] = sens["torchonn"]
                row["ratio_ours_over_torchonn_predicted"] = math.sqrt(sens["ours"] / (c_tr * sens["torchonn"]))
                row["ratio_ours_matched_over_torchonn_predicted"] = math.sqrt(
                    4 * sens["ours_matched"] / sens["torchonn"])
            rows.append(row)
    out = {"rows": rows, "trunc_var_factor": c_tr}
    done = [row for row in rows if "ratio_ours_matched_over_torchonn" in row]
    if done:
        summary = {}
        for key in ("ours_matched", "ours_matched_per_call", "reference"):
            rs = [row[f"ratio_{key}_over_torchonn"] for row in done]
            zs = [(row[f"ratio_{key}_over_torchonn"] - 1) / row[f"ratio_{key}_over_torchonn_se"] for row in done]
            summary[f"{key} / torchonn: max |ratio - 1|"] = max(abs(v - 1) for v in rs)
            summary[f"{key} / torchonn: max |z| against 1"] = max(abs(v) for v in zs)
        smallest = min(row["sigma_rad"] for row in done)
        small = [row for row in done if row["sigma_rad"] == smallest]
        summary["ours default / torchonn at the smallest sigma: max |z| against the first-order prediction"] = max(
            abs(row["ratio_ours_over_torchonn"] - row["ratio_ours_over_torchonn_predicted"])
            / row["ratio_ours_over_torchonn_se"] for row in small)
        out["summary"] = summary
    return out


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


def print_noise_tables(r: dict) -> None:
    nan = float("nan")

    def cell(row, key, digits=".4g"):
        v, se = row.get(f"{key}_rel_rms", nan), row.get(f"{key}_rel_rms_se", nan)
        return f"{v:{digits}} +- {se:.2g}"

    def ratio(row, key):
        v, se = row.get(f"ratio_{key}_over_torchonn", nan), row.get(f"ratio_{key}_over_torchonn_se", nan)
        return v, se, f"{v:.4f} +- {se:.4f}"

    print(f"\n## phase noise: relative RMS output error (+- 1 standard error; draws {r['rows'][0]['draws']}, "
          f"Var of a 2-std truncated normal = {r['trunc_var_factor']:.5f} std^2)\n")
    print("| n | sigma [rad] | torchonn | reference (torchonn's model, our code) | ours matched | "
          "ours matched, 1 draw/call | ours default |")
    print("|---|---|---|---|---|---|---|")
    for row in r["rows"]:
        print(f"| {row['n']} | {row['sigma_rad']} | {cell(row, 'torchonn')} | {cell(row, 'reference')} | "
              f"{cell(row, 'ours_matched')} | {cell(row, 'ours_matched_per_call')} | {cell(row, 'ours')} |")
    print("\n## ratios to torchonn (+- 1 SE); z = (measured - predicted) / SE\n")
    print("| n | sigma | reference / torchonn (z vs 1) | matched / torchonn (z vs 1) | matched 1 draw/call / torchonn "
          "| default / torchonn | first-order prediction | z |")
    print("|---|---|---|---|---|---|---|---|")
    for row in r["rows"]:
        rr, rs, rt = ratio(row, "reference")
        mr, ms, mt = ratio(row, "ours_matched")
        _, _, pt = ratio(row, "ours_matched_per_call")
        dr, ds, dt = ratio(row, "ours")
        pred = row.get("ratio_ours_over_torchonn_predicted", nan)
        print(f"| {row['n']} | {row['sigma_rad']} | {rt} ({(rr - 1) / rs:+.1f}) | {mt} ({(mr - 1) / ms:+.1f}) | {pt} | "
              f"{dt} | {pred:.4f} | {(dr - pred) / ds:+.1f} |")
    print("\n## first-order (small sigma) predictions of the relative RMS error, sqrt(Var(e) * sum_k |dy/de_k|^2 / "
          "sum|Wx|^2)\n")
    print("| n | sigma | torchonn predicted / measured | ours matched predicted / measured | "
          "ours default predicted / measured | matched / torchonn predicted |")
    print("|---|---|---|---|---|---|")
    for row in r["rows"]:
        def pm(key, row=row):
            return f"{row.get(f'predicted_{key}_rel_rms', nan):.4g} / {row.get(f'{key}_rel_rms', nan):.4g}"

        print(f"| {row['n']} | {row['sigma_rad']} | {pm('torchonn')} | {pm('ours_matched')} | {pm('ours')} | "
              f"{row.get('ratio_ours_matched_over_torchonn_predicted', nan):.6f} |")
    print("\n## first-order sensitivities per rad^2, sum_k |dy/de_k|^2 / sum|Wx|^2 (both meshes)\n")
    print("| n | torchonn (all rotation angles) | ours default: theta | phi | out | ours matched: theta (push-pull) |")
    print("|---|---|---|---|---|---|")
    for row in r["rows"]:
        if row["sigma_rad"] != r["rows"][0]["sigma_rad"]:
            continue
        p = row["power"]
        print(f"| {row['n']} | {row.get('sensitivity_torchonn', nan) / p:.6g} | "
              f"{row['sensitivity_ours_theta'] / p:.6g} | {row['sensitivity_ours_phi'] / p:.3g} | "
              f"{row['sensitivity_ours_out'] / p:.3g} | {row['sensitivity_ours_matched_theta'] / p:.6g} |")
    print("\n## relative bias sqrt(mean_x |E[y] - Wx|^2 / mean|Wx|^2) (Monte Carlo floor about rel. RMS / "
          "sqrt(draws))\n")
    print("| n | sigma | torchonn | reference | ours matched | ours matched, 1 draw/call | ours default |")
    print("|---|---|---|---|---|---|---|")
    for row in r["rows"]:
        cells = " | ".join(f"{row.get(f'{k}_rel_bias', nan):.3g}" for k in
                           ("torchonn", "reference", "ours_matched", "ours_matched_per_call", "ours"))
        print(f"| {row['n']} | {row['sigma_rad']} | {cells} |")
    if "summary" in r:
        print("\n## summary\n")
        for key, value in r["summary"].items():
            print(f"- {key}: {value:.4g}")
    print("\n## noiseless checks (max |entry difference|)\n")
    for row in r["rows"]:
        print(f"n={row['n']} sigma={row['sigma_rad']}: ours vs Wx {row['ours_noiseless_err']:.2g}, torchonn vs Wx "
              f"{row.get('torchonn_noiseless_err', nan):.2g}, reference W vs torchonn W "
              f"{row.get('reference_vs_torchonn_noiseless', nan):.2g}")


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
        print_noise_tables(r)
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
