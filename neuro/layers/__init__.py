"""Layers and models: ``torch.nn.Module`` s that declare :class:`Capabilities`."""

from neuro.layers.capabilities import Capabilities, capable_layers
from neuro.layers.hardware import measured_output
from neuro.layers.lif import LIFLayer
from neuro.layers.spiking_mlp import ModelTrace, SpikingMLP

__all__ = ["Capabilities", "capable_layers", "measured_output", "LIFLayer", "ModelTrace", "SpikingMLP"]
