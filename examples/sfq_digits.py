"""Rate-coded 8x8 digits on an SFQ network: the float network against the same network on SFQ pulses.

Inputs: scikit-learn's digits (8x8, values 0..16), pixel ``v`` -> input rate ``v / 16 * --rate`` GHz.
The float network is the rate model of ``simulators.sfq_rate`` (weights = signed transmission
probabilities in [-1, 1], neuron biases in uA), trained by backprop with cross-entropy on the
output rates.  It is converted to routing and bias currents (``float_to_sfq``) and run on the
pulse emulator (``simulators.sfq``) on the held-out split; the class is the output with the
most pulses in the window.  Prints accuracies, energy per inference (J; RSFQ and ERSFQ) and the
latency to a decision (ps).

``python examples/sfq_digits.py [--hidden 32] [--window-ns 20] [--epochs 60] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulators.sfq import CellParams, decision_latency_ps, emulate, energy  # noqa: E402
from simulators.sfq_rate import float_to_sfq, network_rate, sfq_to_rate, train_float  # noqa: E402


def load(seed: int, quick: bool):
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.data / 16.0, d.target
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = 360
    test, train = perm[:n_test], perm[n_test:]
    if quick:
        test, train = test[:100], train[:400]
    return x[train], y[train], x[test], y[test]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=20.0, help="input rate of a full-intensity pixel (GHz)")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--window-ns", type=float, default=20.0)
    ap.add_argument("--epochs", type=int, default=60, help="full-batch Adam steps on the rate model")
    ap.add_argument("--gain", type=float, default=0.5, help="logits = gain * output rate (GHz)")
    ap.add_argument("--input-mode", default="periodic", choices=("periodic", "poisson"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--arrivals",
        default="correlated",
        choices=("correlated", "independent"),
        help="rate model: correlated arrival types (current) or independent (the previous model)",
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    t0 = time.time()
    cells = CellParams()
    xtr, ytr, xte, yte = load(args.seed, args.quick)
    xt = torch.tensor(xtr * args.rate)
    yt = torch.tensor(ytr)
    loss_fn = lambda out: torch.nn.functional.cross_entropy(args.gain * out, yt)  # noqa: E731
    fl = train_float(
        xt,
        loss_fn,
        [64, args.hidden, 10],
        cells,
        steps=args.epochs,
        lr=0.05,
        seed=args.seed,
        input_mode=args.input_mode,
        arrivals=args.arrivals,
    )
    with torch.no_grad():
        float_train = float(
            (network_rate(xt, fl, cells, input_mode=args.input_mode, arrivals=args.arrivals).argmax(1) == yt)
            .float()
            .mean()
        )
        float_test = float(
            (
                network_rate(
                    torch.tensor(xte * args.rate), fl, cells, input_mode=args.input_mode, arrivals=args.arrivals
                )
                .argmax(1)
                .numpy()
                == yte
            ).mean()
        )
    layers = float_to_sfq(fl, cells)
    with torch.no_grad():
        conv_test = float(
            (
                network_rate(
                    torch.tensor(xte * args.rate),
                    sfq_to_rate(layers, cells),
                    cells,
                    input_mode=args.input_mode,
                    arrivals=args.arrivals,
                )
                .argmax(1)
                .numpy()
                == yte
            ).mean()
        )
    t1 = time.time()
    res = emulate(
        xte * args.rate,
        layers,
        cells,
        window_ns=args.window_ns,
        seed=args.seed + 1,
        input_mode=args.input_mode,
        chunk=8,
    )
    sfq_test = float((res.rates.argmax(1) == yte).mean())
    lat = decision_latency_ps(res.out_times, cells.ticks(res.delay_ps), cells)
    e_r = energy(res, layers, cells, "rsfq")
    e_e = energy(res, layers, cells, "ersfq")
    report = {
        "seed": args.seed,
        "hidden": args.hidden,
        "rate_GHz": args.rate,
        "window_ns": args.window_ns,
        "input_mode": args.input_mode,
        "arrivals": args.arrivals,
        "n_train": len(ytr),
        "n_test": len(yte),
        "float_train_acc": float_train,
        "float_test_acc": float_test,
        "converted_model_test_acc": conv_test,
        "sfq_pulse_test_acc": sfq_test,
        "gap_points": 100 * (float_test - sfq_test),
        "energy_per_inference_J": {
            "rsfq": e_r["total_J"],
            "ersfq": e_e["total_J"],
            "dynamic": e_r["dynamic_J"],
            "rsfq_static_W": e_r["static_W"],
            "n_jj": e_r["n_jj"],
        },
        "inference_time_ps": e_r["inference_ps"],
        "path_delay_ps": res.delay_ps,
        "decision_latency_ps_mean": float(np.nanmean(lat)),
        "decision_latency_ps_median": float(np.nanmedian(lat)),
        "undecided": int(np.isnan(lat).sum()),
        "train_s": t1 - t0,
        "emulate_s": time.time() - t1,
    }
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
