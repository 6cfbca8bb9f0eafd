"""The lag-1 correlation of a neuron's arrival types: measured on the pulse emulator against the rate model's.

For every neuron (hidden and output) of the random networks of ``bench/sfq_rate_diagnosis.py`` (the test's
networks with ``--test-nets``, else 5 networks per case from ``--seed``), this records

- measured: the merged excitatory / inhibitory arrival rates, the lag-1 type correlation
  ``rho = P(E|E) - P(E|I)`` of consecutive arrivals (readout window, 20 x 100 ns), the squared
  coefficients of variation of each stream's intervals;
- the rate model's view of the same neuron (the arguments :func:`simulators.sfq_rate.layer_rate` passes
  to :func:`simulators.sfq_rate.neuron_rate`: rates, Fano factors, exc-inh covariance rate) and the
  ``rho`` of each type chain (:func:`simulators.sfq_rate.type_correlation`, :data:`~simulators.sfq_rate.TYPE_CHAINS`),
  and the interval ``CV^2`` of each stream that the renewal chain uses.

``python -m bench.sfq_rho --test-nets`` / ``--seed 7`` prints one line per neuron and the mean absolute
difference between the model's and the measured ``rho``.  Nothing is fitted.  One thread; about a
second per network.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import simulators.sfq_rate as sr
from bench.sfq_rate_diagnosis import CASES, CELLS, lag1_types, random_net, run_layer
from simulators.sfq import NEVER, dc_to_sfq, path_delay_ps


def interval_cv2(t, start):
    """Squared CV of the intervals of trains ``[B, K]`` (pooled over the batch; readout window)."""
    gaps = []
    for b in range(t.shape[0]):
        x = np.sort(t[b][(t[b] != NEVER) & (t[b] >= start)])
        gaps.append(np.diff(x))
    g = np.concatenate(gaps).astype(float) if gaps else np.zeros(0)
    return float(g.var() / g.mean() ** 2) if len(g) > 2 else float("nan")


def model_view(x, layers, mode):
    """The arguments of the main ``neuron_rate`` call of each layer (captured), as numpy arrays."""
    calls = []
    orig = sr.neuron_rate

    def spy(*args, **kw):
        calls.append((args, kw))
        return orig(*args, **kw)

    sr.neuron_rate = spy
    try:
        sr.network_rate(torch.tensor(x), sr.sfq_to_rate(layers, CELLS), CELLS, input_mode=mode, types="renewal")
    finally:
        sr.neuron_rate = orig
    views = []
    for args, kw in calls:
        if kw or not (len(args) > 8 and args[8]):  # the layer's main call passes return_fano=True positionally
            continue
        lam_e, lam_i, bias, _, _, _, fe, fi = args[:8]
        cov = args[11] if len(args) > 11 else 0.0
        ce = args[13] if len(args) > 13 and args[13] is not None else fe
        ci = args[14] if len(args) > 14 and args[14] is not None else fi
        shape = torch.broadcast_tensors(lam_e, lam_i, bias)[0].shape
        as_np = lambda z: np.broadcast_to(torch.as_tensor(z, dtype=torch.float64).detach().numpy(), shape)[0]  # noqa
        views.append({"lam_e": as_np(lam_e), "lam_i": as_np(lam_i), "fe": as_np(fe), "fi": as_np(fi),
                      "cov": as_np(cov), "cv2_e": as_np(ce), "cv2_i": as_np(ci)})
    return views


def measure(mode, layers, x, reps=20, window_ns=100.0, seed=0):
    """Per layer, per neuron: measured statistics of the merged arrival trains."""
    xs = np.repeat(x, reps, 0)
    rng = np.random.default_rng(seed)
    d_ps = path_delay_ps(layers, CELLS)
    start = CELLS.ticks(d_ps)
    t = dc_to_sfq(xs, window_ns + d_ps / 1000.0, CELLS, rng, mode)
    out = []
    for layer in layers:
        t, me, mi = run_layer(t, layer, CELLS, rng)
        lag = lag1_types(me, mi, start)
        n = me.shape[1]
        le = np.array([((me[:, i] != NEVER) & (me[:, i] >= start)).sum() for i in range(n)]) / (reps * window_ns)
        li = np.array([((mi[:, i] != NEVER) & (mi[:, i] >= start)).sum() for i in range(n)]) / (reps * window_ns)
        out.append({"lam_e": le, "lam_i": li, "rho": lag[:, 0] - lag[:, 1],
                    "cv2_e": np.array([interval_cv2(me[:, i], start) for i in range(n)]),
                    "cv2_i": np.array([interval_cv2(mi[:, i], start) for i in range(n)])})
    return out


def records(mode, widths, seed, nets, test_nets):
    rng = np.random.default_rng(2026 + len(widths) + (mode == "periodic") if test_nets else seed)
    rows = []
    for trial in range(nets):
        layers = random_net(rng, widths)
        x = rng.uniform(5, 20, (1, widths[0]))
        meas = measure(mode, layers, x, seed=trial)
        views = model_view(x, layers, mode)
        for li, (m, v) in enumerate(zip(meas, views)):
            for i in range(len(m["rho"])):
                if m["lam_e"][i] <= 0 or m["lam_i"][i] <= 0:
                    continue
                row = {"mode": mode, "widths": widths, "net": trial, "layer": li, "neuron": i}
                row.update({f"meas_{k}": float(val[i]) for k, val in m.items()})
                row.update({f"model_{k}": float(val[i]) for k, val in v.items()})
                rows.append(row)
    return rows


def model_rho(row, **kw):
    t = lambda k: torch.tensor([row[k]], dtype=torch.float64)  # noqa: E731
    lam_e, lam_i, fe, fi = t("model_lam_e"), t("model_lam_i"), t("model_fe"), t("model_fi")
    kappa = (t("model_cov") / (fe * fi * lam_e * lam_i).clamp_min(1e-20).sqrt()).clamp(-0.98, 0.98)
    return float(sr.type_correlation(lam_e, lam_i, t("model_cv2_e"), t("model_cv2_i"), kappa, fe, fi, **kw)[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--nets", type=int, default=5)
    ap.add_argument("--test-nets", action="store_true")
    ap.add_argument("--json", help="write the records here")
    ap.add_argument("--load", help="read the records from here instead of emulating")
    args = ap.parse_args()
    if args.load:
        rows = json.load(open(args.load))
    else:
        rows = [r for mode, widths in CASES for r in records(mode, widths, args.seed, args.nets, args.test_nets)]
    if args.json:
        json.dump(rows, open(args.json, "w"))
    kinds = sr.TYPE_CHAINS
    diffs = {k: [] for k in kinds}
    for r in rows:
        vals = {k: model_rho(r, chain=k) for k in kinds}
        for k in kinds:
            diffs[k].append(abs(vals[k] - r["meas_rho"]))
        print(f"{r['mode']:8s} {len(r['widths'])}L net {r['net']} layer {r['layer']} n {r['neuron']}: "
              f"lam {r['meas_lam_e']:.2f}/{r['meas_lam_i']:.2f} (model {r['model_lam_e']:.2f}/{r['model_lam_i']:.2f}) "
              f"F {r['model_fe']:.2f}/{r['model_fi']:.2f} cv2 meas {r['meas_cv2_e']:.2f}/{r['meas_cv2_i']:.2f} "
              f"C {r['model_cov']:.2f} rho meas {r['meas_rho']:+.3f} "
              + " ".join(f"{k} {v:+.3f}" for k, v in vals.items()))
    for k, d in diffs.items():
        print(f"{k}: mean |rho_model - rho_meas| {np.mean(d):.4f}, max {np.max(d):.4f} over {len(d)} neurons")


if __name__ == "__main__":
    main()
