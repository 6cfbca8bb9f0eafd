"""``neuro info``: versions and which backends are available (and why not)."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _importable(module: str) -> tuple[bool, str]:
    try:
        importlib.import_module(module)
        return True, ""
    except Exception as exc:  # noqa: BLE001 - report any import failure as a reason
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def backends() -> list[tuple[str, bool, str]]:
    """``(backend, available, detail)`` for every substrate NeuroHIL knows."""
    from devices.lava_env import lava_status

    rows: list[tuple[str, bool, str]] = [('lif-native (fused torch engine; model.engine = "native")', True, "built in")]
    for name, module, dist in (
        ('lif-snntorch (model.engine = "snntorch")', "snntorch", "snntorch"),
        ('lif-norse (model.engine = "norse")', "norse", "norse"),
        ("NIR export/import", "nir", "nir"),
        ("serial devices", "serial", "pyserial"),
    ):
        ok, why = _importable(module)
        rows.append(
            (name, ok, f"{dist} {_version(dist)}" if ok else f"{dist} not importable ({why}); run `make setup`")
        )
    ok, detail = lava_status()
    rows.append(("loihi-sim via Lava (fixed_pt)", ok, detail))
    return rows


def add_parser(sub) -> None:
    p = sub.add_parser(
        "info",
        help="versions and available backends",
        description="Print versions and which backends are available, and why not.",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    print(
        f"neurohil {_version('neurohil') or 'source tree'}; python {platform.python_version()}; torch "
        f"{torch.__version__} "
        f"({torch.get_num_threads()} threads, cuda {'yes' if torch.cuda.is_available() else 'no'})"
    )
    for name, ok, detail in backends():
        print(f"  [{'x' if ok else ' '}] {name}: {detail}")
    return 0
