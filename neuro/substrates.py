"""From a config string to a substrate object, for the layers of :mod:`neuro`.

``open_substrate(spec, n_in, n_out, seed=..., options=...)`` opens ``FAMILY[:VARIANT]``
through the one table of substrate families,
:data:`simulators.substrate.SUBSTRATE_FAMILIES`, where each family registers beside its
code (``wave:*`` in :mod:`simulators.wave`, ``affine`` in :mod:`simulators.affine`,
``serial:<port>`` in :mod:`devices.serial.substrate`, ...).  The lower packages raise their
own one-line errors; here they become :class:`~neuro.errors.ConfigError` (bad names and
options) so a config mistake reads the same whatever family it names.
"""

from __future__ import annotations

from neuro.distributed import expand_rank
from neuro.errors import ConfigError
from simulators.errors import SettingError
from simulators.substrate import SUBSTRATE_FAMILIES, Substrate, open_substrate_spec, substrate_names

__all__ = ["SUBSTRATE_FAMILIES", "open_substrate", "substrate_family", "substrate_label", "substrate_names"]


def substrate_family(spec: str) -> str:
    """The family part of a spec (``wave`` for ``wave:scattering``)."""
    return str(spec).partition(":")[0]


def open_substrate(spec: str, n_in: int, n_out: int, *, seed: int = 0, options: dict | None = None) -> Substrate:
    """Open the substrate named ``spec`` with ``n_in`` inputs and ``n_out`` outputs.

    ``{rank}`` / ``{local_rank}`` in ``spec`` become this process's rank in data-parallel training
    (``serial:/dev/ttyUSB{rank}``: one device per rank; :func:`neuro.distributed.expand_rank`).
    """
    spec = expand_rank(str(spec))
    try:
        return open_substrate_spec(spec, n_in, n_out, seed=seed, options=options)
    except SettingError as exc:
        raise ConfigError(str(exc)) from None


def substrate_label(spec: str) -> str:
    """How layers name a substrate in errors and reports: ``simulator:wave-scattering`` for an
    in-process simulator (an emulatable family), the spec itself (``serial:/dev/ttyUSB0``) for a device."""
    spec = expand_rank(str(spec))
    family = substrate_family(spec)
    if family in SUBSTRATE_FAMILIES and SUBSTRATE_FAMILIES.get(family).meta.get("emulatable", True):
        return f"simulator:{str(spec).replace(':', '-')}"
    return str(spec)
