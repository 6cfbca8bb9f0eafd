"""Shared test fixtures.  Tests import the code of this checkout (not an installed copy)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_configure(config):
    # Two cores here; keep each test process to one thread so `pytest -n 2` does not oversubscribe.
    torch.set_num_threads(1)


def run_cli(
    *args: str, cwd: str | os.PathLike | None = None, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m neuro ARGS`` as a user would; returns the completed process (text output)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "neuro", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def cli():
    return run_cli


def needs_shared_data(folder: str):
    """Skip marker for tests that need ../shared/data/<folder>."""
    return pytest.mark.skipif(
        not (SHARED_DATA / folder).is_dir(),
        reason=f"{SHARED_DATA / folder} is absent (the verified offline data copy); set NEUROHIL_DATA to run this test",
    )
