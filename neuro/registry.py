"""The registries of :mod:`neuro`: one table per kind of thing a config names.

Each entry registers itself beside its code with a decorator, e.g.::

    @RULES.register("ff", spec=FFSpec)
    def build_ff(spec: FFSpec, data) -> Rule: ...

| registry | name in config | object registered | spec |
|---|---|---|---|
| :data:`MODEL_KINDS` | ``model.kind`` | ``build(spec, data) -> nn.Module`` | the ``[model]`` dataclass |
| :data:`RULES` | ``rule.name`` | ``build(spec, data) -> Rule`` | the ``[rule]`` dataclass |
| :data:`ENCODERS` | ``model.encoder`` | ``encoder_class(time_steps) -> nn.Module`` | - |
| :data:`READOUTS` | ``model.readout`` | ``readout(spikes, membrane) -> scores`` | - |
| :data:`DATASETS` | ``data.dataset`` | ``load(root, *, val_fraction, seed, limit) -> Dataset`` | - |
| :data:`DEPLOY_TARGETS` | ``neuro deploy --target`` | ``run(deployment) -> TargetResult`` | - |
| :data:`REPORT_SECTIONS` | a record's ``section`` | ``draw(data, run_dir) -> Section`` | - |

Substrate families and LIF engines live one level down (they are simulator and device
names): :data:`simulators.substrate.SUBSTRATE_FAMILIES`, :data:`simulators.lif.LIF_ENGINES`.
Unknown names raise :class:`~neuro.errors.ConfigError` with the did-you-mean hint.
Third-party packages register through entry points of group ``neurohil.<registry kind>s``
(e.g. ``neurohil.rules``); see :mod:`simulators.registry`.
"""

from __future__ import annotations

from neuro.errors import ConfigError
from simulators.errors import UnknownNameError
from simulators.registry import Entry, Registry, did_you_mean, make_registry


class UnknownName(ConfigError, UnknownNameError):
    """A config names something no registry holds (one line, with the closest valid name)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _registry(attr: str, kind: str, *packages: str) -> Registry:
    return make_registry(attr, kind, discover=packages, error=UnknownName)


MODEL_KINDS = _registry("MODEL_KINDS", "model kind", "neuro.layers")
RULES = _registry("RULES", "rule", "neuro.rules")
ENCODERS = _registry("ENCODERS", "encoder", "neuro.layers")
READOUTS = _registry("READOUTS", "readout", "neuro.layers")
DATASETS = _registry("DATASETS", "dataset", "neuro.data")
DEPLOY_TARGETS = _registry("DEPLOY_TARGETS", "deploy target", "neuro.deploy")
REPORT_SECTIONS = _registry("REPORT_SECTIONS", "report section", "neuro.report")

__all__ = ["DATASETS", "DEPLOY_TARGETS", "ENCODERS", "Entry", "MODEL_KINDS", "READOUTS", "REPORT_SECTIONS", "RULES",
           "Registry", "UnknownName", "did_you_mean"]
