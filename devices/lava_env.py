"""Where the Lava environment (``.venv-lava``: Python 3.10, lava-nc, numpy<2, no torch) lives.

Lava cannot be imported into the main environment; it is driven out of process with the
interpreter found here: ``NEUROHIL_LAVA_PYTHON`` if set, else ``<repo>/.venv-lava/bin/python``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def lava_python() -> Path:
    env = os.environ.get("NEUROHIL_LAVA_PYTHON")
    return Path(env) if env else REPO_ROOT / ".venv-lava" / "bin" / "python"


def lava_status(timeout: float = 60.0) -> tuple[bool, str]:
    """``(available, detail)``: whether lava-nc imports in the Lava environment, and its version or why not."""
    py = lava_python()
    if not py.exists():
        return (
            False,
            f"no Lava environment at {py.parent.parent} (run `make setup-lava`; it needs Python 3.10 from pyenv)",
        )
    code = (
        "import importlib.metadata as m, lava.magma; from lava.utils.loihi import is_installed; "
        "print(m.version('lava-nc'), is_installed())"
    )
    try:
        out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"importing lava in {py} took over {timeout:.0f} s"
    except OSError as exc:
        return False, f"cannot run {py}: {exc.strerror}"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["unknown error"])[-1]
        return False, f"lava-nc does not import in {py}: {last}"
    version, hardware = (out.stdout.split() + ["", ""])[:2]
    target = (
        "lava-loihi installed: runs use Loihi2HwCfg"
        if hardware == "True"
        else 'no lava-loihi: runs use Loihi2SimCfg(select_tag="fixed_pt")'
    )
    return True, f"lava-nc {version} ({py}); {target}"
