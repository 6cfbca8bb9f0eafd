"""Forward-forward goodness and its losses (Hinton 2022), shared by FF-family rules.

Pure functions (no state, no parameters), reused by the FF rule (:mod:`neuro.rules.ff`) and
model-free FF on physical layers.

For a layer's activity ``h [batch, n]``:

- goodness ``G(h) = sum_j h_j^2`` (``"sum_squares"``) or ``mean_j h_j^2`` (``"mean_squares"``);
- the probability that a sample is positive is ``p = sigmoid(G - theta)`` (or
  ``sigmoid(theta - G)`` for the *negative* form, where positive data should have low goodness);
- the per-layer loss over a positive batch and a negative batch is
  ``L = mean(softplus(theta - G_pos)) + mean(softplus(G_neg - theta))``
  (``softplus(-u) = -log sigmoid(u)``, the logistic loss); the negative form swaps the signs.
- SymBa (Lee & Song 2023) pairs each positive with a negative sample and needs no threshold:
  ``L = mean(softplus(alpha (G_neg - G_pos)))``; PhyLL's loss ``log(1 + exp(-theta (G_pos - G_neg)))``
  is the same function with ``alpha = theta``.
- PhyLL's goodness (:func:`cosine_goodness`): the cosine between ``|h|`` and a fixed random unit vector.
- collaborative FF (Lorberbom et al. 2023): layer ``k`` is judged on
  ``G_k + gamma * sum_{j != k} sg(G_j)`` (``sg``: stop-gradient) against the threshold
  ``theta (1 + gamma (L - 1))``, so ``gamma = 0`` is plain FF exactly.

Between layers the activity is length-normalized (:func:`length_normalize`) so the next
layer cannot read the goodness off the vector's length and must use its direction.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

from neuro.functional import sharding

GoodnessKind = Literal["sum_squares", "mean_squares"]
GOODNESS_KINDS: tuple[str, ...] = get_args(GoodnessKind)


def goodness(h: torch.Tensor, kind: str = "sum_squares") -> torch.Tensor:
    """Goodness per sample, ``[batch]``; ``h`` is ``[batch, n]`` (flatten other dims first).

    Computed in float32 at least, whatever ``h``'s dtype: under bf16 autocast a layer's
    activities come out in bfloat16 (8 significant bits), and a sum of squares of 2000 units
    near 2000 rounded to bf16 (spacing 8) is off by up to 4, as large as the logit ``G - theta`` it feeds.
    """
    if h.dtype in (torch.bfloat16, torch.float16):
        h = h.float()
    sq = h.pow(2)
    if kind == "sum_squares":
        return sq.sum(dim=-1)
    if kind == "mean_squares":
        return sq.mean(dim=-1)
    raise ValueError(f"unknown goodness '{kind}'; choose one of {', '.join(GOODNESS_KINDS)}")


def random_direction(n: int, seed: int) -> torch.Tensor:
    """A fixed random unit vector ``r`` of length ``n``: ``g / ||g||_2`` with ``g ~ N(0, I)`` from ``seed``."""
    g = torch.randn(n, generator=torch.Generator().manual_seed(int(seed)))
    return g / g.norm()


def cosine_goodness(h: torch.Tensor, direction: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """PhyLL's goodness (Momeni et al. 2023): ``G(h) = cos(|h|, r) = <|h|, r> / (||h|| ||r||)`` per sample, ``[batch]``.

    ``r`` is a fixed random direction (:func:`random_direction`); ``G`` lies in [-1, 1] and does
    not depend on the length of ``h``, so no normalization between layers is needed to hide it.
    """
    a = h.abs()
    r = direction.to(a)
    return (a @ r) / (a.norm(dim=-1).clamp_min(eps) * r.norm().clamp_min(eps))


def ff_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, theta: float, negative_form: bool = False) -> torch.Tensor:
    """Logistic FF loss (scalar) for positive and negative goodness values around threshold ``theta``."""
    if negative_form:
        return F.softplus(g_pos - theta).mean() + F.softplus(theta - g_neg).mean()
    return F.softplus(theta - g_pos).mean() + F.softplus(g_neg - theta).mean()


def symba_loss(
    g_pos: torch.Tensor, g_neg: torch.Tensor, alpha: float = 4.0, negative_form: bool = False
) -> torch.Tensor:
    """SymBa loss ``mean(softplus(alpha (G_neg - G_pos)))`` over paired samples (signs swapped in the negative form)."""
    if g_pos.shape != g_neg.shape:
        raise ValueError(
            f"SymBa pairs positives with negatives: shapes {tuple(g_pos.shape)} and {tuple(g_neg.shape)} differ"
        )
    gap = g_pos - g_neg if negative_form else g_neg - g_pos
    return F.softplus(alpha * gap).mean()


def positive_probability(g: torch.Tensor, theta: float, negative_form: bool = False) -> torch.Tensor:
    """``p(positive) = sigmoid(G - theta)`` (``sigmoid(theta - G)`` in the negative form)."""
    return torch.sigmoid(theta - g) if negative_form else torch.sigmoid(g - theta)


def collaborative_goodness(g_layers: torch.Tensor, k: int, g_own: torch.Tensor, weight: float) -> torch.Tensor:
    """Goodness layer ``k`` is judged on in collaborative FF: ``g_own + weight * sum_{j != k} sg(G_j)``.

    ``g_layers [L, batch]`` holds every layer's goodness (it is detached here); ``g_own
    [batch]`` is layer ``k``'s own goodness, which keeps its gradient.  ``weight = 0``
    returns ``g_own`` itself.
    """
    if weight == 0.0:
        return g_own
    g_layers = g_layers.detach()
    others = g_layers.sum(0) - g_layers[k]
    return g_own + weight * others


def collaborative_threshold(theta: float, n_layers: int, weight: float) -> float:
    """Threshold of collaborative FF, ``theta (1 + weight (L - 1))`` (``theta`` for ``weight = 0``)."""
    return theta * (1.0 + weight * (n_layers - 1))


def length_normalize(h: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Hinton's layer normalization between FF layers: ``h / sqrt(mean_j h_j^2 + eps)``.

    Divides each sample's activity vector by its root-mean-square, so the output has unit
    mean square (length ``sqrt(n)``) whatever the goodness was; no learned gain or bias, no
    mean subtraction.  An all-zero vector stays zero.
    """
    return h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)


def label_feature_indices(n_features: int, n_classes: int, offset: int = 0, features=None) -> list[int]:
    """Indices of the input features that carry the label: ``features`` if given, else
    ``offset .. offset + n_classes - 1``; a ValueError if they do not fit or repeat."""
    idx = list(features) if features else list(range(offset, offset + n_classes))
    if len(idx) != n_classes:
        raise ValueError(f"the label embedding needs {n_classes} feature indices, got {len(idx)}")
    if len(set(idx)) != len(idx) or min(idx) < 0 or max(idx) >= n_features:
        raise ValueError(f"label feature indices {idx} must be distinct and within 0..{n_features - 1}")
    return idx


def embed_label(
    x: torch.Tensor, label: torch.Tensor, n_classes: int, scale: float = 1.0, offset: int = 0, features=None
) -> torch.Tensor:
    """Hinton's label embedding: overwrite ``n_classes`` input features with ``scale * one_hot(label)``.

    The features are ``offset .. offset + n_classes - 1`` (Hinton: the first 10 pixels of
    MNIST, which are always blank), or the explicit indices ``features`` (e.g. blank border
    pixels of a small image).  ``label = -1`` gives the neutral embedding (all
    ``scale / n_classes``), used for label-free passes such as a softmax readout.
    """
    idx = label_feature_indices(x.shape[-1], n_classes, offset, features)
    out = x.clone()
    onehot = torch.zeros(x.shape[0], n_classes, dtype=x.dtype, device=x.device)
    neutral = label < 0
    onehot[~neutral] = F.one_hot(label[~neutral], n_classes).to(x.dtype)
    onehot[neutral] = 1.0 / n_classes
    if features:
        out[:, idx] = scale * onehot
    else:
        out[:, offset : offset + n_classes] = scale * onehot
    return out


def random_wrong_labels(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """A label different from ``y``, uniform over the other ``n_classes - 1`` classes, per sample
    (drawn from torch's global generator, which the trainer checkpoints)."""
    shift = sharding.randint(1, n_classes, y.shape, device=y.device)  # per sample, independent of data-parallel shards
    return (y + shift) % n_classes


def hardest_wrong_labels(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The wrong label the network likes best: ``argmax_{c != y} scores[:, c]`` (scores: higher = more positive)."""
    masked = scores.clone()
    masked[torch.arange(y.numel(), device=y.device), y] = float("-inf")
    return masked.argmax(dim=1)


def sampled_wrong_labels(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A wrong label drawn with probability ``softmax(scores)`` renormalized over the wrong classes
    (Hinton's hard negatives from a neutral-label pass; global torch generator)."""
    masked = scores.detach().clone()
    masked[torch.arange(y.numel(), device=y.device), y] = float("-inf")
    return sharding.multinomial_rows(torch.softmax(masked, dim=1))  # per sample, independent of data-parallel shards
