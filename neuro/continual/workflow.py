"""The continual-learning workflow: train a config's network on a task stream, task after task.

``neuro train CONFIG --continual hlop`` (or a ``[continual]`` section) runs :func:`train_continual`:

1. the experiment is built from the config as for any run (:func:`neuro.build.build_experiment`:
   ``data.dataset`` is the base dataset of the stream, ``[model]``, ``[rule]``, ``[optim]``,
   ``[train]`` as usual); the stream is made from ``[continual]``
   (:mod:`neuro.data.streams`) and the strategy wraps the rule (:data:`~neuro.continual.base.STRATEGIES`);
2. for each task ``i``: ``strategy.begin_task``; a fresh optimizer from ``[optim]`` (after task 0
   without one-dimensional parameters when ``continual.freeze_bias``); ``train.epochs`` epochs of
   the ordinary :class:`~neuro.trainer.Trainer` on the task's data (epoch records go to
   ``metrics.jsonl`` with ``"task": i``; on a task-incremental stream with ``continual.train_head = "task"``
   the model's scores outside the task's classes are ``-inf`` meanwhile, see
   :func:`~neuro.continual.base.restrict_scores`); ``strategy.end_task``; then the test accuracy on every
   task seen so far, row ``i`` of ``R`` (``R[i][j]`` = accuracy on task ``j`` after training task
   ``i``; ``null`` for tasks not evaluated), logged as ``{"event": "task", "task": i, "R_row": [...]}``;
   a checkpoint ``tasks/task-<i>.pt`` (model, strategy state, ``R``, generator states) and the
   trainer-format ``checkpoint.pt`` (so ``neuro eval`` works) are written;
3. at the end ``{"event": "continual", "R": R, "ACC": ..., "BWT": ...}`` is logged and
   ``report.html`` shows the heatmap of ``R`` and the protected subspace sizes per layer.

``ACC = (1/N) sum_j R[N-1][j]``; ``BWT = (1/(N-1)) sum_(j<N-1) (R[N-1][j] - R[j][j])`` (Lopez-Paz &
Ranzato 2017), both as fractions (the report shows percent).  The ``multitask`` strategy trains once
on the union of all tasks: ``R`` has one row, ``BWT`` is ``null``.

Resuming (``neuro train --resume RUN``) continues after the last finished task: a task that was
interrupted is trained again from its start, from the state saved after the task before it
(model, strategy, all generator states), so the result equals an uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path

import torch

from neuro import config as cfg
from neuro.build import Experiment, OptimSpec, build_experiment, build_optimizer, count_parameters
from neuro.continual.base import ContinualRule, ContinualSpec, build_strategy, restrict_scores
from neuro.data.streams import TaskStream, dataset_list, permuted, split_classes
from neuro.errors import CheckpointError, ConfigError, NeuroError
from neuro.registry import MODEL_KINDS, RULES
from neuro.runs import Run
from neuro.trainer import rng_state, set_rng_state

FORMAT = "neurohil-continual-1"
TASK_DIR = "tasks"


def parse_continual(config: dict) -> ContinualSpec:
    """The ``[continual]`` section as a checked :class:`ContinualSpec` (defaults filled in)."""
    return cfg.parse_spec(ContinualSpec, config.get("continual", {}), "continual")


def is_continual(config: dict) -> bool:
    return "continual" in config


def make_stream(spec: ContinualSpec, exp: Experiment) -> TaskStream:
    """The task stream of ``spec`` built on the experiment's (base) dataset."""
    base = exp.data
    scenario = spec.scenario
    if spec.stream == "permuted":
        stream = permuted(base, spec.tasks, seed=spec.stream_seed, shuffle_order=spec.shuffle_order)
        return dataclasses.replace(stream, scenario=scenario) if scenario not in ("auto", "domain") else stream
    if spec.stream == "split":
        return split_classes(base, classes_per_task=spec.classes_per_task,
                             scenario="class" if scenario == "auto" else scenario,
                             seed=spec.stream_seed, shuffle_order=spec.shuffle_order)
    from neuro.data import load_dataset

    d = exp.config["data"]
    datasets = [load_dataset(name, d["root"] or None, val_fraction=d["val_fraction"], seed=exp.run.seed,
                             limit=d["limit"] or None) for name in spec.datasets]
    return dataset_list(datasets, labels="shared" if scenario == "domain" else "offset",
                        scenario=None if scenario == "auto" else scenario)


def _fit_to_stream(exp: Experiment, stream: TaskStream) -> Experiment:
    """Rebuild model and rule when the stream's head or input differs from the base dataset's."""
    if stream.n_classes == exp.data.n_classes and stream.n_features == exp.data.n_features:
        return exp
    data = stream[0].dataset()
    model_entry = MODEL_KINDS.get(exp.config["model"]["kind"])
    rule_entry = RULES.get(exp.config["rule"]["name"])
    model = model_entry.obj(cfg.parse_spec(model_entry.spec, exp.config["model"], "model"), data).to(exp.run.device)
    rule = rule_entry.obj(cfg.parse_spec(rule_entry.spec, exp.config["rule"], "rule"), data)
    return dataclasses.replace(exp, data=data, model=model, rule=rule)


# ---------------------------------------------------------------------- metrics
def acc_bwt(R: list[list[float | None]]) -> tuple[float | None, float | None]:
    """ACC (mean of the last row over the tasks trained) and BWT (mean forgetting of earlier tasks)."""
    if not R:
        return None, None
    last = R[-1]
    n = len(R)
    if n == 1 and len(last) > 1 and all(v is not None for v in last):  # the joint (multitask) row
        return sum(last) / len(last), None
    acc = sum(last[:n]) / n
    bwt = sum(last[j] - R[j][j] for j in range(n - 1)) / (n - 1) if n > 1 else None
    return acc, bwt


@torch.no_grad()
def task_accuracy(rule, model, split, *, mask: torch.Tensor | None = None, device="cpu", batch_size: int = 1000,
                  precision: str = "float32") -> float:
    """Accuracy of ``rule.predict`` on ``split``; with ``mask`` only the masked classes compete."""
    was_training = model.training
    model.eval()
    correct = 0
    dev = torch.device(device)
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size].to(dev)
        y = split.y[start : start + batch_size].to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            scores = rule.predict(model, x).float()
        if mask is not None:
            scores = scores.masked_fill(~mask.to(dev), float("-inf"))
        correct += int((scores.argmax(1) == y).sum())
    model.train(was_training)
    return correct / max(len(split), 1)


# --------------------------------------------------------------------- workflow
def train_continual(config: dict, *, overwrite: bool = False, progress: bool | None = None, echo=print,
                    stop_after: int | None = None) -> tuple[Run, dict]:
    """Train ``config`` on its ``[continual]`` stream into a new run; returns the run and the summary.

    ``stop_after``: stop after that many tasks (as if interrupted; :func:`resume_continual` goes on).
    """
    spec, exp, stream, strategy = _build(config)
    run = Run.create(exp.run.out_dir, exp.run.name, overwrite=overwrite)
    if overwrite and (run.path / TASK_DIR).is_dir():
        for stale in (run.path / TASK_DIR).glob("task-*.pt"):
            stale.unlink()
    run.write_config({**exp.config, "continual": dataclasses.asdict(spec)})
    echo(f"run {run.path}: {exp.config['model']['kind']} ({count_parameters(exp.model)} parameters), "
         f"{len(stream)} tasks of {stream.name} ({stream.scenario}-incremental), strategy {strategy.name}")
    state = {"R": [], "task_times": [], "sizes": [], "task_names": []}
    return _run_stream(run, exp, spec, stream, strategy, 0, state, progress, echo, stop_after)


def resume_continual(run_path: str | os.PathLike, *, progress: bool | None = None, echo=print,
                     stop_after: int | None = None) -> tuple[Run, dict]:
    """Continue a continual run after its last finished task."""
    run = Run.open(run_path)
    spec, exp, stream, strategy = _rebuild(run)
    ckpt = latest_task_checkpoint(run.path)
    if ckpt is None:
        echo(f"{run.path}: no task finished yet; starting from task 0")
        state, start = {"R": [], "task_times": [], "sizes": [], "task_names": []}, 0
        _truncate(run, -1)
    else:
        saved = load_task_checkpoint(ckpt)
        exp.model.load_state_dict(saved["model"])
        strategy.load_state_dict(saved["strategy"])
        if hasattr(strategy, "to"):
            strategy.to(exp.run.device)
        set_rng_state(saved["rng"])
        state = saved["state"]
        start = int(saved["task"]) + 1
        _truncate(run, start - 1)
        echo(f"resuming {run.path} after task {start - 1} ({start} of {len(_plan(stream, strategy))} done)")
    return _run_stream(run, exp, spec, stream, strategy, start, state, progress, echo, stop_after)


def _rebuild(run: Run) -> tuple[ContinualSpec, Experiment, TaskStream, ContinualRule]:
    """The spec, experiment (fitted to the stream), task stream and strategy of a saved continual run."""
    return _build(cfg.load_toml(run.config_path))


def _build(config: dict) -> tuple[ContinualSpec, Experiment, TaskStream, ContinualRule]:
    """The spec, experiment (fitted to the stream), task stream and strategy of a continual ``config``."""
    spec = parse_continual(config)
    exp = build_experiment(config)
    stream = make_stream(spec, exp)
    exp = _fit_to_stream(exp, stream)
    strategy = build_strategy(spec, exp.rule, seed=exp.run.seed)
    strategy.check_compatible(exp.model)
    return spec, exp, stream, strategy


def load_continual_run(run_path: str | os.PathLike, task: int | None = None):
    """A saved continual run as it stood after ``task`` (default: its last finished task), for analysis.

    Returns ``(spec, exp, stream, strategy, task)`` with ``exp.model`` and ``strategy`` loaded from that
    task's checkpoint (on the CPU).
    """
    run = Run.open(run_path)
    spec, exp, stream, strategy = _rebuild(run)
    path = latest_task_checkpoint(run.path) if task is None else task_checkpoint_path(run.path, task)
    if path is None or not path.exists():
        have = sorted(p.name for p in (run.path / TASK_DIR).glob("task-*.pt"))
        raise NeuroError(f"{run.path}: no checkpoint for task {task if task is not None else '(any)'}; "
                         f"it has {', '.join(have) or 'none'}")
    saved = load_task_checkpoint(path)
    exp.model.load_state_dict(saved["model"])
    strategy.load_state_dict(saved["strategy"])
    return spec, exp, stream, strategy, int(saved["task"])


def rewrite_continual_report(run_path: str | os.PathLike) -> Path:
    """Rebuild ``report.html`` (accuracy matrix, subspace sizes, task table) of a continual run from its last task
    checkpoint and metrics, finished or stopped (then ACC and BWT are left out: R is not complete)."""
    run = Run.open(run_path)
    _, exp, stream, strategy = _rebuild(run)
    ckpt = latest_task_checkpoint(run.path)
    if ckpt is None:
        raise NeuroError(f"{run.path}: no task finished yet, so there is no accuracy matrix to report; "
                         f"continue it with `neuro train --resume {run.path}`")
    state = load_task_checkpoint(ckpt)["state"]
    final = [r for r in run.records() if r.get("event") == "continual"]
    summary = final[-1] if final else {"ACC": None, "BWT": None, "train_time_s": sum(state["task_times"])}
    from neuro.continual.report import write_continual_report

    return write_continual_report(run, exp, stream, strategy, state, summary)


def _plan(stream: TaskStream, strategy: ContinualRule) -> list:
    if getattr(strategy, "joint", False):
        from neuro.data.streams import Task

        return [Task("joint", tuple(range(stream.n_classes)), stream.joint)]
    return list(stream.tasks)


def _truncate(run: Run, last_task: int) -> None:
    import json

    kept = [r for r in run.records() if r.get("event") not in ("continual", "test") and r.get("task", -1) <= last_task]
    run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


def _run_stream(run: Run, exp: Experiment, spec: ContinualSpec, stream: TaskStream, strategy: ContinualRule,
                start: int, state: dict, progress, echo, stop_after: int | None) -> tuple[Run, dict]:
    model = exp.model
    plan = _plan(stream, strategy)
    optim_spec = cfg.parse_spec(OptimSpec, exp.config["optim"], "optim")
    joint = getattr(strategy, "joint", False)
    done_now = 0
    for i in range(start, len(plan)):
        if stop_after is not None and done_now >= stop_after:
            echo(f"stopped after task {i - 1} (resume with neuro train --resume {run.path})")
            return run, {"stopped_after": i - 1, "R": state["R"]}
        task = plan[i]
        data = task.dataset()
        strategy.begin_task(i, model, data)
        if stream.scenario == "task" and hasattr(strategy, "protect_head_rows"):
            strategy.protect_head_rows([c for t in plan[:i] for c in t.classes])
        frozen_1d = spec.freeze_bias and i > 0
        params = [p for p in model.parameters() if p.requires_grad and not (frozen_1d and p.dim() == 1)]
        optimizer = build_optimizer(optim_spec, params)
        strategy.bind_optimizer(optimizer)
        scheduler = None
        if optim_spec.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(exp.train.epochs, 1))
        task_exp = dataclasses.replace(exp, data=data, rule=strategy, optimizer=optimizer, scheduler=scheduler,
                                       run=dataclasses.replace(exp.run, seed=exp.run.seed * 1000 + i))

        def log_epoch(trainer, record, i=i, name=task.name):
            record["task"] = i
            record["task_name"] = name
            run.log(record)
            acc = record.get("train_accuracy")
            echo(f"task {i + 1}/{len(plan)} ({name}) epoch {record['epoch']}/{exp.train.epochs}"
                 + (f"  acc {100 * acc:.2f}%" if acc is not None else "") + f"  {record.get('time_s', 0):.1f} s")

        trainer = task_exp.trainer(None, progress=progress, hooks=(log_epoch,))
        head = stream.class_mask(i) if (spec.train_head == "task" and not joint) else None
        t0 = time.perf_counter()
        with restrict_scores(model, head):
            trainer.fit()
            strategy.end_task(i, model, data)
        train_time = time.perf_counter() - t0
        del data
        row: list[float | None] = []
        for j, other in enumerate(stream.tasks):
            if j <= i or spec.eval_future or joint:
                split = other.dataset().test
                row.append(task_accuracy(strategy, model, split, mask=stream.class_mask(j), device=exp.run.device,
                                         batch_size=exp.train.eval_batch_size, precision=exp.train.precision))
            else:
                row.append(None)
        state["R"].append(row)
        state["task_times"].append(train_time)
        state["sizes"].append(strategy.sizes())
        state["task_names"].append(task.name)
        run.log({"event": "task", "task": i, "task_name": task.name, "R_row": row, "train_time_s": train_time,
                 "subspace_sizes": strategy.sizes()})
        seen = [v for v in row[: i + 1] if v is not None]
        echo(f"after task {i + 1}/{len(plan)} ({task.name}): accuracy on tasks seen "
             + " ".join(f"{100 * v:.1f}" for v in row[: len(plan) if joint else i + 1] if v is not None)
             + f" (mean {100 * sum(seen) / max(len(seen), 1):.2f}%)")
        save_task_checkpoint(run.path, i, model, strategy, state)
        trainer.save_checkpoint(run.checkpoint_path)
        done_now += 1
    acc, bwt = acc_bwt(state["R"])
    summary = {"event": "continual", "strategy": spec.strategy, "rule": exp.config["rule"]["name"],
               "stream": stream.name, "scenario": stream.scenario, "R": state["R"], "ACC": acc, "BWT": bwt,
               "train_time_s": sum(state["task_times"]), "subspace_sizes": state["sizes"]}
    run.log(summary)
    from neuro.continual.report import write_continual_report

    write_continual_report(run, exp, stream, strategy, state, summary)
    echo(f"ACC {100 * acc:.2f}%" + (f"  BWT {100 * bwt:+.2f}%" if bwt is not None else "")
         + f"; report: {run.path / 'report.html'}")
    return run, summary


# ------------------------------------------------------------------ checkpoints
def task_checkpoint_path(run_dir: Path, task: int) -> Path:
    return Path(run_dir) / TASK_DIR / f"task-{task:02d}.pt"


def save_task_checkpoint(run_dir: Path, task: int, model, strategy: ContinualRule, state: dict) -> Path:
    path = task_checkpoint_path(run_dir, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "task": task, "model": model.state_dict(), "strategy": strategy.state_dict(),
                "state": state, "rng": rng_state()}, tmp)
    os.replace(tmp, path)
    return path


def latest_task_checkpoint(run_dir: Path) -> Path | None:
    found = []
    for p in (Path(run_dir) / TASK_DIR).glob("task-*.pt"):
        m = re.fullmatch(r"task-(\d+)\.pt", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def load_task_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(
            f"task checkpoint {path} is unreadable ({type(exc).__name__}); delete it to redo that task") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a continual task checkpoint (expected format {FORMAT})")
    return state


def apply_continual_flag(config: dict, continual_flag: str | None) -> dict:
    """Apply ``--continual NAME`` to a config (sets ``continual.strategy``)."""
    if continual_flag is None:
        return config
    if not isinstance(continual_flag, str) or not continual_flag:
        raise ConfigError("--continual needs a strategy name, e.g. --continual hlop")
    out = dict(config)
    out["continual"] = {**config.get("continual", {}), "strategy": continual_flag}
    return out


__all__ = ["acc_bwt", "is_continual", "make_stream", "parse_continual", "resume_continual", "rewrite_continual_report",
           "task_accuracy", "train_continual"]

