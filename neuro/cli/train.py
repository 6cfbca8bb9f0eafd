"""``neuro train``: train from a TOML config and/or flags into runs/<name>/."""

from __future__ import annotations

import os
from pathlib import Path

from neuro import config as cfg
from neuro import distributed, parallel, workflow
from neuro.errors import ConfigError
from neuro.runs import Run


def add_parser(sub) -> None:
    from neuro.data import dataset_names
    from neuro.registry import MODEL_KINDS, RULES

    p = sub.add_parser(
        "train",
        help="train a network from a config file and/or flags",
        description=(
            "Train a network. Settings come from CONFIG (TOML), then the shortcut flags, then --set and --unset. "
            "Writes runs/<name>/ with config.toml, provenance.json, metrics.jsonl, checkpoint.pt, console.log, "
            "plots and report.html. Switching rule.name (or model.kind) drops the old rule's (kind's) settings "
            "that the new one does not have, with a note."
        ),
    )
    p.add_argument("config", nargs="?", help="TOML config file (see examples/); optional")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set model.hidden=[256] --set optim.lr=0.002 (repeatable)")
    p.add_argument("--unset", dest="unsets", action="append", default=[], metavar="KEY",
                   help="remove a setting so its default applies, e.g. --unset rule.variant (repeatable)")
    p.add_argument("--name", help="run name: the directory under the output folder")
    p.add_argument("--dataset", help=f"one of {', '.join(dataset_names())}")
    p.add_argument("--rule", help=f"learning rule: {', '.join(RULES.names())}")
    p.add_argument("--model", dest="model_kind", help=f"model kind: {', '.join(MODEL_KINDS.names())}")
    p.add_argument("--epochs", type=int, help="number of epochs (with --resume: the new total)")
    p.add_argument("--seed", type=int, help="global seed")
    p.add_argument("--out", help="output folder for runs (default: run.out_dir of the config, else runs); "
                                 "with --resume, where to look for a run given by name")
    p.add_argument("--resume", metavar="RUN", help="continue a run from its checkpoint: a run directory, or a run name "
                                                    "under --out (other settings come from the run)")
    p.add_argument("--overwrite", action="store_true",
                   help="reuse the run directory if it exists instead of making <name>-2")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train data-parallel on N processes of this machine "
                        "(torchrun --standalone --nproc-per-node N); "
                        "train.batch_size stays the global batch. Several machines: run torchrun yourself (README)")
    p.add_argument("--continual", metavar="STRATEGY",
                   help="train on the [continual] task stream with this strategy: hlop, finetune, ewc, gpm, multitask")
    p.set_defaults(func=run)


def run(args) -> int:
    progress = False if args.no_progress else None
    if args.nproc is not None and not distributed.launched():  # DISTRIBUTED (issue 16): torchrun, then each rank below
        if args.resume:  # a mistake every rank would make is reported once, here
            from neuro.runs import Run
            from neuro.trainer import load_checkpoint

            run_dir = Run.open(args.resume)
            load_checkpoint(run_dir.checkpoint_path)
        else:
            from neuro.build import resolve

            resolve(_config(args))
        return parallel.launch_local(args.nproc, parallel.forward_args(args))
    if distributed.launched():
        return parallel.run_worker(_run_rank, args, progress)
    if args.resume:
        if continual_run(args.resume, args.out):
            from neuro.continual.workflow import resume_continual

            resume_continual(str(Run.find(args.resume, args.out).path), progress=progress)
            return 0
        workflow.resume(args.resume, epochs=args.epochs, progress=progress, out_dir=args.out)
        return 0
    config = _config(args)
    if args.continual or "continual" in config:
        from neuro.continual.workflow import apply_continual_flag, train_continual

        train_continual(apply_continual_flag(config, args.continual), overwrite=args.overwrite, progress=progress)
        return 0
    workflow.train(config, overwrite=args.overwrite, progress=progress)
    return 0


def _config(args) -> dict:
    """The config of CONFIG, the shortcut flags and --set, in that order."""
    config = cfg.load_toml(args.config) if args.config else {}
    shortcuts = {
        "run.name": args.name, "data.dataset": args.dataset, "rule.name": args.rule, "model.kind": args.model_kind,
        "train.epochs": args.epochs, "run.seed": args.seed, "run.out_dir": args.out,
    }
    overrides = [f"{key}={value}" for key, value in shortcuts.items() if value is not None]
    before = cfg.apply_unsets(config, args.unsets)
    after = cfg.apply_overrides(before, overrides + list(args.overrides))
    after, notes = workflow.retarget(before, after)
    if distributed.rank() == 0:
        for note in notes:
            print(f"note: {note}")
    out_dir = after.get("run", {}).get("out_dir", "runs")
    if isinstance(out_dir, str):
        check_out_dir(out_dir, "--out (run.out_dir)")
    return after


def _run_rank(args, progress) -> int:
    """One rank of a data-parallel run started by torchrun (see neuro/parallel.py)."""
    if args.resume:
        parallel.resume(args.resume, epochs=args.epochs, progress=progress)
        return 0
    parallel.train(_config(args), overwrite=args.overwrite, progress=progress)
    return 0


def check_out_dir(path: str, what: str) -> None:
    """ConfigError unless ``path`` is (or can become) a writable folder: not a file, nor below one."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                raise ConfigError(f"{what} {path}: {q} is a file, not a folder; pass a folder")
            if not os.access(q, os.W_OK | os.X_OK):
                raise ConfigError(f"{what} {path}: folder {q} is not writable; pass a folder you can write to")
            return


def continual_run(path, out_dir=None) -> bool:
    """Whether the run at ``path`` was trained on a task stream (its config has [continual])."""
    return "continual" in cfg.load_toml(Run.find(path, out_dir).config_path)
