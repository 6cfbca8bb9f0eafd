"""A small self-contained HTML report for a run directory, rendered from a Jinja2 template.

The page (``templates/report.html.j2``) has inline CSS only: no scripts, no external URLs, so it
opens offline and can be archived with the run.  Autoescaping escapes every piece of text.
"""

from __future__ import annotations

import datetime as _dt
import math
import numbers
import os
from pathlib import Path
from urllib.parse import quote

__all__ = ["write_report", "format_value"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 1150px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .95em; }
th, td { border: 1px solid #ddd; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.summary th { width: 14em; }
figure { margin: 0 0 1.5em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .92em; margin-top: .3em; }
.missing { color: #a00; }
ul.highlights { background: #f6f8fa; border-left: 4px solid #4a7; padding: .6em 1.2em .6em 2em; }
ul.highlights li { margin: .2em 0; }
footer { color: #888; font-size: .85em; margin-top: 3em; }
""".strip()


def format_value(value: object) -> str:
    """A value as report text: floats to 4 significant digits, None as an em dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return str(value)
    # numpy scalars: unwrap to Python numbers.
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        try:
            value = value.item()
        except (TypeError, ValueError):
            return False
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _cell(value: object) -> dict:
    return {"text": format_value(value), "number": _is_number(value)}


_ENV = None


def _template():
    global _ENV
    if _ENV is None:
        import jinja2

        _ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                                  autoescape=True, trim_blocks=True, lstrip_blocks=False, keep_trailing_newline=True)
    return _ENV.get_template("report.html.j2")


def write_report(
    run_dir,
    title: str,
    summary: dict[str, object],
    figures: list[tuple[str, str, str]],
    tables: list[tuple[str, list[str], list[list[object]]]] = (),
    highlights: list[str] = (),
) -> Path:
    """Write ``run_dir/report.html`` (from ``templates/report.html.j2``, every value escaped) and return its path.

    ``highlights`` are the few sentences a reader needs first (what ran, the result, faults,
    warnings); ``summary`` becomes a key/value table; each figure is ``(heading, png name relative
    to run_dir, caption)``; each table is ``(heading, column names, rows)``.  A figure whose file is
    absent is still listed, marked as missing.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    figs = [{"heading": str(heading), "name": str(name), "caption": str(caption or ""),
             "src": quote(str(name).replace(os.sep, "/")), "missing": not (run_dir / str(name)).is_file()}
            for heading, name, caption in figures]
    tabs = [{"heading": str(heading), "columns": [str(c) for c in (columns or [])],
             "rows": [[_cell(v) for v in row] for row in rows]} for heading, columns, rows in tables]
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    page = _template().render(title=str(title), css=_CSS, highlights=[str(h) for h in highlights],
                              summary=[(str(k), _cell(v)) for k, v in (summary or {}).items()],
                              figures=figs, tables=tabs, stamp=stamp, folder=run_dir.name)
    path = run_dir / "report.html"
    tmp = run_dir / f".report.html.{os.getpid()}.tmp"
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
