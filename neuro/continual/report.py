"""Figures and the report of a continual run: the accuracy matrix R as a heatmap, subspace sizes per layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def plot_accuracy_matrix(R: list[list[float | None]], path, *, task_names: list[str] | None = None,
                         title: str = "") -> Path:
    """Heatmap of ``R[i][j]`` (percent): rows = after training task i, columns = evaluated on task j."""
    rows = len(R)
    cols = max(len(r) for r in R) if R else 0
    A = np.full((rows, cols), np.nan)
    for i, r in enumerate(R):
        for j, v in enumerate(r):
            if v is not None:
                A[i, j] = 100.0 * v
    fig = Figure(figsize=(1.2 + 0.55 * max(cols, 2), 1.0 + 0.5 * max(rows, 2)), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(A), vmin=0, vmax=100, cmap="viridis", aspect="auto")
    for i in range(rows):
        for j in range(cols):
            if np.isfinite(A[i, j]):
                ax.text(j, i, f"{A[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if A[i, j] < 60 else "black")
    names = task_names or [str(j) for j in range(cols)]
    ax.set_xticks(range(cols), labels=names[:cols], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(rows), labels=[f"after {n}" for n in (task_names or [str(i) for i in range(rows)])[:rows]],
                  fontsize=7)
    ax.set_xlabel("evaluated on task")
    fig.colorbar(im, ax=ax, label="test accuracy (%)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_subspace_sizes(sizes: list[dict[str, int]], path, *, in_features: dict[str, int] | None = None,
                        title: str = "") -> Path:
    """Protected subspace dimension of each projectable layer after each task (lines, one per layer)."""
    fig = Figure(figsize=(5.0, 3.0), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    names = sorted({k for s in sizes for k in s}, key=lambda k: [int(t) if t.isdigit() else t for t in k.split(".")])
    for name in names:
        label = name + (f" (of {in_features[name]})" if in_features and name in in_features else "")
        ax.plot(range(len(sizes)), [s.get(name, 0) for s in sizes], marker="o", label=label)
    ax.set_xlabel("after task")
    ax.set_ylabel("subspace dimension")
    ax.grid(alpha=0.3)
    if names:
        ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def write_continual_report(run, exp, stream, strategy, state: dict, summary: dict) -> Path:
    """``report.html`` of a continual run (uses :func:`neuro.report.write_report`)."""
    from neuro import report
    from neuro.build import count_parameters

    R = state["R"]
    names = [t.name for t in stream.tasks]
    figures = []
    plot_accuracy_matrix(R, run.path / "accuracy_matrix.png", task_names=names,
                         title=f"{run.name}\nR[i, j] = accuracy on task j after task i")
    figures.append(("Accuracy matrix R", "accuracy_matrix.png",
                    "Rows: after training task i; columns: test accuracy on task j (percent)."))
    if any(state["sizes"]):
        layers = getattr(strategy, "layers", None) or []
        plot_subspace_sizes(state["sizes"], run.path / "subspace_sizes.png",
                            in_features={l.name: l.in_features for l in layers},
                            title=f"{strategy.name}: protected subspace per layer")
        figures.append(("Subspace sizes", "subspace_sizes.png",
                        "Dimension of the protected input subspace of each projectable layer after each task."))
    acc, bwt = summary["ACC"], summary["BWT"]
    info = {
        "run": run.name, "stream": f"{stream.name} ({len(stream)} tasks, {stream.scenario}-incremental)",
        "model": exp.config["model"]["kind"], "rule": exp.config["rule"]["name"], "strategy": strategy.name,
        "parameters": count_parameters(exp.model), "epochs per task": exp.train.epochs,
        "ACC (%)": None if acc is None else 100 * acc, "BWT (%)": None if bwt is None else 100 * bwt,
        "train time (s)": summary["train_time_s"],
    }
    header = ["after task"] + names
    rows = [[state["task_names"][i]] + [None if v is None else round(100 * v, 2) for v in r] for i, r in enumerate(R)]
    per_task = [[i, state["task_names"][i], state["task_times"][i], str(state["sizes"][i] or "-")]
                for i in range(len(R))]
    tables = [("Accuracy matrix R (%)", header, rows),
              ("Tasks", ["task", "name", "train time (s)", "subspace sizes"], per_task)]
    return report.write_report(run.path, f"NeuroHIL continual run {run.name}", info, figures, tables)
