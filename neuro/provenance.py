"""Run provenance: what produced a run, written to ``runs/<name>/provenance.json`` and shown atop its report.

Recorded: the command line, start time (UTC, ISO 8601), the run's seed, package versions (Python,
neurohil, torch, numpy, snntorch, norse, nir, pyserial), the git commit of the NeuroHIL checkout and
whether its tree had uncommitted changes (``dirty``; ``null`` when the code is not in a git
checkout), and the machine (CPU model, logical cores, torch threads, platform).  The resolved
config is ``config.toml`` beside it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

PACKAGES = ("neurohil", "torch", "numpy", "snntorch", "norse", "nir", "pyserial")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(path: str | os.PathLike | None = None) -> dict[str, object]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout holding the ``neuro`` package."""
    root = Path(path) if path else Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "hostname": platform.node(),
    }


def collect(seed: int) -> dict[str, object]:
    return {
        "command": " ".join(sys.argv),
        "started_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": int(seed),
        "versions": package_versions(),
        "git": git_state(),
        "machine": machine(),
    }


def summary_rows(prov: dict) -> dict[str, object]:
    """The few lines a report shows at its top."""
    git = prov.get("git") or {}
    commit = git.get("commit")
    code = (
        "not a git checkout" if commit is None else commit[:12] + (" (uncommitted changes)" if git.get("dirty") else "")
    )
    versions = prov.get("versions") or {}
    mach = prov.get("machine") or {}
    return {
        "command": prov.get("command"),
        "started (UTC)": prov.get("started_utc"),
        "seed": prov.get("seed"),
        "code": code,
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items() if v),
        "machine": f"{mach.get('cpu')}, {mach.get('logical_cores')} cores, torch threads {mach.get('torch_threads')}",
    }
