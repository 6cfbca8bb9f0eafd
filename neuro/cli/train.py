"""``neuro train``: train from a TOML config and/or flags into runs/<name>/."""

from __future__ import annotations

import argparse

from neuro import config as cfg
from neuro import distributed, parallel, workflow


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a network from a config file and/or flags",
        description=(
            "Train a network. Settings come from CONFIG (TOML), then the shortcut flags, then --set. "
            "Writes runs/<name>/ with config.toml, metrics.jsonl, checkpoint.pt, plots and report.html."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="TOML config file (see examples/); optional")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set model.hidden=[256] --set optim.lr=0.002 (repeatable)")
    p.add_argument("--name", help="run name (directory under run.out_dir)")
    p.add_argument("--dataset", help="digits, mnist, vowels or yinyang")
    p.add_argument("--rule", help="learning rule, e.g. bptt")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--seed", type=int, help="global seed")
    p.add_argument("--out", help="output folder for runs (default runs)")
    p.add_argument("--resume", metavar="RUN", help="continue runs/<name> from its checkpoint (other settings come from the run)")
    p.add_argument("--overwrite", action="store_true", help="reuse the run directory if it exists instead of making <name>-2")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train data-parallel on N processes of this machine "
                        "(torchrun --standalone --nproc-per-node N); "
                        "train.batch_size stays the global batch. Several machines: run torchrun yourself (README)")
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
        workflow.resume(args.resume, epochs=args.epochs, progress=progress)
        return 0
    workflow.train(_config(args), overwrite=args.overwrite, progress=progress)
    return 0


def _config(args) -> dict:
    """The config of CONFIG, the shortcut flags and --set, in that order."""
    config = cfg.load_toml(args.config) if args.config else {}
    shortcuts = {
        "run.name": args.name, "data.dataset": args.dataset, "rule.name": args.rule,
        "train.epochs": args.epochs, "run.seed": args.seed, "run.out_dir": args.out,
    }
    for key, value in shortcuts.items():
        if value is not None:
            section, name = key.split(".")
            config.setdefault(section, {})[name] = value
    return cfg.apply_overrides(config, args.overrides)


def _run_rank(args, progress) -> int:
    """One rank of a data-parallel run started by torchrun (see neuro/parallel.py)."""
    if args.resume:
        parallel.resume(args.resume, epochs=args.epochs, progress=progress)
        return 0
    parallel.train(_config(args), overwrite=args.overwrite, progress=progress)
    return 0
