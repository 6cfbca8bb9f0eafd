"""The continual-learning part of ``neuro demo``: split digits, HLOP against fine-tuning (well under a minute).

:func:`run_continual_part` trains one continual config (the demo's: ``examples/split_digits_hlop.toml``,
5 tasks of two digits, task-incremental, a 64-100-10 spiking MLP trained with BPTT, 5 epochs per task)
once per strategy (``hlop`` and ``finetune``) into ``out_dir/<name>-<strategy>`` (each with
``report.html``: the heatmap of R and, for HLOP, the protected subspace sizes), echoes every R
matrix with ACC and BWT, and returns the summaries.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

DEMO_EXAMPLE = "split_digits_hlop.toml"
DEMO_STRATEGIES = ("hlop", "finetune")


def run_continual_part(config: dict, out_dir: str | os.PathLike, *, name: str = "demo-continual",
                       strategies=DEMO_STRATEGIES, echo=print) -> dict[str, dict]:
    """Train ``config``'s task stream with each strategy as run ``<name>-<strategy>``; return ``{strategy: summary}``.

    ``R[i][j]`` (percent) is the test accuracy on task ``j`` after training task ``i``;
    ``ACC = mean_j R[N-1][j]``, ``BWT = mean_(j<N-1) (R[N-1][j] - R[j][j])``.
    """
    from neuro.continual.workflow import train_continual

    results = {}
    for strategy in strategies:
        run_name = f"{name}-{strategy}"
        c = copy.deepcopy(config)
        c["run"] = {**c.get("run", {}), "name": run_name, "out_dir": str(out_dir), "progress": False}
        c["continual"] = {**c.get("continual", {}), "strategy": strategy}
        _, summary = train_continual(c, overwrite=True, progress=False, echo=lambda *a: None)
        results[strategy] = summary
        bwt = summary["BWT"]
        echo(f"{strategy:>9}: ACC {100 * summary['ACC']:.1f}%"
             + (f"  BWT {100 * bwt:+.1f}%" if bwt is not None else "")
             + f"  (report: {Path(out_dir) / run_name / 'report.html'})")
        for i, row in enumerate(summary["R"]):
            cells = " ".join(f"{100 * v:5.1f}" for v in row if v is not None)
            echo(f"           after task {i}: {cells}")
    return results


def run_demo_part(out_dir: str | os.PathLike, *, echo=print, strategies=DEMO_STRATEGIES) -> dict[str, dict]:
    """The demo's continual part on its example config (``examples/split_digits_hlop.toml``)."""
    from neuro.examples import example_config

    return run_continual_part(example_config(DEMO_EXAMPLE), out_dir, strategies=strategies, echo=echo)
