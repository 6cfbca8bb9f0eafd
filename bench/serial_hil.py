"""Serial hardware-in-the-loop throughput and latency: the emulator over a pty vs the same substrate in-process.

Starts ``neuro devices emulate`` as its own process (as a board would be), opens it with
:class:`devices.SerialDevice` and times FORWARD round trips; the in-process figure times
``substrate.forward`` on an identical substrate object.  Reports median and p95 latency
per call and samples per second, per batch size.

    .venv/bin/python bench/serial_hil.py [--substrate affine] [--n-in 32] [--n-out 16]
        [--batches 1,16,256] [--calls 200] [--faults]

``--faults`` adds runs with 1% dropped and 1% corrupted frames (driver timeout 250 ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from devices import SerialDevice
from devices.emulator import make_substrate

ROOT = Path(__file__).resolve().parents[1]


def _time_calls(fn, x, calls: int) -> list[float]:
    fn(x)  # warm-up
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t0)
    return out


def _row(where: str, batch: int, times: list[float]) -> dict:
    times = sorted(times)
    med = statistics.median(times)
    return {
        "where": where,
        "batch": batch,
        "median_ms": 1e3 * med,
        "p95_ms": 1e3 * times[int(0.95 * (len(times) - 1))],
        "samples_per_s": batch * len(times) / sum(times),
    }


def _emulator(args, link: Path, faults: bool) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "neuro",
        "devices",
        "emulate",
        "--substrate",
        args.substrate,
        "--n-in",
        str(args.n_in),
        "--n-out",
        str(args.n_out),
        "--link",
        str(link),
        "--seed",
        "0",
        "--noise",
        "0",
    ]
    if faults:
        cmd += ["--drop", "0.01", "--corrupt", "0.01"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    if proc.stdout.readline().strip() != str(link):
        proc.kill()
        raise SystemExit("emulator did not start")
    return proc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--substrate", default="affine")
    p.add_argument("--n-in", type=int, default=32)
    p.add_argument("--n-out", type=int, default=16)
    p.add_argument("--batches", default="1,16,256")
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--faults", action="store_true")
    args = p.parse_args()
    from bench import machine

    rec = machine.start()
    torch.set_num_threads(1)
    batches = [int(b) for b in args.batches.split(",")]
    sub = make_substrate(args.substrate, args.n_in, args.n_out, 0, {"noise": 0.0})
    lo, hi = sub.input_range
    rows = []
    xs = {b: lo + (hi - lo) * torch.rand(b, args.n_in, generator=torch.Generator().manual_seed(b)) for b in batches}
    with torch.no_grad():
        for b in batches:
            rows.append(_row("in-process", b, _time_calls(sub.forward, xs[b], args.calls)))
    for faults in (False, True) if args.faults else (False,):
        with tempfile.TemporaryDirectory() as tmp:
            link = Path(tmp) / "ttyNH0"
            proc = _emulator(args, link, faults)
            try:
                with SerialDevice(str(link), timeout=0.25 if faults else 0.5, retries=20) as dev:
                    for b in batches:
                        rows.append(
                            _row(
                                "pty, 1% drop + 1% corrupt" if faults else "pty",
                                b,
                                _time_calls(dev.forward, xs[b], args.calls),
                            )
                        )
                    link_stats = dev.link_stats()
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            if faults:
                print(
                    f"faulty link: {link_stats.get('timeout', 0)} timeouts, {link_stats.get('bad frame', 0)} bad "
                    "frames recovered"
                )
    print(machine.report(rec, own_threads=2))  # the emulator process and this one
    print(f"substrate {args.substrate} {args.n_in} -> {args.n_out}, {args.calls} calls per row, float32 samples")
    print("| where | batch | median round trip (ms) | p95 (ms) | samples/s |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['where']} | {r['batch']} | {r['median_ms']:.3f} | {r['p95_ms']:.3f} | {r['samples_per_s']:.0f} |")


if __name__ == "__main__":
    main()
