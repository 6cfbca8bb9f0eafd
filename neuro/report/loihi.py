"""The report of a Loihi deployment (``neuro deploy``): float model vs fixed-point twin vs Lava.

Input: the result dict of :func:`neuro.deploy.deploy_loihi` and the traces it compared
(per layer ``(spikes, membrane)`` of the float model; the twin's and Lava's spikes, currents and
voltages in Loihi units).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuro.report.html import write_report
from neuro.report.plots import plot_series, plot_spike_raster


def write_deployment_report(out: Path, r: dict, export, float_layers, twin, lava, label: int) -> Path:
    """PNGs (output raster, output voltage) and report.html of one deployment in ``out``."""

    dt = export.spec.dt
    last = len(export.layers) - 1
    raster = {}
    sources = [("float", float_layers[last][0]), ("twin", twin.spikes[last])] + (
        [("Lava", lava.spikes[last])] if lava else []
    )
    for name, spikes in sources:
        raster[f"output, {name}"] = spikes[:, 0].float().numpy()
    plot_spike_raster(raster, out / "raster.png", dt=dt, title=f"test sample 0 (label {label}): output spikes")
    s = export.spec.layers[last].voltage_scale
    steps = np.arange(twin.voltages[last].shape[0])
    series = {
        "float x scale": float_layers[last][1][:, 0, label].numpy() * s,
        "twin": twin.voltages[last][:, 0, label].numpy(),
    }
    if lava:
        series["Lava"] = lava.voltages[last][:, 0, label].numpy()
    plot_series(
        steps,
        series,
        out / "voltage.png",
        xlabel="time step",
        ylabel="voltage (Loihi units)",
        title=f"output neuron {label}, sample 0 (threshold {export.spec.layers[last].vth * 64})",
    )
    labels = {
        "run": "run",
        "target": "target",
        "samples": "test samples",
        "time_steps": "time steps per sample",
        "twin_lava_spikes_equal": "twin = Lava: spikes",
        "twin_lava_voltages_equal": "twin = Lava: voltages",
        "twin_lava_currents_equal": "twin = Lava: currents",
    }
    summary = {label: r[key] for key, label in labels.items() if lava or not key.startswith("twin_lava")}
    summary.update(
        {
            "float accuracy (%)": 100 * r["float_accuracy"],
            "twin accuracy (%)": 100 * r["twin_accuracy"],
            "quantization-aware fine-tuning epochs": r.get("qat_epochs", 0),
        }
    )
    if lava:
        summary.update(
            {
                "Lava accuracy (%)": 100 * r["lava_accuracy"],
                "Lava run config": r["lava"]["run_config"],
                "Lava wall time (s)": r["lava"]["call_wall_s"],
            }
        )
    rows = [
        [
            k,
            lay.n_in,
            lay.n_out,
            lay.weight_exp,
            lay.du,
            lay.dv,
            lay.vth,
            lay.bias_exp,
            r["spike_agreement_float_twin"][k],
            r["spike_agreement_twin_lava"][k] if lava else None,
        ]
        for k, lay in enumerate(export.spec.layers)
    ]
    tables = [
        (
            "Layers",
            [
                "layer",
                "in",
                "out",
                "weight_exp",
                "du",
                "dv",
                "vth",
                "bias_exp",
                "spike agreement float/twin",
                "spike agreement twin/Lava",
            ],
            rows,
        ),
        ("Quantization", ["note"], [[line] for line in r["quantization"]]),
    ]
    figures = [
        (
            "Output spikes",
            "raster.png",
            "Output-layer spikes of the first test sample: float model, fixed-point twin"
            + (", Lava." if lava else " (Lava not run)."),
        ),
        (
            "Output voltage",
            "voltage.png",
            "Voltage of the labelled class's output neuron; the float membrane is multiplied by the layer's voltage "
            "scale.",
        ),
    ]
    what = f"{r['samples']} test samples x {r['time_steps']} steps deployed to {r['target']}"
    if r.get("qat_epochs"):
        what += f" after {r['qat_epochs']} epochs of quantization-aware fine-tuning on the twin"
    result = f"Accuracy: float {100 * r['float_accuracy']:.2f} %, fixed-point twin {100 * r['twin_accuracy']:.2f} %"
    if lava:
        exact = r["twin_lava_spikes_equal"] and r["twin_lava_voltages_equal"] and r["twin_lava_currents_equal"]
        result += f", Lava {100 * r['lava_accuracy']:.2f} % ({r['lava']['run_config']}); the twin and Lava are " + (
            "bit-exact (spikes, voltages, currents)." if exact else "NOT bit-exact: see the layer table."
        )
    else:
        result += "; Lava was not run (twin only)."
    highlights = [what + ".", result]
    return write_report(out, "Loihi deployment", summary, figures, tables, highlights=highlights)
