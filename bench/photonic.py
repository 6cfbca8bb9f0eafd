"""Benchmark: MZI mesh forward and training-step throughput against a dense complex matmul (the roofline).

For each mesh size ``N`` (default 16, 64, 256) and mesh kind (Clements, Reck) it times, on a batch of
``B`` complex64 field vectors:

- ``mesh fwd``: :func:`simulators.photonic.mesh_field` under ``torch.no_grad()``, its default ``method="auto"``:
  for phases shared by the batch and ``16 B >= N``, the weight-stationary path (the mesh's ``U`` built by the
  blocked product :func:`simulators.photonic.mesh_unitary`, then one dense matmul);
- ``mesh fwd, rebuilt``: the same, but ``U`` rebuilt on every call (``cache=False``; the default reuses ``U``
  while the phases stay the same, i.e. a weight-stationary mesh costs one dense matmul per batch);
- ``mesh fwd, columns``: the column updates (one column of MZIs per step: ``3 N`` complex MACs per column per
  sample, ``N`` (Clements) or ``2N-3`` (Reck) columns);
- ``mesh fwd, shot noise``: per-sample phases (``[B, K]``, as with per-shot phase noise): the column updates;
- ``mesh train``: forward (``auto``) with gradients w.r.t. every phase, an intensity MSE loss, backward;
- ``dense fwd`` / ``dense train``: ``x @ W^T`` with a dense complex ``[N, N]`` ``W`` (``N^2`` complex MACs per
  sample), and the same loss and backward w.r.t. ``W`` -- what the optics replaces, the roofline.

Each timing is the median of ``--repeat`` runs of ``--iters`` iterations after a warm-up; throughput in
samples/s.  The 1-minute load average is recorded before and after, with the CPU model, torch version
and thread count; a result whose load average exceeded 1.5 at either end is marked ``valid: false``
(other jobs on the machine make its timing meaningless).  Timing claims need an idle machine.

Usage (from the repository root)::

    python -m bench.photonic                          # N = 16, 64, 256; B = 256
    python -m bench.photonic --quick                  # tiny sizes: a smoke run, not a measurement
    python -m bench.photonic --sizes 64 --batch 1024 --threads 1 --out bench/photonic.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import torch

from bench.machine import cpu_model
from simulators.photonic import KINDS, mesh_field, mesh_spec

LOAD_LIMIT = 1.5



def _time(fn, iters: int, repeat: int) -> float:
    """Median seconds per call of ``fn`` over ``repeat`` timed blocks of ``iters`` calls (after a warm-up)."""
    for _ in range(max(1, iters // 4)):
        fn()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        runs.append((time.perf_counter() - t0) / iters)
    return statistics.median(runs)


def bench_size(n: int, kind: str, batch: int, iters: int, repeat: int, seed: int = 0) -> dict:
    spec = mesh_spec(n, kind)
    g = torch.Generator().manual_seed(seed)
    real = torch.float32
    theta = 2 * math.pi * torch.rand(spec.n_mzi, generator=g, dtype=real)
    phi = 2 * math.pi * torch.rand(spec.n_mzi, generator=g, dtype=real)
    out = 2 * math.pi * torch.rand(n, generator=g, dtype=real)
    x = torch.randn(batch, n, generator=g, dtype=torch.complex64)
    target = torch.rand(batch, n, generator=g, dtype=real)
    w = torch.randn(n, n, generator=g, dtype=torch.complex64) / math.sqrt(n)
    theta_b = theta + 0.01 * torch.randn(batch, spec.n_mzi, generator=g, dtype=real)
    phi_b = phi + 0.01 * torch.randn(batch, spec.n_mzi, generator=g, dtype=real)

    def mesh_fwd():
        with torch.no_grad():
            mesh_field(x, spec, theta, phi, out)

    def mesh_fwd_rebuilt():
        with torch.no_grad():
            mesh_field(x, spec, theta, phi, out, cache=False)

    def mesh_fwd_columns():
        with torch.no_grad():
            mesh_field(x, spec, theta, phi, out, method="columns")

    def mesh_fwd_noisy():
        with torch.no_grad():
            mesh_field(x, spec, theta_b, phi_b, out)

    params = [p.clone().requires_grad_() for p in (theta, phi, out)]

    def mesh_train():
        y = mesh_field(x, spec, *params)
        loss = ((y.real ** 2 + y.imag ** 2 - target) ** 2).mean()
        loss.backward()

    def dense_fwd():
        with torch.no_grad():
            x @ w.T

    wp = w.clone().requires_grad_()

    def dense_train():
        y = x @ wp.T
        loss = ((y.real ** 2 + y.imag ** 2 - target) ** 2).mean()
        loss.backward()

    row = {"n": n, "kind": kind, "batch": batch, "n_mzi": spec.n_mzi, "n_cols": spec.n_cols,
           "mesh_cmacs_per_sample": 3 * n * spec.n_cols, "dense_cmacs_per_sample": n * n}
    for name, fn in (("mesh_fwd", mesh_fwd), ("mesh_fwd_rebuilt", mesh_fwd_rebuilt),
                     ("mesh_fwd_columns", mesh_fwd_columns),
                     ("mesh_fwd_shot_noise", mesh_fwd_noisy), ("mesh_train", mesh_train),
                     ("dense_fwd", dense_fwd), ("dense_train", dense_train)):
        sec = _time(fn, iters, repeat)
        row[f"{name}_s"] = sec
        row[f"{name}_samples_per_s"] = batch / sec
    row["fwd_slowdown_vs_dense"] = row["mesh_fwd_s"] / row["dense_fwd_s"]
    row["fwd_rebuilt_slowdown_vs_dense"] = row["mesh_fwd_rebuilt_s"] / row["dense_fwd_s"]
    row["train_slowdown_vs_dense"] = row["mesh_train_s"] / row["dense_train_s"]
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.photonic", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256], help="mesh sizes N")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--batch", type=int, default=256, help="samples per call")
    p.add_argument("--iters", type=int, default=10, help="calls per timed block")
    p.add_argument("--repeat", type=int, default=5, help="timed blocks (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="smoke run: N = 4, 8; batch 8; 2 iterations")
    p.add_argument("--out", help="append one JSON object per row to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.batch, args.iters, args.repeat = [4, 8], 8, 2, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    env = {"cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "load_before": os.getloadavg()[0], "quick": bool(args.quick)}
    rows = [bench_size(n, kind, args.batch, args.iters, args.repeat) for n in args.sizes for kind in args.kinds]
    env["load_after"] = os.getloadavg()[0]
    env["valid"] = max(env["load_before"], env["load_after"]) <= LOAD_LIMIT and not args.quick
    print(f"# {env['cpu']}, torch {env['torch']}, {env['threads']} threads; "
          f"load average {env['load_before']:.2f} before, "
          f"{env['load_after']:.2f} after -> {'valid' if env['valid'] else 'INVALID (load > 1.5 or --quick)'}")
    print("| N | mesh | MZIs | cols | mesh fwd [samples/s] | fwd, U rebuilt | fwd, columns | + shot noise | mesh train "
          "| dense fwd | dense train | fwd mesh/dense time | fwd rebuilt/dense | train mesh/dense time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['kind']} | {r['n_mzi']} | {r['n_cols']} | {r['mesh_fwd_samples_per_s']:.3g} | "
              f"{r['mesh_fwd_rebuilt_samples_per_s']:.3g} | {r['mesh_fwd_columns_samples_per_s']:.3g} | "
              f"{r['mesh_fwd_shot_noise_samples_per_s']:.3g} | {r['mesh_train_samples_per_s']:.3g} | "
              f"{r['dense_fwd_samples_per_s']:.3g} | {r['dense_train_samples_per_s']:.3g} | "
              f"{r['fwd_slowdown_vs_dense']:.1f}x | {r['fwd_rebuilt_slowdown_vs_dense']:.1f}x | "
              f"{r['train_slowdown_vs_dense']:.1f}x |")
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps({**env, **r}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
