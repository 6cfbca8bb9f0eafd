"""Sweeps over settings and seeds: ``neuro sweep CONFIG --grid 'optim.lr=[1e-3,3e-3]' --seeds 0-4``.

A sweep is the Cartesian product of the ``--grid`` lists (each ``section.key=[v1, v2, ...]``) times
the seeds.  Every trial is an ordinary run (``workflow.train`` of the config with the setting's
overrides and ``run.seed``), written to ``<out>/<sweep>/trials/<setting>-seed<k>/`` on the machine
that ran it.  Trials run

- on a local process pool (default; ``workers`` processes, one torch thread each), or
- on a Ray cluster with Ray Tune (``ray_address``: ``auto``, ``local`` for a new local instance,
  ``HOST:6379`` or ``ray://HOST:10001``; one CPU per trial; ``pip install 'neurohil[ray]'``).

Results: ``<out>/<sweep>/trials.jsonl`` (one record per trial: setting, seed, test and validation
accuracy, final training loss, wall time, run directory), ``summary.csv`` (one row per setting: the
mean and the sample standard deviation ``s = sqrt(sum (a_i - mean)^2 / (n - 1))`` over the seeds,
and the minimum and maximum), and ``report.html`` with both tables and a plot of test accuracy
against setting (mean, error bars +- s).  The setting with the best mean validation accuracy (test
accuracy when there is no validation split) is marked.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from neuro import config as cfg
from neuro.errors import ConfigError, NeuroError

SWEEP_METRICS = ("test_accuracy", "val_accuracy", "train_loss", "time_s")


@dataclass(frozen=True)
class Trial:
    index: int
    setting: tuple[tuple[str, object], ...]  # ((key, value), ...) in --grid order
    seed: int

    @property
    def label(self) -> str:
        return setting_label(self.setting)

    @property
    def name(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", self.label) or "base"
        return f"{safe}-seed{self.seed}"


def setting_label(setting) -> str:
    return ",".join(f"{k}={_fmt(v)}" for k, v in setting) or "(config)"


def _fmt(v) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def parse_grid(items: list[str]) -> list[tuple[str, list]]:
    """``['optim.lr=[1e-3,3e-3]', 'model.hidden=[[64],[128]]']`` -> ``[(key, values), ...]``."""
    grid = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key.count(".") < 1:
            raise ConfigError(f"--grid '{item}' must be section.key=[v1, v2, ...], e.g. --grid 'optim.lr=[1e-3,3e-3]'")
        values = cfg.parse_value(text.strip())
        if not isinstance(values, list) or not values:
            raise ConfigError(f"--grid '{item}': the right side must be a non-empty TOML list, e.g. [1e-3, 3e-3]")
        if key in dict(grid):
            raise ConfigError(f"--grid names '{key}' twice; give all its values in one list")
        grid.append((key, values))
    return grid


def parse_seeds(text: str) -> list[int]:
    """``'0-4'`` -> [0, 1, 2, 3, 4]; ``'0,3,7'`` -> [0, 3, 7]; ``'3'`` -> [3]."""
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if re.fullmatch(r"\d+-\d+", part):
                lo, hi = (int(p) for p in part.split("-"))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"--seeds '{text}' must be a range 0-4 or a list 0,3,7 of non-negative integers") from None
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds '{text}' repeats a seed or has a negative one")
    return seeds


def trials_of(grid: list[tuple[str, list]], seeds: list[int]) -> list[Trial]:
    keys = [k for k, _ in grid]
    out = []
    for combo in itertools.product(*[values for _, values in grid]):
        for seed in seeds:
            out.append(Trial(len(out), tuple(zip(keys, combo)), seed))
    return out


def trial_config(base: dict, trial: Trial, trials_dir: str) -> dict:
    config = cfg.apply_overrides(base, [])  # a deep copy
    for key, value in trial.setting:
        node = config
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--grid {key}: '{p}' is a value, not a table")
        node[last] = value
    run = config.setdefault("run", {})
    run.update({"seed": trial.seed, "name": trial.name, "out_dir": trials_dir, "progress": False})
    return config


def stopped_trial(config: dict) -> Path | None:
    """The run directory of an earlier trial of ``config`` that has a checkpoint (stopped, or finished), else None.

    Its saved config must agree with ``config`` (:func:`neuro.config.agrees_with`): a trial started with
    other settings under the same name is trained again from epoch 0.
    """
    path = Path(config["run"].get("out_dir", "runs")) / config["run"]["name"]
    if not ((path / "checkpoint.pt").is_file() and (path / "config.toml").is_file()):
        return None
    return path if cfg.agrees_with(config, cfg.load_toml(path / "config.toml")) else None


def run_trial(config: dict, threads: int = 1, resume: bool = True) -> dict:
    """Train one trial's config (in this process); the numbers the sweep table collects.

    ``resume``: a trial of the same config with a checkpoint continues after its last finished epoch (a finished
    one is only tested again), so a sweep that was stopped goes on where it was; ``False``: train from epoch 0.
    """
    import torch

    from neuro import workflow

    torch.set_num_threads(max(1, int(threads)))
    start = time.perf_counter()
    quiet = lambda *a, **k: None  # noqa: E731
    earlier = stopped_trial(config) if resume else None
    if earlier is not None:
        run, test = workflow.resume(earlier, progress=False, echo=quiet)
    else:
        run, test = workflow.train(config, overwrite=True, progress=False, echo=quiet)
    epochs = [r for r in run.records() if r.get("event") == "epoch"]
    last = epochs[-1] if epochs else {}
    train_loss = last.get("train_loss", last.get("train_ff_loss"))
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "val_accuracy": last.get("val_accuracy"),
            "train_loss": train_loss, "time_s": time.perf_counter() - start, "run_dir": str(run.path),
            "resumed": earlier is not None}


def _trial_entry(payload: tuple[dict, int, bool]) -> dict:  # a top-level function, for the process pool
    config, threads, resume = payload
    return run_trial(config, threads, resume)


# ------------------------------------------------------------------ executors
def run_local(configs: list[dict], workers: int, threads: int = 1, on_result=None, resume: bool = True) -> list[dict]:
    """Run the trial configs on a pool of ``workers`` processes (``spawn``); results in trial order."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results: list[dict | None] = [None] * len(configs)
    if workers <= 1:
        for k, c in enumerate(configs):
            results[k] = _safe(lambda c=c: run_trial(c, threads, resume))
            if on_result:
                on_result(k, results[k])
        return results  # type: ignore[return-value]
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_trial_entry, (c, threads, resume)): k for k, c in enumerate(configs)}
        for fut in as_completed(futures):
            k = futures[fut]
            results[k] = _safe(fut.result)
            if on_result:
                on_result(k, results[k])
    return results  # type: ignore[return-value]


def _safe(fn) -> dict:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one failed trial is a row of the table, not the end of the sweep
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {"error": f"{type(exc).__name__}: {first}"}


def _ray_trainable(params: dict) -> dict:
    """Ray Tune function trainable: ``params['config']`` is the whole trial config."""
    return _safe(lambda: run_trial(params["config"], params.get("threads", 1), params.get("resume", True)))


def run_ray(configs: list[dict], address: str | None, storage: Path, threads: int = 1,
            resume: bool = True) -> list[dict]:
    """Run the trial configs as one Ray Tune grid (one CPU per trial); results in trial order."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise NeuroError("--ray needs Ray Tune: pip install 'ray[tune]' (or the neurohil[ray] extra)") from None
    if not ray.is_initialized():
        try:
            ray.init(address=None if address in (None, "", "local") else address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise NeuroError(f"cannot connect to the Ray cluster at '{address}' ({first}); "
                             f"start it with `ray start --head`") from None
    space = {"config": tune.grid_search(configs), "threads": threads, "resume": resume}
    tuner = tune.Tuner(
        tune.with_resources(_ray_trainable, {"cpu": max(1, threads)}),
        param_space=space,
        run_config=tune.RunConfig(storage_path=str(storage.resolve()), name="ray", verbose=0),
    )
    grid = tuner.fit()
    by_name = {}
    for result in grid:
        cfg_run = result.config["config"]["run"]
        keys = ("test_accuracy", "test_loss", "val_accuracy", "train_loss", "time_s", "run_dir", "error")
        metrics = {k: result.metrics.get(k) for k in keys if result.metrics.get(k) is not None}
        if result.error is not None and "error" not in metrics:
            metrics["error"] = str(result.error).strip().splitlines()[0]
        by_name[cfg_run["name"]] = metrics
    return [by_name.get(c["run"]["name"], {"error": "no result from Ray"}) for c in configs]


# ------------------------------------------------------------------ the sweep
def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1; None for a single value) of the finite values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def summarize(trials: list[Trial], results: list[dict]) -> list[dict]:
    """One row per setting: n, failures, and mean/std/min/max of every metric in SWEEP_METRICS."""
    rows = []
    settings = list(dict.fromkeys(t.setting for t in trials))
    for setting in settings:
        rs = [r for t, r in zip(trials, results) if t.setting == setting]
        ok = [r for r in rs if "error" not in r]
        row = {"setting": setting_label(setting), "n": len(ok), "failed": len(rs) - len(ok)}
        for key in SWEEP_METRICS:
            vals = [r.get(key) for r in ok if r.get(key) is not None]
            m, s = mean_std(vals)
            row[f"{key}_mean"], row[f"{key}_std"] = m, s
            row[f"{key}_min"] = min(vals) if vals else None
            row[f"{key}_max"] = max(vals) if vals else None
        rows.append(row)
    key = "val_accuracy_mean" if any(r["val_accuracy_mean"] is not None for r in rows) else "test_accuracy_mean"
    scored = [r for r in rows if r[key] is not None]
    if scored:
        max(scored, key=lambda r: r[key])["best"] = True
    return rows


def sweep(base: dict, grid_items: list[str], seeds_text: str, *, name: str = "sweep", out_dir: str | None = None,
          workers: int | None = None, ray_address: str | None = None, threads: int = 1, echo=print,
          resume: bool = True) -> dict:
    """Run the sweep, write trials.jsonl, summary.csv and report.html; return {trials, summary, path}.

    ``resume``: trials of the same settings that an earlier, stopped sweep left with a checkpoint continue after
    their last finished epoch (see :func:`run_trial`); ``False`` trains every trial from epoch 0.
    """
    from neuro.build import resolve

    grid = parse_grid(grid_items)
    seeds = parse_seeds(seeds_text)
    trials = trials_of(grid, seeds)
    root = Path(out_dir or base.get("run", {}).get("out_dir", "runs")) / name
    root.mkdir(parents=True, exist_ok=True)
    configs = [trial_config(base, t, str(root / "trials")) for t in trials]
    for t, c in zip(trials, configs):  # every setting is checked before anything trains
        try:
            resolve(c)
        except ConfigError as exc:
            raise ConfigError(f"sweep setting {t.label}: {exc}") from None
    where = f"Ray cluster {ray_address}" if ray_address else f"{workers or 1} local processes"
    echo(f"sweep {root}: {len(trials)} trials ({len(trials) // len(seeds)} settings x {len(seeds)} seeds) on {where}")
    if ray_address:
        results = run_ray(configs, ray_address, root, threads, resume)
    else:
        def progress(k, r):
            status = r.get("error") or f"test accuracy {100 * r['test_accuracy']:.2f}%"
            echo(f"  trial {k + 1}/{len(trials)} {trials[k].label} seed {trials[k].seed}: {status}")

        results = run_local(configs, workers or 1, threads, on_result=progress, resume=resume)
    records = [{"trial": t.index, "setting": dict(t.setting), "label": t.label, "seed": t.seed, **r}
               for t, r in zip(trials, results)]
    with open(root / "trials.jsonl", "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    summary = summarize(trials, results)
    write_summary_csv(root / "summary.csv", summary)
    curves = learning_curves(records)
    write_curves_csv(root / "curves.csv", curves)
    write_sweep_report(root, name, grid, seeds, records, summary, where, curves)
    for row in summary:
        m, s = row["test_accuracy_mean"], row["test_accuracy_std"]
        shown = "failed" if m is None else f"{100 * m:.2f}%" + ("" if s is None else f" +- {100 * s:.2f}")
        echo(f"  {row['setting']}: test accuracy {shown} over {row['n']} seeds{'  (best)' if row.get('best') else ''}")
    echo(f"report: {root / 'report.html'}")
    return {"trials": records, "summary": summary, "path": root}


def write_summary_csv(path: Path, rows: list[dict]) -> Path:
    stats = [f"{k}_{s}" for k in SWEEP_METRICS for s in ("mean", "std", "min", "max")]
    fields = ["setting", "n", "failed", *stats, "best"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") if r.get(k) is not None else "" for k in fields})
    return path


CURVE_FIELDS = ("label", "seed", "epoch", "val_accuracy", "train_loss")


def learning_curves(records: list[dict]) -> list[dict]:
    """Per-epoch rows ``{label, seed, epoch, val_accuracy, train_loss}`` of every trial, read from the
    ``epoch`` records of its run (``val_accuracy`` is None without a validation split; ``train_loss`` is the
    rule's training loss, FF's ``train_ff_loss`` for forward-forward)."""
    from neuro.runs import Run

    rows = []
    for rec in records:
        if not rec.get("run_dir") or not Path(rec["run_dir"]).is_dir():
            continue
        for r in Run.open(rec["run_dir"]).records():
            if r.get("event") == "epoch":
                rows.append({"label": rec["label"], "seed": rec["seed"], "epoch": r.get("epoch"),
                             "val_accuracy": r.get("val_accuracy"),
                             "train_loss": r.get("train_loss", r.get("train_ff_loss"))})
    return rows


def write_curves_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CURVE_FIELDS))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_sweep_report(root: Path, name: str, grid, seeds, records: list[dict], summary: list[dict],
                       where: str, curves: list[dict] | None = None) -> Path:
    from neuro.report import write_report

    figures = []
    if any(r["test_accuracy_mean"] is not None for r in summary):
        _plot_settings(root / "sweep.png", summary)
        figures.append(("Test accuracy per setting", "sweep.png",
                        "Mean over seeds; error bars: sample standard deviation over seeds (n - 1)."))
    if curves:
        what = _plot_curves(root / "curves.png", curves)
        figures.append(("Learning curves", "curves.png",
                        f"{what} after each epoch, one line per trial (colour: setting; line style: seed); "
                        "numbers in curves.csv."))

    def pct(v):
        return None if v is None else 100 * v

    rows = [[r["setting"] + ("  (best)" if r.get("best") else ""), r["n"], r["failed"],
             *[pct(r[f"test_accuracy_{s}"]) for s in ("mean", "std", "min", "max")],
             pct(r["val_accuracy_mean"]), pct(r["val_accuracy_std"]), r["train_loss_mean"], r["time_s_mean"]]
            for r in summary]
    per_trial = [[rec["label"], rec["seed"], pct(rec.get("test_accuracy")), pct(rec.get("val_accuracy")),
                  rec.get("train_loss"), rec.get("time_s"), rec.get("error") or rec.get("run_dir")] for rec in records]
    tables = [
        ("Settings (mean and spread over seeds)",
         ["setting", "seeds", "failed", "test acc (%)", "std", "min", "max", "val acc (%)", "std", "train loss",
          "time (s)"], rows),
        ("Trials", ["setting", "seed", "test acc (%)", "val acc (%)", "train loss", "time (s)", "run / error"],
         per_trial),
    ]
    summary_box = {"sweep": name, "grid": "; ".join(f"{k} = {v}" for k, v in grid), "seeds": ", ".join(map(str, seeds)),
                   "trials": len(records), "ran on": where}
    return write_report(root, f"NeuroHIL sweep {name}", summary_box, figures, tables)


def _plot_settings(path: Path, summary: list[dict]) -> Path:
    from matplotlib.figure import Figure

    labels = [r["setting"] for r in summary]
    means = [100 * (r["test_accuracy_mean"] or math.nan) for r in summary]
    stds = [100 * (r["test_accuracy_std"] or 0.0) for r in summary]
    fig = Figure(figsize=(max(4.0, 0.9 * len(labels) + 2), 3.2), layout="constrained")
    ax = fig.add_subplot()
    ax.errorbar(range(len(labels)), means, yerr=stds, fmt="o", capsize=4)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    os.replace(tmp, path)
    return path


def _plot_curves(path: Path, rows: list[dict]) -> str:
    """Plot validation accuracy (or, without a validation split, the training loss) per epoch; returns which."""
    from matplotlib.figure import Figure

    use_val = any(r["val_accuracy"] is not None for r in rows)
    key, what = ("val_accuracy", "Validation accuracy (%)") if use_val else ("train_loss", "Training loss")
    labels = list(dict.fromkeys(r["label"] for r in rows))
    seeds = list(dict.fromkeys(r["seed"] for r in rows))
    styles = ("-", "--", ":", "-.")
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for i, label in enumerate(labels):
        for j, seed in enumerate(seeds):
            pts = [(r["epoch"], r[key]) for r in rows
                   if r["label"] == label and r["seed"] == seed and r[key] is not None]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, [100 * v for v in y] if use_val else y, color=f"C{i % 10}", ls=styles[j % len(styles)],
                        label=f"{label} s{seed}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(what)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    os.replace(tmp, path)
    return what.split(" (")[0]
