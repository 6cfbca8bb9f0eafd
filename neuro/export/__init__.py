"""Export trained networks: NIR graphs and explicit fixed-point specs for hardware targets.

- :func:`to_nir` / :func:`from_nir`: a model <-> ``nir.NIRGraph`` (dt and units in the graph's
  metadata); :func:`write_nir` / :func:`read_nir`: the same through ``.nir`` files.
"""

from neuro.export.nir import from_nir, read_nir, to_nir, write_nir

__all__ = ["to_nir", "from_nir", "write_nir", "read_nir"]
