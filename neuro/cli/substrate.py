"""``neuro substrate fit DIR``: turn a folder of a device's measured input/output pairs into a substrate.

Fits the forward model classes of :mod:`simulators.measured` (linear, quadratic, MLP) on the
training range, keeps the best on the validation range, estimates the measurement noise, and
writes beside ``--out`` (default ``runs/substrates/<folder name>/measured_model.pt``):

- the model file (``measured:<path to it>`` opens it as a substrate; plain tensors + JSON);
- ``parity.png``: measured vs predicted outputs on the test range, and the per-output RMSE
  against the estimated noise std;
- ``fit_report.json`` and ``fit_report.html``: sizes, split, every class's validation and test
  RMSE, the chosen class, test RMSE per output, the noise estimate and the RMSE / noise ratio.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import torch

from simulators.measured import MODEL_CLASSES, MODEL_FILE, FittedDevice, fit_device, load_pairs


def add_parser(sub) -> None:
    p = sub.add_parser(
        "substrate",
        help="fit a substrate to a device's measured pairs",
        description="Substrates built from data: `neuro substrate fit DIR` fits a forward model to measured pairs.",
    )
    s = p.add_subparsers(dest="substrate_command", metavar="ACTION")
    s.required = True
    f = s.add_parser(
        "fit",
        help="fit a forward model to DIR/x_data.csv, DIR/y_data.csv",
        description="Fit a forward model (and its noise) to the measured pairs in DIR; write the model, "
        "a parity plot and a validation report.",
    )
    f.add_argument(
        "dir", help="folder with x_data.csv and y_data.csv (or x.csv, y.csv): one sample per line, measurement order"
    )
    f.add_argument("--out", default=None, help=f"model file to write (default runs/substrates/<DIR name>/{MODEL_FILE})")
    f.add_argument("--seed", type=int, default=0, help="seed of the fit (initial weights, minibatch order)")
    f.add_argument(
        "--classes", nargs="+", default=list(MODEL_CLASSES), choices=MODEL_CLASSES, help="model classes to compare"
    )
    f.add_argument("--epochs", type=int, default=120, help="MLP training epochs (the best validation epoch is kept)")
    f.add_argument("--hidden", type=int, nargs="+", default=[256, 256], help="MLP hidden sizes")
    f.set_defaults(func=run_fit)


def parity_plot(device: FittedDevice, x_test: torch.Tensor, y_test: torch.Tensor, path: Path) -> Path:
    """Measured vs predicted on the test range (all outputs), and per-output RMSE vs noise std."""
    from matplotlib.figure import Figure

    with torch.no_grad():
        pred = device.predict(x_test)
    fig = Figure(figsize=(10, 4.2))
    ax = fig.add_subplot(1, 2, 1)
    ax.scatter(y_test.flatten().numpy(), pred.flatten().numpy(), s=2, alpha=0.3)
    lo, hi = float(min(y_test.min(), pred.min())), float(max(y_test.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    m = device.meta
    ax.set_title(f"{m['name']}: test range {m['split']['test'][0]}-{m['split']['test'][1]} ({m['kind']})")
    ax.set_xlabel("measured output")
    ax.set_ylabel("predicted output")
    ax2 = fig.add_subplot(1, 2, 2)
    j = range(device.n_out)
    ax2.bar([k - 0.2 for k in j], m["test_rmse_per_output"], width=0.4, label="test RMSE")
    ax2.bar([k + 0.2 for k in j], m["noise_sigma"], width=0.4, label="estimated noise std")
    ax2.set_xticks(list(range(0, device.n_out, max(1, device.n_out // 10))))
    ax2.set_xlabel("output")
    ax2.set_ylabel("output units")
    ax2.legend()
    ax2.set_title(f"RMSE {m['test_rmse']:.4f}, noise {m['noise_rms']:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def write_report(device: FittedDevice, out_dir: Path) -> tuple[Path, Path]:
    m = device.meta
    js = out_dir / "fit_report.json"
    js.write_text(json.dumps(m, indent=1))
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['val_rmse']:.5f}</td><td>{v['test_rmse']:.5f}</td></tr>"
        for k, v in m["classes"].items()
    )
    per = "".join(
        f"<tr><td>{j}</td><td>{r:.5f}</td><td>{s:.5f}</td></tr>"
        for j, (r, s) in enumerate(zip(m["test_rmse_per_output"], m["noise_sigma"]))
    )
    ratio = "n/a" if m["rmse_over_noise"] is None else f"{m['rmse_over_noise']:.2f}"
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(m["name"])}: fitted substrate</title></head><body>
<h1>Fitted substrate: {html.escape(m["name"])}</h1>
<p>{m["n_pairs"]} pairs, {m["n_in"]} inputs, {m["n_out"]} outputs,
from {html.escape(m["source"])} (md5 {m["data_md5"]}).
Split by position: train {m["split"]["train"]}, validation {m["split"]["val"]}, test {m["split"]["test"]}.</p>
<p>Chosen on the validation range: <b>{html.escape(m["kind"])}</b>. Test RMSE <b>{m["test_rmse"]:.5f}</b>;
estimated noise (RMS over outputs) {m["noise_rms"]:.5f}; ratio <b>{ratio}</b>.</p>
<table border="1"><tr><th>class</th><th>validation RMSE</th><th>test RMSE</th></tr>{rows}</table>
<h2>Parity</h2><img src="parity.png" alt="parity plot">
<h2>Per output (test range)</h2>
<table border="1"><tr><th>output</th><th>test RMSE</th><th>noise std</th></tr>{per}</table>
<p>Noise estimator: {html.escape(m["noise_estimate"]["method"])}; details in fit_report.json.</p>
</body></html>"""
    page_path = out_dir / "fit_report.html"
    page_path.write_text(page)
    return js, page_path


def run_fit(args) -> int:
    pairs = load_pairs(args.dir)
    out = Path(args.out) if args.out else Path("runs") / "substrates" / pairs.name / MODEL_FILE
    torch.set_num_threads(1)  # deterministic by seed on any machine
    device = fit_device(
        pairs,
        seed=args.seed,
        classes=tuple(args.classes),
        settings={"epochs": args.epochs, "hidden": list(args.hidden)},
    )
    path = device.save(out)
    sp = pairs.split()["test"]
    plot = parity_plot(device, pairs.x[sp], pairs.y[sp], out.parent / "parity.png")
    js, page = write_report(device, out.parent)
    m = device.meta
    ratio = "n/a" if m["rmse_over_noise"] is None else f"{m['rmse_over_noise']:.2f}"
    print(
        f"fitted {m['kind']} to {m['n_pairs']} pairs of {m['name']}: test RMSE {m['test_rmse']:.4f}, "
        f"noise {m['noise_rms']:.4f} (ratio {ratio})"
    )
    print(f"model: {path}  (use it as measured:{path})")
    print(f"report: {page}  {js.name}  {plot.name}")
    return 0
