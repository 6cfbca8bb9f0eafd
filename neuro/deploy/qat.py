"""Quantization-aware fine-tuning on the Loihi twin (a training workflow step of deployment).

``finetune_on_twin(model, export, data, epochs=...)`` trains the float model's weights with BPTT
through :class:`neuro.layers.loihi.LoihiTwinMLP` (fixed-point forward, straight-through backward)
with the ordinary :class:`~neuro.trainer.Trainer`, and returns the export of the tuned weights at
the same scales.  It lives here, above the layers, because it trains.
"""

from __future__ import annotations

import torch

from neuro.layers.loihi import LoihiTwinMLP
from neuro.rules.bptt import BPTT
from neuro.trainer import Trainer


def finetune_on_twin(model, export, data, *, epochs: int, lr: float = 1e-4, batch_size: int = 64, seed: int = 0,
                     echo=print):
    """``epochs`` of BPTT through :class:`LoihiTwinMLP`; returns the new export."""
    wrapper = LoihiTwinMLP(model, export)
    optimizer = torch.optim.Adam(wrapper.parameters(), lr=lr)
    trainer = Trainer(wrapper, BPTT(), optimizer, data, epochs=epochs, batch_size=batch_size, seed=seed, progress=False)
    for record in trainer.fit():
        val = record.get("val_accuracy")
        echo(f"  QAT epoch {record['epoch']}/{epochs}: loss {record['train_loss']:.4f}"
             + (f", val accuracy on the twin {100 * val:.2f}%" if val is not None else ""))
    model.eval()
    return wrapper.to_export()
