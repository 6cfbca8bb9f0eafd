"""``neuro train``: train from a TOML config and/or flags into runs/<name>/."""

from __future__ import annotations

import argparse

from neuro import config as cfg
from neuro import workflow


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
    p.add_argument("--continual", metavar="STRATEGY",
                   help="train on the [continual] task stream with this strategy: hlop, finetune, ewc, gpm, multitask")
    p.set_defaults(func=run)


def run(args) -> int:
    progress = False if args.no_progress else None
    if args.resume:
        if continual_run(args.resume):
            from neuro.continual.workflow import resume_continual

            resume_continual(args.resume, progress=progress)
            return 0
        workflow.resume(args.resume, epochs=args.epochs, progress=progress)
        return 0
    config = cfg.load_toml(args.config) if args.config else {}
    shortcuts = {
        "run.name": args.name, "data.dataset": args.dataset, "rule.name": args.rule,
        "train.epochs": args.epochs, "run.seed": args.seed, "run.out_dir": args.out,
    }
    for key, value in shortcuts.items():
        if value is not None:
            section, name = key.split(".")
            config.setdefault(section, {})[name] = value
    config = cfg.apply_overrides(config, args.overrides)
    if args.continual or "continual" in config:
        from neuro.continual.workflow import apply_continual_flag, train_continual

        train_continual(apply_continual_flag(config, args.continual), overwrite=args.overwrite, progress=progress)
        return 0
    workflow.train(config, overwrite=args.overwrite, progress=progress)
    return 0


def continual_run(path) -> bool:
    """Whether the run at ``path`` was trained on a task stream (its config has [continual])."""
    from neuro.runs import Run

    return "continual" in cfg.load_toml(Run.open(path).config_path)
