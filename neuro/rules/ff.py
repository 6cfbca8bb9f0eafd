"""Forward-forward learning (Hinton 2022), collaborative FF (Lorberbom et al. 2023) and spiking FF.

Each layer ``k`` has its own objective: high goodness ``G_k`` (:mod:`neuro.functional.forward_forward`)
for positive data (an input with its true label embedded, :func:`embed_label`) and low
goodness for negative data (the same input with a wrong label: random, or the wrong label
the network currently likes best).  Per batch:

1. ``u_0`` = the positive and negative inputs side by side (``[2B, F]``; for spiking
   models, encoded once into spike trains ``[T, 2B, F]`` with the *same* encoder noise for a
   sample's positive and negative copy, so they differ only in the label pixels);
2. for ``k = 1 .. L``: ``a_k = layer_k(sg(u_{k-1}))`` with the gradient tape on for this
   layer only; ``L_k = ff_loss(G(a_k)[:B], G(a_k)[B:], theta)`` (or SymBa);
   ``L_k.backward()`` writes ``dL_k / dW_k`` into layer ``k``'s ``.grad``; the graph is
   freed; ``u_k = normalize(sg(a_k))`` goes on to the next layer.

``sg`` (stop-gradient, ``detach``) means no gradient ever crosses a layer boundary and at
most one layer's graph exists at a time: training memory does not grow with depth.
The trainer then steps the optimizer on the pseudo-gradients.

Collaborative FF (``collaborative = true``): a no-grad pass first computes every layer's
goodness; layer ``k``'s loss then uses ``G_k + gamma sum_{j != k} sg(G_j)`` against
``theta (1 + gamma (L - 1))``; ``gamma = 0`` is FF exactly.

Layer activities ``a_k``: for dense ReLU layers, ``h_k``; for LIF layers
(:class:`~neuro.layers.lif.LIFLayer`), the firing rate over the window
``r_kj = (1/T) sum_t z_kj[t]`` (spikes per step, ``activity = "rate"``) or the mean
membrane potential ``(1/T) sum_t v_kj[t]`` (volts, ``activity = "membrane"``); the spike's
derivative is the layer's surrogate, back through that layer's own time steps only.  The
next LIF layer receives the spikes themselves (``spike_norm = false``) or spikes scaled per
sample and time step to unit mean square (``spike_norm = true``: graded spikes, so spike
counts cannot carry goodness to the next layer).

Prediction: for each class ``c`` the input is embedded with ``c`` and the goodness summed
over layers (optionally without the first, as Hinton does on MNIST); the score of ``c`` is
that sum (its negative in the negative form).  With ``readout = true`` a linear softmax
readout (the model's ``readout``) is trained on the detached, normalized activities of a
neutral-label pass (cross-entropy), and ``predict = "readout"`` classifies with one pass.

Metrics per batch: ``ff_loss`` (sum of the layers' local losses), ``layer{k}_loss``,
``layer{k}_g_pos`` / ``layer{k}_g_neg`` (mean goodness of positive / negative data) and,
with the readout, ``readout_loss`` / ``readout_accuracy`` (on the training batch).  The
evaluation loss is the cross-entropy of the prediction scores used as logits.

Requirements, honestly: FF needs the gradient of each layer's own goodness with respect to
its own parameters, so every layer must be differentiable on its own
(``needs_gradients_through``); it never needs gradients *across* layers.  For
non-differentiable (physical) layers use the model-free rule ``mfff``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from neuro.errors import ConfigError, IncompatibleError
from neuro.functional import sharding
from neuro.functional.forward_forward import (
    GoodnessKind,
    collaborative_goodness,
    collaborative_threshold,
    embed_label,
    ff_loss,
    goodness,
    hardest_wrong_labels,
    label_feature_indices,
    length_normalize,
    random_wrong_labels,
    sampled_wrong_labels,
    symba_loss,
)
from neuro.layers.lif import LIFLayer
from neuro.layers.mlp import MLP
from neuro.registry import RULES
from neuro.rules.base import Batch, Requirements, Rule
from simulators.lif import pre_reset_potential

Loss = Literal["logistic", "bce", "symba"]
Negatives = Literal["random", "hard", "readout"]
Activity = Literal["rate", "membrane"]
Prediction = Literal["goodness", "readout"]
ThresholdScale = Literal["absolute", "per_unit"]
ReluGradient = Literal["relu", "pass_through"]
RateGradient = Literal["soft", "spikes"]
LOSSES, NEGATIVES, ACTIVITIES, PREDICTIONS = (get_args(t) for t in (Loss, Negatives, Activity, Prediction))


# ------------------------------------------------------------------------ spec
@dataclass
class FFSpec:
    """``[rule]`` with ``name = "ff"``: forward-forward (see :mod:`neuro.rules.ff`).

    goodness: "sum_squares" or "mean_squares" of each layer's activity.
    threshold: theta of the logistic loss (in goodness units).
    loss: "logistic" (Hinton: ``mean_pos softplus(theta - G) + mean_neg softplus(G - theta)``), "bce"
        (loeweX's ``BCEWithLogitsLoss`` over the positive and negative samples together, i.e. half of
        "logistic" for equal numbers of both: their lr, weight decay and peer-normalization weight then
        mean what they mean there) or "symba" (pairwise, no threshold; ``symba_alpha`` scales it).
    negative_form: positive data should have *low* goodness instead.
    negatives: "random" wrong label; "hard": the wrong label with the highest accumulated
        goodness now (costs one no-grad pass per class); "readout": a wrong label sampled
        from the readout's softmax on the neutral-label pass (needs readout = true; that pass
        is made anyway to train the readout, so hard-ish negatives cost nothing extra).
    label_scale, label_offset, label_features: the label is ``label_scale * one_hot``
        written over input features ``label_offset .. label_offset + classes - 1``, or over
        the listed ``label_features`` indices (one per class) when that list is not empty.
    collaborative, collaboration: collaborative FF with weight gamma.
    skip_first: leave the first layer's goodness out of the prediction.
    readout: also train the model's linear softmax readout on a neutral-label pass.
    predict: "goodness" (accumulated over layers) or "readout" (needs readout = true).
    activity: for LIF layers, goodness of firing rates ("rate") or mean membrane ("membrane").
    spike_norm: for LIF layers, feed the next layer spikes scaled to unit mean square.
    dropout: probability p of zeroing each unit of a layer's input in training steps, for
        layers 2..L (the pixels and the label are never dropped); kept units are scaled by
        1 / (1 - p).  A sample's positive and negative copy share the mask, so they still
        differ only in the label.  Prediction and the readout's pass use no dropout.
    threshold_scale: "absolute" uses ``threshold`` as theta for every layer; "per_unit" uses
        ``theta_k = threshold * n_k`` (``n_k`` = layer k's width).  With ``goodness = "sum_squares"``,
        ``threshold = 1`` and "per_unit", the logistic loss is ``softplus(-(sum_j a_j^2 - n_k))`` on
        positives: Hinton's and loeweX's form (logit = sum of squares minus the number of units).
    peer_normalization: weight ``lambda_p`` of loeweX's peer-normalization loss (0 = off).  Per layer,
        a running mean ``m_j <- mu sg(m_j) + (1 - mu) mean_{positives}(a_j)`` of each unit's activity on
        positive samples (momentum ``mu = peer_momentum``; the current batch's term keeps its gradient)
        and the loss ``lambda_p * mean_j (mean_i m_i - m_j)^2`` added to the layer's FF loss: it pulls
        every unit's mean activity towards the layer's, so no unit dies or dominates.  The running means
        start at ``peer_init`` (loeweX: 0.5).
    relu_gradient: dense layers only.  "relu": the ReLU's true derivative; "pass_through": the
        forward is ``relu(z)``, the backward passes ``dL/da`` to ``z`` unchanged everywhere (loeweX's
        ``ReLU_full_grad``), so units that are off still learn.
    rate_gradient: LIF layers with ``activity = "rate"``.  The goodness of firing rates ``r_j`` has
        derivative ``dG/dr_j ~ r_j``, zero for a silent unit, so a layer that never fires never learns.
        "soft" (default) keeps the value ``G(r)`` but takes its gradient as that of ``G(r~)``, with the
        soft rate ``r~_j = (1/T) sum_t S(p_j[t] - v_th)`` (``S`` the layer surrogate's smooth function,
        ``p`` the membrane potential before reset): ``dr~/dW`` is the same surrogate path as ``dr/dW``, and
        ``r~ > 0`` always, so silent units get a gradient.  "spikes": ``dG/dr`` at the spike rate
        itself (the earlier behaviour).
    normalize_input: dense layers: length-normalize the label-embedded input before the first layer
        (loeweX normalizes every layer's input, the image included).
    readout_layers: 1-based indices of the layers whose neutral-pass features the readout sees
        (empty: all).  The readout's weights for the other layers see zero features: they never
        contribute (loeweX's classifier reads layers 2..3 of 3: ``readout_layers = [2, 3]``).
    """

    name: str = "ff"
    goodness: GoodnessKind = "mean_squares"
    threshold: float = 2.0
    loss: Loss = "logistic"
    symba_alpha: float = 4.0
    negative_form: bool = False
    negatives: Negatives = "random"
    label_scale: float = 1.0
    label_offset: int = 0
    label_features: list[int] = field(default_factory=list)
    collaborative: bool = False
    collaboration: float = 1.0
    skip_first: bool = False
    readout: bool = False
    predict: Prediction = "goodness"
    activity: Activity = "rate"
    spike_norm: bool = False
    dropout: float = 0.0
    threshold_scale: ThresholdScale = "absolute"
    peer_normalization: float = 0.0
    peer_momentum: float = 0.9
    peer_init: float = 0.0
    relu_gradient: ReluGradient = "relu"
    rate_gradient: RateGradient = "soft"
    readout_layers: list[int] = field(default_factory=list)
    normalize_input: bool = False

    def check(self) -> None:
        if self.negatives == "readout" and not self.readout:
            raise ConfigError("rule.negatives = 'readout' needs rule.readout = true (negatives come from the readout)")
        if self.predict == "readout" and not self.readout:
            raise ConfigError("rule.predict = 'readout' needs rule.readout = true (the readout must be trained)")
        if self.label_offset < 0:
            raise ConfigError(f"rule.label_offset must be >= 0, got {self.label_offset}")
        if self.collaboration < 0:
            raise ConfigError(f"rule.collaboration must be >= 0, got {self.collaboration}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"rule.dropout must be in [0, 1), got {self.dropout}")
        if self.peer_normalization < 0:
            raise ConfigError(f"rule.peer_normalization must be >= 0, got {self.peer_normalization}")
        if not 0.0 <= self.peer_momentum < 1.0:
            raise ConfigError(f"rule.peer_momentum must be in [0, 1), got {self.peer_momentum}")
        if any(k < 1 for k in self.readout_layers):
            raise ConfigError(f"rule.readout_layers are 1-based layer numbers, got {self.readout_layers}")


@RULES.register("ff", spec=FFSpec)
def build_ff(spec: FFSpec, data) -> Rule:
    try:
        label_feature_indices(data.n_features, data.n_classes, spec.label_offset, spec.label_features)
    except ValueError as exc:
        raise ConfigError(f"rule.label_offset/label_features: {exc} ({data.name})") from None
    return FF(spec, data.n_classes)


def paired_dropout(u: torch.Tensor, p: float, batch_dim: int) -> torch.Tensor:
    """Inverted dropout on ``u`` whose batch holds positive copies then negative copies.

    One Bernoulli(1 - p) mask per positive sample (and per time step for time-stepped
    inputs) is applied to the sample's positive and negative copy alike, scaled by 1/(1-p).
    """
    half = u.shape[batch_dim] // 2
    shape = list(u.shape)
    shape[batch_dim] = half
    # per sample, independent of data-parallel shards (neuro/functional/sharding.py)
    keep = (sharding.rand(shape, batch_dim, device=u.device) >= p).to(u.dtype) / (1.0 - p)
    return u * torch.cat([keep, keep], dim=batch_dim)


# ---------------------------------------------------------------- model views
class DenseView:
    """FF access to an :class:`~neuro.layers.mlp.MLP`: activities ``h_k``, next input ``normalize(h_k)``."""

    time_stepped = False

    def __init__(self, model: MLP, relu_gradient: str = "relu", normalize_input: bool = False) -> None:
        self.model = model
        self.layers = list(model.layers)
        self.readout = model.readout
        self.pass_through = relu_gradient == "pass_through"
        self.normalize_input = normalize_input

    def inputs(self, x: torch.Tensor, noise_seed: int | None = None) -> torch.Tensor:
        return length_normalize(x) if self.normalize_input else x

    def width(self, k: int) -> int:
        return self.layers[k].linear.out_features

    def layer(self, k: int, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.layers[k](u, pass_through=self.pass_through and torch.is_grad_enabled())
        with torch.no_grad():
            nxt = self.model.next_input(a)
        return a, nxt

    def goodness(self, k: int, a: torch.Tensor, kind: str) -> torch.Tensor:
        return goodness(a, kind)

    def features(self, a: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        return nxt


class SpikingView:
    """FF access to a model with an ``encoder`` and ``layers`` of :class:`LIFLayer` (e.g. SpikingMLP).

    Every LIF layer is an FF layer (the output layer of a SpikingMLP too); the model's own
    readout (spike count, ...) is not used by FF.
    """

    time_stepped = True

    def __init__(self, model: nn.Module, activity: str, spike_norm: bool, rate_gradient: str = "soft") -> None:
        self.model = model
        self.layers = list(model.layers)
        self.readout = getattr(model, "ff_readout", None)
        self.activity, self.spike_norm = activity, spike_norm
        self.rate_gradient = rate_gradient
        self._soft: dict[int, torch.Tensor] = {}

    def width(self, k: int) -> int:
        return self.layers[k].linear.out_features

    def inputs(self, x: torch.Tensor, noise_seed: int | None = None) -> torch.Tensor:
        gen = None
        if noise_seed is not None:
            gen = torch.Generator(device=x.device).manual_seed(noise_seed)
        return self.model.encoder(x, generator=gen)

    def layer(self, k: int, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.layers[k].params
        trace = self.layers[k].forward_trace(u)
        self._soft.pop(k, None)
        if self.activity == "membrane" or not params.spiking:
            a = trace.membrane.mean(0)
        else:
            a = trace.spikes.mean(0)
            if self.rate_gradient == "soft" and torch.is_grad_enabled():
                p = pre_reset_potential(trace.spikes, trace.membrane, params)
                self._soft[k] = params.surrogate.smooth(p - params.v_th).mean(0)
        with torch.no_grad():
            nxt = trace.spikes if self.layers[k].params.spiking else trace.membrane
            if self.spike_norm:
                nxt = length_normalize(nxt)
        return a, nxt

    def features(self, a: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        return a

    def goodness(self, k: int, a: torch.Tensor, kind: str) -> torch.Tensor:
        """``G(a)``; for spike rates with ``rate_gradient = "soft"``, the value of ``G(r)`` with the gradient of
        ``G(r~)`` (see :class:`FFSpec`)."""
        g = goodness(a, kind)
        soft = self._soft.pop(k, None)
        if soft is None:
            return g
        g_soft = goodness(soft, kind)
        return g.detach() + (g_soft - g_soft.detach())


def ff_view(model: nn.Module, spec: FFSpec):
    """The FF view of ``model``; a one-line :class:`IncompatibleError` for models FF cannot train."""
    if isinstance(model, MLP):
        return DenseView(model, spec.relu_gradient, spec.normalize_input)
    layers = getattr(model, "layers", None)
    if (
        hasattr(model, "encoder")
        and isinstance(layers, nn.ModuleList)
        and len(layers)
        and all(isinstance(layer, LIFLayer) for layer in layers)
    ):
        return SpikingView(model, spec.activity, spec.spike_norm, spec.rate_gradient)
    raise IncompatibleError(
        f"rule `ff` trains layer by layer and needs a model whose layers it can run one at a time "
        f"(model kinds mlp or spiking_mlp); {type(model).__name__} is neither"
    )


# ------------------------------------------------------------------------ rule
class FF(Rule):
    """Forward-forward, collaborative forward-forward and spiking forward-forward (see module docstring)."""

    name = "ff"
    requirements = Requirements(needs_gradients_through=True)
    gradient_free_alternatives = ("mfff",)

    def __init__(self, spec: FFSpec | None = None, n_classes: int = 10) -> None:
        self.spec = spec or FFSpec()
        self.spec.check()
        self.n_classes = int(n_classes)
        self.peer_means: dict[int, torch.Tensor] = {}

    # -- helpers
    def embed(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        s = self.spec
        return embed_label(
            x, label, self.n_classes, scale=s.label_scale, offset=s.label_offset, features=s.label_features
        )

    def check_compatible(self, model: nn.Module) -> None:
        super().check_compatible(model)
        view = ff_view(model, self.spec)
        bad = [k for k in self.spec.readout_layers if k > len(view.layers)]
        if bad:
            raise IncompatibleError(
                f"rule.readout_layers {bad} name layers this model does not have (it has {len(view.layers)}); "
                f"use numbers 1..{len(view.layers)}"
            )
        if self.spec.relu_gradient == "pass_through" and not isinstance(view, DenseView):
            raise IncompatibleError("rule.relu_gradient = 'pass_through' applies to ReLU layers (model kind mlp) only")
        if self.spec.readout and view.readout is None:
            raise IncompatibleError(
                f"rule.readout = true needs a model with a linear readout over its FF layers (model kind mlp); "
                f"{type(model).__name__} has none: set rule.readout = false"
            )

    def _loss(self, g: torch.Tensor, theta: float) -> torch.Tensor:
        s = self.spec
        B = g.shape[0] // 2
        if s.loss == "symba":
            return symba_loss(g[:B], g[B:], s.symba_alpha, s.negative_form)
        loss = ff_loss(g[:B], g[B:], theta, s.negative_form)
        return 0.5 * loss if s.loss == "bce" else loss

    def _layer_passes(self, view, u: torch.Tensor) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Run the layers one by one (no grad), yielding ``(k, activity, next input)``."""
        for k in range(len(view.layers)):
            a, nxt = view.layer(k, u)
            yield k, a, nxt
            u = nxt

    @torch.no_grad()
    def layer_goodness(self, view, u: torch.Tensor) -> torch.Tensor:
        """Goodness of every layer ``[L, batch]`` for the layer-0 input ``u`` (no gradients)."""
        return torch.stack([goodness(a, self.spec.goodness) for _, a, _ in self._layer_passes(view, u)])

    def _noise_seed(self) -> int:
        return int(torch.randint(0, 2**31 - 1, (1,)))

    # -- training
    def step(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        s = self.spec
        view = ff_view(model, s)
        x, y = batch.x, batch.y
        B = y.numel()
        metrics: dict[str, float] = {}
        readout_scores = None
        if s.readout:
            readout_scores, readout_metrics = self._train_readout(view, x, y)
            metrics.update(readout_metrics)
        if s.negatives == "hard":
            wrong = hardest_wrong_labels(self.goodness_scores(model, x), y)
        elif s.negatives == "readout":
            wrong = sampled_wrong_labels(readout_scores, y)
        else:
            wrong = random_wrong_labels(y, self.n_classes)
        seed = self._noise_seed()
        xin = torch.cat([self.embed(x, y), self.embed(x, wrong)])
        if view.time_stepped:  # same encoder noise for a sample's positive and negative copy
            u = torch.cat([view.inputs(xin[:B], seed), view.inputs(xin[B:], seed)], dim=1)
        else:
            u = view.inputs(xin)
        L = len(view.layers)
        theta = s.threshold
        g_all = None
        if s.collaborative:
            g_all = self.layer_goodness(view, u)
            theta = collaborative_threshold(s.threshold, L, s.collaboration)
        total = 0.0
        for k in range(L):
            if k > 0 and s.dropout > 0:
                u = paired_dropout(u, s.dropout, batch_dim=1 if view.time_stepped else 0)
            a, nxt = view.layer(k, u.detach())
            g = view.goodness(k, a, s.goodness)
            judged = collaborative_goodness(g_all, k, g, s.collaboration) if g_all is not None else g
            theta_k = theta * view.width(k) if s.threshold_scale == "per_unit" else theta
            loss = self._loss(judged, theta_k)
            if s.peer_normalization > 0:
                peer = self._peer_loss(k, a[:B])
                metrics[f"layer{k}_peer_loss"] = float(peer.detach())
                loss = loss + s.peer_normalization * peer
            loss.backward()
            gd = g.detach()
            total += float(loss.detach())
            metrics[f"layer{k}_loss"] = float(loss.detach())
            metrics[f"layer{k}_g_pos"] = float(gd[:B].mean())
            metrics[f"layer{k}_g_neg"] = float(gd[B:].mean())
            u = nxt.detach()
            del a, g, judged, loss
        metrics["ff_loss"] = total  # not "loss": the evaluation loss (cross-entropy of the scores) is another quantity
        return metrics

    def _peer_loss(self, k: int, a_pos: torch.Tensor) -> torch.Tensor:
        """loeweX's peer normalization for layer ``k`` (see :class:`FFSpec`); updates the running means."""
        mu = self.spec.peer_momentum
        batch_mean = a_pos.reshape(-1, a_pos.shape[-1]).float().mean(0)
        old = self.peer_means.get(k)
        if old is None or old.shape != batch_mean.shape:
            old = torch.full_like(batch_mean, self.spec.peer_init)
        m = mu * old.to(batch_mean) + (1.0 - mu) * batch_mean
        self.peer_means[k] = m.detach()
        return (m.mean() - m).pow(2).mean()

    def _readout_features(self, view, x: torch.Tensor) -> torch.Tensor:
        neutral = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        u = view.inputs(self.embed(x, neutral), self._noise_seed())
        chosen = set(self.spec.readout_layers)
        feats = []
        for k, a, nxt in self._layer_passes(view, u):
            f = view.features(a, nxt)
            feats.append(f if not chosen or (k + 1) in chosen else torch.zeros_like(f))
        return torch.cat(feats, dim=-1)

    def state_dict(self) -> dict:
        return {"peer_means": {int(k): v.clone() for k, v in self.peer_means.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.peer_means = {int(k): v.clone() for k, v in (state or {}).get("peer_means", {}).items()}

    def _train_readout(self, view, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy step of the readout on detached neutral-pass features; returns its scores (detached)."""
        if view.readout is None:
            raise IncompatibleError(
                f"rule.readout = true but {type(view.model).__name__} has no readout; set rule.readout = false"
            )
        with torch.no_grad():
            feats = self._readout_features(view, x)
        scores = view.readout(feats)
        loss = F.cross_entropy(scores, y)
        loss.backward()
        scores = scores.detach()
        return scores, {
            "readout_loss": float(loss.detach()),
            "readout_accuracy": float((scores.argmax(1) == y).float().mean()),
        }

    # -- report
    def report_data(self, records=None) -> dict:
        """Report section ``ff_goodness`` (drawn by :mod:`neuro.report.ff` from the epoch records)."""
        return {"ff_goodness": {"goodness": self.spec.goodness}}

    # -- prediction
    @torch.no_grad()
    def goodness_scores(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``[batch, classes]``: goodness summed over layers (from the second with ``skip_first``) per embedded
        label."""
        s = self.spec
        view = ff_view(model, s)
        seed = self._noise_seed()
        first = 1 if (s.skip_first and len(view.layers) > 1) else 0
        cols = []
        for c in range(self.n_classes):
            label = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
            u = view.inputs(self.embed(x, label), seed)
            g = self.layer_goodness(view, u)[first:].sum(0)
            cols.append(-g if s.negative_form else g)
        return torch.stack(cols, dim=1)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.spec.predict == "readout":
            view = ff_view(model, self.spec)
            return view.readout(self._readout_features(view, x))
        return self.goodness_scores(model, x)
