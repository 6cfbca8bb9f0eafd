"""A small self-contained HTML report for a run directory.

The page has inline CSS only: no scripts, no external URLs, so it opens offline and can be
archived with the run.  Every piece of text is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import datetime as _dt
import html
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


def _cell(tag: str, value: object) -> str:
    cls = ' class="num"' if tag == "td" and _is_number(value) else ""
    return f"<{tag}{cls}>{html.escape(format_value(value))}</{tag}>"


def write_report(
    run_dir,
    title: str,
    summary: dict[str, object],
    figures: list[tuple[str, str, str]],
    tables: list[tuple[str, list[str], list[list[object]]]] = (),
) -> Path:
    """Write ``run_dir/report.html`` and return its path.

    ``summary`` becomes a key/value table; each figure is ``(heading, png name relative
    to run_dir, caption)``; each table is ``(heading, column names, rows)``.  A figure
    whose file is absent is still listed, marked as missing.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(str(title))}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(str(title))}</h1>",
    ]

    if summary:
        out.append('<table class="summary">')
        for key, value in summary.items():
            out.append(f"<tr><th>{esc(str(key))}</th>{_cell('td', value)}</tr>")
        out.append("</table>")

    for heading, name, caption in figures:
        name = str(name)
        out.append(f"<h2>{esc(str(heading))}</h2>")
        out.append("<figure>")
        src = esc(quote(name.replace(os.sep, "/")), quote=True)
        alt = esc(str(heading), quote=True)
        out.append(f'<img src="{src}" alt="{alt}">')
        cap = esc(str(caption)) if caption else ""
        if not (run_dir / name).is_file():
            cap = (cap + " " if cap else "") + (
                f'<span class="missing">(image {esc(name)} is missing)</span>'
            )
        if cap:
            out.append(f"<figcaption>{cap}</figcaption>")
        out.append("</figure>")

    for heading, columns, rows in tables:
        out.append(f"<h2>{esc(str(heading))}</h2>")
        out.append("<table>")
        if columns:
            out.append("<tr>" + "".join(f"<th>{esc(str(c))}</th>" for c in columns) + "</tr>")
        for row in rows:
            out.append("<tr>" + "".join(_cell("td", v) for v in row) + "</tr>")
        out.append("</table>")

    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    out.append(f"<footer>Generated {esc(stamp)} from {esc(run_dir.name)}.</footer>")
    out.append("</body>")
    out.append("</html>")

    path = run_dir / "report.html"
    tmp = run_dir / f".report.html.{os.getpid()}.tmp"
    try:
        tmp.write_text("\n".join(out) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
