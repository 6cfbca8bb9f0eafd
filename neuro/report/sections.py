"""The contract between what a run is made of and its report: data in, figures and tables out.

Models, rules and substrates never draw.  Any of them may expose

    report_data(records: list[dict]) -> dict[str, object]

mapping a *section kind* to JSON-able data (the run's ``metrics.jsonl`` records are passed in
so an object can pick what it needs).  Each section kind is registered in
:data:`neuro.registry.REPORT_SECTIONS` by a drawer in this package::

    @REPORT_SECTIONS.register("ff_goodness")
    def draw_ff_goodness(data, records, run_dir: Path) -> Section: ...

which writes its PNGs (and data files) into ``run_dir`` and returns a :class:`Section`.
:func:`collect_sections` gathers the sections of every source in order; an unknown kind is
an error (a source promised a section nobody draws), an empty section is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuro.registry import REPORT_SECTIONS


@dataclass
class Figure:
    """A PNG in the run directory: ``title`` (heading), ``png`` (file name), ``caption`` (what it shows)."""

    title: str
    png: str
    caption: str


@dataclass
class Table:
    """A table: ``title``, column ``header`` and ``rows`` (lists of values, formatted by the HTML writer)."""

    title: str
    header: list[str]
    rows: list[list[Any]]


@dataclass
class Section:
    """What one drawer adds to a report: figures first, then tables."""

    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.figures or self.tables)


def collect_sections(sources: Iterable[object], records: list[dict], run_dir: str | Path) -> list[Section]:
    """Ask each source for its ``report_data`` and draw every section it names."""
    out = []
    for source in sources:
        provide = getattr(source, "report_data", None)
        if not callable(provide):
            continue
        for kind, data in (provide(records) or {}).items():
            section = REPORT_SECTIONS.get(kind).obj(data, records, Path(run_dir))
            if section:
                out.append(section)
    return out


def as_legacy(sections: list[Section]) -> tuple[list[tuple], list[tuple]]:
    """Figures ``(title, png, caption)`` and tables ``(title, header, rows)`` for :func:`neuro.report.write_report`."""
    figures = [(f.title, f.png, f.caption) for s in sections for f in s.figures]
    tables = [(t.title, t.header, t.rows) for s in sections for t in s.tables]
    return figures, tables
