"""Report section ``contrastive``: EP/CHL diagnostics (cosine with the true gradient against beta and over
epochs, settling convergence and energy per phase).

Data (from :meth:`neuro.rules.contrastive.ContrastiveRule.report_data`): ``{"diagnostics": ..., "phases": ...}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuro.registry import REPORT_SECTIONS
from neuro.report.plots import plot_series
from neuro.report.sections import Figure, Section, Table


@REPORT_SECTIONS.register("contrastive")
def draw_contrastive(data: dict, records: list[dict], run_dir: Path) -> Section:
    figures, tables = _figures_and_tables(data, records, Path(run_dir))
    return Section([Figure(*f) for f in figures], [Table(*t) for t in tables])


def _figures_and_tables(data: dict, records: list[dict], run_dir: Path) -> tuple[list, list]:
    """Figures: cosine with the true gradient against beta and per epoch; settling convergence per phase."""
    figures, tables = [], []
    d = data["diagnostics"]
    if d.get("betas"):
        betas = np.log10(np.asarray(d["betas"], dtype=float))
        series = {
            "EP one-sided (+beta)": d["cos_ep"],
            "EP symmetric (+-beta)": d["cos_sym"],
            "CHL (clamped)": [d["cos_chl"]] * len(betas),
        }
        if d.get("cos_true") is not None:
            series[f"this rule ({data['phases']})"] = [d["cos_true"]] * len(betas)
        plot_series(
            betas,
            series,
            run_dir / "ep_cosine_beta.png",
            "log10 beta",
            "cosine with true gradient",
            title=f"update vs dL/dtheta at the fixed point (batch {d.get('cos_batch', d.get('batch'))})",
        )
        figures.append(
            (
                "Contrastive update vs true gradient",
                "ep_cosine_beta.png",
                (
                    "Cosine between two-phase EP updates on settled phases and the gradient of the loss at the "
                    "free fixed point (recurrent backprop), against beta; flat lines: CHL and this rule's update."
                ),
            )
        )
        tables.append(
            (
                "Cosine with the true gradient",
                ["beta", "EP one-sided", "EP symmetric"],
                [[b_, o, s] for b_, o, s in zip(d["betas"], d["cos_ep"], d["cos_sym"])],
            )
        )
    for phase in ("free", "nudged"):
        res = d.get(f"{phase}_residual") or []
        if res:
            steps = np.arange(1, len(res) + 1)
            plot_series(
                steps,
                {"log10 max |s_t - s_(t-1)|": np.log10(np.maximum(res, 1e-30))},
                run_dir / f"ep_settle_{phase}.png",
                "settling step",
                "log10 state change",
                title=f"{phase} phase: convergence (batch {d['batch']})",
            )
            plot_series(
                steps,
                {"mean F = E + beta C": d[f"{phase}_energy"]},
                run_dir / f"ep_energy_{phase}.png",
                "settling step",
                "energy",
                title=f"{phase} phase: energy",
            )
            figures.append(
                (
                    f"Settling, {phase} phase",
                    f"ep_settle_{phase}.png",
                    f"Largest change of any state per step in the {phase} phase (this rule's step counts).",
                )
            )
            figures.append((f"Energy, {phase} phase", f"ep_energy_{phase}.png", "Total energy per settling step."))
    epochs = [r for r in records if r.get("event") == "epoch" and r.get("train_cos_true") is not None]
    if epochs:
        plot_series(
            [r["epoch"] for r in epochs],
            {
                "this rule": [r["train_cos_true"] for r in epochs],
                "CHL": [r.get("train_cos_chl", float("nan")) for r in epochs],
            },
            run_dir / "ep_cosine_epochs.png",
            "epoch",
            "cosine",
            title="cosine with the true gradient",
        )
        figures.append(
            (
                "Cosine per epoch",
                "ep_cosine_epochs.png",
                "Mean cosine of this rule's update with the true gradient over the epoch's diagnostic batches.",
            )
        )
    return figures, tables
