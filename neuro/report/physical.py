"""Report figures of physical networks: accuracy against device time, and the accounting table.

Device time is the cumulative number of samples measured on the physical layers
(``n_physical_evals`` summed over epochs; for rules that measure nothing during training,
the epoch index stands in).  If the records hold ``deployed_val_accuracy`` (written by
:class:`neuro.deployment.DeployedBaseline`), the curve of a network trained offline and then
deployed on the same drifting system is drawn beside the trained one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuro.registry import REPORT_SECTIONS
from neuro.report.plots import plot_series
from neuro.report.sections import Figure, Section, Table


@REPORT_SECTIONS.register("accuracy_vs_time")
def draw_accuracy_vs_time(data: dict, records: list[dict], run_dir: Path) -> Section:
    figures, tables = accuracy_vs_time(run_dir, records, drift=data.get("drift"))
    return Section([Figure(*f) for f in figures], [Table(*t) for t in tables])


def accuracy_vs_time(run_dir, records: list[dict], drift: bool | None = None):
    """Figures ``(title, png, caption)`` and tables ``(title, header, rows)`` of accuracy against device time.

    ``drift``: whether the substrates' hidden physics drifts (True), is static (False) or unknown (None, a
    device); the caption says which."""
    epochs = [r for r in records if r.get("event") == "epoch"]
    if not epochs:
        return [], []
    evals = np.cumsum([r.get("n_physical_evals") or 0.0 for r in epochs])
    use_evals = evals[-1] > 0
    x = evals if use_evals else np.arange(1, len(epochs) + 1)
    series = {"trained on the system": [100 * (r.get("val_accuracy") or np.nan) for r in epochs]}
    if any("deployed_val_accuracy" in r for r in epochs):
        series["trained offline, then deployed"] = [100 * r.get("deployed_val_accuracy", np.nan) for r in epochs]
    plot_series(x, series, Path(run_dir) / "accuracy_vs_time.png",
                xlabel="device time: cumulative physical evaluations, all layers (samples)" if use_evals else "epoch",
                ylabel="validation accuracy (%)", title="accuracy vs device time")
    physics = {True: "as its hidden parameters drift", False: "(its hidden physics does not drift in this run)",
               None: "(a device: whether it drifts is not known)"}[drift]
    x_text = ("x: device time, the cumulative number of samples measured on all physical layers during training"
              if use_evals else "x: epoch (this rule measures nothing on the system while training)")
    figures = [("Accuracy vs device time", "accuracy_vs_time.png",
                f"Validation accuracy measured on the physical system {physics}; {x_text}.")]

    def pct(v):
        return None if v is None else 100 * v

    rows = [[r.get("epoch"), r.get("n_physical_evals"), r.get("n_digital_macs"), r.get("time_s"),
             pct(r.get("val_accuracy")), pct(r.get("deployed_val_accuracy"))] for r in epochs]
    tables = [("Accounting per epoch", ["epoch", "physical evaluations (samples)", "digital MACs", "wall time (s)",
                                        "val acc (%)", "deployed val acc (%)"], rows)]
    return figures, tables
