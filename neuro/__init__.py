"""NeuroHIL: train spiking and physical neural networks the way real hardware can learn.

A network is a stack of layers; each layer runs on a substrate (a simulator in
:mod:`simulators` or a device in :mod:`devices`); a learning rule from
:mod:`neuro.rules` trains it through the one :class:`neuro.trainer.Trainer`.
"""

__version__ = "0.1.0"
