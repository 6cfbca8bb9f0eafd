"""``neuro demo``: the main job on embedded defaults, nothing to download or configure.

Each demo part is a function ``part(out_dir, echo) -> str`` that trains/evaluates
something small, writes its run under ``out_dir`` and returns a one-line summary.  The
parts run in the order of :data:`DEMO_PARTS`; together they stay under 3 minutes on 2 cores.
"""

from __future__ import annotations

import time
from pathlib import Path

from neuro import workflow
from neuro.physical_demo import physical_mfff_vowels
from neuro.export import loihi_deploy
from neuro.ff_demo import ff_digits

#: Spiking MLP on scikit-learn digits with surrogate-gradient BPTT (about 15 s on 2 cores).
BPTT_DIGITS = {
    "run": {"name": "demo-bptt", "seed": 0},
    "data": {"dataset": "digits"},
    "model": {"kind": "spiking_mlp", "hidden": [256], "time_steps": 20, "encoder": "rate", "readout": "spike_count"},
    "rule": {"name": "bptt"},
    "optim": {"name": "adam", "lr": 5e-3, "schedule": "cosine"},
    "train": {"epochs": 20, "batch_size": 32},
}


def bptt_digits(out_dir: Path, echo=print) -> str:
    run, test = workflow.train_demo_part(BPTT_DIGITS, out_dir, echo=echo)
    return f"spiking MLP, BPTT, digits: test accuracy {100 * test['accuracy']:.2f}%  ->  {run.path / 'report.html'}"


DEMO_PARTS = (
    ("spiking MLP trained with surrogate-gradient BPTT on digits", bptt_digits),
    ("ReLU MLP trained with forward-forward on digits", ff_digits),
    ("3-block physical network (wave scattering) trained model-free (mfff) on vowels", physical_mfff_vowels),
    ("deployment to Loihi 2: fixed-point twin and Lava fixed_pt simulation", loihi_deploy.demo_part),
)


def run_demo(out_dir: str | Path = "runs", echo=print) -> list[str]:
    out_dir = Path(out_dir)
    lines = []
    start = time.perf_counter()
    for k, (title, part) in enumerate(DEMO_PARTS, 1):
        echo(f"[{k}/{len(DEMO_PARTS)}] {title}")
        lines.append(part(out_dir, echo))
    echo(f"\ndemo finished in {time.perf_counter() - start:.0f} s:")
    for line in lines:
        echo(f"  {line}")
    return lines
