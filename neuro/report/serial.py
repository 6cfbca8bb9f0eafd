"""Report section ``serial_link``: a serial device's throughput, latency and the faults recovered from.

Data (from :meth:`devices.serial.driver.SerialDevice.report_data`): ``port``, ``identity`` (text),
``stats`` (:meth:`~devices.serial.driver.SerialDevice.link_stats`), ``delivered_crc``, ``events``
(every link event as a dict) and ``latencies_s`` (FORWARD round trips, retries included).
Writes ``serial_link_<port>.jsonl`` (every event) and ``serial_link_<port>.json`` (counts,
throughput, ``delivered_crc``) beside the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from devices.serial.driver import LINK_FAULT_KINDS
from neuro.registry import REPORT_SECTIONS
from neuro.report.plots import DPI
from neuro.report.sections import Figure, Section, Table

FAULT_KINDS = (*LINK_FAULT_KINDS, "rewrites_after_reboot")  # the table also counts parameter rewrites



def _fmt(value, spec: str) -> str:
    return "\u2014" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)


@REPORT_SECTIONS.register("serial_link")
def draw_serial_link(data: dict, records: list[dict], run_dir: Path) -> Section:
    port, stats = data["port"], dict(data.get("stats") or {})
    stem = "".join(c if c.isalnum() else "_" for c in port).strip("_")
    with open(run_dir / f"serial_link_{stem}.jsonl", "w", encoding="utf-8") as fh:
        for ev in data.get("events", ()):
            fh.write(json.dumps(ev) + "\n")
    summary = {"port": port, "delivered_crc": data.get("delivered_crc"), **stats}
    (run_dir / f"serial_link_{stem}.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    rows = [
        ["port", port],
        ["device", data.get("identity") or "?"],
        ["requests (all types)", stats.get("requests", 0)],
        ["samples measured", stats.get("samples", 0)],
        ["throughput (samples/s)", _fmt(stats.get("samples_per_s"), ".0f")],
        [
            "FORWARD round trip median / p95 (ms)",
            f"{_fmt(stats.get('forward_median_ms'), '.3f')} / {_fmt(stats.get('forward_p95_ms'), '.3f')}",
        ],
        ["bytes out / in", f"{stats.get('bytes_out', 0)} / {stats.get('bytes_in', 0)}"],
    ]
    labels = {"rewrites_after_reboot": "hardware parameters rewritten after a reboot"}
    faults = [[labels.get(k, k), stats.get(k, 0)] for k in FAULT_KINDS]
    tables = [
        Table(f"Serial device {port}", ["quantity", "value"], rows),
        Table(f"Link faults recovered from ({port}; events in serial_link_{stem}.jsonl)", ["fault", "count"], faults),
    ]
    figures = []
    latencies = np.asarray(data.get("latencies_s") or [], dtype=float)
    if latencies.size:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.hist(1e3 * latencies, bins=50, log=True)
        ax.set_xlabel("FORWARD round trip (ms), retries included")
        ax.set_ylabel("requests")
        ax.set_title(f"serial {port}: {_fmt(stats.get('samples_per_s'), '.0f')} samples/s")
        fig.tight_layout()
        fig.savefig(run_dir / f"serial_latency_{stem}.png", dpi=DPI)
        plt.close(fig)
        figures.append(
            Figure(
                f"Serial link latency ({port})",
                f"serial_latency_{stem}.png",
                "Round-trip time of every FORWARD request over the link (log count); the tail holds the retries.",
            )
        )
    return Section(figures, tables)
