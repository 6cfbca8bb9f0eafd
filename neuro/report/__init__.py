"""Run reports: metrics reading, PNG figures and a self-contained ``report.html``.

Every training run writes ``runs/<name>/`` with ``config.toml``, ``metrics.jsonl``,
``checkpoint.pt``, PNG figures and ``report.html``; this package makes the last two.
"""

from neuro.report.html import format_value, write_report
from neuro.report.plots import (
    DPI,
    plot_learning_curves,
    plot_rate_histograms,
    plot_series,
    plot_spike_raster,
    read_metrics,
)
from neuro.report.sections import Figure, Section, Table, as_legacy, collect_sections

__all__ = [
    "DPI",
    "Figure",
    "Section",
    "Table",
    "as_legacy",
    "collect_sections",
    "format_value",
    "plot_learning_curves",
    "plot_rate_histograms",
    "plot_series",
    "plot_spike_raster",
    "read_metrics",
    "write_report",
]
