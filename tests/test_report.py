"""Tests for neuro.report: metrics reading, PNG figures and the HTML report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib import image as mpimg

from neuro.errors import DataError
from neuro.report import (
    DPI,
    format_value,
    plot_learning_curves,
    plot_rate_histograms,
    plot_series,
    plot_spike_raster,
    read_metrics,
    write_report,
)
from neuro.report.plots import (
    learning_curves_size,
    rate_histograms_size,
    series_size,
    spike_raster_size,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _records(n_epochs: int = 4) -> list[dict]:
    recs: list[dict] = []
    for e in range(1, n_epochs + 1):
        recs.append({"event": "step", "epoch": e, "step": e * 10 - 5, "loss": 1.0 / e})
        rec = {
            "event": "epoch",
            "epoch": e,
            "step": e * 10,
            "train_loss": 1.0 / e,
            "train_accuracy": 0.5 + 0.1 * e,
            "lr": 1e-3,
            "time_s": 0.5 * e,
            "samples_per_s": 1234.5,
        }
        if e != 2:  # one epoch without validation
            rec["val_loss"] = 1.2 / e
            rec["val_accuracy"] = 0.45 + 0.1 * e
        recs.append(rec)
    recs.append({"event": "test", "loss": 0.3, "accuracy": 0.9})
    return recs


def _write_jsonl(path, records, trailing: str = "") -> None:
    text = "".join(json.dumps(r) + "\n" for r in records) + trailing
    path.write_text(text)


def _check_png(path, size_in: tuple[float, float]) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    w, h = size_in
    assert img.shape[:2] == (round(h * DPI), round(w * DPI))


# --------------------------------------------------------------------------- metrics


def test_read_metrics_skips_truncated_last_line(tmp_path):
    recs = _records()
    p = tmp_path / "metrics.jsonl"
    _write_jsonl(p, recs, trailing='{"event": "epoch", "epoch": 5, "train_lo')
    out = read_metrics(p)
    assert len(out) == len(recs)
    assert out == recs
    epochs = [r for r in out if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    assert epochs[2]["train_loss"] == pytest.approx(1.0 / 3)
    assert "val_loss" not in epochs[1]
    assert out[-1] == {"event": "test", "loss": 0.3, "accuracy": 0.9}


def test_read_metrics_tolerates_blank_and_garbage_lines(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_bytes(b'{"event": "epoch", "epoch": 1}\n\n[1, 2]\nnot json\n\xff\xfe\n'
                  b'{"event": "test", "accuracy": 0.5}')
    out = read_metrics(p)
    assert out == [{"event": "epoch", "epoch": 1}, {"event": "test", "accuracy": 0.5}]


def test_read_metrics_empty_and_missing(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text("")
    assert read_metrics(p) == []
    with pytest.raises(DataError):
        read_metrics(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------- plots


def test_plot_learning_curves(tmp_path):
    p = tmp_path / "metrics.jsonl"
    _write_jsonl(p, _records(), trailing='{"event": "ep')
    out = plot_learning_curves(read_metrics(p), tmp_path / "curves.png", title="demo <run>")
    assert out == tmp_path / "curves.png"
    _check_png(out, learning_curves_size())


def test_plot_learning_curves_without_data(tmp_path):
    # No epoch records, no val, no test: still a valid figure.
    out = plot_learning_curves([{"event": "step", "loss": 1.0}], tmp_path / "empty.png")
    _check_png(out, learning_curves_size())
    only_train = [{"event": "epoch", "epoch": 1, "train_loss": 0.7}]
    out = plot_learning_curves(only_train, tmp_path / "train.png")
    _check_png(out, learning_curves_size())


def test_plot_spike_raster(tmp_path):
    rng = np.random.default_rng(0)
    spikes = {
        "hidden": (rng.random((100, 40)) < 0.1).astype(np.float32),
        "output": (rng.random((100, 10)) < 0.05).astype(np.uint8),
        "silent": np.zeros((100, 5)),
    }
    out = plot_spike_raster(spikes, tmp_path / "raster.png", title="raster")
    _check_png(out, spike_raster_size(3))
    out = plot_spike_raster({"hidden": spikes["hidden"]}, tmp_path / "raster_ms.png", dt=1e-3)
    _check_png(out, spike_raster_size(1))


def test_plot_spike_raster_rejects_bad_shape(tmp_path):
    with pytest.raises(ValueError, match="expected \\[T, N\\]"):
        plot_spike_raster({"x": np.zeros((2, 3, 4))}, tmp_path / "bad.png")


def test_plot_rate_histograms(tmp_path):
    rng = np.random.default_rng(1)
    rates = {
        "hidden": np.concatenate([np.zeros(10), rng.random(90) * 0.2]),
        "output": rng.random(10),
        "all_silent": np.zeros(8),
        "readout": np.array([0.1, np.nan, 0.3]),
    }
    out = plot_rate_histograms(rates, tmp_path / "rates.png", unit="Hz", title="rates")
    _check_png(out, rate_histograms_size(4))


def test_plot_series(tmp_path):
    x = np.linspace(0, 60, 13)
    series = {"no compensation": 0.9 - 0.005 * x, "recalibrated": 0.9 - 0.001 * x}
    out = plot_series(x, series, tmp_path / "sub" / "drift.png",
                      xlabel="time (min)", ylabel="accuracy (%)", title="drift")
    _check_png(out, series_size())
    with pytest.raises(ValueError):
        plot_series(x, {"short": x[:3]}, tmp_path / "bad.png", xlabel="x", ylabel="y")


# --------------------------------------------------------------------------- html


def test_format_value():
    assert format_value(0.123456789) == "0.1235"
    assert format_value(np.float32(2.5)) == "2.5"
    assert format_value(12345678.9) == "1.235e+07"
    assert format_value(42) == "42"
    assert format_value(np.int64(7)) == "7"
    assert format_value(True) == "True"
    assert format_value(None) == "\u2014"
    assert format_value(float("nan")) == "nan"


def test_write_report(tmp_path):
    recs = _records()
    plot_learning_curves(recs, tmp_path / "curves.png")
    plot_rate_histograms({"h": np.array([0.0, 0.1, 0.2])}, tmp_path / "rates.png")
    title = "run <script>alert(1)</script> & co"
    summary = {"test accuracy": 0.912345, "epochs": 4, "model": "snn<lif>", "rule": None}
    figures = [
        ("Learning curves", "curves.png", "Loss & accuracy per epoch."),
        ("Firing rates", "rates.png", "Per-neuron rates."),
        ("Raster", "raster.png", "Not written."),
    ]
    tables = [("Per epoch", ["epoch", "train_loss"], [[1, 1.0], [2, 0.3333333]])]
    out = write_report(tmp_path, title, summary, figures, tables)
    assert out == tmp_path / "report.html"
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    # Summary values, formatted and escaped.
    assert "0.9123" in text
    assert ">4<" in text
    assert "snn&lt;lif&gt;" in text
    for _, name, _ in figures:
        assert f'src="{name}"' in text
    assert "raster.png is missing" in text
    assert "0.3333" in text and "0.3333333" not in text
    assert "Loss &amp; accuracy" in text
    # No raw script, no JS, no external URLs.
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "http://" not in text and "https://" not in text
    assert "<style>" in text


def test_write_report_minimal(tmp_path):
    out = write_report(tmp_path / "new_run", "t", {}, [])
    assert out.is_file()
    assert "<h1>t</h1>" in out.read_text(encoding="utf-8")
