"""Name -> implementation tables, registered beside the code they name.

Every kind of thing a config or a command line names (substrate families, LIF engines,
model kinds, rules, encoders, readouts, datasets, deploy targets) has exactly one
:class:`Registry`.  An implementation registers itself where it is defined::

    @SUBSTRATE_FAMILIES.register("wave", names=("scattering", "saturable", "oscillators"))
    def open_wave(name, n_in, n_out, *, seed, options): ...

Lookups of unknown names raise :class:`~simulators.errors.UnknownNameError` with the one
did-you-mean hint this project writes (:func:`did_you_mean`).  The registry holds
classes and factories, never live instances (a table of live objects is the hidden global
state this design avoids).

Discovery: a registry knows the packages whose modules register into it (``discover``).
On the first lookup it imports every module of those packages that mentions the registry's
name, then every ``importlib.metadata`` entry point of group ``neurohil.<kind>s``, so a
third-party package registers a substrate family, a rule, ... by declaring an entry point.
Adding a built-in is therefore one module with one registration line; nothing else is
edited.  This module lives in :mod:`simulators`, the lowest package, so that
:mod:`simulators`, :mod:`devices` and :mod:`neuro` all use the same helper.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from simulators.errors import UnknownNameError


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name_message(kind: str, name: object, choices: Iterable[str], where: str = "") -> str:
    """The one wording of "unknown <kind>" used across the project."""
    choices = [str(c) for c in choices]
    listed = ", ".join(choices) or "(none registered)"
    if where:
        return f"{where} = {name!r} is not one of {listed}{did_you_mean(name, choices)}"
    return f"unknown {kind} {name!r}{did_you_mean(name, choices)}; valid: {listed}"


@dataclass(frozen=True)
class Entry:
    """One registered implementation: its name, the object, an optional config spec class and metadata."""

    name: str
    obj: Any
    spec: type | None = None
    meta: dict = field(default_factory=dict)


class Registry:
    """A table ``name -> Entry`` for one kind of thing.

    kind: what the names name, in the singular ("rule", "substrate family"); used in errors.
    discover: dotted package names whose modules register into this table; imported lazily.
    error: the exception class raised for unknown names (default :class:`UnknownNameError`).
    """

    def __init__(
        self,
        kind: str,
        *,
        discover: tuple[str, ...] = (),
        entry_point_group: str | None = None,
        error: type[Exception] = UnknownNameError,
    ) -> None:
        self.kind = kind
        self.error = error
        self.discover = tuple(discover)
        self.entry_point_group = entry_point_group or f"neurohil.{kind.replace(' ', '_')}s"
        self._entries: dict[str, Entry] = {}
        self._loaded = False
        self._loading = False
        self._attr: str | None = None  # the module-level name this registry is bound to (for discovery)

    # ------------------------------------------------------------- registering
    def register(self, name: str, obj: Any = None, *, spec: type | None = None, replace: bool = False, **meta):
        """Register ``obj`` under ``name``; without ``obj``, return a decorator.

        Registering a taken name raises ``ValueError`` unless ``replace=True`` (tests use it
        to install toys; it never happens silently).
        """

        def add(target):
            if not isinstance(name, str) or not name:
                raise ValueError(f"{self.kind} names are non-empty strings, got {name!r}")
            old = self._entries.get(name)
            if old is not None and old.obj is not target and not replace:
                raise ValueError(f"{self.kind} {name!r} is already registered (by {_qualname(old.obj)})")
            self._entries[name] = Entry(name, target, spec, dict(meta))
            return target

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    # ------------------------------------------------------------------ lookups
    def get(self, name: object, *, where: str = "") -> Entry:
        """The entry named ``name``; unknown names raise :class:`UnknownNameError` (one line)."""
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        self.load()
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        raise self.error(unknown_name_message(self.kind, name, self.names(), where))

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def __getitem__(self, name: str) -> Any:
        return self.get(name).obj

    def names(self) -> tuple[str, ...]:
        """Registered names, sorted (so listings and errors do not depend on import order)."""
        self.load()
        return tuple(sorted(self._entries))

    def entries(self) -> tuple[Entry, ...]:
        self.load()
        return tuple(self._entries[n] for n in sorted(self._entries))

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"

    # ---------------------------------------------------------------- discovery
    def load(self) -> None:
        """Import the modules that register here (once); then the entry points of its group."""
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for package in self.discover:
                for module in _registering_modules(package, self._needles()):
                    importlib.import_module(module)
            try:
                eps = importlib.metadata.entry_points(group=self.entry_point_group)
            except Exception:  # noqa: BLE001 - broken third-party metadata must not break lookups
                eps = ()
            for ep in eps:
                ep.load()
            self._loaded = True
        finally:
            self._loading = False

    def _needles(self) -> tuple[str, ...]:
        return tuple(n for n in (self._attr,) if n)

    def bind(self, attr: str) -> Registry:
        """Record the module-level name of this registry (what registering modules mention)."""
        self._attr = attr
        return self


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _registering_modules(package: str, needles: tuple[str, ...]) -> list[str]:
    """Modules of ``package`` (recursively) whose source mentions one of ``needles`` + ``.register``."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    out = []
    for info in pkgutil.walk_packages(spec.submodule_search_locations, prefix=package + "."):
        mod_spec = importlib.util.find_spec(info.name)
        origin = getattr(mod_spec, "origin", None)
        if not origin or not origin.endswith(".py"):
            continue
        try:
            with open(origin, encoding="utf-8") as fh:
                text = fh.read()
        except OSError:
            continue
        if any(f"{n}.register" in text for n in needles):
            out.append(info.name)
    return out


def make_registry(
    attr: str, kind: str, *, discover: tuple[str, ...], error: type[Exception] = UnknownNameError
) -> Registry:
    """A registry bound to the module-level name ``attr`` it will be stored under."""
    return Registry(kind, discover=discover, error=error).bind(attr)


Factory = Callable[..., Any]
