"""Benchmark: data-parallel scaling 1 -> 2 processes, all-reduce volume per rule, and a scaling model.

Run on an IDLE machine (the load average before and after is recorded; numbers taken while other
jobs run are not a measurement of this code)::

    python -m bench.distributed                 # MNIST BPTT 784-500-10, T = 25, global batch 128
    python -m bench.distributed --quick         # smaller, a smoke test of the script (no claims)

Parts:

1. **Throughput.** ``neuro train examples/mnist_bptt.toml`` on ``--samples`` training samples for 2
   epochs, with 1 process and with ``--nproc 2`` (torchrun, gloo), one torch thread per process
   (``OMP_NUM_THREADS=1``).  Samples per second of the second epoch (``samples_per_s`` in
   ``metrics.jsonl``: training loop only, evaluation excluded).
2. **All-reduce volume per step** of every rule, on the example configs (bptt: mnist_bptt; ff:
   mnist_ff, 4 x 2000; mfff and pat: digits_physical_mfff with the rule swapped): the bytes of the
   gradients that exist after one step (what :func:`neuro.distributed.all_reduce_grads` sums), the
   number of all-reduce calls (buckets of 25 MiB plus one for the gradient mask), and for pat the
   fitted twins' gradients, reduced once per physical layer and step.
3. **Scaling model.** One step of ``W`` ranks takes ``t(B / W) + t_ar(V)``: the compute of a shard
   (measured in one process: rule step + optimizer step at batch ``B`` and ``B / 2``) plus the
   all-reduce of ``V`` bytes (measured with 2 gloo processes: median of repeated all-reduces of the
   gradient size, plus the small mask all-reduce).  Predicted speedup
   ``S_pred = t(B) / (t(B / 2) + t_ar(V))``; compared with the measured ``S = sps(2) / sps(1)``.
   A ring all-reduce moves ``2 (W - 1) / W * V`` bytes per rank, so with ``V`` = 1.6 MB it costs
   about a millisecond on one host, against about 100 ms of compute per step: the model predicts a
   speedup just under 2 when ``t`` is linear in the batch.  Goal: >= 1.8x.

Writes ``bench/distributed_<date>.json`` and prints a markdown summary.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ------------------------------------------------------------------ 1. throughput
def throughput(nproc: int, samples: int, epochs: int, out: Path, extra: list[str]) -> dict:
    name = f"bench-dist-{nproc}"
    cmd = [sys.executable, "-m", "neuro", "train", str(REPO / "examples" / "mnist_bptt.toml"), "--name", name,
           "--out", str(out), "--epochs", str(epochs), "--overwrite", "--no-progress",
           "--set", f"data.limit={samples}", "--set", "data.val_fraction=0.0",
           "--set", "optim.schedule=\"constant\"", *extra]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        raise SystemExit(f"training with {nproc} processes failed:\n{res.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    epochs_ = [r for r in records if r.get("event") == "epoch"]
    return {"nproc": nproc, "samples_per_s": epochs_[-1]["samples_per_s"], "epoch_time_s": epochs_[-1]["time_s"],
            "all_epochs_samples_per_s": [r["samples_per_s"] for r in epochs_], "wall_s": time.perf_counter() - t0}


# ------------------------------------------------------------ 2. all-reduce volume
RULE_CONFIGS = {
    "bptt": ("mnist_bptt.toml", {}),
    "ff": ("mnist_ff.toml", {}),
    "mfff": ("digits_physical_mfff.toml", {}),
    "pat": ("digits_physical_mfff.toml", {"rule": {"name": "pat", "twin_epochs": 1}}),
}


def volume_per_rule(limit: int = 64) -> dict:

    from neuro import config as cfg
    from neuro.build import build_experiment
    from neuro.distributed import BUCKET_MB, grad_bytes
    from neuro.rules.base import Batch

    out = {}
    for rule, (file, patch) in RULE_CONFIGS.items():
        config = cfg.load_toml(REPO / "examples" / file)
        config.setdefault("data", {})["limit"] = limit
        for section, values in patch.items():
            config[section] = values
        exp = build_experiment(config)
        params = [p for g in exp.optimizer.param_groups for p in g["params"]]
        exp.optimizer.zero_grad(set_to_none=True)
        x, y = exp.data.train.x[:32], exp.data.train.y[:32]
        exp.rule.step(exp.model, Batch(x, y))
        model_bytes = grad_bytes(params)
        twin_bytes = 0
        twins = getattr(exp.rule, "twins", None)
        if twins is not None:
            twin_bytes = sum(p.numel() * p.element_size() for p in twins.parameters())
        calls = 1 + max(1, -(-model_bytes // int(BUCKET_MB * 2**20)))
        out[rule] = {"config": file, "gradient_bytes_per_step": model_bytes, "all_reduce_calls_per_step": calls,
                     "twin_gradient_bytes_per_step": twin_bytes,
                     "twin_all_reduce_calls_per_step": 0 if twins is None else 2 * len(twins),
                     "parameters_with_gradients": sum(p.numel() for p in params if p.grad is not None)}
        del exp
    return out


# -------------------------------------------------------------- 3. scaling model
def step_time(batch: int, repeats: int, shard_of: int | None = None) -> float:
    """Median seconds of one training step (rule.step + optimizer.step) of the MNIST BPTT model, 1 thread."""
    import torch

    from neuro import config as cfg
    from neuro.build import build_experiment
    from neuro.functional.sharding import Shard, batch_shard
    from neuro.rules.base import Batch

    torch.set_num_threads(1)
    config = cfg.load_toml(REPO / "examples" / "mnist_bptt.toml")
    config["data"]["limit"] = max(batch, 256)
    exp = build_experiment(config)
    x, y = exp.data.train.x[:batch], exp.data.train.y[:batch]
    shard = Shard(0, batch, shard_of or batch, batch / (shard_of or batch))
    times = []
    for k in range(repeats + 2):
        t0 = time.perf_counter()
        exp.optimizer.zero_grad(set_to_none=True)
        with batch_shard(shard):
            exp.rule.step(exp.model, Batch(x, y))
        exp.optimizer.step()
        if k >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _allreduce_worker(rank: int, world: int, store: str, nbytes: int, repeats: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    big = torch.ones(nbytes // 4)
    small = torch.ones(8, dtype=torch.int32)
    res = {}
    for name, t in (("gradients", big), ("mask", small)):
        times = []
        for k in range(repeats + 3):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            if k >= 3:
                times.append(time.perf_counter() - t0)
        res[name] = statistics.median(times)
    if rank == 0:
        Path(out).write_text(json.dumps(res))
    dist.destroy_process_group()


def allreduce_time(nbytes: int, repeats: int) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        mp.spawn(_allreduce_worker, args=(2, os.path.join(tmp, "store"), nbytes, repeats, out), nprocs=2, join=True)
        return json.loads(Path(out).read_text())


# ---------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: checks the script, claims nothing")
    ap.add_argument("--samples", type=int, default=12800, help="training samples per epoch")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    extra = []
    if args.quick:
        args.samples, args.epochs, args.repeats = 1024, 2, 3
        extra = ["--set", "model.hidden=[100]", "--set", "model.time_steps=5"]
    load_before = os.getloadavg()
    result = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "cpus": os.cpu_count(), "load_before": load_before, "quick": args.quick,
              "config": "examples/mnist_bptt.toml (784-500-10, T=25, direct input), global batch 128, "
                        "1 thread per process"}
    with tempfile.TemporaryDirectory() as tmp:
        runs = [throughput(n, args.samples, args.epochs, Path(tmp), extra) for n in (1, 2)]
    result["throughput"] = runs
    measured = runs[1]["samples_per_s"] / runs[0]["samples_per_s"]
    result["volume"] = volume_per_rule()
    if args.quick:
        t_full = t_half = float("nan")
        v = result["volume"]["bptt"]["gradient_bytes_per_step"]
    else:
        t_full = step_time(args.batch, args.repeats)
        t_half = step_time(args.batch // 2, args.repeats, shard_of=args.batch)
        v = result["volume"]["bptt"]["gradient_bytes_per_step"]
    ar = allreduce_time(v, max(args.repeats, 5))
    predicted = t_full / (t_half + ar["gradients"] + ar["mask"]) if not args.quick else float("nan")
    result["model"] = {"t_step_full_s": t_full, "t_step_half_s": t_half, "allreduce_gradients_s": ar["gradients"],
                       "allreduce_mask_s": ar["mask"], "gradient_bytes": v, "predicted_speedup": predicted,
                       "measured_speedup": measured}
    result["load_after"] = os.getloadavg()
    stamp = datetime.date.today().isoformat()
    path = REPO / "bench" / f"distributed_{stamp}{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")

    print(f"# Data-parallel scaling ({result['date']}, {result['cpus']} CPUs, load {load_before[0]:.2f} before, "
          f"{result['load_after'][0]:.2f} after{'; QUICK: not a measurement' if args.quick else ''})\n")
    print("| processes | samples/s | epoch (s) |\n|---|---|---|")
    for r in runs:
        print(f"| {r['nproc']} | {r['samples_per_s']:.1f} | {r['epoch_time_s']:.2f} |")
    print(f"\nmeasured speedup 1 -> 2: {measured:.2f}x (goal >= 1.8x)")
    m = result["model"]
    print(f"model: t(B)={1e3 * m['t_step_full_s']:.1f} ms, t(B/2)={1e3 * m['t_step_half_s']:.1f} ms, "
          f"all-reduce {v / 1e6:.2f} MB: {1e3 * m['allreduce_gradients_s']:.2f} ms "
          f"+ mask {1e3 * m['allreduce_mask_s']:.3f} ms "
          f"-> predicted {m['predicted_speedup']:.2f}x\n")
    print("| rule | config | gradient MB/step | all-reduce calls/step | twin gradient MB/step |\n|---|---|---|---|---|")
    for rule, r in result["volume"].items():
        print(f"| {rule} | {r['config']} | {r['gradient_bytes_per_step'] / 1e6:.3f} | "
              f"{r['all_reduce_calls_per_step']} | "
              f"{r['twin_gradient_bytes_per_step'] / 1e6:.3f} |")
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
