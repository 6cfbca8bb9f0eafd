"""The contract of a black-box substrate: what a physical layer, its emulated firmware and
its serial driver all provide, so a layer can run on any of them unchanged.

A substrate maps a batch of inputs to measured outputs.  It may have *hardware
parameters* (values written to the device, e.g. control voltages or phase settings) and
*hidden parameters* (the physics the learner may not read).  Measurements may be noisy
and the hidden parameters may drift; nothing here is differentiable.

``n_in``, ``n_out``: input and output widths.
``input_range``: ``(low, high)`` that inputs must lie in (device units).
``forward(x [batch, n_in]) -> y [batch, n_out]``: one measurement per sample (float32).
``set_params(params)``: write hardware parameters (name -> tensor); ``get_params()`` reads back.
``reset()``: power-on state of the dynamics (hardware parameters keep their written values).
``describe()``: a JSON-able dict (kind, sizes, ranges, parameter shapes) used by HELLO frames.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Substrate(Protocol):
    n_in: int
    n_out: int
    input_range: tuple[float, float]

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def set_params(self, params: dict[str, torch.Tensor]) -> None: ...

    def get_params(self) -> dict[str, torch.Tensor]: ...

    def reset(self) -> None: ...

    def describe(self) -> dict: ...


# ------------------------------------------------------------ substrate families
from collections.abc import Callable  # noqa: E402

from simulators.errors import SettingError, SubstrateFault, UnknownNameError  # noqa: E402
from simulators.registry import did_you_mean, make_registry  # noqa: E402

SubstrateOpener = Callable[..., Substrate]
"""``opener(variant, n_in, n_out, *, seed, options) -> Substrate``; ``variant`` is what follows the colon."""

SUBSTRATE_FAMILIES = make_registry("SUBSTRATE_FAMILIES", "substrate family", discover=("simulators", "devices"))
"""The one table of substrate families (``wave``, ``affine``, ``serial``, ...), used by
:func:`neuro.substrates.open_substrate`, the device emulator and the CLI.  An entry's metadata:

variants: the names allowed after the colon (``()``: none; ``None``: free text such as a port).
variant_hint: how to write a free-text variant in listings (``<port>``).
emulatable: whether ``neuro devices emulate`` can serve it (a simulator, not a device itself).
"""


def substrate_names(*, emulatable_only: bool = False) -> list[str]:
    """Every valid substrate spec, e.g. ``["affine", "wave:scattering", ..., "serial:<port>"]``."""
    out = []
    for entry in sorted(SUBSTRATE_FAMILIES.entries(), key=lambda e: e.name):
        if emulatable_only and not entry.meta.get("emulatable", True):
            continue
        variants = entry.meta.get("variants", ())
        if variants is None:
            out.append(f"{entry.name}:{entry.meta.get('variant_hint', '<name>')}")
        elif not variants:
            out.append(entry.name)
        else:
            out.extend(f"{entry.name}:{v}" for v in variants)
    return out


def open_substrate_spec(
    spec: str, n_in: int, n_out: int, *, seed: int = 0, options: dict | None = None, emulatable_only: bool = False
) -> Substrate:
    """Open ``FAMILY[:VARIANT]`` through :data:`SUBSTRATE_FAMILIES`; unknown names are one-line errors."""
    family, _, variant = str(spec).partition(":")
    names = substrate_names(emulatable_only=emulatable_only)
    if family not in SUBSTRATE_FAMILIES:
        raise UnknownNameError(f"unknown substrate '{spec}'{did_you_mean(spec, names)}; valid: {', '.join(names)}")
    entry = SUBSTRATE_FAMILIES.get(family)
    if emulatable_only and not entry.meta.get("emulatable", True):
        raise UnknownNameError(f"substrate family '{family}' cannot be emulated; valid: {', '.join(names)}")
    variants = entry.meta.get("variants", ())
    if variants is not None and (variant or variants) and variant not in variants:
        if not variants:
            raise SettingError(f"substrate '{family}' has no variants, got '{spec}'; use '{family}'")
        raise UnknownNameError(f"unknown substrate '{spec}'{did_you_mean(spec, names)}; valid: {', '.join(names)}")
    return entry.obj(variant, int(n_in), int(n_out), seed=int(seed), options=dict(options or {}))


def check_options(spec: str, options: dict, valid) -> None:
    """Refuse option keys not in ``valid`` with a did-you-mean hint (one line)."""
    valid = sorted(valid)
    for key in options:
        if key not in valid:
            raise SettingError(
                f"unknown option '{key}' for substrate {spec}{did_you_mean(key, valid)}; valid: {', '.join(valid)}"
            )


# ------------------------------------------------------------ input and control checks shared by simulators
RANGE_TOLERANCE = 1e-5
"""How far (device units) a value may lie outside ``input_range`` before it is refused (float rounding)."""


def check_batch(kind: str, x, n_in: int, input_range: tuple[float, float]) -> None:
    """Refuse anything but a ``[batch, n_in]`` tensor inside ``input_range`` (one-line :class:`SubstrateFault`)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != n_in:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise SubstrateFault(f"{kind} expects inputs [batch, {n_in}], got {shape}")
    lo, hi = input_range
    if x.numel() and (float(x.min()) < lo - RANGE_TOLERANCE or float(x.max()) > hi + RANGE_TOLERANCE):
        raise SubstrateFault(
            f"{kind} inputs must lie in [{lo}, {hi}] (got [{float(x.min()):.3g}, {float(x.max()):.3g}]); "
            "encode them into the device range first"
        )


def checked_control(kind: str, params: dict, n_control: int, input_range: tuple[float, float]) -> torch.Tensor | None:
    """The new ``control`` vector of ``set_params(params)`` (float32, flat), or ``None`` when absent.

    Control values are voltages in the input's units: ``n_control`` of them, inside ``input_range``.
    Any other parameter name is refused."""
    control = None
    for key, value in params.items():
        if key != "control":
            raise SubstrateFault(f"{kind} has no hardware parameter '{key}'; it has: control")
        value = torch.as_tensor(value, dtype=torch.float32).detach().reshape(-1)
        if value.numel() != n_control:
            raise SubstrateFault(f"{kind} control needs {n_control} values, got {value.numel()}")
        lo, hi = input_range
        if value.numel() and (float(value.min()) < lo - RANGE_TOLERANCE or float(value.max()) > hi + RANGE_TOLERANCE):
            raise SubstrateFault(f"{kind} control values must lie in [{lo}, {hi}]")
        control = value.clone()
    return control
