"""The compiled kernels of the fused LIF engine, built on first use; a torch fallback if they cannot be.

:func:`kernel` returns the extension module built from ``lif_kernel.cpp`` (next to this file) with
``torch.utils.cpp_extension.load_inline``: g++ and torch's headers, OpenMP through torch's own
intra-op thread pool (``at::parallel_for``, so ``torch.set_num_threads`` applies).  The build takes
about a minute once per machine and source version and is cached by torch (``TORCH_EXTENSIONS_DIR``,
default ``~/.cache/torch_extensions``), one folder per source, CPU, torch version and environment;
concurrent processes wait on torch's build lock, and a lock older than :data:`STALE_LOCK_S` (left by a
build that was killed) is removed with a warning instead of being waited on for ever.

If the build or the import fails, :func:`kernel` returns ``None`` after one warning line, and the
engine runs its pure-torch path (same equations, slower).  ``NEUROHIL_LIF_KERNEL=0`` in the
environment disables the kernels (the torch path then runs without a warning).

Kernels (arrays ``[T, M]``, ``M = batch * neurons``, contiguous; an empty tensor means absent):

- ``lif_forward``: the whole sequence, one pass, parallel over neurons; writes any of the pre-reset
  potential, spikes and membrane (any of which may alias the input currents) and the final state.
- ``lif_backward``: the adjoint recursion of :class:`simulators.lif._FusedLIF` in one reverse pass,
  with the surrogate derivative and spikes recomputed from the stored pre-reset potential.
- ``lif_event_forward``: no-gradient layer forward from binary spikes: compressed rows of the active
  inputs, then per (batch row, tile of 128 output neurons) the gather-sum of the active rows of ``W^T``
  and the LIF step, so the synaptic currents are never stored.
- ``activity``: fraction of nonzero entries and whether they are all 1.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
import warnings
from pathlib import Path

_SOURCE = Path(__file__).with_name("lif_kernel.cpp")
_FUNCTIONS = ["lif_forward", "lif_backward", "lif_event_forward", "activity"]
_STATE: dict = {}

SURROGATE_IDS = {"fast_sigmoid": 0, "sigmoid": 1, "atan": 2, "triangle": 3}


def _cpu_tag() -> str:
    """The CPU's feature flags, hashed: the build uses ``-march=native``, so a cache is per CPU kind."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    return flags


def _ninja_on_path() -> None:
    """Put the ``ninja`` of the installed ``ninja`` wheel on ``PATH`` when none is there already.

    torch's extension builder runs ``ninja`` from ``PATH``; the venv's ``bin/`` is not on it when
    ``.venv/bin/python`` is run without activating the environment."""
    import shutil

    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


STALE_LOCK_S = 600.0  # a build takes about a minute; a lock this old was left by a killed build


def clear_stale_lock(build_dir: Path, max_age_s: float = STALE_LOCK_S) -> bool:
    """Remove torch's build ``lock`` in ``build_dir`` when it is older than ``max_age_s`` (a build killed
    mid-way leaves it, and every later process would wait on it for ever); True if one was removed."""
    lock = Path(build_dir) / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except OSError:
        return False
    if age <= max_age_s:
        return False
    warnings.warn(f"removing a stale LIF kernel build lock ({lock}, {age / 60:.0f} min old)", RuntimeWarning,
                  stacklevel=2)
    lock.unlink(missing_ok=True)
    return True


def _build():
    import torch
    from torch.utils.cpp_extension import load_inline

    _ninja_on_path()

    src = _SOURCE.read_text()
    # sys.prefix: each environment (its torch headers are in the build file) gets its own build folder, so
    # checkouts with their own .venv do not rebuild each other's extension in turn
    tag = hashlib.sha1((src + _cpu_tag() + torch.__version__ + sys.prefix).encode()).hexdigest()[:12]
    name = f"neurohil_lif_{tag}"
    try:
        from torch.utils.cpp_extension import _get_build_directory

        clear_stale_lock(Path(_get_build_directory(name, verbose=False)))
    except ImportError:  # a torch without the helper: torch's own wait applies
        pass
    return load_inline(
        name=name,
        cpp_sources=[src],
        functions=_FUNCTIONS,
        extra_cflags=["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"],
        extra_ldflags=["-fopenmp"],
        verbose=False,
    )


def kernel():
    """The compiled extension, or ``None`` (disabled, or the build failed: one warning, torch path)."""
    if "module" in _STATE:
        return _STATE["module"]
    module = None
    if os.environ.get("NEUROHIL_LIF_KERNEL", "1") != "0":
        try:
            module = _build()
        except Exception as exc:  # noqa: BLE001 - any build/import failure means: use the torch path
            msg = str(exc).strip().splitlines()
            warnings.warn(
                f"LIF kernel build failed ({type(exc).__name__}: {msg[-1] if msg else ''}); "
                "using the slower pure-torch path",
                RuntimeWarning,
                stacklevel=2,
            )
            module = None
    _STATE["module"] = module
    return module


def reset_for_tests(module=None, *, forget: bool = False) -> None:
    """Force :func:`kernel` to return ``module`` (``None``: the torch fallback); ``forget``: build again."""
    if forget:
        _STATE.clear()
    else:
        _STATE["module"] = module
