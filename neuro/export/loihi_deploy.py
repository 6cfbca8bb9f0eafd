"""Deploy a trained run to Loihi: quantize, evaluate on the twin, run on Lava, compare, report.

``deploy_loihi(run_dir, samples=N)`` draws the input spikes once (seeded) and feeds the same
spikes to the float model, the fixed-point twin and Lava, so the three accuracies and the
spike agreements compare like with like.  Results go to ``<run>/deploy-loihi/``:
``network.nir`` + ``fixed_point.json`` + ``fixed_point.npz`` (the deployable network),
``deploy.json`` (every number) and ``report.html`` with its PNGs.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from devices.lava_backend import require_lava_python, run_lava_batch
from neuro.errors import ConfigError
from neuro.export.loihi import LoihiExport, quantize
from neuro.layers.readouts import first_spike, spike_count
from neuro.layers.spiking_mlp import SpikingMLP

TARGETS = ("loihi-sim",)


def float_trace_from_spikes(model, h: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Float model's (spikes, membrane) per layer for given input spikes ``h`` [T, B, n_in]."""
    out = []
    with torch.no_grad():
        for layer in model.layers:
            tr = layer.forward_trace(h)
            out.append((tr.spikes, tr.membrane))
            h = tr.spikes
    return out


def scores_from_spikes(readout: str, spikes: torch.Tensor) -> torch.Tensor:
    """Class scores of the output spikes [T, B, classes] under the model's readout."""
    spikes = spikes.float()
    return first_spike(spikes) if readout == "first_spike" else spike_count(spikes)


def encode_inputs(model, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The model's encoder applied with its own seeded generator: spikes [T, B, n_in] in {0, 1}."""
    g = torch.Generator().manual_seed(seed)
    return model.encoder(x, generator=g)


def deploy_loihi(
    run_path: str | Path,
    *,
    target: str = "loihi-sim",
    samples: int = 100,
    calibration_samples: int = 256,
    clip_percentile: float = 100.0,
    seed: int = 0,
    timeout_s: float | None = None,
    out_dir: str | Path | None = None,
    lava: bool = True,
    qat_epochs: int = 0,
    qat_lr: float = 1e-4,
    echo=print,
) -> dict:
    """Quantize the run's model, run ``samples`` test samples on the twin and on Lava; return the numbers.

    ``lava=False`` stops after the twin (the Lava fields of the result are None).
    ``qat_epochs > 0`` fine-tunes on the twin first (:func:`neuro.layers.loihi.finetune_on_twin`,
    straight-through); the float accuracy stays that of the trained model.
    """
    from neuro.workflow import load_run

    if target not in TARGETS:
        raise ConfigError(f"unknown deployment target '{target}'; choose one of {', '.join(TARGETS)}")
    if samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {samples}")
    if lava:
        require_lava_python()  # fail before the work, not after it
    run, exp = load_run(run_path)
    model = exp.model.cpu().eval()
    if not isinstance(model, SpikingMLP):
        kind = exp.config.get("model", {}).get("kind", type(model).__name__)
        raise ConfigError(f"run {run.path} is a {kind} model; only spiking_mlp runs deploy to Loihi (train one with "
                          "model.kind = \"spiking_mlp\" and [model.lif] reset = \"zero\")")
    out = Path(out_dir) if out_dir is not None else run.path / "deploy-loihi"
    _check_out(out)
    test, train = exp.data.test, exp.data.train
    n = min(samples, len(test.y))
    x, y = test.x[:n], test.y[:n]
    calib = encode_inputs(model, train.x[:calibration_samples], seed + 1)
    export, qreport = quantize(model, calib, clip_percentile=clip_percentile)
    for line in qreport.lines():
        echo(f"  {line}")
    trained = model
    if qat_epochs > 0:
        from neuro.layers.loihi import finetune_on_twin

        trained = copy.deepcopy(model)
        echo(f"quantization-aware fine-tuning on the twin: {qat_epochs} epochs, lr {qat_lr}")
        export = finetune_on_twin(model, export, exp.data, epochs=qat_epochs, lr=qat_lr,
                                  batch_size=exp.train.batch_size, seed=seed, echo=echo)
    export.save(out)

    h = encode_inputs(model, x, seed)
    readout = getattr(model, "readout", "spike_count")
    float_layers = float_trace_from_spikes(trained, h)
    twin = export.run_twin(h, record_state=True)
    n_layers = len(export.layers)
    if lava:
        echo(f"running {n} samples x {h.shape[0]} steps on Lava ({n_layers} layers) in one run ...")
        t0 = time.perf_counter()
        res = run_lava_batch(export, h, record_state=True, timeout_s=timeout_s)
        lava_wall = time.perf_counter() - t0

    def acc(spikes):
        return float((scores_from_spikes(readout, spikes).argmax(1) == y).float().mean())

    result = {
        "run": str(run.path),
        "target": target,
        "samples": n,
        "time_steps": int(h.shape[0]),
        "seed": seed,
        "qat_epochs": qat_epochs,
        "float_accuracy": acc(float_layers[-1][0]),
        "twin_accuracy": acc(twin.spikes[-1]),
        "lava_accuracy": acc(res.spikes[-1]) if lava else None,
        "twin_lava_spikes_equal": all(torch.equal(twin.spikes[k], res.spikes[k]) for k in range(n_layers)) if lava else None,
        "twin_lava_voltages_equal": all(torch.equal(twin.voltages[k], res.voltages[k]) for k in range(n_layers)) if lava else None,
        "twin_lava_currents_equal": all(torch.equal(twin.currents[k], res.currents[k]) for k in range(n_layers)) if lava else None,
        "spike_agreement_twin_lava": [float((twin.spikes[k] == res.spikes[k]).float().mean()) for k in range(n_layers)] if lava else None,
        "spike_agreement_float_twin": [float((float_layers[k][0].bool() == twin.spikes[k]).float().mean()) for k in range(n_layers)],
        "prediction_agreement_float_twin": float((scores_from_spikes(readout, float_layers[-1][0]).argmax(1)
                                                  == scores_from_spikes(readout, twin.spikes[-1]).argmax(1)).float().mean()),
        "lava": {**res.info, "call_wall_s": lava_wall} if lava else None,
        "quantization": qreport.lines(),
        "spec": json.loads(export.spec.to_json()),
    }
    (out / "deploy.json").write_text(json.dumps(result, indent=1))
    _write_report(out, result, export, float_layers, twin, res if lava else None, int(y[0]))
    line = (f"accuracy on {n} test samples: float {100 * result['float_accuracy']:.2f}%, "
            f"twin {100 * result['twin_accuracy']:.2f}%")
    if lava:
        line += (f", Lava {100 * result['lava_accuracy']:.2f}%; twin == Lava: spikes {result['twin_lava_spikes_equal']}, "
                 f"voltages {result['twin_lava_voltages_equal']}, currents {result['twin_lava_currents_equal']}; "
                 f"{res.info['run_config']} in {lava_wall:.1f} s")
    echo(f"{line} -> {out / 'report.html'}")
    return result


def _check_out(out: Path) -> None:
    """ConfigError unless ``out`` is (or can be made) a writable folder; checked before any work."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write the deployment to {out}: {exc.strerror or exc}; the run folder must be a "
                          "writable folder (or pass out_dir=)") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the deployment to {out}: the folder is not writable")


def _write_report(out: Path, r: dict, export: LoihiExport, float_layers, twin, lava, label: int) -> None:
    from neuro import report

    dt = export.spec.dt
    last = len(export.layers) - 1
    raster = {}
    sources = [("float", float_layers[last][0]), ("twin", twin.spikes[last])] + ([("Lava", lava.spikes[last])] if lava else [])
    for name, spikes in sources:
        raster[f"output, {name}"] = spikes[:, 0].float().numpy()
    report.plot_spike_raster(raster, out / "raster.png", dt=dt, title=f"test sample 0 (label {label}): output spikes")
    s = export.spec.layers[last].voltage_scale
    steps = np.arange(twin.voltages[last].shape[0])
    series = {"float x scale": float_layers[last][1][:, 0, label].numpy() * s, "twin": twin.voltages[last][:, 0, label].numpy()}
    if lava:
        series["Lava"] = lava.voltages[last][:, 0, label].numpy()
    report.plot_series(
        steps, series,
        out / "voltage.png", xlabel="time step", ylabel="voltage (Loihi units)",
        title=f"output neuron {label}, sample 0 (threshold {export.spec.layers[last].vth * 64})",
    )
    summary = {k: r[k] for k in ("run", "target", "samples", "time_steps", "twin_lava_spikes_equal",
                                 "twin_lava_voltages_equal", "twin_lava_currents_equal")}
    summary.update({"float accuracy (%)": 100 * r["float_accuracy"], "twin accuracy (%)": 100 * r["twin_accuracy"]})
    if lava:
        summary.update({"Lava accuracy (%)": 100 * r["lava_accuracy"], "Lava run config": r["lava"]["run_config"],
                        "Lava wall time (s)": r["lava"]["call_wall_s"]})
    rows = [[k, lay.n_in, lay.n_out, lay.weight_exp, lay.du, lay.dv, lay.vth, lay.bias_exp,
             r["spike_agreement_float_twin"][k], r["spike_agreement_twin_lava"][k] if lava else None]
            for k, lay in enumerate(export.spec.layers)]
    tables = [
        ("Layers", ["layer", "in", "out", "weight_exp", "du", "dv", "vth", "bias_exp", "spike agreement float/twin",
                    "spike agreement twin/Lava"], rows),
        ("Quantization", ["note"], [[line] for line in r["quantization"]]),
    ]
    figures = [("Output spikes", "raster.png", "Output-layer spikes of the first test sample: float model, fixed-point twin" + (", Lava." if lava else " (Lava not run).")),
               ("Output voltage", "voltage.png", "Voltage of the labelled class's output neuron; the float membrane is multiplied by the layer's voltage scale.")]
    report.write_report(out, "Loihi deployment", summary, figures, tables)


def demo_config(out_dir: str | Path, epochs: int = 5) -> dict:
    """The demo's BPTT digits network made deployable: 64 hidden neurons, reset to zero (as Loihi's LIF)."""
    from neuro.demo import BPTT_DIGITS

    return {**BPTT_DIGITS, "run": {"name": "demo-loihi", "seed": 0, "out_dir": str(out_dir)},
            "model": {**BPTT_DIGITS["model"], "hidden": [64], "lif": {"reset": "zero"}},
            "train": {**BPTT_DIGITS["train"], "epochs": epochs}}


def demo_part(out_dir: Path, echo=print) -> str:
    """``neuro demo`` part: train :func:`demo_config`, deploy 50 test samples to Lava (twin only without .venv-lava)."""
    from devices.lava_env import lava_status
    from neuro import workflow

    config = demo_config(out_dir)
    run, _ = workflow.train(config, overwrite=True, echo=echo)
    ok, detail = lava_status()
    if not ok:
        echo(f"Lava is not available ({detail}); deploying to the fixed-point twin only")
    r = deploy_loihi(run.path, samples=50, lava=ok, echo=echo)
    line = f"Loihi deployment, digits: float {100 * r['float_accuracy']:.1f}%, twin {100 * r['twin_accuracy']:.1f}%"
    if ok:
        return line + f", Lava {100 * r['lava_accuracy']:.1f}% (bit-exact with the twin: {r['twin_lava_spikes_equal'] and r['twin_lava_voltages_equal']})"
    return line + f"; Lava skipped: {detail}"
