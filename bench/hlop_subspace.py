"""How much of each layer's input energy HLOP's lateral subspace holds, against the best possible subspace.

For a saved continual HLOP run (``neuro train --continual hlop``) after task ``t``, every projectable
layer's input activity ``x`` (reduced as the strategy sees it: ``continual.activity``) is recorded on
the first ``--samples`` training samples of task ``t``.  With ``X`` [N, n] those inputs, ``Q`` [k, n]
an orthonormal basis of the layer's lateral weights ``H`` (all ``k`` rows) and ``C = X^T X / N``
(uncentred, as Oja's rule sees it) with eigenvalues ``e_1 >= e_2 >= ...``:

    captured by HLOP     = ||X Q^T||_F^2 / ||X||_F^2
    captured by top-k    = (e_1 + ... + e_k) / trace C        (the most any k-dimensional subspace holds)

Oja's subspace rule converges at a speed set by ``hebbian_lr * E||x||^2``, so a layer whose inputs
carry little energy per sample converges slowly; ``E||x||^2`` is printed beside the two figures.
A projection protects old tasks only along directions it holds: the gap between the two columns is
interference HLOP lets through.

    python -m bench.hlop_subspace runs/continual-table/full-bptt-hlop-s0 --task 0
"""

from __future__ import annotations

import argparse

import torch

from neuro.continual.base import capture_inputs, require_layers
from neuro.continual.workflow import load_continual_run
from neuro.errors import NeuroError
from neuro.functional.subspace import orthonormal_rows


def subspace_energy(X: torch.Tensor, H: torch.Tensor) -> tuple[float, float]:
    """(fraction of ``||X||^2`` in the row space of ``H``, fraction in the top ``rank(H)`` eigenvectors of X^T X);
    both NaN for a silent input (``X = 0``)."""
    X = X.double()
    Q = orthonormal_rows(H.double())
    total = float((X * X).sum())
    if total == 0:
        return float("nan"), float("nan")
    hlop = float(((X @ Q.t()) ** 2).sum()) / total
    eig = torch.linalg.eigvalsh(X.t() @ X).flip(0)
    best = float(eig[: Q.shape[0]].sum()) / total
    return hlop, best


def layer_inputs(exp, strategy, spec, x: torch.Tensor, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Each projectable layer's reduced input activity [N, n] on ``x`` (a forward prediction pass)."""
    layers = require_layers(strategy.strategy, exp.model)
    out: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in layers}
    exp.model.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            with capture_inputs(layers, spec.activity) as seen:
                exp.rule.predict(exp.model, x[i : i + batch_size])
            for name, parts in seen.items():
                out[name].append(torch.cat(parts, 0))
    return {name: torch.cat(parts, 0) for name, parts in out.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a continual HLOP run directory")
    p.add_argument("--task", type=int, default=0, help="the task checkpoint to read (and whose data to use)")
    p.add_argument("--samples", type=int, default=2000, help="training samples of that task to record")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    try:
        spec, exp, stream, strategy, task = load_continual_run(args.run, args.task)
    except NeuroError as exc:  # a missing run or task checkpoint: one line, not a traceback
        raise SystemExit(f"error: {exc}") from None
    if not getattr(strategy, "H", None):
        raise SystemExit(f"{args.run}: strategy `{strategy.strategy}` has no lateral (Hebbian) subspace to measure")
    data = stream.tasks[task].dataset()
    x = data.train.x[: args.samples]
    inputs = layer_inputs(exp, strategy, spec, x)
    print(f"{args.run}, after task {task}, {len(x)} training samples of task {task} ({spec.activity} activity)")
    print(f"{'layer':<28} {'n_in':>5} {'k':>4} {'E||x||^2':>9} {'HLOP %':>7} {'top-k %':>8}")
    for name, X in inputs.items():
        H = strategy.H[name]
        hlop, best = subspace_energy(X, H)
        energy = float((X.double() ** 2).sum(1).mean())
        print(f"{name:<28} {X.shape[1]:>5} {H.shape[0]:>4} {energy:>9.2f} {100 * hlop:>7.1f} {100 * best:>8.1f}")


if __name__ == "__main__":
    main()
