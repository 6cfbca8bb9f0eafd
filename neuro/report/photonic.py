"""Report section ``photonic_mesh``: the MZI meshes with their phases, per-mesh fidelity, accuracy vs noise.

Data (from :func:`neuro.layers.photonic_mlp.mesh_report`, the ``report_data`` of ``photonic_mlp``)::

    {"layers": [{"layer", "kind", "n_in", "n_out", "sigma": [...],
                 "meshes": {"v"|"u": {"n", "modes", "cols", "n_cols", "theta", "phi", "out", "fidelity"}}}],
     "phase_unit_rad": pi,
     "accuracy_vs_noise": {"phase_noise": [...], "<label>": [accuracy, ...], ...}   (optional)}

Figures: ``photonic_mesh.png``: every mesh drawn as its MZI grid (x: column, y: the MZI's top mode + 1/2),
each MZI a disc coloured by its internal phase ``theta`` and ringed by its external phase ``phi`` (units of
pi rad, a cyclic colour map), output phases as squares after the last column; ``photonic_noise.png``:
accuracy against per-shot phase noise ``sigma`` (rad).  Table: fidelity ``|tr(U_target^dagger U_realized)|/N``
of each mesh (target: the design on a perfect chip; realized: the chip with its DAC, crosstalk and static
errors).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure as MplFigure

from neuro.registry import REPORT_SECTIONS
from neuro.report.sections import Figure, Section, Table


def draw_meshes(data: dict, path: Path) -> None:
    """Write the mesh-phase picture of ``data`` (section data above) to ``path``."""
    meshes = [(f"layer {e['layer']} {'V' if m == 'v' else 'U'} ({e['meshes'][m]['n']} modes)", e["meshes"][m])
              for e in data["layers"] for m in ("v", "u")]
    fig = MplFigure(figsize=(3.2 * min(len(meshes), 4) + 1.5, 3.0 * ((len(meshes) + 3) // 4)), layout="constrained")
    axes = fig.subplots((len(meshes) + 3) // 4, min(len(meshes), 4), squeeze=False).ravel()
    cmap = "twilight"
    sc = None
    for ax, (title, m) in zip(axes, meshes):
        x = [c + 0.5 for c in m["cols"]]
        y = [md + 0.5 for md in m["modes"]]
        for md in range(m["n"]):
            ax.plot([0, m["n_cols"] + 1], [md, md], color="0.85", lw=0.8, zorder=0)
        ax.scatter(x, y, c=[v % 2 - 1 for v in m["phi"]], cmap=cmap, vmin=-1, vmax=1, s=260, zorder=1)
        sc = ax.scatter(x, y, c=[v % 2 - 1 for v in m["theta"]], cmap=cmap, vmin=-1, vmax=1, s=110, zorder=2,
                        edgecolors="k", linewidths=0.4)
        ax.scatter([m["n_cols"] + 0.6] * m["n"], list(range(m["n"])), c=[v % 2 - 1 for v in m["out"]], cmap=cmap,
                   vmin=-1, vmax=1, marker="s", s=70, edgecolors="k", linewidths=0.4)
        ax.set_title(f"{title}\nfidelity {m['fidelity']:.4f}", fontsize=8)
        ax.set_xlim(-0.2, m["n_cols"] + 1.1)
        ax.set_ylim(m["n"] - 0.5, -0.5)
        ax.set_xlabel("column", fontsize=7)
        ax.set_ylabel("mode", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[len(meshes):]:
        ax.axis("off")
    if sc is not None:
        cb = fig.colorbar(sc, ax=list(axes), shrink=0.8)
        cb.set_label("phase (units of pi rad): theta (inner), phi (ring), output (squares)", fontsize=7)
    fig.savefig(path, dpi=110)


def draw_accuracy_vs_noise(curve: dict, path: Path) -> None:
    """Accuracy (%) against per-shot phase noise (rad), one line per label of ``curve``."""
    fig = MplFigure(figsize=(5, 3.4))
    ax = fig.subplots()
    xs = curve["phase_noise"]
    for label, ys in curve.items():
        if label == "phase_noise":
            continue
        ax.plot(xs, [100 * v for v in ys], marker="o", label=label)
    ax.set_xlabel("per-shot phase noise sigma (rad)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@REPORT_SECTIONS.register("photonic_mesh")
def draw_photonic_mesh(data: dict, records: list[dict], run_dir: Path) -> Section:
    if not data or not data.get("layers"):
        return Section()
    run_dir = Path(run_dir)
    draw_meshes(data, run_dir / "photonic_mesh.png")
    figures = [Figure("Photonic meshes", "photonic_mesh.png",
                      "Every MZI of every mesh at its column and top mode, coloured by its phases (units of pi rad); "
                      "fidelity |tr(U_target^dagger U_realized)|/N of the realized mesh against the design.")]
    curve = data.get("accuracy_vs_noise")
    if curve:
        draw_accuracy_vs_noise(curve, run_dir / "photonic_noise.png")
        figures.append(Figure("Accuracy against phase noise", "photonic_noise.png",
                              "Test accuracy with a fresh Gaussian phase error of std sigma (rad) on every phase "
                              "shifter for every sample."))
    rows = [[e["layer"], "V" if m == "v" else "U", e["meshes"][m]["n"], len(e["meshes"][m]["theta"]),
             e["meshes"][m]["fidelity"]] for e in data["layers"] for m in ("v", "u")]
    return Section(figures, [Table("Mesh fidelity", ["layer", "mesh", "modes", "MZIs", "fidelity"], rows)])
