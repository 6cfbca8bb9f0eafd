"""Deploy a trained run to Loihi: quantize, evaluate on the twin, run on a target, compare, report.

A workflow-level module: it loads a run (:func:`neuro.workflow.load_run`), converts the model
with :mod:`neuro.export.loihi` (which never trains), optionally fine-tunes on the twin
(:mod:`neuro.deploy.qat`), runs the deploy target (one entry of :data:`neuro.registry.DEPLOY_TARGETS`,
e.g. ``loihi-sim``: Lava's bit-accurate simulation out of process) and returns a
:class:`LoihiDeployment`.

``deploy_loihi(run_dir, samples=N)`` draws the input spikes once (seeded) and feeds the same
spikes to the float model, the fixed-point twin and Lava, so the three accuracies and the
spike agreements compare like with like.  Results go to ``<run>/deploy-loihi/``:
``network.nir`` + ``fixed_point.json`` + ``fixed_point.npz`` (the deployable network),
``deploy.json`` (every number) and ``report.html`` with its PNGs.  Each target writes its own
folder, ``<run>/deploy-loihi/<target>/`` (``twin`` for ``--twin-only``), so deploying to one
target never overwrites another's results.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import torch

from devices.lava_backend import require_lava_python, run_lava_batch
from neuro.errors import ConfigError, IncompatibleError
from neuro.export.loihi import quantize
from neuro.layers.chain import SpikingChain
from neuro.layers.spiking_mlp import SpikingMLP
from neuro.progress import ticking
from neuro.registry import DEPLOY_TARGETS, READOUTS
from neuro.report.loihi import write_deployment_report
from neuro.workflow import load_run


@DEPLOY_TARGETS.register("loihi-sim", needs_lava=True)
def run_on_lava(export, spikes: torch.Tensor, *, timeout_s: float | None = None):
    """Lava's ``Loihi2SimCfg(select_tag="fixed_pt")`` (or Loihi 2 hardware when lava-loihi is installed),
    all samples in one run in ``.venv-lava``; returns spikes, currents and voltages per layer and ``info``."""
    return run_lava_batch(export, spikes, record_state=True, timeout_s=timeout_s)


def _check_out(out: Path) -> None:
    """ConfigError unless ``out`` is (or can be made) a writable folder; checked before any work."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the deployment to {out}: {exc.strerror or exc}; the run folder must be a "
            "writable folder (or pass out_dir=)"
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the deployment to {out}: the folder is not writable")


def float_trace_from_spikes(model, h: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Float model's (spikes, membrane) per layer for given input spikes ``h`` [T, B, n_in]."""
    with torch.no_grad():
        return [(tr.spikes, tr.membrane) for tr in SpikingChain(list(model.layers)).forward_traces(h)]


def scores_from_spikes(readout: str, spikes: torch.Tensor) -> torch.Tensor:
    """Class scores of the output spikes [T, B, classes] under the model's readout (one Loihi can compute)."""
    entry = READOUTS.get(readout, where="model.readout")
    if not entry.meta.get("loihi"):
        raise IncompatibleError(
            f"readout '{readout}' cannot be computed from Loihi's output spikes; "
            f"use one of {', '.join(e.name for e in READOUTS.entries() if e.meta.get('loihi'))}"
        )
    return entry.obj(spikes.float(), None)


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
    runner = DEPLOY_TARGETS.get(target, where="--target")
    if samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {samples}")
    if lava and runner.meta.get("needs_lava"):
        require_lava_python()  # fail before the work, not after it
    run, exp = load_run(run_path)
    model = exp.model.cpu().eval()
    if not isinstance(model, SpikingMLP):
        kind = exp.config.get("model", {}).get("kind", type(model).__name__)
        raise ConfigError(
            f"run {run.path} is a {kind} model; only spiking_mlp runs deploy to Loihi (train one with "
            'model.kind = "spiking_mlp" and [model.lif] reset = "zero")'
        )
    out = Path(out_dir) if out_dir is not None else run.path / "deploy-loihi" / (target if lava else "twin")
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
        from neuro.deploy.qat import finetune_on_twin

        trained = copy.deepcopy(model)
        echo(f"quantization-aware fine-tuning on the twin: {qat_epochs} epochs, lr {qat_lr}")
        export = finetune_on_twin(
            model, export, exp.data, epochs=qat_epochs, lr=qat_lr, batch_size=exp.train.batch_size, seed=seed, echo=echo
        )
    export.save(out)

    h = encode_inputs(model, x, seed)
    readout = getattr(model, "readout", "spike_count")
    float_layers = float_trace_from_spikes(trained, h)
    twin = export.run_twin(h, record_state=True)
    n_layers = len(export.layers)
    if lava:
        echo(f"running {n} samples x {h.shape[0]} steps on {target} ({n_layers} layers) in one run ...")
        t0 = time.perf_counter()
        # Lava reports nothing while it runs: show the elapsed time against an estimate (about 1000 steps/s)
        with ticking(f"{target} run", expected_s=5 + n * h.shape[0] / 1000):
            res = runner.obj(export, h, timeout_s=timeout_s)
        lava_wall = time.perf_counter() - t0

    def acc(spikes):
        return float((scores_from_spikes(readout, spikes).argmax(1) == y).float().mean())

    result = {
        "run": str(run.path),
        "target": target if lava else "twin",
        "samples": n,
        "time_steps": int(h.shape[0]),
        "seed": seed,
        "qat_epochs": qat_epochs,
        "float_accuracy": acc(float_layers[-1][0]),
        "twin_accuracy": acc(twin.spikes[-1]),
        "lava_accuracy": acc(res.spikes[-1]) if lava else None,
        "twin_lava_spikes_equal": all(torch.equal(twin.spikes[k], res.spikes[k]) for k in range(n_layers))
        if lava
        else None,
        "twin_lava_voltages_equal": all(torch.equal(twin.voltages[k], res.voltages[k]) for k in range(n_layers))
        if lava
        else None,
        "twin_lava_currents_equal": all(torch.equal(twin.currents[k], res.currents[k]) for k in range(n_layers))
        if lava
        else None,
        "spike_agreement_twin_lava": [float((twin.spikes[k] == res.spikes[k]).float().mean()) for k in range(n_layers)]
        if lava
        else None,
        "spike_agreement_float_twin": [
            float((float_layers[k][0].bool() == twin.spikes[k]).float().mean()) for k in range(n_layers)
        ],
        "prediction_agreement_float_twin": float(
            (
                scores_from_spikes(readout, float_layers[-1][0]).argmax(1)
                == scores_from_spikes(readout, twin.spikes[-1]).argmax(1)
            )
            .float()
            .mean()
        ),
        "lava": {**res.info, "call_wall_s": lava_wall} if lava else None,
        "quantization": qreport.lines(),
        "spec": json.loads(export.spec.to_json()),
    }
    (out / "deploy.json").write_text(json.dumps(result, indent=1))
    write_deployment_report(out, result, export, float_layers, twin, res if lava else None, int(y[0]))
    line = (
        f"accuracy on {n} test samples: float {100 * result['float_accuracy']:.2f}%, "
        f"twin {100 * result['twin_accuracy']:.2f}%"
    )
    if lava:
        line += (
            f", Lava {100 * result['lava_accuracy']:.2f}%; twin == Lava: spikes {result['twin_lava_spikes_equal']}, "
            f"voltages {result['twin_lava_voltages_equal']}, currents {result['twin_lava_currents_equal']}; "
            f"{res.info['run_config']} in {lava_wall:.1f} s"
        )
    echo(f"{line} -> {out / 'report.html'}")
    return result
