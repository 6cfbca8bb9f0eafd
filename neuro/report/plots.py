"""Figures for a run report: learning curves, spike rasters, firing-rate histograms.

Every function takes plain numpy inputs (anything ``np.asarray`` accepts), writes one PNG
at :data:`DPI` dots per inch and returns its :class:`~pathlib.Path`.  Figures are built on
:class:`matplotlib.figure.Figure` directly, so nothing here touches pyplot's global state
or the process-wide backend, and plotting is safe in headless runs.

Figure sizes are fixed per call (no ``bbox_inches="tight"``) so the pixel size of a PNG is
predictable: ``round(width_in * DPI) x round(height_in * DPI)``; see the ``*_size``
helpers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from neuro.errors import DataError

__all__ = [
    "DPI",
    "read_metrics",
    "plot_learning_curves",
    "plot_spike_raster",
    "plot_rate_histograms",
    "plot_series",
    "learning_curves_size",
    "spike_raster_size",
    "rate_histograms_size",
    "series_size",
]

DPI = 110

_FONT = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10}


# --------------------------------------------------------------------------- metrics


def read_metrics(path) -> list[dict]:
    """Read a ``metrics.jsonl`` file: one JSON object per line.

    Blank lines, lines that are not valid JSON (e.g. the partial last line of a run that
    was killed mid-write) and JSON values that are not objects are skipped.  A missing or
    unreadable file raises :class:`~neuro.errors.DataError`.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"metrics file {path} does not exist; check the run directory") from None
    except OSError as exc:
        raise DataError(f"cannot read metrics file {path}: {exc.strerror or exc}") from None
    records: list[dict] = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


# --------------------------------------------------------------------------- helpers


def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    return fig


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target, then rename: a reader never sees a half-written PNG.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fig.savefig(fh, format="png", dpi=DPI)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _num(value) -> float:
    """A record value as a float; missing / non-numeric / non-finite -> nan."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def _as_percent(values):
    """Accuracies are stored as fractions in ``metrics.jsonl``; show them in %."""
    return values * 100.0


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _style(ax) -> None:
    ax.grid(True, alpha=0.3, linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


# --------------------------------------------------------------------------- sizes


def learning_curves_size() -> tuple[float, float]:
    """(width, height) in inches of :func:`plot_learning_curves` figures."""
    return (10.0, 4.0)


def spike_raster_size(n_layers: int) -> tuple[float, float]:
    """(width, height) in inches of a :func:`plot_spike_raster` figure with ``n_layers``."""
    return (10.0, 1.0 + 2.0 * max(1, n_layers))


def rate_histograms_size(n_layers: int) -> tuple[float, float]:
    """(width, height) in inches of a :func:`plot_rate_histograms` figure."""
    n = max(1, n_layers)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    return (4.0 * ncols, 1.0 + 3.0 * nrows)


def series_size() -> tuple[float, float]:
    """(width, height) in inches of :func:`plot_series` figures."""
    return (8.0, 5.0)


# --------------------------------------------------------------------------- plots


def plot_learning_curves(records: list[dict], path, title: str = "") -> Path:
    """Loss and accuracy per epoch from ``metrics.jsonl`` records.

    Left panel: train / val loss vs epoch.  Right panel: train / val accuracy (%) vs
    epoch, and the test accuracy (last ``"test"`` record) as a horizontal dashed line.
    Missing keys leave gaps; a run with no epoch records gives panels saying "no data".
    """
    epochs = [r for r in records if isinstance(r, dict) and r.get("event") == "epoch"]
    tests = [r for r in records if isinstance(r, dict) and r.get("event") == "test"]
    x = np.array(
        [_num(r.get("epoch", i + 1)) for i, r in enumerate(epochs)], dtype=float
    )
    # Fall back to position where an epoch number is missing or malformed.
    bad = ~np.isfinite(x)
    x[bad] = np.arange(1, len(x) + 1, dtype=float)[bad]

    def column(key: str) -> np.ndarray:
        return np.array([_num(r.get(key)) for r in epochs], dtype=float)

    with _rc():
        fig = _new_figure(*learning_curves_size())
        ax_loss, ax_acc = fig.subplots(1, 2)

        plotted = False
        # The training loss is the rule's own (cross-entropy for backprop, the FF loss for forward-forward);
        # validation is always the cross-entropy of the predicted scores.  Different quantities get
        # different axes and labels.
        train_key = "train_ff_loss" if np.isfinite(column("train_ff_loss")).any() and not np.isfinite(
            column("train_loss")).any() else "train_loss"
        same_quantity = train_key == "train_loss"
        y = column(train_key)
        if np.isfinite(y).any():
            ax_loss.plot(x, y, "-o", markersize=3.5, linewidth=1.5,
                         label="train (cross-entropy)" if same_quantity else "train (FF loss, left axis)")
            plotted = True
        ax_val = ax_loss if same_quantity else ax_loss.twinx()
        y = column("val_loss")
        if np.isfinite(y).any():
            ax_val.plot(x, y, "-s", markersize=3.5, linewidth=1.5, color="C1",
                        label="val (cross-entropy)" if same_quantity else "val (cross-entropy, right axis)")
            plotted = True
        if not plotted:
            _no_data(ax_loss)
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("cross-entropy" if same_quantity else "FF loss (train)")
        if not same_quantity:
            ax_val.set_ylabel("cross-entropy (val)")
            handles = [h for a in (ax_loss, ax_val) for h in a.get_legend_handles_labels()[0]]
            ax_loss.legend(handles, [h.get_label() for h in handles], frameon=False)
        ax_loss.set_title("Loss")

        plotted = False
        for key, label, style in (
            ("train_accuracy", "train", "-o"),
            ("val_accuracy", "val", "-s"),
        ):
            y = column(key)
            if np.isfinite(y).any():
                ax_acc.plot(x, _as_percent(y), style, markersize=3.5, linewidth=1.5, label=label)
                plotted = True
        test_acc = math.nan
        for r in reversed(tests):
            test_acc = _num(r.get("accuracy", r.get("test_accuracy")))
            if math.isfinite(test_acc):
                break
        if math.isfinite(test_acc):
            pct = _as_percent(test_acc)
            ax_acc.axhline(pct, linestyle="--", color="k", linewidth=1.2, label=f"test ({pct:.2f}%)")
            plotted = True
        if not plotted:
            _no_data(ax_acc)
        ax_acc.set_xlabel("epoch")
        ax_acc.set_ylabel("accuracy (%)")
        ax_acc.set_title("Accuracy")

        for ax in (ax_loss, ax_acc):
            _style(ax)
            if ax.get_legend_handles_labels()[0] and ax.get_legend() is None:
                ax.legend(frameon=False)
            if len(x):
                # Integer epochs on the x axis (every epoch labelled when there are few).
                ax.xaxis.get_major_locator().set_params(integer=True)
                if len(x) <= 12:
                    ax.set_xticks(x)
        if title:
            fig.suptitle(title)
        return _save(fig, path)


def plot_spike_raster(
    spikes: dict[str, np.ndarray], path, dt: float | None = None, title: str = ""
) -> Path:
    """Spike raster: one panel per layer, stacked vertically with a shared time axis.

    Each array is ``[T, N]`` (time steps x neurons) of 0/1 (any non-zero counts as a
    spike; a 1-D array is one neuron).  The x axis is the time step, or milliseconds when
    ``dt`` (the step length in seconds) is given.
    """
    layers = {name: _as_2d(name, arr) for name, arr in spikes.items()}
    n = len(layers)
    with _rc():
        fig = _new_figure(*spike_raster_size(n))
        axes = fig.subplots(max(1, n), 1, sharex=True, squeeze=False)[:, 0]
        scale = 1.0 if dt is None else float(dt) * 1000.0
        xlabel = "time step" if dt is None else "time (ms)"
        if n == 0:
            _no_data(axes[0], "no layers")
        for ax, (name, arr) in zip(axes, layers.items()):
            t_steps, n_neurons = arr.shape
            t_idx, n_idx = np.nonzero(arr)
            count = t_idx.size
            if count and t_steps * n_neurons <= 20_000:
                # small rasters (e.g. 10 output neurons x 20 steps): one filled cell per spike, readable at any size
                ax.imshow((arr != 0).T, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest",
                          origin="lower", extent=(-0.5 * scale, (t_steps - 0.5) * scale, -0.5, n_neurons - 0.5))
            elif count:
                # Smaller dots for busier rasters so they stay readable.
                size = float(np.clip(4000.0 / max(count, 1), 0.5, 6.0))
                ax.scatter(t_idx * scale, n_idx, s=size, marker="|" if size > 3 else ".",
                           color="k", linewidths=0.6 if size > 3 else 0, rasterized=True)
            else:
                _no_data(ax, "no spikes")
            ax.set_xlim(-0.5 * scale, (t_steps - 0.5) * scale if t_steps else scale)
            ax.set_ylim(-0.5, max(n_neurons, 1) - 0.5)
            ax.set_ylabel("neuron index")
            rate = count / max(t_steps * n_neurons, 1)
            ax.set_title(f"{name}  ({n_neurons} neurons, {count} spikes, "
                         f"mean {rate:.3g} spikes/step/neuron)", loc="left")
            ax.yaxis.get_major_locator().set_params(integer=True)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
        axes[-1].set_xlabel(xlabel)
        if title:
            fig.suptitle(title)
        return _save(fig, path)


def _as_2d(name: str, arr) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(
            f"spike array for layer {name!r} has shape {a.shape}; expected [T, N]"
        )
    return a


def plot_rate_histograms(
    rates: dict[str, np.ndarray], path, unit: str = "spikes/step", title: str = ""
) -> Path:
    """Histogram of per-neuron firing rates, one panel per layer (up to 3 per row).

    Each panel is annotated with the fraction of silent neurons (rate exactly 0).
    Non-finite rates are ignored.
    """
    layers = {name: np.asarray(r, dtype=float).ravel() for name, r in rates.items()}
    n = len(layers)
    w, h = rate_histograms_size(n)
    ncols = min(max(n, 1), 3)
    nrows = math.ceil(max(n, 1) / ncols)
    with _rc():
        fig = _new_figure(w, h)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        if n == 0:
            _no_data(axes[0], "no layers")
        for ax, (name, r) in zip(axes, layers.items()):
            r = r[np.isfinite(r)]
            total = r.size
            silent = int(np.count_nonzero(r == 0))
            if total:
                lo, hi = float(r.min()), float(r.max())
                bins = int(np.clip(np.sqrt(total), 5, 30)) if hi > lo else 1
                rng = (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)
                ax.hist(r, bins=bins, range=rng, color="tab:blue", alpha=0.85,
                        edgecolor="white", linewidth=0.4)
                ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the annotation
                frac = silent / total
                text = f"silent: {frac:.1%} ({silent}/{total})\nmean: {r.mean():.3g} {unit}"
            else:
                text = "no neurons"
            ax.text(0.97, 0.95, text, transform=ax.transAxes, ha="right", va="top",
                    fontsize=9, bbox=dict(boxstyle="round", facecolor="white", alpha=0.8,
                                          edgecolor="0.7"))
            ax.set_title(name)
            ax.set_xlabel(f"firing rate ({unit})")
            ax.set_ylabel("neurons (count)")
            ax.yaxis.get_major_locator().set_params(integer=True)
            _style(ax)
        for ax in axes[max(n, 1):]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
        return _save(fig, path)


def plot_series(
    x, series: dict[str, np.ndarray], path, xlabel: str, ylabel: str, title: str = ""
) -> Path:
    """Generic line plot: each entry of ``series`` is one line over the shared ``x``."""
    xs = np.asarray(x, dtype=float).ravel()
    with _rc():
        fig = _new_figure(*series_size())
        ax = fig.subplots()
        # Series that coincide (e.g. a bit-exact twin and device) must stay visible: later series are
        # drawn thinner and dashed, with hollow markers, over the earlier ones.
        styles = [("-", 2.6, "o", 5.0), ("--", 1.6, "s", 3.5), (":", 1.2, "x", 5.5), ("-.", 1.0, "^", 3.0)]
        for k, (name, y) in enumerate(series.items()):
            ys = np.asarray(y, dtype=float).ravel()
            if ys.shape != xs.shape:
                raise ValueError(
                    f"series {name!r} has {ys.size} points but x has {xs.size}"
                )
            line, width, marker, size = styles[k % len(styles)]
            ax.plot(xs, ys, line, marker=marker if xs.size <= 50 else None, markersize=size, linewidth=width,
                    markerfacecolor="none", label=str(name), zorder=2 + k)
        if not series:
            _no_data(ax)
        if xs.size and np.all(np.isfinite(xs)) and np.all(xs == np.round(xs)):
            ax.xaxis.get_major_locator().set_params(integer=True)  # epochs, counts: no fractional ticks
            if xs.size <= 12:
                ax.set_xticks(xs)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        _style(ax)
        if len(series) > 0:
            ax.legend(frameon=False)
        return _save(fig, path)


def _rc():
    import matplotlib

    return matplotlib.rc_context(_FONT)
