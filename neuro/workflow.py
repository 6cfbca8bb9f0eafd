"""The steps behind the CLI: train a config into a run, resume, evaluate, report."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from devices.serial.driver import LINK_FAULT_KINDS as FAULT_KINDS
from neuro import config as cfg
from neuro.build import Experiment, build_experiment, count_parameters
from neuro.errors import ConfigError
from neuro.runs import Run
from neuro.trainer import load_checkpoint


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``args[0]`` is the command that continues it (the CLI prints it)."""


def _teed(echo, run: Run):
    """``echo`` that also appends each line to the run's ``console.log``."""

    def out(line: str = "") -> None:
        echo(line)
        with open(run.path / "console.log", "a", encoding="utf-8") as fh:
            fh.write(f"{line}\n")

    return out


def _fit(trainer, run: Run) -> None:
    try:
        trainer.fit()
    except BaseException as exc:
        write_failure_report(run, trainer, exc)
        if isinstance(exc, KeyboardInterrupt):
            done = f"after epoch {trainer.epoch}" if trainer.epoch else "before its first checkpoint"
            raise RunInterrupted(f"interrupted {done}; continue with `neuro train --resume {run.path}`") from None
        raise


def write_failure_report(run: Run, trainer, exc: BaseException) -> None:
    """Keep the evidence of a run that failed or was interrupted: each serial link's statistics and events
    (``serial_link_*.json[l]``, ``serial_failure.json``) and a ``report.html`` that says why it stopped.
    Talks to no device (a failing link must not fail the report); never hides the run's own error."""
    from devices.serial.driver import write_failure_evidence
    from neuro import report

    try:
        substrates = list(
            {id(s): s for m in trainer.model.modules() if (s := getattr(m, "substrate", None)) is not None}.values()
        )
        if any(callable(getattr(s, "link_stats", None)) for s in substrates):
            write_failure_evidence(substrates, run.path, exc)
        sections = report.collect_sections(substrates, run.records(), run.path)
        figures, tables = report.as_legacy(sections)
        what = "was interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        highlights = [
            f"The run {what} during epoch {trainer.epoch + 1} ({trainer.epoch} epochs completed; the last "
            f"checkpoint holds epoch {trainer.epoch}).",
            f"Reason: {reason}",
        ]
        summary = {
            "run": run.name,
            "stopped": what,
            "error": f"{type(exc).__name__}: {reason}",
            "epochs completed": trainer.epoch,
        }
        report.write_report(
            run.path, f"NeuroHIL run {run.name} (stopped)", summary, figures, tables, highlights=highlights
        )
    except Exception as inner:  # noqa: BLE001 - evidence is best effort; the run's own error is what the user sees
        import logging

        logging.getLogger("neuro").warning("could not write the failure report of %s: %s", run.path, inner)


def train(config: dict, *, overwrite: bool = False, progress: bool | None = None, echo=print) -> tuple[Run, dict]:
    """Train ``config`` into a new run directory; evaluate on the test split; write the report."""
    from neuro import provenance

    exp = build_experiment(config)
    run = Run.create(exp.run.out_dir, exp.run.name, overwrite=overwrite)
    (run.path / "console.log").unlink(missing_ok=True)
    echo = _teed(echo, run)
    run.write_config(exp.config)
    run.write_provenance(provenance.collect(exp.run.seed))
    echo(
        f"run {run.path}: {exp.config['model']['kind']} ({count_parameters(exp.model)} parameters) "
        f"on {exp.data.name}, rule {exp.rule.name}, {exp.train.epochs} epochs"
    )
    trainer = exp.trainer(run, progress=progress, hooks=_hooks(exp, run, echo))
    _fit(trainer, run)
    test = finish(exp, trainer, run)
    echo(f"test accuracy {100 * test['accuracy']:.2f}% (loss {test['loss']:.4f}); report: {run.path / 'report.html'}")
    return run, test


def resume(
    run_path: str | os.PathLike,
    *,
    epochs: int | None = None,
    progress: bool | None = None,
    echo=print,
    out_dir: str | os.PathLike | None = None,
) -> tuple[Run, dict]:
    """Continue an interrupted (or finished, with more ``epochs``) run from its checkpoint.

    ``run_path`` is a run directory or a run name looked up under ``out_dir`` (default ``runs``).
    """
    run = Run.find(run_path, out_dir)
    echo = _teed(echo, run)
    config = cfg.load_toml(run.config_path)
    if epochs is not None:
        config.setdefault("train", {})["epochs"] = epochs
    exp = build_experiment(config)
    trainer = exp.trainer(run, progress=progress, hooks=_hooks(exp, run, echo))
    trainer.resume(run.checkpoint_path)
    if trainer.epoch >= exp.train.epochs:
        echo(
            f"{run.path} already finished its {exp.train.epochs} epochs; to train further pass a larger total, "
            f"e.g. `neuro train --resume {run.path} --epochs {exp.train.epochs + 10}`; re-testing the final network"
        )
    run.truncate_records_after(trainer.epoch)
    run.write_config(exp.config)
    if trainer.epoch < exp.train.epochs:
        echo(f"resuming {run.path} after epoch {trainer.epoch} of {exp.train.epochs}")
    _fit(trainer, run)
    test = finish(exp, trainer, run)
    echo(f"test accuracy {100 * test['accuracy']:.2f}% (loss {test['loss']:.4f}); report: {run.path / 'report.html'}")
    return run, test


def retarget(before: dict, after: dict) -> tuple[dict, list[str]]:
    """When overrides switch ``rule.name`` or ``model.kind``, drop the settings of the old rule (kind) that the
    new one does not have; return the new config and one note per dropped key."""
    import dataclasses

    from neuro.registry import MODEL_KINDS, RULES

    notes = []
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in after.items()}
    for section, key, registry, default in (
        ("rule", "name", RULES, "bptt"),
        ("model", "kind", MODEL_KINDS, "spiking_mlp"),
    ):
        old = (before.get(section) or {}).get(key, default)
        new = (out.get(section) or {}).get(key, default)
        if old == new or not isinstance(out.get(section), dict) or new not in registry:
            continue
        fields = {f.name for f in dataclasses.fields(registry.get(new).spec)}
        for name in sorted(set(out[section]) - fields):
            if name in (before.get(section) or {}):
                del out[section][name]
                notes.append(
                    f"{section}.{key} is now '{new}' (was '{old}'): dropped {section}.{name}, which '{new}' "
                    "does not have"
                )
    return out, notes


def finish(exp: Experiment, trainer, run: Run) -> dict:
    test = trainer.evaluate("test")
    run.log({"event": "test", "epoch": trainer.epoch, **test})
    write_report(run, exp)
    return test


def load_run(run_path: str | os.PathLike) -> tuple[Run, Experiment]:
    """Rebuild a run's experiment from its config and load its checkpoint weights."""
    run = Run.find(run_path)  # a run directory or a run name under runs/
    exp = build_experiment(cfg.load_toml(run.config_path))
    state = load_checkpoint(run.checkpoint_path)
    trainer = exp.trainer(None, progress=False)
    trainer.load_state_dict(state)
    return run, exp


def evaluate(run_path: str | os.PathLike, split: str = "test", *, progress: bool = False) -> dict:
    """Accuracy and loss of a run's checkpoint on ``split``: the same numbers the trainer logged (seeded inputs)."""
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be train, val or test, got '{split}'")
    run, exp = load_run(run_path)
    return exp.trainer(None, progress=progress).evaluate(split)  # load_run loaded the weights into exp.model


def _write_csv(path: Path, records: list[dict]) -> None:
    """The epoch records as a CSV table (one row per epoch, one column per key) for spreadsheets and pandas."""
    import csv

    keys = list(dict.fromkeys(k for r in records for k in r))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(records)


def _flatten(d: dict, prefix: str = ""):
    for key, value in d.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value




def _device_fault_hook(model, echo):
    """An epoch hook that prints one line per device whose link recovered from faults during the epoch
    (each fault is logged at INFO, shown with -v; all of them are in the report's link tables)."""
    found = {
        id(s): s for m in model.modules() if callable(getattr(s := getattr(m, "substrate", None), "link_stats", None))
    }
    devices = list(found.values())
    last = {id(d): {k: int(d.link_stats().get(k) or 0) for k in FAULT_KINDS} for d in devices}

    def hook(trainer, record: dict) -> None:
        for d in devices:
            now = {k: int(d.link_stats().get(k) or 0) for k in FAULT_KINDS}
            delta = {k: now[k] - last[id(d)][k] for k in FAULT_KINDS if now[k] > last[id(d)][k]}
            last[id(d)] = now
            if delta:
                detail = ", ".join(f"{n} {k}" for k, n in delta.items())
                echo(
                    f"  serial {getattr(d, 'port', '?')}: recovered from {sum(delta.values())} link faults "
                    f"in epoch {record['epoch']} ({detail})"
                )

    return hook


def _tensorboard_hook(run: Run):
    """An epoch hook writing the record's numbers as TensorBoard scalars (``runs/<name>/tensorboard/``)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "train.tensorboard = true needs the tensorboard package: "
            ".venv/bin/pip install tensorboard (or set it to false)"
        ) from None
    writer = SummaryWriter(log_dir=str(run.path / "tensorboard"))

    def hook(trainer, record: dict) -> None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("epoch", "event"):
                writer.add_scalar(key, value, record["epoch"])
        writer.flush()

    return hook


def _hooks(exp: Experiment, run: Run, echo) -> tuple:
    hooks = [_echo_epochs(echo, exp.train.epochs), _device_fault_hook(exp.model, echo)]
    if exp.train.tensorboard:
        hooks.append(_tensorboard_hook(run))
    return tuple(hooks)


def _echo_epochs(echo, epochs: int):
    """An epoch hook that prints one line per epoch as it ends (not all at the end of training)."""

    def hook(trainer, record: dict) -> None:
        echo(_epoch_line(record, epochs))

    return hook


def _epoch_line(r: dict, epochs: int) -> str:
    parts = [f"epoch {r['epoch']}/{epochs}"]
    # rules name their training loss differently (bptt: loss; ff: ff_loss); show the one logged
    loss_key = next((k for k in ("train_loss", "train_ff_loss") if r.get(k) is not None), "train_loss")
    label_of = {"train_ff_loss": "ff loss"}
    for key, label in (
        (loss_key, label_of.get(loss_key, "loss")),
        ("train_accuracy", "acc"),
        ("val_accuracy", "val acc"),
    ):
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
    _write_csv(run.path / "metrics.csv", [r for r in records if r.get("event") == "epoch"])
    figures = []
    report.plot_learning_curves(records, run.path / "curves.png", title=f"{run.name}: learning curves")
    figures.append(
        ("Learning curves", "curves.png", "Loss and accuracy per epoch (train and validation); dashed: test accuracy.")
    )
    model = exp.model
    model.eval()
    if hasattr(model, "forward_trace"):
        x = exp.data.test.x[:256].to(exp.run.device)
        trace = model.forward_trace(x)
        names = model.display_names() if hasattr(model, "display_names") else {}
        spikes = {names.get(k, k): v[:, 0].cpu().numpy() for k, v in trace.spikes.items()}
        dt = getattr(getattr(model, "layers", [None])[0], "params", None)
        dt = getattr(dt, "dt", None)
        report.plot_spike_raster(
            spikes, run.path / "raster.png", dt=dt, title=f"test sample 0 (label {int(exp.data.test.y[0])})"
        )
        figures.append(("Spike raster", "raster.png", "Spikes of every layer for the first test sample."))
        rates = {
            names.get(k, k): v.float().mean(dim=(0, 1)).cpu().numpy() for k, v in trace.spikes.items() if k != "input"
        }
        if rates:
            report.plot_rate_histograms(
                rates, run.path / "rates.png", unit="spikes/step", title="firing rates over 256 test samples"
            )
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
    from neuro.provenance import summary_rows

    summary.update(summary_rows(run.provenance()))

    def pct(v):
        return None if v is None else 100 * v

    ff = any(r.get("train_loss") is None and r.get("train_ff_loss") is not None for r in epochs)
    rows = [
        [
            r.get("epoch"),
            r.get("train_ff_loss" if ff else "train_loss"),
            pct(r.get("train_accuracy")),
            r.get("val_loss"),
            pct(r.get("val_accuracy")),
            r.get("time_s"),
        ]
        for r in epochs
    ]
    config_rows = [[key, value] for key, value in _flatten(exp.config)]
    tables = [
        (
            "Epochs",
            [
                "epoch",
                "train FF loss" if ff else "train loss",
                "train acc (%)",
                "val loss (cross-entropy)",
                "val acc (%)",
                "time (s)",
            ],
            rows,
        ),
        *extra_tables,
        ("Configuration (resolved; config.toml)", ["key", "value"], config_rows),
    ]
    highlights = _highlights(exp, epochs, tests, substrates.values())
    return report.write_report(run.path, f"NeuroHIL run {run.name}", summary, figures, tables, highlights=highlights)


def _highlights(exp: Experiment, epochs: list[dict], tests: list[dict], substrates) -> list[str]:
    """The sentences at the top of a run report: what ran, the result, device faults."""
    lines = [
        f"{exp.config['model']['kind']} with {count_parameters(exp.model)} parameters trained by rule "
        f"{exp.rule.name} on {exp.data.name} for {len(epochs)} epochs (seed {exp.run.seed})."
    ]
    if tests:
        lines.append(f"Test accuracy {100 * tests[-1]['accuracy']:.2f} % on {tests[-1].get('count', '?')} samples.")
    for sub in substrates:
        stats = getattr(sub, "link_stats", None)
        if not callable(stats):
            continue
        st = stats()
        kinds = FAULT_KINDS
        faults = {k: int(st.get(k) or 0) for k in kinds if st.get(k)}
        port = getattr(sub, "port", "?")
        if faults:
            detail = ", ".join(f"{n} {k}" for k, n in faults.items())
            lines.append(
                f"Serial device {port}: {int(st.get('samples') or 0)} samples measured; "
                f"recovered from {sum(faults.values())} link faults ({detail})."
            )
        else:
            lines.append(f"Serial device {port}: {int(st.get('samples') or 0)} samples measured; no link faults.")
    return lines
