"""Hopfield-like energy of a layered network, its settling dynamics and the contrastive update terms.

Pure torch, no state: every function takes the parameters and the states explicitly.

Network.  Layers ``s_0 .. s_L``: ``s_0 = x`` is the clamped input, ``s_1 .. s_{L-1}`` hidden, ``s_L``
the output.  ``W_k`` [n_k, n_{k-1}] couples layer ``k-1`` and layer ``k`` *symmetrically* (layer ``k``
receives ``W_k rho(s_{k-1})`` from below, layer ``k-1`` receives ``W_k^T rho(s_k)`` from above);
``b_k`` [n_k] is layer ``k``'s bias (k = 1 .. L).  All states are dimensionless.

Energy (per sample; Scellier & Bengio 2017, eq. 1)::

    E(s) = 1/2 sum_{k>=1} |rho(s_k)|^2  -  sum_{k>=1} rho(s_k) . W_k rho(s_{k-1})  -  sum_{k>=1} b_k . rho(s_k)

(the clamped input's own ``1/2 |x|^2`` is a constant and left out).  Cost of the output
(their convention, no factor 1/2)::

    C(s) = sum_j (rho(s_Lj) - y_j)^2,      y = one-hot target

Total energy of a nudged phase: ``F = E + beta C``; ``beta = 0`` is the free phase.  With
``clamp_output`` the output is held at ``y`` (contrastive Hebbian learning's clamped phase).

Activations ``rho``:
- ``"hard_sigmoid"`` (Scellier's): ``rho(s) = clip(s, 0, 1)``; the states are kept in the box
  [0, 1], where ``rho(s) = s`` and ``rho'(s) = 1``, and a step is *projected* gradient descent:
  ``s <- clip(s - eps dF/ds, 0, 1)``, i.e. ``s <- clip((1 - eps) s + eps (drive - beta dC/ds), 0, 1)``
  with ``drive_k = W_k rho(s_{k-1}) + W_{k+1}^T rho(s_{k+1}) + b_k``.
- ``"sigmoid"``: ``rho(s) = 1 / (1 + e^{-4 (s - 1/2)})`` (slope 1 at 1/2, like the hard sigmoid);
  states unbounded, plain gradient descent ``s <- s - eps dF/ds`` with
  ``dE/ds_k = rho'(s_k) (rho(s_k) - drive_k)``.  Smooth: used to check the theory without kinks.

A settling step is explicit Euler on ``ds/dt = -dF/ds`` with step ``eps`` (dimensionless time).
For ``eps`` below ``1 / Lip(grad F)`` every step lowers ``F`` (tested).  All layers are updated
*synchronously* from the previous state (Scellier's code does the same).

Parameter derivatives (batch mean; ``B`` samples, rows of ``s_k`` are samples)::

    dE/dW_k = -(1/B) rho(s_k)^T rho(s_{k-1}),      dE/db_k = -(1/B) sum_b rho(s_k)

Contrastive update (descent direction, an estimate of ``dL/dtheta`` with ``L = C(s^0)``)::

    EP, one-sided:   g = (1/beta) [dE/dtheta(s^beta) - dE/dtheta(s^0)]
    EP, symmetric:   g = (1/(2 beta)) [dE/dtheta(s^beta) - dE/dtheta(s^-beta)]     (Laborieux et al. 2021)
    CHL:             g = dE/dtheta(s^clamped) - dE/dtheta(s^0)

EP's ``g`` tends to ``dL/dtheta`` as ``beta -> 0`` (one-sided with bias O(beta), symmetric O(beta^2)).
The reference gradient is computed here by recurrent backpropagation (Almeida-Pineda) at the
fixed point: :func:`fixed_point_gradient`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch

Activation = Literal["hard_sigmoid", "sigmoid"]
States = list[torch.Tensor]
Params = tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]  # (weights W_1..W_L, biases b_1..b_L)

_SIGMOID_SLOPE = 4.0


def rho(s: torch.Tensor, activation: Activation = "hard_sigmoid") -> torch.Tensor:
    """The unit nonlinearity ``rho(s)`` (see module docstring)."""
    if activation == "hard_sigmoid":
        return s.clamp(0.0, 1.0)
    return torch.sigmoid(_SIGMOID_SLOPE * (s - 0.5))


def rho_prime(s: torch.Tensor, activation: Activation = "hard_sigmoid") -> torch.Tensor:
    """``rho'(s)``; 1 everywhere for the hard sigmoid (states live in the box, where its slope is 1)."""
    if activation == "hard_sigmoid":
        return torch.ones_like(s)
    r = torch.sigmoid(_SIGMOID_SLOPE * (s - 0.5))
    return _SIGMOID_SLOPE * r * (1.0 - r)


def zero_states(x: torch.Tensor, sizes: Sequence[int]) -> States:
    """States ``s_1 .. s_L`` at zero, [batch, n_k] each (``sizes`` = [n_0, n_1, ..., n_L])."""
    return [x.new_zeros(x.shape[0], n) for n in sizes[1:]]


def energy(x: torch.Tensor, states: States, weights, biases, activation: Activation = "hard_sigmoid") -> torch.Tensor:
    """Per-sample energy ``E(s)`` [batch] (module docstring)."""
    layers = [x] + [rho(s, activation) for s in states]
    e = sum(0.5 * (r * r).sum(1) for r in layers[1:])
    for k, (w, b) in enumerate(zip(weights, biases), start=1):
        e = e - (layers[k] * (layers[k - 1] @ w.t())).sum(1)
        e = e - layers[k] @ b
    return e


def cost(states: States, target: torch.Tensor, activation: Activation = "hard_sigmoid") -> torch.Tensor:
    """Per-sample cost ``C = sum_j (rho(s_Lj) - y_j)^2`` [batch]; ``target`` one-hot [batch, n_L]."""
    return ((rho(states[-1], activation) - target) ** 2).sum(1)


def total_energy(
    x, states, weights, biases, beta: float = 0.0, target=None, activation: Activation = "hard_sigmoid"
) -> torch.Tensor:
    """``F = E + beta C`` per sample [batch]."""
    e = energy(x, states, weights, biases, activation)
    if beta:
        e = e + beta * cost(states, target, activation)
    return e


def drives(
    x: torch.Tensor,
    states: States,
    weights,
    biases,
    activation: Activation = "hard_sigmoid",
    input_drive: torch.Tensor | None = None,
) -> States:
    """``drive_k = W_k rho(s_{k-1}) + W_{k+1}^T rho(s_{k+1}) + b_k`` for k = 1 .. L.

    ``input_drive``: ``W_1 x + b_1`` precomputed once per batch (the input is clamped), which
    removes the largest product from every settling step.
    """
    r = [rho(s, activation) for s in states]
    out = []
    n = len(states)
    for k in range(1, n + 1):
        if k == 1:
            d = input_drive if input_drive is not None else x @ weights[0].t() + biases[0]
        else:
            d = torch.addmm(biases[k - 1], r[k - 2], weights[k - 1].t())
        if k < n:
            d = d + r[k] @ weights[k]
        out.append(d)
    return out


def settle_step(
    x: torch.Tensor,
    states: States,
    weights,
    biases,
    *,
    eps: float,
    beta=0.0,
    target: torch.Tensor | None = None,
    clamp_output=False,
    activation: Activation = "hard_sigmoid",
    input_drive: torch.Tensor | None = None,
) -> States:
    """One synchronous Euler step of ``ds/dt = -dF/ds`` (projected onto [0, 1] for the hard sigmoid).

    eps: step size (dimensionless time).  beta: nudging strength (0: free phase), a number or a
    per-sample tensor [batch, 1].  clamp_output: hold ``s_L = y`` (CHL's clamped phase), a bool or a
    per-sample bool tensor [batch, 1]; clamped samples ignore ``beta``.
    """
    nudged = isinstance(beta, torch.Tensor) or bool(beta)
    clamped = isinstance(clamp_output, torch.Tensor) or bool(clamp_output)
    if activation == "hard_sigmoid" and input_drive is not None:
        return _hard_sigmoid_step(
            states,
            weights,
            biases,
            eps,
            beta if nudged else None,
            target,
            clamp_output if clamped else None,
            input_drive,
        )
    d = drives(x, states, weights, biases, activation, input_drive)
    new = []
    last = len(states) - 1
    for k, (s, dk) in enumerate(zip(states, d)):
        if k == last and clamped and not isinstance(clamp_output, torch.Tensor):
            new.append(target.to(s.dtype))
            continue
        if activation == "hard_sigmoid":
            grad = s - dk
            if k == last and nudged:
                grad = grad + beta * 2.0 * (s - target)
            out = (s - eps * grad).clamp(0.0, 1.0)
        else:
            r = rho(s, activation)
            grad = rho_prime(s, activation) * (r - dk)
            if k == last and nudged:
                grad = grad + beta * 2.0 * (r - target) * rho_prime(s, activation)
            out = s - eps * grad
        if k == last and isinstance(clamp_output, torch.Tensor):
            out = torch.where(clamp_output, target.to(s.dtype), out)
        new.append(out)
    return new


def _hard_sigmoid_step(states, weights, biases, eps, beta, target, clamp_output, input_drive) -> States:
    """:func:`settle_step` for the hard sigmoid with states in [0, 1] (where ``rho(s) = s``), in fewer operations.

    ``s_k <- clip((1 - eps) s_k + eps (drive_k - beta dC/ds_k), 0, 1)``; ``drive_1`` starts from ``input_drive``.
    """
    n = len(states)
    new = []
    for k in range(n):
        s = states[k]
        if k == 0:
            d = input_drive if n == 1 else torch.addmm(input_drive, states[1], weights[1])
        else:
            d = torch.addmm(biases[k], states[k - 1], weights[k].t())
            if k < n - 1:
                d.addmm_(states[k + 1], weights[k + 1])
        if k == n - 1:
            if clamp_output is not None and not isinstance(clamp_output, torch.Tensor):
                new.append(target.to(s.dtype))
                continue
            if beta is not None:
                d = d - (2.0 * beta) * (s - target)
        out = torch.add(d, s, alpha=(1.0 - eps) / eps).mul_(eps) if eps != 0 else s.clone()
        out.clamp_(0.0, 1.0)
        if k == n - 1 and isinstance(clamp_output, torch.Tensor):
            out = torch.where(clamp_output, target.to(s.dtype), out)
        new.append(out)
    return new


def settle(
    x: torch.Tensor,
    states: States | None,
    weights,
    biases,
    *,
    steps: int,
    eps: float,
    beta=0.0,
    target: torch.Tensor | None = None,
    clamp_output=False,
    activation: Activation = "hard_sigmoid",
    input_drive: torch.Tensor | None = None,
    trace: Callable[[int, States], None] | None = None,
    tick: tuple[int, Callable[[States], None]] | None = None,
) -> States:
    """``steps`` settling steps from ``states`` (``None``: all zero); ``trace(t, states)`` is called after each step.

    ``tick = (every, fn)``: ``fn(states)`` after every ``every``-th step (e.g. a learning rule reading the
    state once per tick); ``fn`` must use the states at once (they may be views of a buffer reused later).

    Hard sigmoid without a trace and without a per-sample clamp: the fused loop :func:`settle_hard_sigmoid`
    (same arithmetic, fewer operations); otherwise :func:`settle_step` repeated.
    """
    if input_drive is None and len(weights):
        input_drive = torch.addmm(biases[0], x, weights[0].t())
    if (
        activation == "hard_sigmoid"
        and trace is None
        and steps > 0
        and not isinstance(clamp_output, torch.Tensor)
        and not torch.is_grad_enabled()
    ):
        return settle_hard_sigmoid(
            states,
            weights,
            biases,
            steps=steps,
            eps=eps,
            beta=beta,
            target=target,
            clamp_output=bool(clamp_output),
            input_drive=input_drive,
            tick=tick,
        )
    if states is None:
        states = zero_states(x, [x.shape[1]] + [w.shape[0] for w in weights])
    for t in range(steps):
        states = settle_step(
            x,
            states,
            weights,
            biases,
            eps=eps,
            beta=beta,
            target=target,
            clamp_output=clamp_output,
            activation=activation,
            input_drive=input_drive,
        )
        if trace is not None:
            trace(t, states)
        if tick is not None and (t + 1) % tick[0] == 0:
            tick[1](states)
    return states


def settle_hard_sigmoid(
    states: States | None,
    weights,
    biases,
    *,
    steps: int,
    eps: float,
    beta=0.0,
    target: torch.Tensor | None = None,
    clamp_output: bool = False,
    input_drive: torch.Tensor,
    tick: tuple[int, Callable[[States], None]] | None = None,
) -> States:
    """``steps`` synchronous hard-sigmoid steps (states in [0, 1]) with the fewest operations per step.

    The same map as :func:`settle_step`: ``s_k <- clip((1 - eps) s_k + eps (drive_k - beta dC/ds_k), 0, 1)``,
    ``dC/ds_L = 2 (s_L - y)``.  Regrouped as ``s <- clip(a * s + C + eps * (couplings), 0, 1)`` with per-phase
    constants: ``a = 1 - eps`` (output layer: ``1 - eps - 2 eps beta``), ``C_1 = eps input_drive``,
    ``C_k = eps b_k`` (output: ``+ 2 eps beta y``); ``beta`` a number or per sample [batch, 1].  All layers live
    transposed in one buffer [n_1 + ... + n_L, batch] (each layer a contiguous block of rows), so one step is
    one ``addcmul`` over the whole buffer, one in-place ``addmm`` per coupling direction and one ``clamp``,
    with two preallocated buffers used alternately.  ``clamp_output``: hold ``s_L = y`` (``a = 0``, ``C = y``,
    no coupling into the output).  ``states = None``: start from zero.  Returns the layers as [batch, n_k]
    views of the last buffer.  ``tick = (every, fn)``: ``fn(states)`` after every ``every``-th step, with the
    states as views that the following steps overwrite.  Not for autograd (in-place updates).
    """
    n = len(weights)
    bsz = input_drive.shape[0]
    offs = [0]
    for w in weights:
        offs.append(offs[-1] + w.shape[0])
    dtype, device = input_drive.dtype, input_drive.device
    if states is None:
        cur = torch.zeros(offs[-1], bsz, dtype=dtype, device=device)
    else:
        cur = torch.empty(offs[-1], bsz, dtype=dtype, device=device)
        for k in range(n):
            cur[offs[k] : offs[k + 1]].copy_(states[k].t())
    nxt = torch.empty_like(cur)
    const = torch.empty_like(cur)
    torch.mul(input_drive.t(), eps, out=const[: offs[1]])
    for k in range(1, n):
        const[offs[k] : offs[k + 1]].copy_(biases[k].unsqueeze(1)).mul_(eps)
    nudged = isinstance(beta, torch.Tensor) or bool(beta)
    last = slice(offs[n - 1], offs[n])
    leak = torch.full((offs[-1], bsz), 1.0 - eps, dtype=dtype, device=device) if clamp_output or nudged else None
    if clamp_output:
        const[last].copy_(target.t())
        leak[last].zero_()
    elif nudged:
        b = beta.reshape(1, -1).to(dtype) if isinstance(beta, torch.Tensor) else beta
        const[last].add_(2.0 * eps * b * target.t())
        leak[last].sub_(2.0 * eps * b * torch.ones_like(leak[last]))
    # views of the blocks; pairs (destination block, matrix, source block) for every coupling
    wt = [w.t() for w in weights]

    def couplings(dst, src):
        out = []
        for k in range(n):
            d, down, up = dst[offs[k] : offs[k + 1]], None, None
            if k > 0:
                down = (weights[k], src[offs[k - 1] : offs[k]])  # W_k s_{k-1}^T, [n_k, batch]
            if k < n - 1:
                up = (wt[k + 1], src[offs[k + 1] : offs[k + 2]])  # W_{k+1}^T s_{k+1}^T
            if clamp_output and k == n - 1:
                down = up = None
            out.extend((d, *pair) for pair in (down, up) if pair is not None)
        return out

    plan = {id(cur): couplings(nxt, cur), id(nxt): couplings(cur, nxt)}
    every, on_tick = tick if tick is not None else (0, None)
    for t in range(steps):
        if leak is None:
            torch.add(const, cur, alpha=1.0 - eps, out=nxt)
        else:
            torch.addcmul(const, leak, cur, out=nxt)
        for d, m, v in plan[id(cur)]:
            d.addmm_(m, v, alpha=eps)
        nxt.clamp_(0.0, 1.0)
        cur, nxt = nxt, cur
        if on_tick is not None and (t + 1) % every == 0:
            on_tick([cur[offs[k] : offs[k + 1]].t() for k in range(n)])
    return [cur[offs[k] : offs[k + 1]].t() for k in range(n)]


def energy_grads(x: torch.Tensor, states: States, activation: Activation = "hard_sigmoid") -> tuple[States, States]:
    """``(dE/dW_k, dE/db_k)`` for k = 1 .. L at ``states`` (batch means; module docstring)."""
    b = x.shape[0]
    layers = [x] + [rho(s, activation) for s in states]
    gw = [-(layers[k].t() @ layers[k - 1]) / b for k in range(1, len(layers))]
    gb = [-layers[k].mean(0) for k in range(1, len(layers))]
    return gw, gb


def contrastive_grads(
    x: torch.Tensor, plus: States, minus: States, scale: float, activation: Activation = "hard_sigmoid"
) -> tuple[States, States]:
    """``scale * [dE/dtheta(plus) - dE/dtheta(minus)]`` for every ``W_k``, ``b_k``.

    EP one-sided: ``plus = s^beta, minus = s^0, scale = 1/beta``; symmetric: ``s^beta, s^-beta,
    1/(2 beta)``; CHL: ``s^clamped, s^0, 1``.  For the first layer the input is shared, so the
    difference is taken before the product: one [n_1, n_0] product instead of two.
    """
    b = x.shape[0]
    rp = [rho(s, activation) for s in plus]
    rm = [rho(s, activation) for s in minus]
    gw = [-(scale / b) * ((rp[0] - rm[0]).t() @ x)]
    for k in range(1, len(rp)):
        gw.append(-(scale / b) * (rp[k].t() @ rp[k - 1] - rm[k].t() @ rm[k - 1]))
    gb = [-scale * (p - m).mean(0) for p, m in zip(rp, rm)]
    return gw, gb


def fixed_point_gradient(
    x: torch.Tensor,
    states: States,
    target: torch.Tensor,
    weights,
    biases,
    *,
    eps: float,
    activation: Activation = "hard_sigmoid",
    iterations: int = 500,
    tol: float = 1e-10,
) -> tuple[States, States, float]:
    """``dL/dtheta`` of ``L = mean_b C(s*)`` at a free fixed point ``s* = G(s*, theta)`` (recurrent backprop).

    ``G`` is one free :func:`settle_step`.  With ``J = dG/ds`` at ``s*``, the adjoint solves
    ``lambda = dL/ds* + lambda J`` (iterated ``iterations`` times or until the update's max-norm is
    below ``tol``) and ``dL/dtheta = lambda dG/dtheta`` (both vector-Jacobian products by autograd).
    This is exact for a settled ``states`` whose Jacobian has spectral radius < 1; saturated
    hard-sigmoid units pass no gradient, as at the true fixed point of the projected dynamics.
    Returns ``(dL/dW, dL/db, last adjoint update max-norm)``.
    """
    params = [w.detach().requires_grad_(True) for w in weights] + [b.detach().requires_grad_(True) for b in biases]
    n = len(weights)
    with torch.enable_grad():
        s = [t.detach().requires_grad_(True) for t in states]
        out = settle_step(x, s, params[:n], params[n:], eps=eps, activation=activation)
        loss = cost(s, target, activation).mean()
        dl_ds = list(torch.autograd.grad(loss, s, allow_unused=True))
        dl_ds = [g if g is not None else torch.zeros_like(t) for g, t in zip(dl_ds, s)]
        lam = [g.clone() for g in dl_ds]
        delta = math.inf
        for _ in range(iterations):
            vjp = torch.autograd.grad(out, s, grad_outputs=lam, retain_graph=True, allow_unused=True)
            new = [g + (v if v is not None else 0.0) for g, v in zip(dl_ds, vjp)]
            delta = max(float((a - b).abs().max()) for a, b in zip(new, lam))
            lam = new
            if delta < tol:
                break
        grads = torch.autograd.grad(out, params, grad_outputs=lam, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
    return list(grads[:n]), list(grads[n:]), delta


def flat(gw: Sequence[torch.Tensor], gb: Sequence[torch.Tensor]) -> torch.Tensor:
    """All parameter gradients as one vector (W_1, ..., W_L, b_1, ..., b_L)."""
    return torch.cat([g.reshape(-1) for g in (*gw, *gb)])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two vectors, clipped to [-1, 1] against rounding (0 when either is zero)."""
    na, nb = float(a.norm()), float(b.norm())
    return max(-1.0, min(1.0, float(a @ b) / (na * nb))) if na > 0 and nb > 0 else 0.0


def one_hot(y: torch.Tensor, n: int, dtype=torch.float32) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, n).to(dtype)
