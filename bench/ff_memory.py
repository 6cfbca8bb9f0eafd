"""Peak training memory vs depth: forward-forward against backprop (BPTT for spiking layers).

For each configuration a fresh Python process (``--one``) builds the model at fixed width,
an Adam optimizer and one random batch, records ``ru_maxrss`` (the process's peak resident
set size, Linux: KiB), runs ``--steps`` training steps exactly as the trainer does (zero the
grads, ``rule.step``, ``optimizer.step``) and records ``ru_maxrss`` again.  The difference
is the peak *training* memory: activations kept for the backward pass, gradients and Adam
state (the last two grow with the number of parameters for every rule; the table lists the
parameter memory beside it).  torch runs with one thread; nothing else shares the process.
Each child runs with ``MALLOC_MMAP_THRESHOLD_=65536``: glibc then serves every large
tensor from its own mapping and unmaps it when freed, so the resident set follows the live
tensors (without it, glibc's adaptive threshold keeps freed buffers mapped and the peak
depends on allocation history, e.g. a 4-layer run measured above an 8-layer one).

    .venv/bin/python bench/ff_memory.py                 # all configurations, markdown table
    .venv/bin/python bench/ff_memory.py --json out.json

Configurations: dense ReLU MLP (784 inputs, width 256, batch 4096; FF vs backprop through the
same MLP, cross-entropy of its readout) and spiking MLP (784 inputs, width 256, T = 20, batch
256, rate coding; FF vs surrogate-gradient BPTT); depth 2, 4 and 8 hidden layers.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPTHS = (2, 4, 8)
FAMILIES = {
    "mlp": {"width": 256, "batch": 4096, "n_in": 784},
    "spiking": {"width": 256, "batch": 256, "n_in": 784, "time_steps": 20},
}
RULES = ("ff", "backprop")
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536", "PATH": "/usr/bin:/bin"}


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(family: str, rule_name: str, depth: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from neuro.layers.mlp import MLP
    from neuro.layers.spiking_mlp import SpikingMLP
    from neuro.rules.base import Batch
    from neuro.rules.bptt import BPTT
    from neuro.rules.ff import FF, FFSpec

    cfg = FAMILIES[family]
    torch.manual_seed(0)
    hidden = [cfg["width"]] * depth
    if family == "mlp":
        model = MLP(cfg["n_in"], hidden, 10)
        spec = FFSpec()
    else:
        model = SpikingMLP(cfg["n_in"], hidden, 10, time_steps=cfg["time_steps"])
        spec = FFSpec(goodness="sum_squares", threshold=1.0)
    rule = FF(spec, n_classes=10) if rule_name == "ff" else BPTT()
    rule.check_compatible(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = Batch(torch.rand(cfg["batch"], cfg["n_in"]), torch.randint(0, 10, (cfg["batch"],)))
    n_params = sum(p.numel() for p in model.parameters())
    before = maxrss_mib()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        rule.step(model, batch)
        opt.step()
    after = maxrss_mib()
    return {
        "family": family,
        "rule": rule_name,
        "depth": depth,
        "params": n_params,
        "param_state_mib": n_params * 4 * 4 / 2**20,  # weights, grads, Adam m and v (float32)
        "rss_before_mib": before,
        "rss_peak_mib": after,
        "train_peak_mib": after - before,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", nargs=3, metavar=("FAMILY", "RULE", "DEPTH"), help="measure one configuration (internal)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    if args.one:
        family, rule_name, depth = args.one
        print(json.dumps(run_one(family, rule_name, int(depth), args.steps)))
        return
    from bench import machine

    rec = machine.start()
    rows = []
    for family in FAMILIES:
        for rule_name in RULES:
            for depth in DEPTHS:
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.ff_memory",
                        "--one",
                        family,
                        rule_name,
                        str(depth),
                        "--steps",
                        str(args.steps),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=CHILD_ENV,
                )
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(
                    f"  {family} {rule_name} depth {depth}: {rows[-1]['train_peak_mib']:.1f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
    base = {(r["family"], r["rule"]): r["train_peak_mib"] for r in rows if r["depth"] == DEPTHS[0]}
    print(machine.report(rec, own_threads=1))
    print(
        "| model | rule | depth | parameters | param+grad+Adam (MiB) | peak training memory (MiB) | ratio to depth 2 |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        r["ratio_to_depth2"] = r["train_peak_mib"] / base[(r["family"], r["rule"])]
        print(
            f"| {r['family']} | {r['rule']} | {r['depth']} | {r['params']} | {r['param_state_mib']:.1f} | "
            f"{r['train_peak_mib']:.1f} | {r['ratio_to_depth2']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
