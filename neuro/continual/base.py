"""The continual-learning contract: ``[continual]`` settings, strategies as rule wrappers, activity capture.

A *strategy* is a :class:`ContinualRule`: a :class:`~neuro.rules.base.Rule` that wraps the
configured rule (``bptt``, ``ff``, ``mfff``, ...), delegates ``step``/``predict`` to it and may
change the pseudo-gradients it wrote into ``.grad`` (projection, penalties).  The continual
workflow (:mod:`neuro.continual.workflow`) calls :meth:`ContinualRule.begin_task` before and
:meth:`ContinualRule.end_task` after training each task.  Strategies register beside their
code in :data:`STRATEGIES`::

    @STRATEGIES.register("hlop")
    def build_hlop(spec: ContinualSpec, rule: Rule, seed: int = 0) -> ContinualRule: ...

Projectable layers: every weight whose update a rule builds from presynaptic activity, i.e.
the ``linear`` of each :class:`~neuro.layers.lif.LIFLayer` (input ``[T, B, n]``) and every
``nn.Linear`` called as a module elsewhere (dense layers, readouts; input ``[..., n]``).
:func:`capture_inputs` records what each of them saw during a rule's step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from neuro.errors import ConfigError, IncompatibleError
from neuro.layers.lif import LIFLayer
from neuro.registry import UnknownName
from neuro.rules.base import Batch, Rule
from simulators.registry import make_registry

STRATEGIES = make_registry("STRATEGIES", "continual strategy", discover=("neuro.continual",), error=UnknownName)

Stream = Literal["permuted", "split", "datasets"]
Scenario = Literal["auto", "domain", "class", "task"]
Activity = Literal["weighted_rate", "rate", "spikes"]
Basis = Literal["orthonormal", "hebbian"]
TrainHead = Literal["task", "all"]


@dataclass
class ContinualSpec:
    """``[continual]``: the task stream, the strategy and its settings.

    strategy: a name of :data:`STRATEGIES` (``finetune``, ``hlop``, ``ewc``, ``gpm``, ``multitask``).
    stream: ``permuted`` (``tasks`` fixed pixel permutations of ``data.dataset``), ``split``
        (``data.dataset`` split into tasks of ``classes_per_task`` consecutive classes) or
        ``datasets`` (one task per name in ``datasets``).
    scenario: ``domain`` (one shared head, task identity unknown), ``class`` (shared head over all
        classes seen) or ``task`` (task identity given at test time: the scores are restricted to
        the task's classes); ``auto``: ``domain`` for permuted streams, ``class`` otherwise.
    stream_seed: fixes the permutations; ``shuffle_order`` shuffles the task order with it too.
    eval_future: also evaluate tasks not trained yet (fills the upper triangle of R).
    train_head: task-incremental streams only: ``task`` (default) trains each task with the model's
        scores restricted to the task's classes (the others are set to ``-inf`` in the forward pass,
        so the loss is ``-log softmax`` over the task's classes only: a multi-head network sharing
        one output layer); ``all`` trains every task against all ``n_classes`` scores, which pushes
        the output neurons of classes not in the task towards silence (with a spike-count readout a
        silenced pair of neurons ties at 0 spikes and its task drops to chance).
    freeze_bias: after task 0, one-dimensional parameters (biases, normalization gains) get no
        updates (they are left out of the optimizer), as in the HLOP protocol.
    Per-task epochs, batch size, optimizer: ``[train]`` and ``[optim]`` (a fresh optimizer per task).

    HLOP (``hlop``): ``subspace[l]`` lateral neurons for projectable layer ``l`` at task 0 (one
    value: the same for every layer), then ``increment[l]`` more per task, the increment lowered
    by ``increment_decay`` at tasks ``decay_every``, 2 ``decay_every``, ...;
    ``hebbian_lr[l]`` (per (unit of activity)^2), ``hebbian_momentum``, ``hebbian_iterations`` per
    batch, ``hebbian_clip`` (clamp of each element of dH); ``activity``: what the lateral neurons
    see for time-stepped inputs [T, B, n]: ``weighted_rate`` (``sum_t l^(T-1-t) x_t / sum_t l^(T-1-t)``,
    ``l = exp(-dt / tau_mem)`` of the receiving layer), ``rate`` (mean over t) or ``spikes`` (every
    time step a sample); ``basis``: project with an orthonormal basis of the frozen rows
    (``orthonormal``, exact) or with the raw rows ``G - G H^T H`` (``hebbian``, as the authors' code).
    EWC (``ewc``): penalty ``ewc_lambda / 2 * sum_i F_i (w_i - w*_i)^2`` with the diagonal empirical
    Fisher ``F`` from ``fisher_samples`` training samples per task (summed over tasks); with plain
    SGD the stiffness ``ewc_lambda * F_i`` is capped at ``1 / lr`` (see :mod:`neuro.continual.ewc`).
    GPM (``gpm``): after each task, the SVD basis of the layer inputs of ``gpm_samples`` training
    samples is extended until it holds ``gpm_threshold[l] + gpm_threshold_step * task`` of their energy.
    """

    strategy: str = "finetune"
    stream: Stream = "split"
    tasks: int = 5
    classes_per_task: int = 2
    datasets: list[str] = field(default_factory=list)
    scenario: Scenario = "auto"
    stream_seed: int = 0
    shuffle_order: bool = True
    eval_future: bool = False
    train_head: TrainHead = "task"
    freeze_bias: bool = True
    subspace: list[int] = field(default_factory=lambda: [80, 200, 100])
    increment: list[int] = field(default_factory=lambda: [70, 70, 70])
    increment_decay: int = 20
    decay_every: int = 3
    hebbian_lr: list[float] = field(default_factory=lambda: [0.001, 0.01, 0.01])
    hebbian_momentum: float = 0.9
    hebbian_iterations: int = 5
    hebbian_clip: float = 10.0
    activity: Activity = "weighted_rate"
    basis: Basis = "orthonormal"
    ewc_lambda: float = 10.0
    fisher_samples: int = 200
    gpm_threshold: list[float] = field(default_factory=lambda: [0.97])
    gpm_threshold_step: float = 0.003
    gpm_samples: int = 300

    def check(self) -> None:
        STRATEGIES.get(self.strategy, where="continual.strategy")
        if self.tasks < 1:
            raise ConfigError(f"continual.tasks must be >= 1, got {self.tasks}")
        if self.classes_per_task < 1:
            raise ConfigError(f"continual.classes_per_task must be >= 1, got {self.classes_per_task}")
        if self.stream == "split" and self.scenario == "domain":
            raise ConfigError('continual.scenario = "domain" does not fit a split stream (each task has new classes); '
                              'use "class" or "task"')
        if self.stream == "datasets" and not self.datasets:
            raise ConfigError('continual.stream = "datasets" needs continual.datasets = ["name", ...]')
        for key in ("subspace", "increment"):
            values = getattr(self, key)
            if not values or any(v < 0 for v in values):
                raise ConfigError(f"continual.{key} must be a non-empty list of sizes >= 0, got {values}")
        if not self.hebbian_lr or any(not v > 0 for v in self.hebbian_lr):
            raise ConfigError(f"continual.hebbian_lr must be a non-empty list of numbers > 0, got {self.hebbian_lr}")
        if not 0.0 <= self.hebbian_momentum < 1.0:
            raise ConfigError(f"continual.hebbian_momentum must be in [0, 1), got {self.hebbian_momentum}")
        if self.hebbian_iterations < 0:
            raise ConfigError(f"continual.hebbian_iterations must be >= 0, got {self.hebbian_iterations}")
        if self.decay_every < 1:
            raise ConfigError(f"continual.decay_every must be >= 1, got {self.decay_every}")
        if self.ewc_lambda < 0 or self.fisher_samples < 1 or self.gpm_samples < 1:
            raise ConfigError("continual.ewc_lambda must be >= 0 and fisher_samples, gpm_samples >= 1")
        if not self.gpm_threshold or any(not 0.0 < t <= 1.0 for t in self.gpm_threshold):
            raise ConfigError(
                f"continual.gpm_threshold must be a list of fractions in (0, 1], got {self.gpm_threshold}")

    def per_layer(self, key: str, n_layers: int) -> list:
        """The list setting ``key`` for ``n_layers`` projectable layers (one value is broadcast)."""
        values = list(getattr(self, key))
        if len(values) == 1:
            return values * n_layers
        if len(values) != n_layers:
            raise ConfigError(
                f"continual.{key} has {len(values)} values but the model has {n_layers} projectable layers; "
                f"give one value or {n_layers}"
            )
        return values

    def subspace_sizes(self, task: int, n_layers: int, in_features: list[int]) -> list[int]:
        """Lateral neurons per layer after growing for ``task`` (HLOP's schedule), capped at the input size."""
        sizes = self.per_layer("subspace", n_layers)
        inc = self.per_layer("increment", n_layers)
        for t in range(1, task + 1):
            if t % self.decay_every == 0:
                inc = [max(0, v - self.increment_decay) for v in inc]
            sizes = [s + v for s, v in zip(sizes, inc)]
        return [min(s, n) for s, n in zip(sizes, in_features)]


# --------------------------------------------------------------------- layers
@dataclass
class ProjectableLayer:
    """A weight whose update is built from presynaptic activity, and how to read that activity."""

    name: str
    module: nn.Module  # the LIFLayer, or the nn.Linear
    weight: nn.Parameter  # [out, in]
    time_stepped: bool
    decay: float  # l = exp(-dt / tau_mem) of the receiving LIF layer (1.0 for dense layers)

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])


def projectable_layers(model: nn.Module) -> list[ProjectableLayer]:
    """Every LIF layer's synapse and every other ``nn.Linear`` of ``model``, in module order."""
    out: list[ProjectableLayer] = []
    inside_lif: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, LIFLayer):
            p = module.params
            decay = math.exp(-p.dt / p.tau_mem) if math.isfinite(p.tau_mem) else 1.0
            out.append(ProjectableLayer(name, module, module.linear.weight, True, decay))
            inside_lif.add(id(module.linear))
        elif isinstance(module, nn.Linear) and id(module) not in inside_lif:
            out.append(ProjectableLayer(name, module, module.weight, False, 1.0))
    return out


def reduce_activity(x: torch.Tensor, layer: ProjectableLayer, activity: str) -> torch.Tensor:
    """The presynaptic activity samples [N, n] that a layer input stands for.

    Time-stepped input ``x`` [T, B, n]: ``weighted_rate`` ``sum_t l^(T-1-t) x_t / sum_t l^(T-1-t)``
    (recent spikes weigh more, as the membrane forgets with ``l``), ``rate`` ``(1/T) sum_t x_t``
    (spikes per step), ``spikes`` all ``T B`` vectors.  Dense input [..., n]: flattened to [N, n].
    """
    x = x.detach().float()
    if layer.time_stepped and x.dim() == 3:
        if activity == "spikes":
            return x.reshape(-1, x.shape[-1])
        T = x.shape[0]
        if activity == "rate" or layer.decay >= 1.0:
            return x.mean(0)
        w = layer.decay ** torch.arange(T - 1, -1, -1, dtype=x.dtype, device=x.device)
        return torch.einsum("t,tbn->bn", w / w.sum(), x)
    return x.reshape(-1, x.shape[-1])


@contextlib.contextmanager
def capture_inputs(layers: list[ProjectableLayer], activity: str) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record (detached, reduced by :func:`reduce_activity`) what each layer receives inside the block.

    LIF layers are observed by wrapping their ``forward_trace`` for the block only (an instance
    attribute, removed afterwards); ``nn.Linear`` modules by a forward pre-hook.  Every call is
    recorded, so a rule that runs a layer several times per step (FF's positive and negative
    passes, prediction passes) contributes all of what the layer saw.
    """
    seen: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in layers}
    handles = []
    patched = []
    for layer in layers:
        if isinstance(layer.module, LIFLayer):
            original = layer.module.forward_trace

            def traced(x, *args, _orig=original, _layer=layer, **kwargs):
                seen[_layer.name].append(reduce_activity(x, _layer, activity))
                return _orig(x, *args, **kwargs)

            layer.module.forward_trace = traced
            patched.append(layer.module)
        else:
            def hook(module, args, _layer=layer):
                seen[_layer.name].append(reduce_activity(args[0], _layer, activity))

            handles.append(layer.module.register_forward_pre_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()
        for module in patched:
            del module.__dict__["forward_trace"]


@contextlib.contextmanager
def restrict_scores(model: nn.Module, mask: torch.Tensor | None) -> Iterator[None]:
    """Inside the block, ``model(x)`` returns its class scores with the classes outside ``mask`` at ``-inf``.

    A forward hook on ``model`` (removed afterwards): ``s_c <- -inf`` for ``mask[c] = False``, so
    ``softmax(s)_c = 0`` and the cross-entropy gradient of those scores is exactly 0.  Rules that
    build their loss from ``model(x)`` (``bptt``, and the scores EWC's Fisher uses) then learn a
    task-incremental task against its own classes only; rules that call layers directly are not
    affected.  ``mask=None``: no change.
    """
    if mask is None:
        yield
        return

    def hook(module, args, out):
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != mask.numel():
            return out
        return out.masked_fill(~mask.to(out.device), float("-inf"))

    handle = model.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# ---------------------------------------------------------------------- rules
class ContinualRule(Rule):
    """A strategy: wraps ``rule``; the base class is plain fine-tuning (no protection of old tasks)."""

    strategy = "finetune"

    def __init__(self, spec: ContinualSpec, rule: Rule) -> None:
        self.spec = spec
        self.rule = rule
        self.requirements = rule.requirements
        self.gradient_free_alternatives = rule.gradient_free_alternatives
        self.task = 0

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.rule.name if self.strategy == "finetune" else f"{self.strategy}({self.rule.name})"

    # the wrapped rule does the learning and the predicting
    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        return self.rule.step(model, batch)

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.rule.predict(model, x)

    def evaluate(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        return self.rule.evaluate(model, batch)

    def check_compatible(self, model: nn.Module) -> None:
        self.rule.check_compatible(model)

    # task boundaries
    def begin_task(self, task: int, model: nn.Module, data) -> None:
        self.task = task

    def end_task(self, task: int, model: nn.Module, data) -> None:
        return None

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Called with each task's fresh optimizer before its training starts (default: ignored)."""
        return None

    def sizes(self) -> dict[str, int]:
        """Per projectable layer, the dimension of the protected subspace (empty for no projection)."""
        return {}

    def state_dict(self) -> dict:
        return {"task": self.task, "rule": self.rule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.task = int(state.get("task", 0))
        self.rule.load_state_dict(state.get("rule") or {})


def require_layers(strategy: str, model: nn.Module) -> list[ProjectableLayer]:
    layers = projectable_layers(model)
    if not layers:
        raise IncompatibleError(
            f"continual strategy `{strategy}` projects updates of linear layers, but {type(model).__name__} has none "
            f"(no LIFLayer or nn.Linear); use continual.strategy = \"finetune\" or \"ewc\""
        )
    return layers


class ProjectedRule(ContinualRule):
    """A strategy that removes, from each projectable weight's ``.grad``, its component in a protected
    input subspace: ``G <- G (I - Q^T Q)`` (:func:`neuro.functional.subspace.project_gradient`).

    Why post-processing of ``.grad`` and not a custom autograd function: the rule contract is
    "write ``.grad``", and rules such as ``ff`` (per-layer graphs), ``mfff`` (estimated updates)
    or Hebbian rules do not all run one autograd graph through the layer.  For every rule whose
    weight update is a sum of outer products ``d_b x_b^T`` of a postsynaptic signal with the
    presynaptic activity (over samples and time steps), ``G (I - Q^T Q)`` equals the update built
    from the projected activity ``(I - Q^T Q) x_b`` exactly, so this is HLOP's projection for any
    such rule, applied once per step after the rule and before the optimizer.
    """

    def __init__(self, spec: ContinualSpec, rule: Rule) -> None:
        super().__init__(spec, rule)
        self.layers: list[ProjectableLayer] | None = None
        self.bases: dict[str, torch.Tensor] = {}  # name -> Q [r, n], orthonormal rows (or raw H rows)
        self.head_rows: torch.Tensor | None = None  # output rows that need protection (None: all)

    def protect_head_rows(self, classes) -> None:
        """Task-incremental streams: only the output layer's rows of earlier tasks' classes are projected.

        With the task identity known at test time, task ``j``'s prediction compares only the
        scores of its own classes, so the rows of classes no earlier task used cannot disturb
        an old task and learn unprojected (like a new head in multi-head HLOP).
        """
        self.head_rows = torch.as_tensor(sorted(set(int(c) for c in classes)), dtype=torch.long)

    def attach(self, model: nn.Module) -> list[ProjectableLayer]:
        if self.layers is None:
            self.layers = require_layers(self.strategy, model)
        return self.layers

    def check_compatible(self, model: nn.Module) -> None:
        super().check_compatible(model)
        self.attach(model)

    def project(self) -> None:
        from neuro.functional.subspace import project_gradient

        layers = self.layers or []
        for index, layer in enumerate(layers):
            Q = self.bases.get(layer.name)
            g = layer.weight.grad
            if Q is None or g is None or Q.shape[0] == 0:
                continue
            projected = project_gradient(g.float(), Q.to(g.device)).to(g.dtype)
            if self.head_rows is not None and index == len(layers) - 1:
                rows = self.head_rows.to(g.device)
                g = g.clone()
                g[rows] = projected[rows]
                projected = g
            layer.weight.grad = projected

    def sizes(self) -> dict[str, int]:
        return {l.name: int(self.bases[l.name].shape[0]) if l.name in self.bases else 0 for l in self.layers or []}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "bases": {k: v.cpu() for k, v in self.bases.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.bases = {k: v.clone() for k, v in (state.get("bases") or {}).items()}


@STRATEGIES.register("finetune")
def build_finetune(spec: ContinualSpec, rule: Rule, seed: int = 0) -> ContinualRule:
    """Plain fine-tuning: each task trains the network as if it were the only one (the lower bound)."""
    return ContinualRule(spec, rule)


class Multitask(ContinualRule):
    """The upper bound: one training run on the union of all tasks (the workflow joins the stream)."""

    strategy = "multitask"
    joint = True


@STRATEGIES.register("multitask")
def build_multitask(spec: ContinualSpec, rule: Rule, seed: int = 0) -> ContinualRule:
    return Multitask(spec, rule)


def build_strategy(spec: ContinualSpec, rule: Rule, seed: int = 0) -> ContinualRule:
    return STRATEGIES.get(spec.strategy, where="continual.strategy").obj(spec, rule)
