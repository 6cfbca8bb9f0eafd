"""Cost of the float twin of the SFQ digits network on this CPU: latency and energy per inference.

The float network of ``examples/sfq_digits.py`` is the differentiable rate model
(``simulators.sfq_rate.network_rate``) of a 64-32-10 network: per neuron a 16-state Markov chain
solved in float64.  This script times its forward pass (no gradients, one thread) at batch 1
(latency) and batch 360 (the digits test split; time per inference = time / 360), with random
weights of the trained network's shape (the cost does not depend on the weight values).

Times are **CPU time of this process** (``time.process_time``), which a loaded machine inflates
far less than wall time; run on an idle machine for wall-clock claims (the load average is
printed).  Energy per inference = CPU time per inference x ``--watts-per-core`` (default 4.4 W:
an AMD EPYC 7763's 280 W TDP over its 64 cores; this machine reports only "AMD EPYC", so the
figure is an assumption, not a measurement).

``python -m bench.sfq_float_cpu [--watts-per-core 4.4] [--repeats 20]``
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from simulators.sfq import CellParams
from simulators.sfq_rate import RateLayer, network_rate


def cpu_seconds(fn, repeats: int) -> float:
    """Median CPU time (s) of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return float(np.median(times))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--watts-per-core", type=float, default=4.4)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rate", type=float, default=20.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from sklearn.datasets import load_digits

    x_all = torch.tensor(load_digits().data[:360] / 16.0 * args.rate)
    g = torch.Generator().manual_seed(0)
    cells = CellParams()
    layers = [
        RateLayer(
            (torch.rand(b, a, generator=g, dtype=torch.float64) * 2 - 1) * 0.9,
            torch.full((b,), 70.0, dtype=torch.float64),
        )
        for a, b in ((64, 32), (32, 10))
    ]
    with torch.no_grad():
        one = cpu_seconds(lambda: network_rate(x_all[:1], layers, cells), args.repeats)
        batch = cpu_seconds(lambda: network_rate(x_all, layers, cells), max(args.repeats // 5, 3))
    report = {
        "load_average": os.getloadavg(),
        "cpu": "AMD EPYC (lscpu)",
        "latency_batch1_s": one,
        "per_inference_batch360_s": batch / 360,
        "watts_per_core_assumed": args.watts_per_core,
        "energy_batch1_J": one * args.watts_per_core,
        "energy_per_inference_batch360_J": batch / 360 * args.watts_per_core,
    }
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
