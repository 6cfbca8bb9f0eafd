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


# ------------------------------------------------------------------ descriptor and thread leaks (serial tests)
def open_pty_paths(before: set[str]) -> list[str]:
    """What the descriptors opened since ``before`` (a set of /proc/self/fd names) point to, where it is a pty."""
    paths = []
    for fd in set(os.listdir("/proc/self/fd")) - before:
        try:
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return [p for p in paths if "/dev/pts" in p or "ptmx" in p]


@pytest.fixture
def no_leaks():
    """The test leaves no thread and no pty or port descriptor behind."""
    import threading

    threads, before = threading.active_count(), set(os.listdir("/proc/self/fd"))
    yield
    assert threading.active_count() == threads
    assert not open_pty_paths(before)


@pytest.fixture
def no_pty_left_behind():
    """Runs drop their drivers when they end (pyserial ports are io objects, closed when collected): after a
    garbage collection no pty descriptor may outlive the test."""
    import gc

    before = set(os.listdir("/proc/self/fd"))
    yield
    gc.collect()
    left = open_pty_paths(before)
    assert not left, left

