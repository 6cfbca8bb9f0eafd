"""Benchmark: fully connected CUBA LIF networks on our engine, snnTorch, Norse and the matmul roofline.

Shapes 784-1000-10 and 4096-4096-10, batch 128, T = 25 and 100, fp32, 2 threads.  Columns:

- ``roofline``: the network's matmuls alone, issued step by step as in
  ``shared/PERFORMANCE_NOTES.md`` (``T`` matmuls of ``B`` rows per layer: forward
  ``x_t W^T``; backward ``dW += g_t^T x_t`` per layer and ``dx_t = g_t W`` for every layer
  but the first, whose input needs no gradient);
- ``matmul_folded``: the same matmuls with time folded into the batch (one matmul of
  ``T B`` rows each) -- the least matmul work any engine does, a stricter bar;
- ``native``: our :class:`~neuro.layers.lif.LIFLayer` stack, fused engine, dense synapse;
- ``event``: the same with the event-driven synapse (:mod:`simulators.synapse`), swept
  over input activity;
- ``snntorch``: ``snntorch.Synaptic`` cells stepped over time (Linear folded over time);
- ``norse``: ``norse.torch.LIF`` (CUBA, current synapse) over the sequence, Linear folded.

``forward`` runs under ``torch.no_grad()``; ``fwd+bwd`` is forward with autograd plus the
backward of a cross-entropy on output spike counts.  Each configuration runs in its own
process (``--one``), the driver interleaves processes over configurations and repeats,
and reports the median and min of all timed iterations plus the peak-RSS growth of the
process over its start (``getrusage`` maxrss; an upper bound on the run's peak memory).

Usage::

    python bench/snn_engines.py                       # full sweep, prints a markdown table
    python bench/snn_engines.py --quick               # 784 width, T=25 only
    python bench/snn_engines.py --one '{"net": "784", "T": 25, "mode": "fwdbwd", "engine": "native", "activity": 0.2}'
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NETS = {"784": (784, 1000, 10), "4096": (4096, 4096, 10)}
BATCH = 128
THREADS = 2
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736", "MALLOC_TOP_PAD_": "1073741824"}


# ---------------------------------------------------------------- one configuration
def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _weights(sizes, gen, torch):
    """Weights scaled so that hidden neurons spike at a few percent for 20% input activity."""
    ws = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        ws.append(torch.randn(b, a, generator=gen) * (3.0 / a**0.5))
    return ws


def _linears(ws, torch):
    """Bias-free ``nn.Linear`` layers holding the weights ``ws`` (for the peers' networks)."""
    fcs = [torch.nn.Linear(w.shape[1], w.shape[0], bias=False) for w in ws]
    for fc, w in zip(fcs, ws):
        fc.weight.data.copy_(w)
    return fcs


def run_one(cfg: dict) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    from neuro.layers.lif import LIFLayer
    from simulators.lif import LIFParameters

    sizes = NETS[cfg["net"]]
    T, B, mode, engine = cfg["T"], BATCH, cfg["mode"], cfg["engine"]
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(T, B, sizes[0], generator=gen) < cfg["activity"]).float()
    y = torch.randint(0, sizes[-1], (B,), generator=gen)
    ws = _weights(sizes, gen, torch)
    p = LIFParameters()
    hidden_activity = float("nan")

    if engine in ("native", "event"):
        layers = []
        for w in ws:
            layer = LIFLayer(w.shape[1], w.shape[0], p, synapse="dense" if engine == "native" else "event")
            layer.linear.weight.data.copy_(w)
            layers.append(layer)
        params = [layer.linear.weight for layer in layers]

        def net():
            nonlocal hidden_activity
            h = x
            for k, layer in enumerate(layers):
                h = layer(h)
                if k == 0:
                    hidden_activity = float(h.detach().mean())
            return h.sum(0)
    elif engine == "snntorch":
        import snntorch

        fcs = _linears(ws, torch)
        cells = [snntorch.Synaptic(alpha=p.alpha, beta=p.beta) for _ in ws]
        params = [fc.weight for fc in fcs]

        def net():
            nonlocal hidden_activity
            h = x
            for k, (fc, cell) in enumerate(zip(fcs, cells)):
                cur = fc(h)
                syn, mem = cell.init_synaptic()
                out = []
                for c in cur.unbind(0):
                    spk, syn, mem = cell(c, syn, mem)
                    out.append(spk)
                h = torch.stack(out)
                if k == 0:
                    hidden_activity = float(h.detach().mean())
            return h.sum(0)
    elif engine == "norse":
        import norse.torch as norse

        fcs = _linears(ws, torch)
        np_ = norse.LIFParameters(
            tau_syn_inv=torch.as_tensor(1 / p.tau_syn), tau_mem_inv=torch.as_tensor(1 / p.tau_mem)
        )
        cells = [norse.LIF(np_, dt=p.dt) for _ in ws]
        params = [fc.weight for fc in fcs]

        def net():
            nonlocal hidden_activity
            h = x
            for k, (fc, cell) in enumerate(zip(fcs, cells)):
                h, _ = cell(fc(h))
                if k == 0:
                    hidden_activity = float(h.detach().mean())
            return h.sum(0)
    elif engine in ("roofline", "matmul_folded"):
        params = [w.clone().requires_grad_() for w in ws]
        acts = [x] + [torch.rand(T, B, n, generator=gen) for n in sizes[1:-1]]
        grads = [torch.randn(T, B, n, generator=gen) for n in sizes[1:]]
        steps = engine == "roofline"

        def net():  # the matmuls only, issued explicitly (no autograd)
            for k, (w, a, g) in enumerate(zip(params, acts, grads)):
                w_ = w.detach()
                if steps:
                    for a_t in a.unbind(0):
                        a_t @ w_.T
                    if mode == "fwdbwd":
                        for a_t, g_t in zip(a.unbind(0), g.unbind(0)):
                            g_t.T @ a_t
                            if k > 0:
                                g_t @ w_
                else:
                    a2, g2 = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
                    a2 @ w_.T
                    if mode == "fwdbwd":
                        g2.T @ a2
                        if k > 0:
                            g2 @ w_
            return None
    else:
        raise SystemExit(f"unknown engine {engine}")

    def iteration():
        if engine in ("roofline", "matmul_folded"):
            net()
            return
        if mode == "fwd":
            with torch.no_grad():
                net()
        else:
            for q in params:
                q.grad = None
            counts = net()
            torch.nn.functional.cross_entropy(counts, y).backward()

    for q in params:
        q.requires_grad_(mode == "fwdbwd" and engine not in ("roofline", "matmul_folded"))
    rss0 = _maxrss_mb()
    iteration()  # warm-up
    times = []
    for _ in range(cfg.get("iters", 3)):
        t0 = time.perf_counter()
        iteration()
        times.append(time.perf_counter() - t0)
    return {"times": times, "peak_mb": _maxrss_mb() - rss0, "hidden_activity": hidden_activity}


# ------------------------------------------------------------------------- driver
def plan(quick: bool) -> list[dict]:
    """Configurations in priority order (the driver stops launching new ones at --until)."""
    cfgs = []
    for net, T in (("784", 25), ("4096", 25), ("784", 100), ("4096", 100)):
        if quick and (net, T) != ("784", 25):
            continue
        small = net == "784" and T == 25
        iters = 3 if net == "784" else 1
        procs = {} if net == "784" else {"procs": 1}  # the 4096-wide runs: one process each
        for mode in ("fwd", "fwdbwd"):
            engines = ["matmul_folded", "native"]
            if net == "784" or mode == "fwdbwd":
                engines += ["roofline", "snntorch", "norse"]
            for engine in engines:
                cfgs.append(dict(net=net, T=T, mode=mode, engine=engine, activity=0.2, iters=iters, **procs))
            for act in (0.01, 0.05, 0.2, 0.5) if small else (0.05,):
                if mode == "fwd" or small:
                    cfgs.append(dict(net=net, T=T, mode=mode, engine="event", activity=act, iters=iters, **procs))
    return cfgs


def key(c: dict) -> tuple:
    return (c["net"], c["T"], c["mode"], c["engine"], c["activity"])


def drive(
    cfgs: list[dict],
    repeats: int,
    malloc: bool,
    log,
    jsonl: Path | None = None,
    until: float | None = None,
    skip: dict | None = None,
) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "PYTHONPATH": str(ROOT)}
    if malloc:
        env.update(MALLOC_ENV)
    results: dict[tuple, list[dict]] = {}
    groups: dict[tuple, list[dict]] = {}
    for c in cfgs:  # interleave repeats within each (net, T) group, smallest group first
        groups.setdefault((c["net"], c["T"]), []).append(c)
    order = [(r, c) for g in groups.values() for r in range(repeats) for c in g if r < c.get("procs", repeats)]
    for r, c in order:
        if until is not None and time.time() > until:
            log(f"stopping at the --until deadline; {key(c)} and later configurations not run")
            break
        if True:
            if skip and skip.get(key(c), 0) > r:  # already measured (resumed run)
                continue
            out = subprocess.run(
                [sys.executable, "-m", "bench.snn_engines", "--one", json.dumps(c)],
                env=env,
                capture_output=True,
                text=True,
                timeout=3600,
            )
            if out.returncode != 0:
                raise SystemExit(f"config {c} failed:\n{out.stderr[-2000:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results.setdefault(key(c), []).append(res)
            if jsonl is not None:
                with jsonl.open("a") as fh:
                    fh.write(json.dumps({"cfg": c, **res}) + "\n")
            log(f"[{r + 1}/{repeats}] {key(c)} min {min(res['times']) * 1e3:.1f} ms")
    return results


def table(results: dict) -> str:
    def stats(k):
        ts = [t for res in results.get(k, []) for t in res["times"]]
        if not ts:
            return None
        return (
            statistics.median(ts) * 1e3,
            min(ts) * 1e3,
            max(r["peak_mb"] for r in results[k]),
            statistics.mean(r["hidden_activity"] for r in results[k]),
        )

    lines = [
        "| net | T | pass | engine | input activity | median ms | min ms | peak RSS growth MB | hidden activity "
        "| median / roofline | min / roofline | min / folded matmuls |",
        "|" + "---|" * 12,
    ]
    for k in sorted(results, key=lambda k: (k[0], k[1], k[2], k[3] not in ("roofline", "matmul_folded"), k[3], k[4])):
        net, T, mode, engine, act = k
        s = stats(k)
        roof = stats((net, T, mode, "roofline", 0.2))
        fold = stats((net, T, mode, "matmul_folded", 0.2))
        ratio_med = s[0] / roof[0] if roof else float("nan")
        ratio_min = s[1] / roof[1] if roof else float("nan")
        fold_min = s[1] / fold[1] if fold else float("nan")
        ha = "" if s[3] != s[3] else f"{s[3]:.3f}"
        lines.append(
            f"| {NETS[net][0]}-{NETS[net][1]}-{NETS[net][2]} | {T} | {'fwd+bwd' if mode == 'fwdbwd' else 'fwd'} "
            f"| {engine} | {act:.0%} | {s[0]:.1f} | {s[1]:.1f} | {s[2]:.0f} | {ha} | {ratio_med:.2f} | {ratio_min:.2f} "
            f"| {fold_min:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", help="run one configuration (JSON) in this process and print its result")
    ap.add_argument("--quick", action="store_true", help="784-1000-10 at T=25 only")
    ap.add_argument("--repeats", type=int, default=2, help="processes per configuration (interleaved)")
    ap.add_argument("--no-malloc-env", action="store_true", help="do not set the glibc malloc variables")
    ap.add_argument("--jsonl", help="append each process's raw result to this file as it finishes")
    ap.add_argument("--table", help="print the table of a --jsonl file (e.g. a partial run) and exit")
    ap.add_argument("--until", help="UTC time HH:MM after which no new configuration is started")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    if args.table:
        results: dict[tuple, list[dict]] = {}
        for line in Path(args.table).read_text().splitlines():
            rec = json.loads(line)
            results.setdefault(key(rec["cfg"]), []).append(rec)
        print(table(results))
        return
    malloc = not args.no_malloc_env
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {THREADS} threads; batch {BATCH}; fp32; "
        f"glibc malloc env {'set: ' + ' '.join(f'{k}={v}' for k, v in MALLOC_ENV.items()) if malloc else 'not set'}; "
        f"load average at start {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    until = None
    if args.until:
        h, m = map(int, args.until.split(":"))
        now = time.gmtime()
        until = time.time() + ((h * 60 + m) - (now.tm_hour * 60 + now.tm_min)) * 60 - now.tm_sec
    skip: dict[tuple, int] = {}
    if args.jsonl and Path(args.jsonl).exists():  # resume: count what is already there
        for line in Path(args.jsonl).read_text().splitlines():
            k = key(json.loads(line)["cfg"])
            skip[k] = skip.get(k, 0) + 1
    drive(
        plan(args.quick),
        args.repeats,
        malloc,
        lambda s: print(s, file=sys.stderr, flush=True),
        Path(args.jsonl) if args.jsonl else None,
        until,
        skip,
    )
    results: dict[tuple, list[dict]] = {}
    if args.jsonl:
        for line in Path(args.jsonl).read_text().splitlines():
            rec = json.loads(line)
            results.setdefault(key(rec["cfg"]), []).append(rec)
    print(f"# load average at end {os.getloadavg()[0]:.1f}")
    print(table(results))


if __name__ == "__main__":
    main()
