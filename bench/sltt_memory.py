"""Peak memory of one training step, BPTT vs SLTT, 784-1000-10 CUBA LIF, batch 128, T = 25 / 100.

Each (method, T) runs in its own process; the figure is the growth of the process's peak
RSS (``getrusage`` maxrss) over its value just before the step, so it covers everything the
step allocates (input train, activations, graph, gradients).

- ``bptt``: our LIFLayer stack (fused engine, dense synapse), input spike train stored
  ``[T, B, 784]`` as the rate encoder makes it, ``loss.backward()``.
- ``sltt``: :func:`simulators.sltt.sltt_backward` with the input spikes re-drawn step by
  step from a seeded generator in each pass (nothing of size ``T`` stored but the output
  layer's ``[T, B, 10]``).
- ``sltt_stored``: SLTT with the full input train stored as for BPTT.

Usage: ``python bench/sltt_memory.py`` (prints a markdown table).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
B, SIZES, ACTIVITY = 128, (784, 1000, 10), 0.2


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(method: str, T: int) -> dict:
    import torch
    import torch.nn.functional as F

    from neuro.layers.lif import LIFLayer
    from simulators.lif import LIFParameters
    from simulators.sltt import SLTTLayer, sltt_backward

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    p = LIFParameters()
    ws = [torch.randn(b, a, generator=g) * (3.0 / a**0.5) for a, b in zip(SIZES[:-1], SIZES[1:])]
    y = torch.randint(0, SIZES[-1], (B,), generator=g)
    prob = torch.full((B, SIZES[0]), ACTIVITY)

    def steps():
        gen = torch.Generator().manual_seed(1)
        for _ in range(T):
            yield (torch.rand(B, SIZES[0], generator=gen) < prob).float()

    rss0 = _rss_mb()
    t0 = time.perf_counter()
    if method == "bptt":
        layers = []
        for w in ws:
            layer = LIFLayer(w.shape[1], w.shape[0], p, synapse="dense")
            layer.linear.weight.data.copy_(w)
            layers.append(layer)
        h = torch.stack(list(steps()))
        for layer in layers:
            h = layer(h)
        F.cross_entropy(h.sum(0), y).backward()
    else:
        params = [w.clone().requires_grad_() for w in ws]
        layers = [SLTTLayer(w, None, p) for w in params]
        if method == "sltt_stored":
            x = torch.stack(list(steps()))
            make = lambda: x.unbind(0)  # noqa: E731
        else:
            make = steps
        sltt_backward(layers, make, lambda z, v: F.cross_entropy(z.sum(0), y))
    return {"method": method, "T": T, "peak_growth_mb": _rss_mb() - rss0, "seconds": time.perf_counter() - t0}


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(run_one(sys.argv[1], int(sys.argv[2]))))
        return
    from bench import machine

    rec = machine.start()
    rows = {}
    for method in ("bptt", "sltt", "sltt_stored"):
        for T in (25, 100):
            out = subprocess.run(
                [sys.executable, "-m", "bench.sltt_memory", method, str(T)], capture_output=True, text=True, check=True
            )
            rows[(method, T)] = json.loads(out.stdout.strip().splitlines()[-1])
    print(machine.report(rec, own_threads=2))
    print(f"# 784-1000-10, batch {B}, input activity {ACTIVITY:.0%}")
    print("| method | peak RSS growth T=25 (MB) | T=100 (MB) | ratio T=100 / T=25 |\n|---|---|---|---|")
    for method in ("bptt", "sltt", "sltt_stored"):
        a, b = rows[(method, 25)]["peak_growth_mb"], rows[(method, 100)]["peak_growth_mb"]
        print(f"| {method} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
