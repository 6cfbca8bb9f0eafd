"""Forward-forward settings on scikit-learn digits, shared by ``neuro demo`` and the tests.

The label goes into ten blank border pixels of the 8x8 digits (column 0 of every row and
column 7 of rows 0 and 1) instead of the first ten pixels, which carry the top of the digit.
"""

from __future__ import annotations

from pathlib import Path

from neuro import workflow

#: blank border pixels of the 8x8 digits that carry the label
DIGITS_LABEL_PIXELS = [0, 8, 16, 24, 32, 40, 48, 56, 7, 15]

#: 64-500-500 ReLU MLP (FF layer normalization), SymBa loss, negatives sampled from a
#: neutral-pass softmax readout, goodness prediction over both layers; Adam 1e-2 cosine, 15 epochs.
FF_DIGITS_MLP = {
    "run": {"name": "demo-ff", "seed": 0},
    "data": {"dataset": "digits"},
    "model": {"kind": "mlp", "hidden": [500, 500]},
    "rule": {"name": "ff", "loss": "symba", "goodness": "mean_squares", "readout": True, "negatives": "readout",
             "label_features": DIGITS_LABEL_PIXELS},
    "optim": {"name": "adam", "lr": 1e-2, "schedule": "cosine"},
    "train": {"epochs": 15, "batch_size": 64},
}

#: 64-256-10 LIF network (the default spiking_mlp, rate coding over T = 20 steps); every LIF
#: layer is an FF layer with goodness = sum of squared firing rates; random wrong labels;
#: Adam 3e-3 cosine, 10 epochs.
FF_DIGITS_SPIKING = {
    "run": {"name": "demo-spiking-ff", "seed": 0},
    "data": {"dataset": "digits"},
    "model": {"kind": "spiking_mlp", "hidden": [256], "time_steps": 20, "encoder": "rate"},
    "rule": {"name": "ff", "loss": "symba", "goodness": "sum_squares", "activity": "rate", "negatives": "random",
             "label_features": DIGITS_LABEL_PIXELS},
    "optim": {"name": "adam", "lr": 3e-3, "schedule": "cosine"},
    "train": {"epochs": 10, "batch_size": 64},
}


def ff_digits(out_dir: Path, echo=print) -> str:
    """Demo part: the FF MLP on digits (about 15 s on 2 cores)."""
    run, test = workflow.train_demo_part(FF_DIGITS_MLP, out_dir, echo=echo)
    return f"ReLU MLP, forward-forward, digits: test accuracy {100 * test['accuracy']:.2f}%  ->  {run.path / 'report.html'}"
