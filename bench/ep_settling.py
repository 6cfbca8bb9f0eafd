"""Benchmark: free-phase settling of the 784-500-10 energy network against the matmul roofline.

For batch 20 (Scellier & Bengio's) and 256, float32, on ``--threads`` threads (default 1):

- ``settle``: :meth:`neuro.layers.energy.EnergyNet.settle` for a free phase of ``--steps`` (20)
  iterations from zero, including the once-per-phase input drive ``W_1 x + b_1`` (without autograd this
  is the fused loop :func:`neuro.functional.energy.settle_hard_sigmoid`: per iteration one ``addcmul``/``add``
  over all layers, one in-place ``addmm`` per coupling direction, one ``clamp``);
- ``roofline``: the matrix products of exactly those iterations and nothing else: one
  ``x W_1^T`` [B, 784] x [784, 500] per phase, then per iteration ``rho(s_2) W_2`` [B, 10] x [10, 500]
  (top-down into the hidden layer) and ``rho(s_1) W_2^T`` [B, 500] x [500, 10] (into the output),
  issued one after another into preallocated outputs (``torch.matmul(out=...)``).

Reported: iterations per second of each (median over ``--repeats`` timed phases after warm-up), the
ratio settle / roofline time (goal <= 1.5), and the GFLOP/s of the roofline.  The load average
before and after and the CPU model are recorded with the numbers: a timing is only meaningful on an
idle machine (load well below the number of cores); do not quote numbers taken under load.

Usage::

    OMP_NUM_THREADS=1 python -m bench.ep_settling                    # markdown table on stdout
    python -m bench.ep_settling --threads 2 --repeats 400 --json out.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from bench.machine import cpu_model


def time_phase(fn, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench(batch: int, steps: int, repeats: int, warmup: int) -> dict:
    import torch

    from neuro.layers.energy import EnergyNet

    torch.manual_seed(0)
    net = EnergyNet([784, 500, 10], step_size=0.5, settle_steps=steps)
    x = torch.rand(batch, 784)
    w1, w2 = net.weights[0].detach(), net.weights[1].detach()
    h = torch.empty(batch, 500)
    td = torch.empty(batch, 500)
    o = torch.empty(batch, 10)
    r1 = torch.rand(batch, 500)
    r2 = torch.rand(batch, 10)

    @torch.no_grad()
    def settle():
        net.settle(x, steps=steps)

    def roofline():
        torch.matmul(x, w1.t(), out=h)
        for _ in range(steps):
            torch.matmul(r2, w2, out=td)
            torch.matmul(r1, w2.t(), out=o)

    t_settle = statistics.median(time_phase(settle, repeats, warmup))
    t_roof = statistics.median(time_phase(roofline, repeats, warmup))
    flops = 2 * batch * (784 * 500 + steps * 2 * 500 * 10)
    return {
        "batch": batch,
        "steps": steps,
        "settle_it_per_s": steps / t_settle,
        "roofline_it_per_s": steps / t_roof,
        "ratio": t_settle / t_roof,
        "roofline_gflops": flops / t_roof / 1e9,
        "settle_ms_per_phase": 1e3 * t_settle,
        "roofline_ms_per_phase": 1e3 * t_roof,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batches", type=int, nargs="+", default=[20, 256])
    ap.add_argument("--json", default="", help="append one JSON line per configuration to this file")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = [bench(b, args.steps, args.repeats, args.warmup) for b in args.batches]
    load_after = os.getloadavg()
    meta = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "load_before": load_before[0],
        "load_after": load_after[0],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(
        f"# {meta['cpu']}, {meta['cores']} cores, {args.threads} thread(s), torch {meta['torch']}; "
        f"load average {meta['load_before']:.2f} before, {meta['load_after']:.2f} after"
    )
    if max(load_before[0], load_after[0]) > 0.5 * (os.cpu_count() or 1):
        print("# WARNING: the machine was busy; these timings are not valid measurements")
    print("| batch | settle it/s | roofline it/s | settle / roofline | roofline GFLOP/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['settle_it_per_s']:.0f} | {r['roofline_it_per_s']:.0f} | {r['ratio']:.2f} | "
            f"{r['roofline_gflops']:.1f} |"
        )
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({**meta, **r}) + "\n")


if __name__ == "__main__":
    main()
