"""NeuroHIL: train spiking and physical neural networks the way real hardware can learn.

A network is a stack of layers; each layer runs on a substrate (a simulator in
:mod:`simulators` or a device in :mod:`devices`); a learning rule from
:mod:`neuro.rules` trains it through the one :class:`neuro.trainer.Trainer`.

The main objects are importable from here (loaded on first use, so ``import neuro`` stays light)::

    import neuro
    data = neuro.load_dataset("digits")
    model = neuro.SpikingMLP(data.n_features, [128], data.n_classes, time_steps=20)
    trainer = neuro.Trainer(model, neuro.BPTT(), torch.optim.Adam(model.parameters(), 5e-3), data,
                            epochs=5, batch_size=32)
    trainer.fit(); print(trainer.evaluate("test"))
    neuro.write_nir(model, "model.nir")

or from a config, as the command line does: ``run, test = neuro.train(neuro.load_config("examples/digits_bptt.toml"))``.
See ``examples/python_api.py``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # data
    "load_dataset": "neuro.data", "from_torch": "neuro.data", "Dataset": "neuro.data", "Split": "neuro.data",
    # models and layers
    "SpikingMLP": "neuro.layers.spiking_mlp", "MLP": "neuro.layers.mlp", "PhysicalMLP": "neuro.layers.physical_mlp",
    "LIFLayer": "neuro.layers.lif", "PhysicalLayer": "neuro.layers.physical", "LIFParameters": "simulators.lif",
    # rules and training
    "Rule": "neuro.rules.base", "BPTT": "neuro.rules.bptt", "FF": "neuro.rules.ff", "FFSpec": "neuro.rules.ff",
    "MFFF": "neuro.rules.mfff", "MFFFSpec": "neuro.rules.mfff", "Trainer": "neuro.trainer",
    "build_experiment": "neuro.build",
    # runs from configs
    "train": "neuro.workflow", "resume": "neuro.workflow", "evaluate": "neuro.workflow", "load_run": "neuro.workflow",
    "load_config": ("neuro.config", "load_toml"),
    # substrates, export, deployment
    "open_substrate": "neuro.substrates", "to_nir": "neuro.export", "from_nir": "neuro.export",
    "write_nir": "neuro.export", "read_nir": "neuro.export", "deploy_loihi": "neuro.deploy",
    # registries
    "MODEL_KINDS": "neuro.registry", "RULES": "neuro.registry", "ENCODERS": "neuro.registry",
    "READOUTS": "neuro.registry", "DATASETS": "neuro.registry", "SUBSTRATE_FAMILIES": "simulators.substrate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'neuro' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
