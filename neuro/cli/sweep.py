"""``neuro sweep``: a grid of settings times seeds, on a local process pool or a Ray cluster."""

from __future__ import annotations

import argparse
import os

from neuro import config as cfg


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="train a grid of settings x seeds and tabulate mean and spread over seeds",
        description=(
            "Train every combination of the --grid lists for every seed (each trial an ordinary run under "
            "<out>/<name>/trials/), on a local process pool or with --ray on a Ray cluster (Ray Tune). Writes "
            "<out>/<name>/trials.jsonl, summary.csv (mean, std, min, max over seeds per setting), curves.csv (every "
            "trial's per-epoch validation accuracy and training loss) and report.html."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="TOML config file (see examples/); optional")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=[V1,V2,...]",
                   help="a setting and its values, e.g. --grid 'optim.lr=[1e-3,3e-3]' (repeatable: Cartesian product)")
    p.add_argument("--seeds", default="0", help="seeds: a range 0-4 or a list 0,3,7")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fixed override of every trial, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--name", default="sweep", help="sweep name (directory under --out)")
    p.add_argument("--out", help="output folder (default: run.out_dir of the config, else runs)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="local processes (without --ray)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (and CPUs reserved) per trial")
    p.add_argument("--restart", action="store_true",
                   help="train every trial from epoch 0 (default: a trial that a stopped sweep left with a checkpoint "
                        "of the same settings continues after its last finished epoch)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="run on Ray Tune: 'auto' (the cluster of `ray start`), 'local' (a new local instance), "
                        "HOST:6379 or ray://HOST:10001")
    p.set_defaults(func=run)


def run(args) -> int:
    from neuro.sweep import sweep

    config = cfg.load_toml(args.config) if args.config else {}
    config = cfg.apply_overrides(config, args.overrides)
    sweep(config, args.grid, args.seeds, name=args.name, out_dir=args.out, workers=args.workers,
          ray_address=args.ray, threads=args.threads, resume=not args.restart)
    return 0
