"""The architecture's promises: layering without cycles, and new things plug in through registries only."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("neuro", "simulators", "devices")


# ------------------------------------------------------------------ import graph
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """Every module imported anywhere in ``path`` (top level and inside functions), as dotted names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)  # "from pkg import module"
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for module, path in files.items():
        graph[module] = {m for m in _imports(path, module) if m in files and m != module}
    return graph


GRAPH = _graph()


def _edges(src_prefix: str, dst_prefix: str) -> list[tuple[str, str]]:
    def under(m: str, prefix: str) -> bool:
        return m == prefix or m.startswith(prefix + ".")

    return sorted((a, b) for a, deps in GRAPH.items() if under(a, src_prefix) for b in deps if under(b, dst_prefix))


def test_the_graph_sees_known_edges():
    # a reader that found nothing would pass every rule below
    assert ("neuro.build", "neuro.registry") in _edges("neuro.build", "neuro.registry")
    assert ("devices.serial.substrate", "simulators.substrate") in _edges("devices", "simulators")
    assert len(GRAPH) > 60


@pytest.mark.parametrize(("lower", "upper"), [("simulators", "neuro"), ("simulators", "devices"), ("devices", "neuro")])
def test_lower_packages_import_nothing_from_upper_ones(lower, upper):
    assert _edges(lower, upper) == []


def test_layers_do_not_import_rules():
    assert _edges("neuro.layers", "neuro.rules") == []


@pytest.mark.parametrize("upper", ["neuro.trainer", "neuro.workflow", "neuro.deploy", "neuro.build", "neuro.rules"])
def test_export_converts_and_never_trains(upper):
    assert _edges("neuro.export", upper) == []


def test_no_import_cycles():
    """No cycle among modules, counting imports inside functions too (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            # a package's __init__ re-exporting its own submodules is not a dependency cycle
            if v.startswith(w + "."):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == []


# ------------------------------------------------------------- plugging in toys
class ToyIntensity:
    """A toy physical system: ``y = (W x)^2`` with a hidden random ``W`` and one control input added to ``x``."""

    def __init__(self, n_in: int, n_out: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.n_in, self.n_out = n_in, n_out
        self.input_range = (-1.0, 1.0)
        self.W = torch.randn(n_out, n_in + 1, generator=g) / (n_in + 1) ** 0.5
        self.control = torch.zeros(1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        e = torch.cat([x.float(), self.control.expand(x.shape[0], 1)], dim=1)
        return (e @ self.W.T) ** 2

    def set_params(self, params):
        self.control = params["control"].detach().float().reshape(1).clone()

    def get_params(self):
        return {"control": self.control.clone()}

    def reset(self) -> None:
        pass

    def describe(self) -> dict:
        return {"kind": "toy", "n_in": self.n_in, "n_out": self.n_out, "input_range": list(self.input_range),
                "params": {"control": [1]}}


@dataclass
class SignSpec:
    name: str = "toy_sign"
    scale: float = 1.0


class SignBPTT:
    """A toy rule: backprop, then keep only the sign of each gradient entry (sign-SGD)."""

    def __init__(self, scale: float) -> None:
        from neuro.rules.bptt import BPTT

        self.inner, self.scale = BPTT(), scale
        self.name = "toy_sign"
        self.requirements = self.inner.requirements

    def step(self, model: nn.Module, batch):
        metrics = self.inner.step(model, batch)
        for p in model.parameters():
            if p.grad is not None:
                p.grad = self.scale * torch.sign(p.grad)
        return metrics

    def predict(self, model, x):
        return model(x)

    def evaluate(self, model, batch):
        return self.inner.__class__.evaluate(self, model, batch)

    def check_compatible(self, model):
        from neuro.rules.base import check_compatible

        check_compatible(self, model)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@pytest.fixture
def toys():
    """Register a toy substrate family, rule and readout (registries only), and remove them after."""
    from neuro.registry import READOUTS, RULES
    from simulators.substrate import SUBSTRATE_FAMILIES

    SUBSTRATE_FAMILIES.register("toy", lambda variant, n_in, n_out, *, seed, options: ToyIntensity(n_in, n_out, seed),
                                variants=("intensity",), emulatable=True)
    RULES.register("toy_sign", lambda spec, data: SignBPTT(spec.scale), spec=SignSpec)
    READOUTS.register("spike_rate_x5", lambda spikes, membrane: 5.0 * spikes.mean(0), output_spiking=True, loihi=False)
    yield
    SUBSTRATE_FAMILIES.unregister("toy")
    RULES.unregister("toy_sign")
    READOUTS.unregister("spike_rate_x5")


def _fit(config: dict) -> tuple[float, object]:
    from neuro.build import build_experiment

    exp = build_experiment(config)
    trainer = exp.trainer(None, progress=False)
    trainer.fit()
    return trainer.evaluate("test")["accuracy"], exp


def test_toy_readout_and_toy_rule_train_a_spiking_network(toys):
    acc, exp = _fit({
        "data": {"dataset": "digits", "limit": 600},
        "model": {"kind": "spiking_mlp", "hidden": [64], "time_steps": 10, "readout": "spike_rate_x5"},
        "rule": {"name": "toy_sign", "scale": 1.0},
        "optim": {"name": "sgd", "lr": 5e-3},
        "train": {"epochs": 3, "batch_size": 32},
    })
    assert exp.rule.name == "toy_sign" and exp.model.readout == "spike_rate_x5"
    assert acc > 0.5, acc  # ten classes: chance is 0.1


def test_toy_substrate_family_trains_a_physical_network_and_is_listed_everywhere(toys):
    from devices.emulator import make_substrate, substrate_names
    from neuro.substrates import substrate_names as neuro_names

    assert "toy:intensity" in substrate_names() and "toy:intensity" in neuro_names()
    assert isinstance(make_substrate("toy:intensity", 3, 2), ToyIntensity)
    acc, exp = _fit({
        "data": {"dataset": "digits", "limit": 600},
        "model": {"kind": "physical_mlp", "substrate": "toy:intensity", "physical": [64], "hidden": [64, 64]},
        "rule": {"name": "mfff", "variant": "contrastive"},
        "optim": {"name": "adam", "lr": 1e-2},
        "train": {"epochs": 3, "batch_size": 64},
    })
    layers = exp.model.physical_layers()
    assert all(isinstance(layer.substrate, ToyIntensity) and layer.substrate.calls > 0 for layer in layers)
    assert acc > 0.5, acc


def test_unknown_names_suggest_the_closest_registered_one(toys):
    from neuro.errors import ConfigError
    from neuro.substrates import open_substrate

    with pytest.raises(ConfigError, match=r"unknown substrate 'toy:intensty' \(did you mean 'toy:intensity'\?\)"):
        open_substrate("toy:intensty", 2, 2)
    from neuro.build import resolve

    with pytest.raises(ConfigError, match=r"rule.name = 'toy_sing' is not one of .*\(did you mean 'toy_sign'\?\)"):
        resolve({"rule": {"name": "toy_sing"}})
