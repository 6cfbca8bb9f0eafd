"""A run directory: ``runs/<name>/`` with the resolved config, metrics, checkpoint and report.

Layout::

    runs/<name>/config.toml      resolved configuration (every default filled in)
    runs/<name>/provenance.json  command, versions, git commit, machine (see neuro.provenance)
    runs/<name>/console.log      what the command printed
    runs/<name>/metrics.jsonl    one JSON record per line ("event": "epoch" | "step" | "test" | ...)
    runs/<name>/checkpoint.pt    latest checkpoint (written atomically)
    runs/<name>/*.png            plots
    runs/<name>/report.html      the report that shows them
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import tomli_w

from neuro.errors import ConfigError


def _clean(value):
    """JSON-safe: tensors/numpy scalars to Python numbers, NaN/inf to None."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class Run:
    """Files of one run.  Create with :meth:`create` (new) or :meth:`open` (existing)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, out_dir: str | os.PathLike, name: str, *, overwrite: bool = False) -> Run:
        """Make ``out_dir/name``; if it exists and ``overwrite`` is false, use ``name-2``, ``name-3``..."""
        if not name or "/" in name or name in (".", ".."):
            raise ConfigError(f"run name '{name}' is not a plain directory name; use letters, digits, '-' or '_'")
        base = Path(out_dir)
        path = base / name
        if path.exists() and not overwrite:
            k = 2
            while (base / f"{name}-{k}").exists():
                k += 1
            path = base / f"{name}-{k}"
        path.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for stale in ("metrics.jsonl", "checkpoint.pt"):
                (path / stale).unlink(missing_ok=True)
        return cls(path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Run:
        path = Path(path)
        if not (path / "config.toml").is_file():
            raise ConfigError(
                f"{path} is not a run directory (no config.toml); pass runs/<name> of a finished or interrupted run"
            )
        return cls(path)

    @classmethod
    def find(cls, name_or_path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Run:
        """A run given as a path (``runs/digits-bptt``) or a name looked up in ``out_dir`` (default ``runs``)."""
        given = Path(name_or_path)
        candidates = [given] if out_dir is None else []
        if len(given.parts) == 1:
            candidates.append(Path(out_dir or "runs") / given)
        for path in candidates:
            if (path / "config.toml").is_file():
                return cls(path)
        where = " or ".join(str(p) for p in candidates)
        raise ConfigError(f"no run at {where} (no config.toml); pass a run directory or the name of a run under --out")

    @property
    def provenance_path(self) -> Path:
        return self.path / "provenance.json"

    def write_provenance(self, prov: dict) -> Path:
        tmp = self.provenance_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_clean(prov), indent=1), encoding="utf-8")
        os.replace(tmp, self.provenance_path)
        return self.provenance_path

    def provenance(self) -> dict:
        try:
            return json.loads(self.provenance_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def write_config(self, config: dict) -> Path:
        def strip_none(d):
            return {k: strip_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}

        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_bytes(tomli_w.dumps(strip_none(config)).encode())
        os.replace(tmp, self.config_path)
        return self.config_path

    def log(self, record: dict) -> None:
        """Append one record to metrics.jsonl and flush it to disk."""
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(_clean(record)) + "\n")
            fh.flush()

    def records(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a run killed mid-write leaves a partial last line
        return out

    def truncate_records_after(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (used on resume so nothing is logged twice)."""
        kept = [r for r in self.records() if r.get("epoch", 0) <= epoch and r.get("event") != "test"]
        tmp = self.metrics_path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.metrics_path)
