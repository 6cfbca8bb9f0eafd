"""Deep physical networks on vowels and digits: mfff vs pat vs in-silico backprop, in one go.

    .venv/bin/python bench/physical_table.py                 # full table (both datasets, all rules)
    .venv/bin/python bench/physical_table.py --datasets vowels --epochs 5

Every run: a 3-block ``physical_mlp`` on ``wave:scattering`` (noise 1 %, 8 control inputs per
block), the same architecture and seed for every rule; the test split is measured on the
physical system.  Columns: test accuracy, physical evaluations (samples measured during
training, including SPSA perturbations and twin fitting), digital MACs during training
(including simulating the physics for in-silico backprop and running the twin for PAT),
training wall time.  Prints a markdown table and writes the raw numbers as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from neuro.build import build_experiment

ROOT = Path(__file__).resolve().parents[1]

MODEL = {
    "kind": "physical_mlp",
    "substrate": "wave:scattering",
    "physical": [200],
    "hidden": [100, 100, 100],
    "substrate_options": {"noise": 0.01, "n_control": 8},
}

#: rule label -> (rule section, learning rate, epochs as a multiple of the dataset's EPOCHS)
RULES = {
    "insilico (backprop through exact simulator)": ({"name": "insilico"}, 3e-3, 1),
    "pat (fitted twin)": ({"name": "pat", "twin": "fitted"}, 3e-3, 1),
    "mfff (supervised FF)": ({"name": "mfff", "variant": "supervised"}, 2e-2, 1),
    "mfff (pairwise contrastive)": ({"name": "mfff", "variant": "contrastive"}, 1e-2, 1),
    "mfff (supervised FF), 3x epochs": ({"name": "mfff", "variant": "supervised"}, 2e-2, 3),
    "mfff (supervised FF, readout), 3x epochs": (
        {"name": "mfff", "variant": "supervised", "predict": "readout"},
        2e-2,
        3,
    ),
    "mfff (pairwise contrastive), 3x epochs": ({"name": "mfff", "variant": "contrastive"}, 1e-2, 3),
}
EPOCHS = {"vowels": 30, "digits": 10}


def config(dataset: str, rule: dict, lr: float, epochs: int, seed: int = 0, model: dict | None = None) -> dict:
    return {
        "run": {"name": f"{dataset}-{rule['name']}", "seed": seed, "progress": False},
        "data": {"dataset": dataset},
        "model": {**MODEL, **(model or {})},
        "rule": dict(rule),
        "optim": {"name": "adam", "lr": lr, "schedule": "cosine"},
        "train": {"epochs": epochs, "batch_size": 64},
    }


def run_one(cfg: dict) -> dict:
    exp = build_experiment(cfg)
    trainer = exp.trainer(None, progress=False)
    start = time.perf_counter()
    records = trainer.fit()
    wall = time.perf_counter() - start
    test = trainer.evaluate("test")
    return {
        "test_accuracy": test["accuracy"],
        "val_accuracy": records[-1].get("val_accuracy") if records else None,
        "n_physical_evals": sum(r.get("n_physical_evals", 0.0) for r in records),
        "n_digital_macs": sum(r.get("n_digital_macs", 0.0) for r in records),
        "train_time_s": sum(r["time_s"] for r in records),
        "wall_s": wall,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(EPOCHS))
    ap.add_argument("--epochs", type=int, default=0, help="override the epochs of every run (0: defaults)")
    ap.add_argument("--rules", nargs="+", default=None, help="subset of the rule labels of RULES (exact)")
    ap.add_argument("--json", default="/tmp/physical_table.jsonl")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with open(args.json, "a") as log:
        for ds in args.datasets:
            for label, (rule, lr, factor) in RULES.items():
                if args.rules and label not in args.rules:
                    continue
                epochs = args.epochs or EPOCHS[ds] * factor
                result = {
                    "dataset": ds,
                    "rule": label,
                    "epochs": epochs,
                    "lr": lr,
                    **run_one(config(ds, rule, lr, epochs)),
                }
                log.write(json.dumps(result) + "\n")
                log.flush()
                rows.append(result)
                print(
                    f"{ds:7s} {label:45s} test {100 * result['test_accuracy']:.2f}%  {result['train_time_s']:.0f} s",
                    flush=True,
                )
    print("\n| dataset | rule | epochs | test acc (%) | physical evals | digital MACs | train time (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['rule']} | {r['epochs']} | {100 * r['test_accuracy']:.2f} | "
            f"{r['n_physical_evals']:.3g} | "
            f"{r['n_digital_macs']:.3g} | {r['train_time_s']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
