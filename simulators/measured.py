"""Substrates fitted to a real device's measurements: the ``measured`` substrate family.

A folder of measured input/output pairs of a physical system becomes a black-box substrate:
a forward model ``f`` is fitted to the pairs, the measurement noise is estimated from the data
and re-injected, and the result behaves like any other :class:`~simulators.substrate.Substrate`
(noisy, drifting if asked, no gradient through ``forward``).  ``neuro substrate fit DIR`` is the
command-line front end (:mod:`neuro.cli.substrate`); ``measured:<name or path>`` opens one.

Folder format (any device)
--------------------------
Two comma-separated files, ``x_data.csv`` and ``y_data.csv`` (or ``x.csv`` and ``y.csv``): line
``k`` of the y file is the measurement for the input on line ``k`` of the x file; every line of
a file has the same number of float cells (``n_in`` for x, ``n_out`` for y).  An optional first
line is a header and is skipped when any cell is not a number, or when the first lines of both
files consist only of ``0`` cells (the column-name artefact of files written with pandas, as in
the PhyLL data).  Rows must be in measurement order: the split below is by position, so a
device that drifted during the campaign is tested on its latest state.

Split (by position, the PhyLL authors' split for 10,000 pairs): the last ``round(0.07 N)`` pairs
are the *test* range, the ``round(0.03 N)`` pairs before it the *validation* range, the rest
the *training* range; for ``N = 10,000``: train 0-9,000, validation 9,000-9,300, test 9,300-10,000.
Model classes and their settings are chosen on the validation range only; the test range is
used once, to report the chosen model's error.

The PhyLL acoustic data (``phyll_acoustic``)
--------------------------------------------
``../shared/data/phyll_acoustic`` holds 10,000 pairs measured on the nonlinear acoustic cavity
with tunable meta-scatterers used as a physical layer by Momeni, Rahmani, Mallejac, del Hougne &
Fleury, "Backpropagation-free training of deep physical neural networks", Science 382 (2023),
arXiv 2304.11042 (MIT License, (c) 2023 Ali Momeni; cite the paper).  Copied byte for byte from
github.com/MomeniAli/PhyLL, folder "Experimental Data/Acoustic/" (commit e10480b4): ``x_data.csv``
(md5 8c578965bd26108221e9340507bb6fd2, inputs sent to the cavity) and ``y_data.csv`` (md5
5fcb38a763cf817dd5d0d5d3ce56a2d0, outputs measured for them); 10,001 lines of 20 columns each,
line 1 a header of twenty ``0`` cells; inputs in [0, 1], outputs in [0, 1.94].  The authors fit
a small 20 -> 20 MLP on the first 9,000 pairs (validated on 9,000-9,300, tested on 9,300-10,000,
RMSE loss) and drive the cavity with ``|x| / ||x||`` during training of the physical network.

Forward models (pure torch, differentiable; inputs standardized with the training mean/std
``mu, sd``: ``u = (x - mu) / sd``)
--------------------------------------------------------------------------------------------
- ``linear``: ``y = W u + b`` (least squares).
- ``quadratic``: ``y = W [1; u; u_i u_j (i <= j)]`` (ridge least squares, ``lambda`` chosen on the
  validation range from a grid).
- ``mlp``: ``y = W_L silu(... silu(W_1 u + b_1) ...) + b_L`` (Adam on the mean squared error,
  minibatches of 128, cosine learning-rate decay, the epoch with the lowest validation RMSE kept).
:func:`fit_device` fits every class in ``classes`` and keeps the one with the lowest validation
RMSE.  On the PhyLL acoustic data the MLP wins (numbers in the fit report and in
``tests/test_measured.py``'s docstring).

Noise estimate (learning-curve asymptote)
-----------------------------------------
The pairs hold no repeated inputs, so the noise cannot be read off repeats.  For a model class
that can represent ``E[y | x]``, the expected held-out mean squared error after training on
``n`` pairs is ``MSE_j(n) = sigma_j^2 + c_j n^(-alpha)``: the irreducible part ``sigma_j^2`` is
the noise variance of output ``j``.  We fit the chosen class on the first ``n = T/8, T/4, T/2, T``
pairs of the first ``T = 5/6`` of the training range, measure ``MSE_j(n)`` on the remaining
sixth (all inside the training range), and fit ``(sigma_j^2, c_j) >= 0`` by least squares for
each ``alpha`` of a grid in [0.25, 2], keeping the ``alpha`` with the smallest total squared
misfit.  Limits: it assumes the model class is flexible enough (a biased class inflates
``sigma``), and four points of a curve give ``sigma`` to roughly 10 %; model-free alternatives
(nearest-neighbour differences, the Gamma test) extrapolate over input distances far too large
in 20 dimensions with 10,000 pairs, and we found them to over-estimate the noise.

The substrate
-------------
``e = [x; c]`` (``c``: ``n_control`` control inputs, hardware parameters written with
``set_params({"control": c})``; by default the device inputs not used by ``x``), then

    y_meas = max(f(clip(M e, lo, hi)) + noise * sigma * n, y_floor)

``M`` (``[m, m]``, identity at power-on) is a *hidden input mixing* standing in for a device
whose response changes (a shifted transducer, a warmed cavity): it drifts and jumps exactly like
the hidden parameters of :mod:`simulators.wave` (device time in samples measured; every
``drift_tick`` samples ``M += drift * s * n``, at each time in ``perturb_at`` ``M += perturb_scale
* s * n``, ``s = 1/sqrt(m)`` the RMS of the identity, ``n`` standard normal from generators seeded
by ``(seed, tick)``).  ``sigma`` is the estimated per-output noise std, ``noise`` a scale
(1 = the device's own noise, 0 = noise-free), ``n`` standard normal from the substrate's seeded
generator, ``[lo, hi]`` the device input range (the data's range rounded outward to 0.1) and
``y_floor`` the smallest output in the data (a detector reports no less).  A batch is measured
at the hidden state of its first sample, then the clock advances.

Saved model files are plain: ``torch.save({"format", "meta" (a JSON string), "tensors"})``, read
back with ``torch.load(..., weights_only=True)``; no pickled code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from simulators.errors import SettingError, SubstrateFault
from simulators.substrate import SUBSTRATE_FAMILIES, check_batch, check_options, checked_control
from simulators.wave import DriftingState, WaveState, _generator, advance

FORMAT = "neurohil-measured-v1"
MODEL_CLASSES = ("linear", "quadratic", "mlp")
X_NAMES = ("x_data.csv", "x.csv")
Y_NAMES = ("y_data.csv", "y.csv")
MIN_PAIRS = 40
TEST_FRACTION, VAL_FRACTION = 0.07, 0.03
MODEL_FILE = "measured_model.pt"
CACHE_ENV = "NEUROHIL_MEASURED_CACHE"
DATA_ENV = "NEUROHIL_DATA"
_RIDGE_GRID = (1e-6, 1e-4, 1e-2, 1.0)
_ALPHA_GRID = tuple(0.25 * k for k in range(1, 9))
_REPO_ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ measured pairs
@dataclass(frozen=True)
class MeasuredPairs:
    """Measured pairs of one device: ``x [N, n_in]``, ``y [N, n_out]`` (float32, file order).

    name: the folder's name; source: where they were read from; md5: of the two files' bytes.
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str
    source: str
    md5: str

    @property
    def n_in(self) -> int:
        return int(self.x.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.y.shape[1])

    def split(self) -> dict[str, slice]:
        """Position split (see module docstring): ``{"train", "val", "test"}`` -> slices."""
        n = self.x.shape[0]
        n_test = max(1, round(TEST_FRACTION * n))
        n_val = max(1, round(VAL_FRACTION * n))
        return {
            "train": slice(0, n - n_test - n_val),
            "val": slice(n - n_test - n_val, n - n_test),
            "test": slice(n - n_test, n),
        }


def _pick(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_csv(path: Path, skip_first: bool) -> torch.Tensor:
    fix = "write one sample per line, the same number of comma-separated numbers on every line"
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingError(f"measured data file {path} cannot be read as text ({type(exc).__name__}); {fix}") from None
    rows, width = [], None
    lines = text.splitlines()
    for lineno, line in enumerate(lines, 1):
        if (lineno == 1 and skip_first) or not line.strip():
            continue
        cells = line.split(",")
        if width is None:
            width = len(cells)
        elif len(cells) != width:
            raise SettingError(
                f"measured data file {path} line {lineno} has {len(cells)} columns, "
                f"line 1 of the data has {width}; {fix}"
            )
        try:
            rows.append([float(c) for c in cells])
        except ValueError:
            bad = next(c for c in cells if not _is_number(c))
            raise SettingError(
                f"measured data file {path} line {lineno} has a cell that is not a number ({bad.strip()[:20]!r}); {fix}"
            ) from None
    if not rows:
        raise SettingError(f"measured data file {path} has no data lines; {fix}")
    t = torch.tensor(rows, dtype=torch.float64)
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).any(dim=1).nonzero()[0]) + 1
        raise SettingError(
            f"measured data file {path} has a non-finite value (nan or inf) in data row {bad}; remove or re-measure it"
        )
    return t.to(torch.float32)


def _header_flags(xp: Path, yp: Path) -> tuple[bool, bool]:
    def first(path: Path) -> list[str]:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.readline().strip().split(",")
        except (OSError, UnicodeDecodeError):
            return []

    fx, fy = first(xp), first(yp)
    zeros = bool(fx) and bool(fy) and all(c.strip() == "0" for c in fx + fy)
    return zeros or not all(_is_number(c) for c in fx), zeros or not all(_is_number(c) for c in fy)


def load_pairs(folder: str | os.PathLike) -> MeasuredPairs:
    """Read a folder of measured pairs (format in the module docstring); one-line SettingError if bad."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise SettingError(
            f"measured data folder {folder} does not exist; give a folder holding x_data.csv and y_data.csv"
        )
    xp, yp = _pick(folder, X_NAMES), _pick(folder, Y_NAMES)
    if xp is None or yp is None:
        raise SettingError(
            f"measured data folder {folder} has no {' or '.join(X_NAMES if xp is None else Y_NAMES)}; "
            "put the inputs in x_data.csv and the measured outputs in y_data.csv, one sample per line"
        )
    skip_x, skip_y = _header_flags(xp, yp)
    x, y = _parse_csv(xp, skip_x), _parse_csv(yp, skip_y)
    if x.shape[0] != y.shape[0]:
        raise SettingError(
            f"measured data folder {folder}: {xp.name} has {x.shape[0]} samples but {yp.name} has {y.shape[0]}; "
            "line k of the y file must be the measurement of line k of the x file"
        )
    if x.shape[0] < MIN_PAIRS:
        raise SettingError(
            f"measured data folder {folder} has {x.shape[0]} pairs; fitting a device needs at least {MIN_PAIRS}"
        )
    if float(x.std(dim=0).max()) == 0.0:
        raise SettingError(
            f"measured data folder {folder}: every input in {xp.name} is the same; measure varied inputs"
        )
    md5 = hashlib.md5(xp.read_bytes() + b"\0" + yp.read_bytes()).hexdigest()
    return MeasuredPairs(x, y, folder.resolve().name, str(folder.resolve()), md5)


# ------------------------------------------------------------------ forward models
def _quadratic_features(u: torch.Tensor) -> torch.Tensor:
    iu = torch.triu_indices(u.shape[1], u.shape[1], device=u.device)
    cross = (u[:, :, None] * u[:, None, :])[:, iu[0], iu[1]]
    return torch.cat([torch.ones(u.shape[0], 1, dtype=u.dtype, device=u.device), u, cross], dim=1)


def model_forward(kind: str, tensors: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Noise-free prediction ``f(x)`` of a fitted model (equations in the module docstring); differentiable."""
    t = {k: v.to(x.dtype) for k, v in tensors.items()}
    u = (x - t["mu"]) / t["sd"]
    if kind == "linear":
        return u @ t["W"].T + t["b"]
    if kind == "quadratic":
        return _quadratic_features(u) @ t["W"].T
    if kind == "mlp":
        n_layers = sum(1 for k in t if k.startswith("W"))
        h = u
        for i in range(n_layers):
            h = h @ t[f"W{i}"].T + t[f"b{i}"]
            if i < n_layers - 1:
                h = F.silu(h)
        return h
    raise SettingError(f"unknown measured model kind '{kind}'; valid: {', '.join(MODEL_CLASSES)}")


def model_macs(kind: str, tensors: dict[str, torch.Tensor]) -> int:
    """Multiply-accumulates per sample of :func:`model_forward`."""
    if kind == "mlp":
        return sum(int(v.numel()) for k, v in tensors.items() if k.startswith("W"))
    return int(tensors["W"].numel()) + (int(tensors["W"].shape[1]) if kind == "quadratic" else 0)


def _rmse(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred - y).pow(2).mean().sqrt())


def _standardizer(x: torch.Tensor) -> dict[str, torch.Tensor]:
    sd = x.std(dim=0)
    return {"mu": x.mean(dim=0), "sd": torch.where(sd > 0, sd, torch.ones_like(sd))}


def _fit_linear(xt, yt, xv, yv, seed, settings) -> tuple[dict, float]:
    s = _standardizer(xt)
    u = torch.cat([((xt - s["mu"]) / s["sd"]).double(), torch.ones(xt.shape[0], 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(u, yt.double()).solution
    tensors = {**s, "W": sol[:-1].T.float().contiguous(), "b": sol[-1].float()}
    return tensors, _rmse(model_forward("linear", tensors, xv), yv)


def _fit_quadratic(xt, yt, xv, yv, seed, settings) -> tuple[dict, float]:
    s = _standardizer(xt)
    q = _quadratic_features(((xt - s["mu"]) / s["sd"]).double())
    gram, rhs = q.T @ q, q.T @ yt.double()
    eye = torch.eye(q.shape[1], dtype=torch.float64)
    best = None
    for lam in _RIDGE_GRID:
        w = torch.linalg.solve(gram + lam * q.shape[0] * eye, rhs).T.float().contiguous()
        tensors = {**s, "W": w}
        err = _rmse(model_forward("quadratic", tensors, xv), yv)
        if best is None or err < best[1]:
            best = (tensors, err)
    return best


def _fit_mlp(xt, yt, xv, yv, seed, settings) -> tuple[dict, float]:
    hidden = tuple(int(h) for h in settings.get("hidden", (256, 256)))
    epochs, lr, batch = int(settings.get("epochs", 120)), float(settings.get("lr", 2e-3)), 128
    g = torch.Generator().manual_seed(int(seed))
    s = _standardizer(xt)
    sizes = (xt.shape[1], *hidden, yt.shape[1])
    params = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / math.sqrt(a)
        params[f"W{i}"] = ((torch.rand(b, a, generator=g) * 2 - 1) * bound).requires_grad_()
        params[f"b{i}"] = torch.zeros(b, requires_grad=True)
    opt = torch.optim.Adam(params.values(), lr=lr)
    n = xt.shape[0]
    steps_per_epoch = math.ceil(n / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    best = ({**s, **{k: v.detach().clone() for k, v in params.items()}}, float("inf"))
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=g)
            for i in range(0, n, batch):
                idx = order[i : i + batch]
                loss = (model_forward("mlp", {**s, **params}, xt[idx]) - yt[idx]).pow(2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            with torch.no_grad():
                err = _rmse(model_forward("mlp", {**s, **params}, xv), yv)
            if err < best[1]:
                best = ({**s, **{k: v.detach().clone() for k, v in params.items()}}, err)
    return best


_FITTERS = {"linear": _fit_linear, "quadratic": _fit_quadratic, "mlp": _fit_mlp}


def fit_class(kind: str, xt, yt, xv, yv, *, seed: int = 0, settings: dict | None = None) -> tuple[dict, float]:
    """Fit one model class on ``(xt, yt)``, its settings chosen on ``(xv, yv)``: ``(tensors, validation RMSE)``."""
    if kind not in _FITTERS:
        raise SettingError(f"unknown measured model class '{kind}'; valid: {', '.join(MODEL_CLASSES)}")
    torch.manual_seed(int(seed))  # nothing below draws from the global generator; belt and braces
    return _FITTERS[kind](xt, yt, xv, yv, seed, dict(settings or {}))


def estimate_noise(kind: str, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0, settings: dict | None = None) -> dict:
    """Per-output noise std by the learning-curve asymptote (module docstring) on the pairs ``(x, y)``
    (the training range).  Returns ``{"sigma": [n_out], "alpha", "sizes", "mse": [[n_out] per size]}``."""
    n = x.shape[0]
    t = (5 * n) // 6
    xt, yt, xh, yh = x[:t], y[:t], x[t:], y[t:]
    sizes = [max(8, t // 8), max(8, t // 4), max(8, t // 2), t]
    mse = []
    for k, m in enumerate(sizes):
        # the validation range for early stopping / ridge choice is the held-out sixth itself
        tensors, _ = fit_class(kind, xt[:m], yt[:m], xh, yh, seed=seed + 17 * k, settings=settings)
        with torch.no_grad():
            mse.append((model_forward(kind, tensors, xh) - yh).pow(2).mean(dim=0).double())
    mse_t = torch.stack(mse)  # [sizes, n_out]
    nn = torch.tensor(sizes, dtype=torch.float64)
    best = None
    for alpha in _ALPHA_GRID:
        a = torch.stack([torch.ones_like(nn), nn.pow(-alpha)], 1)
        coef = torch.linalg.lstsq(a, mse_t).solution  # [2, n_out]
        # sigma^2, c >= 0: where the free fit leaves the feasible set, fall back to the best one-parameter fit
        sig2, c = coef[0].clone(), coef[1].clone()
        bad_c = c < 0
        sig2[bad_c] = mse_t[:, bad_c].mean(0)
        c[bad_c] = 0.0
        bad_s = sig2 < 0
        if bad_s.any():
            basis = nn.pow(-alpha)
            c[bad_s] = (basis[:, None] * mse_t[:, bad_s]).sum(0) / basis.pow(2).sum()
            sig2[bad_s] = 0.0
        resid = float((a @ torch.stack([sig2, c]) - mse_t).pow(2).sum())
        if best is None or resid < best[0]:
            best = (resid, alpha, sig2)
    _, alpha, sig2 = best
    return {
        "sigma": sig2.clamp(min=0).sqrt().float(),
        "alpha": alpha,
        "sizes": sizes,
        "mse": mse_t.float().tolist(),
        "held_out": int(n - t),
    }


@dataclass
class FittedDevice:
    """A fitted forward model of a device plus what the substrate needs (see module docstring).

    kind: model class; tensors: its parameters; meta: JSON-able facts (sizes, ranges, noise,
    validation and test errors, data md5, fit settings).
    """

    kind: str
    tensors: dict[str, torch.Tensor]
    meta: dict

    @property
    def n_in(self) -> int:
        return int(self.meta["n_in"])

    @property
    def n_out(self) -> int:
        return int(self.meta["n_out"])

    @property
    def sigma(self) -> torch.Tensor:
        return torch.tensor(self.meta["noise_sigma"], dtype=torch.float32)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return model_forward(self.kind, self.tensors, x)

    # -- files
    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(
            {
                "format": FORMAT,
                "kind": self.kind,
                "meta": json.dumps(self.meta),
                "tensors": {k: v.detach().clone().contiguous() for k, v in self.tensors.items()},
            },
            tmp,
        )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> FittedDevice:
        path = Path(path).expanduser()
        fix = "re-create it with `neuro substrate fit DIR`"
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
            raise SettingError(f"measured model file {path} cannot be read ({type(exc).__name__}); {fix}") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise SettingError(f"{path} is not a NeuroHIL measured-device model (format {FORMAT}); {fix}")
        try:
            meta = json.loads(blob["meta"])
            kind, tensors = str(blob["kind"]), dict(blob["tensors"])
            device = cls(kind, {k: v.float() for k, v in tensors.items()}, meta)
            probe = device.predict(torch.zeros(1, device.n_in))
            len(meta["noise_sigma"])
        except SettingError:
            raise
        except Exception as exc:  # noqa: BLE001 - missing keys, wrong shapes: the file is damaged
            raise SettingError(
                f"measured model file {path} is damaged ({type(exc).__name__}: {str(exc).splitlines()[0][:80]}); {fix}"
            ) from None
        if probe.shape != (1, device.n_out) or len(meta["noise_sigma"]) != device.n_out:
            raise SettingError(
                f"measured model file {path} is inconsistent "
                f"(outputs {tuple(probe.shape)} vs n_out {device.n_out}); {fix}"
            )
        return device


def _outward(v: float, step: float = 0.1, up: bool = False) -> float:
    return (math.ceil if up else math.floor)(round(v / step, 6)) * step


def fit_device(
    pairs: MeasuredPairs,
    *,
    seed: int = 0,
    classes: tuple[str, ...] = MODEL_CLASSES,
    settings: dict | None = None,
    noise: bool = True,
) -> FittedDevice:
    """Fit every class in ``classes`` on the training range, keep the lowest validation RMSE,
    estimate the noise with it (``noise=False``: zero noise, for quick tests) and report the
    test-range RMSE of the kept model.  Deterministic given ``seed`` (single-threaded math aside)."""
    settings = dict(settings or {})
    sp = pairs.split()
    xt, yt = pairs.x[sp["train"]], pairs.y[sp["train"]]
    xv, yv = pairs.x[sp["val"]], pairs.y[sp["val"]]
    xs, ys = pairs.x[sp["test"]], pairs.y[sp["test"]]
    fitted, table = {}, {}
    for kind in classes:
        tensors, val = fit_class(kind, xt, yt, xv, yv, seed=seed, settings=settings)
        with torch.no_grad():
            test = _rmse(model_forward(kind, tensors, xs), ys)
        fitted[kind] = tensors
        table[kind] = {"val_rmse": val, "test_rmse": test}
    chosen = min(classes, key=lambda k: table[k]["val_rmse"])
    tensors = fitted[chosen]
    if noise:
        est = estimate_noise(chosen, xt, yt, seed=seed, settings=settings)
        sigma = est.pop("sigma")
    else:
        est, sigma = {"method": "none (noise=False)"}, torch.zeros(pairs.n_out)
    with torch.no_grad():
        pred_test = model_forward(chosen, tensors, xs)
    per_out = (pred_test - ys).pow(2).mean(dim=0).sqrt()
    noise_rms = float(sigma.pow(2).mean().sqrt())
    test_rmse = float((pred_test - ys).pow(2).mean().sqrt())
    meta = {
        "name": pairs.name,
        "source": pairs.source,
        "data_md5": pairs.md5,
        "n_pairs": int(pairs.x.shape[0]),
        "n_in": pairs.n_in,
        "n_out": pairs.n_out,
        "kind": chosen,
        "seed": int(seed),
        "settings": settings,
        "split": {k: [v.start, v.stop] for k, v in sp.items()},
        "input_range": [_outward(float(pairs.x.min())), _outward(float(pairs.x.max()), up=True)],
        "output_floor": float(pairs.y.min()),
        "output_max": float(pairs.y.max()),
        "classes": table,
        "test_rmse": test_rmse,
        "test_rmse_per_output": per_out.tolist(),
        "noise_sigma": sigma.tolist(),
        "noise_rms": noise_rms,
        "rmse_over_noise": test_rmse / noise_rms if noise_rms > 0 else None,
        "noise_estimate": {"method": "learning-curve asymptote, MSE(n) = sigma^2 + c n^-alpha", **est},
        "format": FORMAT,
    }
    return FittedDevice(chosen, tensors, meta)


# ------------------------------------------------------------------ names -> fitted devices
def data_roots() -> list[Path]:
    """Where bare names are looked up: ``$NEUROHIL_DATA``, ``<repo>/../shared/data``, ``<cwd>/../shared/data``."""
    env = os.environ.get(DATA_ENV, "").strip()
    roots = [Path(env).expanduser()] if env else []
    return roots + [_REPO_ROOT.parent / "shared" / "data", Path.cwd() / ".." / "shared" / "data"]


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neurohil" / "measured"


def fitted_for_folder(folder: Path, *, seed: int = 0) -> FittedDevice:
    """The default fit of a data folder, cached (``$NEUROHIL_MEASURED_CACHE`` or ~/.cache/neurohil/measured)
    under the data's md5, so the first use fits (about a minute on one core) and later uses load."""
    own = folder / MODEL_FILE
    if own.is_file():
        return FittedDevice.load(own)
    pairs = load_pairs(folder)
    path = cache_dir() / f"{pairs.name}-{pairs.md5[:12]}-s{seed}-{FORMAT}.pt"
    if path.is_file():
        return FittedDevice.load(path)
    device = fit_device(pairs, seed=seed)
    try:
        device.save(path)
    except OSError:
        pass  # a read-only home still works, it just refits next time
    return device


def resolve_device(variant: str) -> FittedDevice:
    """``variant``: a saved model file, a folder (of pairs, or holding measured_model.pt), or a folder name
    under a data root (:func:`data_roots`)."""
    if not variant:
        raise SettingError("substrate 'measured' needs a device: measured:<name or path>, e.g. measured:phyll_acoustic")
    p = Path(variant).expanduser()
    if p.is_file():
        return FittedDevice.load(p)
    if p.is_dir():
        return fitted_for_folder(p)
    if os.sep not in variant:
        for root in data_roots():
            if (root / variant).is_dir():
                return fitted_for_folder(root / variant)
    tried = ", ".join(str(r) for r in data_roots())
    raise SettingError(
        f"measured:{variant}: no such model file or data folder (names are looked up in {tried}); "
        "give a path, or set NEUROHIL_DATA"
    )


# ------------------------------------------------------------------ the substrate
@dataclass(frozen=True)
class MeasuredOptions:
    """Settings of a measured substrate (times in samples measured; see module docstring).

    n_control: device inputs used as control inputs (default: the device inputs ``x`` does not fill).
    noise: scale of the re-injected noise (1: the device's estimated noise; 0: noise-free).
    drift, drift_tick, perturb_at, perturb_scale: hidden input mixing drift and jumps (as in wave.py).
    seed: draws the drift, jumps and noise (the fitted model itself does not depend on it).
    """

    n_control: int = -1
    noise: float = 1.0
    drift: float = 0.0
    drift_tick: int = 256
    perturb_at: tuple[int, ...] = ()
    perturb_scale: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.noise < 0 or self.drift < 0 or self.perturb_scale < 0:
            raise ValueError("noise, drift and perturb_scale must be >= 0")
        if self.drift_tick < 1:
            raise ValueError(f"drift_tick must be >= 1, got {self.drift_tick}")
        object.__setattr__(self, "perturb_at", tuple(sorted(int(t) for t in self.perturb_at)))


class MeasuredSubstrate(DriftingState):
    """A fitted device behind the Substrate protocol (equation in the module docstring).

    ``forward(x [batch, n_in])`` measures (noise, drift, no gradients); ``set_params({"control": c})``.
    Counters as in :class:`~simulators.wave.WaveSubstrate`: ``n_evals``, ``n_calls``, ``grad_touches``
    (forward calls with autograd on a tensor that requires grad: a model-free rule never causes one),
    ``exact_calls`` (uses of :meth:`exact_forward`).
    """

    def __init__(
        self, device: FittedDevice, n_in: int, n_out: int, options: MeasuredOptions = MeasuredOptions()
    ) -> None:
        n_control = device.n_in - n_in if options.n_control < 0 else options.n_control
        name = device.meta.get("name", "device")
        if n_control < 0 or n_in + n_control != device.n_in:
            raise SettingError(
                f"measured:{name} has {device.n_in} inputs; n_in {n_in} + n_control {n_control} must equal it "
                f"(use a layer of width {device.n_in}, or n_control = {device.n_in} - n_in)"
            )
        if n_out != device.n_out:
            raise SettingError(
                f"measured:{name} has {device.n_out} outputs, but the layer asks for {n_out}; "
                f"set the physical width to {device.n_out}"
            )
        self.device, self.options, self.name = device, options, name
        self.n_in, self.n_out, self.n_control = int(n_in), int(n_out), int(n_control)
        lo, hi = device.meta["input_range"]
        self.input_range = (float(lo), float(hi))
        self._floor = float(device.meta["output_floor"])
        self._sigma = device.sigma * options.noise
        m = device.n_in
        hidden = {"M": torch.eye(m)}
        self._scales = {"M": 1.0 / math.sqrt(m)}
        self._state = WaveState(hidden=hidden, noise_rng=_generator(options.seed, 4).get_state())
        self._noise = torch.Generator()
        self._noise.set_state(self._state.noise_rng)
        self._control = torch.full((n_control,), (self.input_range[0] + self.input_range[1]) / 2)
        self.n_evals = self.n_calls = self.grad_touches = self.exact_calls = 0

    @property
    def kind(self) -> str:
        return f"measured:{self.name}"

    def _mixed(self, e: torch.Tensor, hidden: dict[str, torch.Tensor]) -> torch.Tensor:
        lo, hi = self.input_range
        return (e @ hidden["M"].to(e.dtype).T).clamp(lo, hi)

    def _check(self, x) -> None:
        check_batch(self.kind, x, self.n_in, self.input_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One noisy measurement per sample, ``[batch, n_out]`` float32; advances device time."""
        self.n_calls += 1
        if torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.requires_grad:
            self.grad_touches += 1
        self._check(x)
        with torch.no_grad():
            x = x.detach().float()
            e = torch.cat([x, self._control.expand(x.shape[0], -1)], dim=1)
            y = self.device.predict(self._mixed(e, self._state.hidden))
            y = y + self._sigma * torch.randn(y.shape, generator=self._noise)
            y = y.clamp(min=self._floor)
        self.n_evals += int(x.shape[0])
        self._state = advance(self._state, int(x.shape[0]), self._scales, self.options)
        return y

    def set_params(self, params: dict[str, torch.Tensor]) -> None:
        control = checked_control(self.kind, params, self.n_control, self.input_range)
        if control is not None:
            self._control = control

    def get_params(self) -> dict[str, torch.Tensor]:
        return {"control": self._control.clone()} if self.n_control else {}

    def reset(self) -> None:
        """Nothing to do: a measurement has no memory here; controls and the drifted mixing stay."""

    def describe(self) -> dict:
        o = self.options
        return {
            "kind": self.kind,
            "n_in": self.n_in,
            "n_out": self.n_out,
            "input_range": list(self.input_range),
            "params": {"control": [self.n_control]} if self.n_control else {},
            "model": self.device.kind,
            "noise": o.noise,
            "noise_rms": float(self._sigma.pow(2).mean().sqrt()),
            "drift": o.drift,
            "drift_tick": o.drift_tick,
            "perturb_at": list(o.perturb_at),
            "data_md5": self.device.meta.get("data_md5"),
        }

    # -- device time
    # -- the documented escape hatch, as WaveSubstrate.exact_forward
    def exact_forward(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Differentiable, noise-free ``f(clip(M [x; c]))`` at the current hidden state (no clock advance).

        For in-silico backpropagation (``insilico``) and as ``pat``'s twin (``twin = "exact"``): the
        fitted model is what a user of a real device would have as its twin.  ``params`` may hold a
        ``control`` tensor to differentiate with respect to.
        """
        self.exact_calls += 1
        if x.dim() != 2 or x.shape[1] != self.n_in:
            raise SubstrateFault(f"{self.kind} expects inputs [batch, {self.n_in}], got {tuple(x.shape)}")
        control = (params or {}).get("control", self._control)
        e = torch.cat([x, control.to(x).expand(x.shape[0], -1)], dim=1)
        return self.device.predict(self._mixed(e, self._state.hidden))

    def simulation_macs(self, batch: int) -> int:
        m = self.device.n_in
        return batch * (model_macs(self.device.kind, self.device.tensors) + m * m)


@SUBSTRATE_FAMILIES.register("measured", variants=None, variant_hint="<name|path>", emulatable=True)
def open_measured(variant: str, n_in: int, n_out: int, *, seed: int = 0, options: dict) -> MeasuredSubstrate:
    """``measured:<name|path>``: a device fitted to measured pairs; options are fields of :class:`MeasuredOptions`."""
    options = dict(options)
    check_options(f"measured:{variant}", options, {f.name for f in dataclasses.fields(MeasuredOptions)} - {"seed"})
    if "perturb_at" in options:
        options["perturb_at"] = tuple(options["perturb_at"])
    device = resolve_device(variant)
    try:
        opts = MeasuredOptions(seed=seed, **options)
    except (TypeError, ValueError) as exc:
        raise SettingError(f"substrate measured:{variant}: {exc}") from None
    return MeasuredSubstrate(device, n_in, n_out, opts)
