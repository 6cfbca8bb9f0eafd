"""The physical-network part of ``neuro demo``: model-free forward-forward on vowels (about 10 s of CPU)."""

from __future__ import annotations

from pathlib import Path

import torch

from neuro import workflow

#: 3 physical blocks on a noisy random scattering medium, trained with mfff, pairwise-contrastive variant
#: (no derivative and no model of the physics).
MFFF_VOWELS = {
    "run": {"name": "demo-physical-mfff", "seed": 0},
    "data": {"dataset": "vowels"},
    "model": {"kind": "physical_mlp", "substrate": "wave:scattering", "physical": [100], "hidden": [64, 64, 64],
              "substrate_options": {"noise": 0.01, "n_control": 8}},
    "rule": {"name": "mfff", "variant": "contrastive"},
    "optim": {"name": "adam", "lr": 1e-2, "schedule": "cosine"},
    "train": {"epochs": 10, "batch_size": 64},
}


def physical_mfff_vowels(out_dir: Path, echo=print) -> str:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster than two that contend
    try:
        run, test = workflow.train_demo_part(MFFF_VOWELS, out_dir, echo=echo)
    finally:
        torch.set_num_threads(threads)
    evals = sum(r.get("n_physical_evals", 0) for r in run.records() if r.get("event") == "epoch")
    return (f"physical network (3 scattering blocks), mfff, vowels: test accuracy {100 * test['accuracy']:.2f}% "
            f"after {evals:.0f} physical evaluations  ->  {run.path / 'report.html'}")
