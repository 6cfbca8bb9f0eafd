"""Where the offline data files live, and one-line error helpers for the loaders.

Lookup order for the data root (the folder holding ``mnist/``, ``hillenbrand_vowels/`` and
``yin_yang/``): the explicit ``root`` argument (``data.root`` in a config), then the
environment variable ``NEUROHIL_DATA``, then the first existing of
``<repo root>/../shared/data`` (repo root = parent of the ``neuro`` package) and
``<cwd>/../shared/data``.
"""

from __future__ import annotations

import os
from pathlib import Path

from neuro.errors import DataError

ENV_VAR = "NEUROHIL_DATA"
_HINT = f"set {ENV_VAR} or data.root in the config to the folder that holds mnist/, hillenbrand_vowels/ and yin_yang/"
# neuro/data/paths.py -> parents[0]=neuro/data, [1]=neuro, [2]=repo root
_REPO_ROOT = Path(__file__).resolve().parents[2]


def candidate_roots() -> tuple[Path, ...]:
    """Fallback locations tried (in order) when neither ``root`` nor NEUROHIL_DATA is set."""
    return (_REPO_ROOT.parent / "shared" / "data", Path.cwd() / ".." / "shared" / "data")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Return the data root as an absolute path, or raise DataError (see module docstring)."""
    if root is not None:
        p = Path(root).expanduser()
        if not p.is_dir():
            raise DataError(f"data root {p} (from the root argument / data.root) is not a directory; {_HINT}")
        return p.resolve()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise DataError(f"data root {p} (from {ENV_VAR}) is not a directory; {_HINT}")
        return p.resolve()
    tried = candidate_roots()
    for c in tried:
        if c.is_dir():
            return c.resolve()
    raise DataError(f"no data folder found (tried {', '.join(str(c) for c in tried)}); {_HINT}")


def one_line(exc: BaseException) -> str:
    """An exception as one short line (type name when the message is empty)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def require_file(path: Path, what: str, root: Path) -> Path:
    """Return ``path`` if it is a file, else raise a DataError naming it, the root and the fix."""
    if not path.is_file():
        rel = path.relative_to(root) if path.is_relative_to(root) else path.name
        raise DataError(
            f"{what} file {path} is missing (data root {root}); copy {rel} there from ../shared/data, "
            f"or set {ENV_VAR} or data.root in the config to a folder that has it"
        )
    return path
