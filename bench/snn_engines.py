"""Benchmark: fully connected CUBA LIF networks on our engine, snnTorch, Norse and the matmul roofline.

Shapes 784-1000-10 and 4096-4096-10, batch 128, T = 25 and 100, fp32, 2 threads.  Columns:

- ``roofline``: the network's matmuls alone, issued step by step as in
  ``shared/PERFORMANCE_NOTES.md`` (``T`` matmuls of ``B`` rows per layer: forward
  ``x_t W^T``; backward ``dW += g_t^T x_t`` per layer and ``dx_t = g_t W`` for every layer
  but the first, whose input needs no gradient);
- ``matmul_folded``: the same matmuls with time folded into the batch (one matmul of
  ``T B`` rows each) -- the least matmul work any engine does, a stricter bar;
- ``native``: our :class:`~neuro.layers.lif.LIFLayer` stack, fused engine, dense synapse;
- ``event``: the same with the event-driven synapse (without gradients: the fused gather + LIF
  kernel of :func:`simulators.lif.lif_event_forward`), swept over input activity against
  ``native`` at the same activity to measure the crossover that ``synapse="auto"`` uses;
- ``snntorch``: ``snntorch.Synaptic`` cells stepped over time (Linear folded over time);
- ``norse``: ``norse.torch.LIF`` (CUBA, current synapse) over the sequence, Linear folded.

``forward`` runs under ``torch.no_grad()``; ``fwd+bwd`` is forward with autograd plus the
backward of a cross-entropy on output spike counts.  Each configuration runs in its own
process (``--one``), the driver interleaves processes over configurations and repeats,
and reports the median and min of all timed iterations.

Discipline (issue 19):

- memory: the peak resident set of the warm-up and timed iterations over the resident set just
  before them, after ``malloc_trim`` and a reset of the kernel's peak counter
  (``/proc/self/clear_refs``; ``VmHWM``), so memory freed before the run does not hide the run's own;
- each result records the CPU model, the 1-min load average before and after its process, the
  cores other processes used meanwhile (``/proc/stat`` minus the child's CPU time) and the commit;
  a result is *invalid* when the machine was not idle (see :func:`valid`); the tables print
  ``invalid`` instead of any ratio that would involve one, and the summary refuses to compare;
- the glibc malloc variables (``MALLOC_ENV``) are set for every engine alike unless
  ``--no-malloc-env``; the header says which.

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

from bench.machine import MAX_LOAD, cpu_model

ROOT = Path(__file__).resolve().parents[1]
NETS = {"784": (784, 1000, 10), "4096": (4096, 4096, 10)}
BATCH = 128
THREADS = 2
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736", "MALLOC_TOP_PAD_": "1073741824"}


# ---------------------------------------------------------------- one configuration
def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _peak_reset() -> tuple[str, float]:
    """Start a peak-memory window: ``(method, baseline MB)``.

    Linux: free what the allocator holds (``malloc_trim``), reset the process's peak resident set
    (``/proc/self/clear_refs`` 5) and take the current resident set as the baseline; the window's
    peak is then ``VmHWM - baseline``.  Elsewhere: growth of ``ru_maxrss`` (an upper bound only
    when the run's peak exceeds everything before it).
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        return "vmhwm", _status_kb("VmRSS") / 1024.0
    except OSError:
        return "maxrss", _maxrss_mb()


def _peak_mb(method: str, base: float) -> float:
    return (_status_kb("VmHWM") / 1024.0 if method == "vmhwm" else _maxrss_mb()) - base


def _busy_seconds() -> float:
    """CPU time all processes of the machine have used since boot (``/proc/stat``), seconds."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


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
    probe = True

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
                if k == 0 and probe:  # measured in the warm-up only: not part of the timed work
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
                if k == 0 and probe:  # measured in the warm-up only: not part of the timed work
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
                if k == 0 and probe:  # measured in the warm-up only: not part of the timed work
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
    method, base = _peak_reset()
    iteration()  # warm-up (its peak counts: the first pass allocates what later passes reuse)
    probe = False
    times = []
    for _ in range(cfg.get("iters", 3)):
        t0 = time.perf_counter()
        iteration()
        times.append(time.perf_counter() - t0)
    return {"times": times, "peak_mb": _peak_mb(method, base), "peak_method": method,
            "hidden_activity": hidden_activity}


# ------------------------------------------------------------------------- driver
MAX_OTHERS_CPU = 0.3  # cores used by other processes during a measurement above which it is invalid
EVENT_SWEEP = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)  # input activities of the crossover sweep (784 width, T=25)


def plan(quick: bool) -> list[dict]:
    """Configurations in priority order (the driver stops launching new ones at --until)."""
    cfgs = []
    for net, T in (("784", 25), ("784", 100), ("4096", 25), ("4096", 100)):
        if quick and (net, T) != ("784", 25):
            continue
        small = net == "784"
        iters = 10 if small else 1  # a 784-wide forward is ~30 ms: ten draws make its minimum stable
        procs = {} if small else {"procs": 2}
        for mode in ("fwd", "fwdbwd"):
            for engine in ("roofline", "matmul_folded", "native", "snntorch", "norse"):
                cfgs.append(dict(net=net, T=T, mode=mode, engine=engine, activity=0.2, iters=iters, **procs))
        if small:  # the event path at 5 %, and (T=25) the crossover sweep: event vs dense, forward
            sweep = EVENT_SWEEP if T == 25 else (0.05,)
            for act in sweep:
                cfgs.append(dict(net=net, T=T, mode="fwd", engine="event", activity=act, iters=iters))
                if act != 0.2:
                    cfgs.append(dict(net=net, T=T, mode="fwd", engine="native", activity=act, iters=iters))
            cfgs.append(dict(net=net, T=T, mode="fwd", engine="roofline", activity=0.05, iters=iters))
    return cfgs


def key(c: dict) -> tuple:
    return (c["net"], c["T"], c["mode"], c["engine"], c["activity"])


def valid(res: dict) -> bool:
    """A measurement counts only if the machine was idle and no other process used the CPUs meanwhile.

    Idle: 1-min load average at most ``MAX_LOAD`` when the benchmark started, and before each process
    at most ``MAX_LOAD`` above this benchmark's own ``THREADS`` busy threads (the load average of a
    running benchmark includes itself); other processes' CPU use during the process at most
    ``MAX_OTHERS_CPU`` cores (measured from ``/proc/stat``, the direct sign of interference).
    """
    return (res.get("others_cpu", 9.0) <= MAX_OTHERS_CPU and res.get("load_start", 9.0) <= MAX_LOAD
            and res.get("load_before", 9.0) <= MAX_LOAD + THREADS)


def drive(
    cfgs: list[dict],
    repeats: int,
    malloc: bool,
    log,
    jsonl: Path | None = None,
    until: float | None = None,
    skip: dict | None = None,
    load_start: float = 0.0,
) -> dict:
    """Run each configuration in its own process, interleaved; record load and foreign CPU use per run.

    Per process: the 1-min load average before and after (both include this benchmark's own threads
    once it runs), and ``others_cpu``: the cores used by *other* processes during the run (all CPU
    time of the machine from ``/proc/stat`` minus the child's own, over the wall time).
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "PYTHONPATH": str(ROOT)}
    if malloc:
        env.update(MALLOC_ENV)
    else:
        for k in MALLOC_ENV:
            env.pop(k, None)
    results: dict[tuple, list[dict]] = {}
    groups: dict[tuple, list[dict]] = {}
    for c in cfgs:  # interleave repeats within each (net, T) group, smallest group first
        groups.setdefault((c["net"], c["T"]), []).append(c)
    order = [(r, c) for g in groups.values() for r in range(repeats) for c in g if r < c.get("procs", repeats)]
    cpu = cpu_model()
    for r, c in order:
        if until is not None and time.time() > until:
            log(f"stopping at the --until deadline; {key(c)} and later configurations not run")
            break
        if skip and skip.get(key(c), 0) > r:  # already measured (resumed run)
            continue
        load_before = os.getloadavg()[0]
        busy0, wall0 = _busy_seconds(), time.perf_counter()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            [sys.executable, "-m", "bench.snn_engines", "--one", json.dumps(c)],
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter() - wall0
        own = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        others = max(0.0, (_busy_seconds() - busy0 - own) / wall)
        if out.returncode != 0:
            raise SystemExit(f"config {c} failed:\n{out.stderr[-2000:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        res.update(load_before=load_before, load_after=os.getloadavg()[0], others_cpu=others, cpu=cpu,
                   malloc_env=malloc, load_start=load_start, commit=_commit())
        results.setdefault(key(c), []).append(res)
        if jsonl is not None:
            with jsonl.open("a") as fh:
                fh.write(json.dumps({"cfg": c, **res}) + "\n")
        log(f"[{r + 1}/{repeats}] {key(c)} min {min(res['times']) * 1e3:.1f} ms, peak {res['peak_mb']:.0f} MB, "
            f"load {load_before:.2f}->{res['load_after']:.2f}, others {others:.2f} cores"
            + ("" if valid(res) else "  INVALID"))
    return results


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _stats(results: dict, k: tuple):
    """``(median ms, min ms, peak MB, hidden activity, valid, load_before max, load_after max, others max)``."""
    runs = results.get(k, [])
    ts = [t for res in runs for t in res["times"]]
    if not ts:
        return None
    return (
        statistics.median(ts) * 1e3,
        min(ts) * 1e3,
        max(r["peak_mb"] for r in runs),
        statistics.mean(r["hidden_activity"] for r in runs),
        all(valid(r) for r in runs),
        max(r.get("load_before", float("nan")) for r in runs),
        max(r.get("load_after", float("nan")) for r in runs),
        max(r.get("others_cpu", float("nan")) for r in runs),
    )


def table(results: dict) -> str:
    lines = [
        "| net | T | pass | engine | input activity | median ms | min ms | peak MB | hidden activity "
        "| min / roofline | min / folded matmuls | load before-after | other procs' cores | valid |",
        "|" + "---|" * 14,
    ]
    for k in sorted(results, key=lambda k: (k[0], k[1], k[2], k[3] not in ("roofline", "matmul_folded"), k[3], k[4])):
        net, T, mode, engine, act = k
        s = _stats(results, k)
        roof = _stats(results, (net, T, mode, "roofline", 0.2))
        fold = _stats(results, (net, T, mode, "matmul_folded", 0.2))

        def ratio(ref, s=s):
            if ref is None:
                return "-"
            return f"{s[1] / ref[1]:.2f}" if s[4] and ref[4] else "invalid"

        ha = "" if s[3] != s[3] else f"{s[3]:.3f}"
        lines.append(
            f"| {NETS[net][0]}-{NETS[net][1]}-{NETS[net][2]} | {T} | {'fwd+bwd' if mode == 'fwdbwd' else 'fwd'} "
            f"| {engine} | {act:.0%} | {s[0]:.1f} | {s[1]:.1f} | {s[2]:.0f} | {ha} | {ratio(roof)} | {ratio(fold)} "
            f"| {s[5]:.2f}-{s[6]:.2f} | {s[7]:.2f} | {'yes' if s[4] else '**no**'} |"
        )
    return "\n".join(lines)


def summary(results: dict) -> str:
    """The issue-19 checks from one run: ratios to the per-step roofline, memory, event path, crossover.

    Refuses (prints ``invalid``) wherever a result it would compare was taken on a busy machine.
    """
    out = ["| network, T, pass | ours / roofline | snnTorch | Norse | ours vs best peer | peak MB ours / snnTorch / "
           "Norse |", "|---|---:|---:|---:|---:|---|"]
    for net, T in (("784", 25), ("784", 100), ("4096", 25), ("4096", 100)):
        for mode in ("fwd", "fwdbwd"):
            st = {e: _stats(results, (net, T, mode, e, 0.2)) for e in ("roofline", "native", "snntorch", "norse")}
            if any(v is None for v in st.values()):
                continue
            name = f"{'-'.join(map(str, NETS[net]))}, T={T}, {'fwd+bwd' if mode == 'fwdbwd' else 'forward'}"
            if not all(v[4] for v in st.values()):
                out.append(f"| {name} | invalid | invalid | invalid | invalid | invalid |")
                continue
            r = {e: st[e][1] / st["roofline"][1] for e in st}
            best = min(r["snntorch"], r["norse"])
            out.append(f"| {name} | {r['native']:.2f} | {r['snntorch']:.2f} | {r['norse']:.2f} | "
                       f"{best / r['native']:.2f}x | {st['native'][2]:.0f} / {st['snntorch'][2]:.0f} / "
                       f"{st['norse'][2]:.0f} |")
    out += ["", "| event path, forward | input activity | event ms (min) | dense roofline ms | our dense ms "
            "| roofline / event | our dense / event | valid |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for net, T in (("784", 25), ("784", 100)):
        acts = sorted({k[4] for k in results if k[:4] == (net, T, "fwd", "event")})
        roof = _stats(results, (net, T, "fwd", "roofline", 0.05)) or _stats(results, (net, T, "fwd", "roofline", 0.2))
        for act in acts:
            ev = _stats(results, (net, T, "fwd", "event", act))
            dn = _stats(results, (net, T, "fwd", "native", act))
            ok = ev[4] and roof is not None and roof[4] and (dn is None or dn[4])
            rr = f"{roof[1] / ev[1]:.2f}x" if ok else "invalid"
            dr = f"{dn[1] / ev[1]:.2f}x" if ok and dn else "-"
            out.append(f"| {'-'.join(map(str, NETS[net]))}, T={T} | {act:.0%} | {ev[1]:.1f} | "
                       f"{roof[1] if roof else float('nan'):.1f} | {dn[1] if dn else float('nan'):.1f} | {rr} | {dr} "
                       f"| {'yes' if ok else '**no**'} |")
    cross = crossover(results)
    out += ["", f"Measured crossover (event forward no longer faster than our dense forward, 784-1000-10, T=25): "
            f"{'invalid or not measured' if cross is None else f'{cross:.1%}'} input activity"]
    return "\n".join(out)


def crossover(results: dict, net: str = "784", T: int = 25) -> float | None:
    """Input activity where event and dense forward times cross (linear interpolation of the min-time ratio)."""
    pts = []
    for act in sorted({k[4] for k in results if k[:4] == (net, T, "fwd", "event")}):
        ev, dn = _stats(results, (net, T, "fwd", "event", act)), _stats(results, (net, T, "fwd", "native", act))
        if ev is None or dn is None:
            continue
        if not (ev[4] and dn[4]):
            return None
        pts.append((act, ev[1] / dn[1]))
    for (a0, r0), (a1, r1) in zip(pts, pts[1:]):
        if r0 < 1.0 <= r1:
            return a0 + (1.0 - r0) * (a1 - a0) / (r1 - r0)
    if pts and all(r < 1.0 for _, r in pts):
        return pts[-1][0]
    return None


def _load_jsonl(path: Path) -> dict:
    results: dict[tuple, list[dict]] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        results.setdefault(key(rec["cfg"]), []).append(rec)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", help="run one configuration (JSON) in this process and print its result")
    ap.add_argument("--quick", action="store_true", help="784-1000-10 at T=25 only")
    ap.add_argument("--repeats", type=int, default=2, help="processes per configuration (interleaved)")
    ap.add_argument("--no-malloc-env", action="store_true", help="do not set the glibc malloc variables")
    ap.add_argument("--jsonl", help="append each process's raw result to this file as it finishes")
    ap.add_argument("--table", help="print the tables of a --jsonl file (e.g. a partial run) and exit")
    ap.add_argument("--until", help="UTC time HH:MM after which no new configuration is started")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    if args.table:
        results = _load_jsonl(Path(args.table))
        print(table(results) + "\n\n" + summary(results))
        return
    malloc = not args.no_malloc_env
    load_start = os.getloadavg()[0]
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit {_commit()}; {cpu_model()}; "
        f"{THREADS} threads; batch {BATCH}; fp32; glibc malloc env "
        f"{'set: ' + ' '.join(f'{k}={v}' for k, v in MALLOC_ENV.items()) if malloc else 'not set'} (all engines); "
        f"load average at start {load_start:.2f}" + ("" if load_start <= MAX_LOAD else " -- NOT IDLE: results invalid"),
        flush=True,
    )
    until = None
    if args.until:
        h, m = map(int, args.until.split(":"))
        now = time.gmtime()
        until = time.time() + ((h * 60 + m) - (now.tm_hour * 60 + now.tm_min)) % (24 * 60) * 60 - now.tm_sec
    skip: dict[tuple, int] = {}
    if args.jsonl and Path(args.jsonl).exists():  # resume: count what is already there
        for line in Path(args.jsonl).read_text().splitlines():
            k = key(json.loads(line)["cfg"])
            skip[k] = skip.get(k, 0) + 1
    results = drive(
        plan(args.quick),
        args.repeats,
        malloc,
        lambda s: print(s, file=sys.stderr, flush=True),
        Path(args.jsonl) if args.jsonl else None,
        until,
        skip,
        load_start,
    )
    if args.jsonl:
        results = _load_jsonl(Path(args.jsonl))
    print(f"# load average at end {os.getloadavg()[0]:.2f}")
    print(table(results) + "\n\n" + summary(results))


if __name__ == "__main__":
    main()
