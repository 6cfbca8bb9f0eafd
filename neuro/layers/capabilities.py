"""What a layer can do, declared so that rules and the trainer can check it up front."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Capabilities:
    """Declared abilities of one layer.

    differentiable: gradients can flow through the layer's forward (simulators usually;
        hardware never).
    time_stepped: the layer consumes and produces sequences [T, batch, ...] and keeps state
        across steps.
    precision: numeric format of its computation, e.g. ``"float32"`` or ``"fixed-point"``.
    substrate: where it runs, e.g. ``"simulator:lif-native"`` or ``"serial:/dev/ttyUSB0"``.
    hardware_parameters: names of parameters that live on the hardware (written to it).
    lateral: the layer has lateral (within-layer) connections.
    """

    differentiable: bool = True
    time_stepped: bool = False
    precision: str = "float32"
    substrate: str = "simulator"
    hardware_parameters: tuple[str, ...] = ()
    lateral: bool = False


def capable_layers(model: nn.Module) -> list[tuple[str, nn.Module, Capabilities]]:
    """All sub-modules of ``model`` (itself included) that declare ``capabilities``, in order.

    A module that declares capabilities is treated as one layer: its own sub-modules are
    not searched further.
    """
    found: list[tuple[str, nn.Module, Capabilities]] = []

    def visit(name: str, module: nn.Module) -> None:
        caps = getattr(module, "capabilities", None)
        if isinstance(caps, Capabilities):
            found.append((name or type(module).__name__, module, caps))
            return
        for child_name, child in module.named_children():
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit("", model)
    return found
