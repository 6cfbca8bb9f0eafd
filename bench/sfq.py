"""Throughput of the SFQ pulse emulator: simulated pulses per second of wall time, vs network size and batch,
and a check that the emulator is event-driven (cost grows with pulses, not with grid steps).

Run on an idle machine: ``python -m bench.sfq [--quick] [--json out.jsonl]``.  It prints the CPU model,
the load average before and after, and one markdown row per configuration:

- sizes: layered networks ``n_in - hidden - n_out`` with half the synapses inhibitory, inputs at
  10 GHz (periodic converters), a 5 ns window, batch 1 .. 64;
- pulses: every pulse any cell handled (converters, stagger JTLs, splitters, synapse inputs,
  merger inputs, neuron fluxons and firings), counted by the emulator itself;
- grid: the same run with the pulse grid 10x and 100x finer (``dt_ps`` 0.1 -> 0.01 -> 0.001):
  an event-driven emulator takes about the same time (the number of pulses is unchanged), a
  time-stepped one would take 10x and 100x longer;
- rate: a fixed network at input rates 2.5, 5, 10, 20 GHz: time should grow about linearly
  with the pulses.

Timing figures taken on a loaded machine are not valid; the load average is printed so a reader
can tell.  One thread (numpy and torch).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from bench.machine import cpu_model
from simulators.sfq import CellParams, Layer, emulate


def network(widths, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Layer(rng.choice([-1, 1], size=(b, a)), rng.uniform(98, 112, (b, a)), rng.uniform(60, 90, b))
        for a, b in zip(widths, widths[1:])
    ]


def run(widths, batch, *, rate=10.0, window_ns=5.0, dt_ps=0.1, repeats=3) -> dict:
    layers = network(widths)
    cells = CellParams(dt_ps=dt_ps)
    x = np.full((batch, widths[0]), rate)
    best = float("inf")
    for r in range(repeats):
        t0 = time.perf_counter()
        res = emulate(x, layers, cells, window_ns=window_ns, seed=r)
        best = min(best, time.perf_counter() - t0)
    pulses = sum(res.pulses.values())
    grid_steps = int(round((window_ns * 1000 + res.delay_ps) / dt_ps)) * batch
    return {
        "widths": list(widths),
        "batch": batch,
        "rate_GHz": rate,
        "dt_ps": dt_ps,
        "window_ns": window_ns,
        "pulses": int(pulses),
        "wall_s": best,
        "pulses_per_s": pulses / best,
        "grid_steps": grid_steps,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None, help="append the rows as JSON lines to this file")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    load0 = os.getloadavg()
    print(
        f"# SFQ pulse emulator throughput; CPU: {cpu_model()}; load average at start "
        f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}",
        flush=True,
    )
    sizes = [(2, 2, 1), (16, 16, 4), (64, 32, 10), (64, 128, 10)] if not args.quick else [(2, 2, 1), (16, 16, 4)]
    batches = [1, 8, 64] if not args.quick else [1, 8]
    rows = []
    print("| part | network | batch | rate (GHz) | dt (ps) | pulses | grid steps | wall (s) | pulses/s |")
    print("|---|---|---|---|---|---|---|---|---|")

    def show(part, row):
        rows.append({"part": part, **row})
        print(
            f"| {part} | {'-'.join(map(str, row['widths']))} | {row['batch']} | {row['rate_GHz']:g} | "
            f"{row['dt_ps']:g} | "
            f"{row['pulses']} | {row['grid_steps']} | {row['wall_s']:.3f} | {row['pulses_per_s']:.3g} |",
            flush=True,
        )

    for w in sizes:
        for b in batches:
            show("size", run(w, b))
    for dt in (0.1, 0.01, 0.001):
        show("grid", run((16, 16, 4), 8, dt_ps=dt))
    for rate in (2.5, 5.0, 10.0, 20.0):
        show("rate", run((16, 16, 4), 8, rate=rate))
    load1 = os.getloadavg()
    print(f"# load average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if args.json:
        with open(args.json, "a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({**row, "cpu": cpu_model(), "load_start": load0[0], "load_end": load1[0]}) + "\n")


if __name__ == "__main__":
    main()
