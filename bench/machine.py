"""What every benchmark records about the machine: CPU model, 1-min load average before and after, validity.

Timing and memory figures are only comparable when taken on an idle machine.  A benchmark calls
:func:`start` before measuring and :func:`report` after; ``report`` returns one markdown comment line
with the CPU model, the load before and after and a verdict: a run whose load average exceeded
:data:`MAX_LOAD` (before, or after minus the benchmark's own threads) is marked INVALID, and its
figures must not be compared with others.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

MAX_LOAD = 1.5
MALLOC_VARS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    import platform

    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs)"


def start() -> dict:
    """Record the state before a measurement."""
    return {"load_before": os.getloadavg()[0], "t0": time.time()}


def valid(rec: dict, own_threads: int = 0) -> bool:
    """Idle before, and after not above MAX_LOAD plus the benchmark's own busy threads."""
    return rec["load_before"] <= MAX_LOAD and rec["load_after"] <= MAX_LOAD + own_threads


def report(rec: dict, own_threads: int = 0) -> str:
    """Finish the record (load after) and return the line to print with the results."""
    rec["load_after"] = os.getloadavg()[0]
    rec["cpu"] = cpu_model()
    malloc = [f"{k}={os.environ[k]}" for k in MALLOC_VARS if k in os.environ]
    verdict = "valid" if valid(rec, own_threads) else "INVALID (machine busy: do not compare these figures)"
    return (
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(rec['t0']))}; {rec['cpu']}; 1-min load "
        f"{rec['load_before']:.2f} before, {rec['load_after']:.2f} after; glibc malloc env "
        f"{' '.join(malloc) if malloc else 'not set'}; {verdict}"
    )
