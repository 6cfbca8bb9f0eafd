"""Report section ``ff_goodness``: forward-forward goodness per layer over the epochs.

Data (from :meth:`neuro.rules.ff.FF.report_data`): ``{"goodness": <kind>}``; the per-layer values
come from the epoch records' ``train_layer<k>_g_pos``, ``_g_neg`` and ``_loss`` keys.
"""

from __future__ import annotations

from pathlib import Path

from neuro.registry import REPORT_SECTIONS
from neuro.report.plots import plot_series
from neuro.report.sections import Figure, Section, Table


@REPORT_SECTIONS.register("ff_goodness")
def draw_ff_goodness(data: dict, records: list[dict], run_dir: Path) -> Section:
    epochs = [r for r in records if r.get("event") == "epoch"]
    layers = sorted(
        {
            int(k[len("train_layer") :].split("_")[0])
            for r in epochs
            for k in r
            if k.startswith("train_layer") and k.endswith("_g_pos")
        }
    )
    if not epochs or not layers:
        return Section()
    x = [r["epoch"] for r in epochs]
    series = {}
    for k in layers:
        series[f"layer {k} positive"] = [r.get(f"train_layer{k}_g_pos", float("nan")) for r in epochs]
        series[f"layer {k} negative"] = [r.get(f"train_layer{k}_g_neg", float("nan")) for r in epochs]
    plot_series(
        x,
        series,
        run_dir / "ff_goodness.png",
        "epoch",
        f"mean goodness ({data.get('goodness', '?')})",
        title="FF goodness per layer (training batches)",
    )
    figure = Figure(
        "FF goodness",
        "ff_goodness.png",
        "Mean goodness of positive (true label) and negative (wrong label) data, each layer, averaged over "
        "the epoch's training batches; the gap is what each layer's local loss widens.",
    )
    last = epochs[-1]
    rows = [
        [k, last.get(f"train_layer{k}_loss"), last.get(f"train_layer{k}_g_pos"), last.get(f"train_layer{k}_g_neg")]
        for k in layers
    ]
    return Section(
        [figure], [Table("FF layers (last epoch)", ["layer", "local loss", "goodness pos", "goodness neg"], rows)]
    )
