"""The continual-learning part of ``neuro demo``: split digits, HLOP against fine-tuning (well under a minute).

:func:`run_demo_part` trains ``examples/split_digits_hlop.toml``'s setup (5 tasks of two digits,
task-incremental, a 64-100-10 spiking MLP trained with BPTT) twice, with HLOP and with plain
fine-tuning, into ``out_dir/demo-continual-hlop`` and ``out_dir/demo-continual-finetune`` (each
with ``report.html``, the heatmap of R and, for HLOP, the subspace sizes), and returns both summaries.
"""

from __future__ import annotations

import os
from pathlib import Path

DEMO_CONFIG = {
    "run": {"name": "demo-continual", "seed": 0, "progress": False},
    "data": {"dataset": "digits", "val_fraction": 0.0},
    "model": {"kind": "spiking_mlp", "hidden": [100], "time_steps": 10},
    "rule": {"name": "bptt"},
    "optim": {"name": "sgd", "lr": 0.1},
    "train": {"epochs": 10, "batch_size": 32},
    "continual": {"stream": "split", "scenario": "task", "shuffle_order": False, "subspace": [20, 20],
                  "increment": [8, 8], "increment_decay": 0, "hebbian_lr": [0.01, 0.01]},
}


def run_demo_part(out_dir: str | os.PathLike, *, echo=print, strategies=("hlop", "finetune")) -> dict[str, dict]:
    """Train the split-digits stream with each strategy; echo R and ACC/BWT; return ``{strategy: summary}``."""
    from neuro.continual.workflow import train_continual

    results = {}
    for strategy in strategies:
        run = {**DEMO_CONFIG["run"], "name": f"demo-continual-{strategy}", "out_dir": str(out_dir)}
        config = {**DEMO_CONFIG, "run": run,
                  "continual": {**DEMO_CONFIG["continual"], "strategy": strategy}}
        _, summary = train_continual(config, overwrite=True, progress=False, echo=lambda *a: None)
        results[strategy] = summary
        echo(f"{strategy:>9}: ACC {100 * summary['ACC']:.1f}%  BWT {100 * summary['BWT']:+.1f}%  "
             f"(report: {Path(out_dir) / f'demo-continual-{strategy}' / 'report.html'})")
        for i, row in enumerate(summary["R"]):
            cells = " ".join(f"{100 * v:5.1f}" if v is not None else "    -" for v in row)
            echo(f"           after task {i}: {cells}")
    return results
