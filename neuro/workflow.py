"""The steps behind the CLI: train a config into a run, resume, evaluate, report."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from neuro import config as cfg
from neuro.build import Experiment, build_experiment, count_parameters
from neuro.errors import ConfigError
from neuro.runs import Run
from neuro.trainer import load_checkpoint


def train(config: dict, *, overwrite: bool = False, progress: bool | None = None, echo=print) -> tuple[Run, dict]:
    """Train ``config`` into a new run directory; evaluate on the test split; write the report."""
    exp = build_experiment(config)
    run = Run.create(exp.run.out_dir, exp.run.name, overwrite=overwrite)
    run.write_config(exp.config)
    echo(
        f"run {run.path}: {exp.config['model']['kind']} ({count_parameters(exp.model)} parameters) "
        f"on {exp.data.name}, rule {exp.rule.name}, {exp.train.epochs} epochs"
    )
    trainer = exp.trainer(run, progress=progress, hooks=(_echo_epochs(echo, exp.train.epochs),))
    trainer.fit()
    test = finish(exp, trainer, run)
    echo(f"test accuracy {100 * test['accuracy']:.2f}% (loss {test['loss']:.4f}); report: {run.path / 'report.html'}")
    return run, test


def train_demo_part(config: dict, out_dir: str | os.PathLike, *, echo=print) -> tuple[Run, dict]:
    """Train a demo part's ``config`` into ``out_dir/<run.name>`` (replacing an earlier demo run there)."""
    config = {**config, "run": {**config.get("run", {}), "out_dir": str(out_dir)}}
    return train(config, overwrite=True, echo=echo)


def resume(run_path: str | os.PathLike, *, epochs: int | None = None, progress: bool | None = None, echo=print) -> tuple[Run, dict]:
    """Continue an interrupted (or finished, with more ``epochs``) run from its checkpoint."""
    run = Run.open(run_path)
    config = cfg.load_toml(run.config_path)
    if epochs is not None:
        config.setdefault("train", {})["epochs"] = epochs
    exp = build_experiment(config)
    trainer = exp.trainer(run, progress=progress, hooks=(_echo_epochs(echo, exp.train.epochs),))
    trainer.resume(run.checkpoint_path)
    run.truncate_records_after(trainer.epoch)
    run.write_config(exp.config)
    echo(f"resuming {run.path} after epoch {trainer.epoch} of {exp.train.epochs}")
    trainer.fit()
    test = finish(exp, trainer, run)
    echo(f"test accuracy {100 * test['accuracy']:.2f}% (loss {test['loss']:.4f}); report: {run.path / 'report.html'}")
    return run, test


def finish(exp: Experiment, trainer, run: Run) -> dict:
    test = trainer.evaluate("test")
    run.log({"event": "test", "epoch": trainer.epoch, **test})
    write_report(run, exp)
    return test


def load_run(run_path: str | os.PathLike) -> tuple[Run, Experiment]:
    """Rebuild a run's experiment from its config and load its checkpoint weights."""
    run = Run.open(run_path)
    exp = build_experiment(cfg.load_toml(run.config_path))
    state = load_checkpoint(run.checkpoint_path)
    trainer = exp.trainer(None, progress=False)
    trainer.load_state_dict(state)
    return run, exp


def evaluate(run_path: str | os.PathLike, split: str = "test") -> dict:
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be train, val or test, got '{split}'")
    run, exp = load_run(run_path)
    return exp.trainer(None, progress=False).evaluate(split)


def _echo_epochs(echo, epochs: int):
    """An epoch hook that prints one line per epoch as it ends (not all at the end of training)."""

    def hook(trainer, record: dict) -> None:
        echo(_epoch_line(record, epochs))

    return hook


def _epoch_line(r: dict, epochs: int) -> str:
    parts = [f"epoch {r['epoch']}/{epochs}"]
    for key, label in (("train_loss", "loss"), ("train_accuracy", "acc"), ("val_accuracy", "val acc")):
        if r.get(key) is not None:
            v = r[key]
            parts.append(f"{label} {100 * v:.2f}%" if "acc" in key else f"{label} {v:.4f}")
    if r.get("time_s") is not None:
        parts.append(f"{r['time_s']:.1f} s")
    return "  ".join(parts)


# ----------------------------------------------------------------------- report
@torch.no_grad()
def write_report(run: Run, exp: Experiment) -> Path:
    """Plots (learning curves, spike raster of one test sample, firing-rate histograms) and report.html."""
    from neuro import report

    records = run.records()
    figures = []
    report.plot_learning_curves(records, run.path / "curves.png", title=f"{run.name}: learning curves")
    figures.append(("Learning curves", "curves.png", "Loss and accuracy per epoch (train and validation); dashed: test accuracy."))
    model = exp.model
    model.eval()
    if hasattr(model, "forward_trace"):
        x = exp.data.test.x[:256].to(exp.run.device)
        trace = model.forward_trace(x)
        spikes = {k: v[:, 0].cpu().numpy() for k, v in trace.spikes.items()}
        dt = getattr(getattr(model, "layers", [None])[0], "params", None)
        dt = getattr(dt, "dt", None)
        report.plot_spike_raster(spikes, run.path / "raster.png", dt=dt, title=f"test sample 0 (label {int(exp.data.test.y[0])})")
        figures.append(("Spike raster", "raster.png", "Spikes of every layer for the first test sample."))
        rates = {k: v.float().mean(dim=(0, 1)).cpu().numpy() for k, v in trace.spikes.items() if k != "input"}
        if rates:
            report.plot_rate_histograms(rates, run.path / "rates.png", unit="spikes/step", title="firing rates over 256 test samples")
            figures.append(("Firing rates", "rates.png", "Per-neuron mean spikes per time step, each layer."))
    model.train()
    # Models, rules and substrates (e.g. serial links) expose report data; neuro.report draws it
    # (the section contract: neuro/report/sections.py).
    substrates = {id(s): s for m in model.modules() if (s := getattr(m, "substrate", None)) is not None}
    sections = report.collect_sections((exp.model, exp.rule, *substrates.values()), records, run.path)
    more_figures, extra_tables = report.as_legacy(sections)
    figures.extend(more_figures)
    epochs = [r for r in records if r.get("event") == "epoch"]
    tests = [r for r in records if r.get("event") == "test"]
    summary = {
        "run": run.name,
        "dataset": exp.data.name,
        "model": exp.config["model"]["kind"],
        "rule": exp.rule.name,
        "parameters": count_parameters(model),
        "epochs": len(epochs),
    }
    if epochs and epochs[-1].get("val_accuracy") is not None:
        summary["final val accuracy (%)"] = 100 * epochs[-1]["val_accuracy"]
    if tests:
        summary["test accuracy (%)"] = 100 * tests[-1]["accuracy"]
    if epochs:
        summary["train time (s)"] = float(np.sum([r.get("time_s") or 0.0 for r in epochs]))
    rows = [[r.get("epoch"), r.get("train_loss"), r.get("train_accuracy"), r.get("val_accuracy"), r.get("time_s")] for r in epochs]
    tables = [("Epochs", ["epoch", "train loss", "train acc", "val acc", "time (s)"], rows), *extra_tables]
    return report.write_report(run.path, f"NeuroHIL run {run.name}", summary, figures, tables)
