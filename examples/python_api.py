"""NeuroHIL from Python: train a spiking MLP on digits, evaluate it, export it to NIR (about 10 s on 2 cores).

.venv/bin/python examples/python_api.py [--out DIR]
"""

import argparse
import tempfile
from pathlib import Path

import torch

import neuro

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default=tempfile.mkdtemp(prefix="neurohil-api-"), help="where to write model.nir")
args = parser.parse_args()

torch.manual_seed(0)
data = neuro.load_dataset("digits")  # 8x8 digits, features in [0, 1]
lif = neuro.LIFParameters(reset="zero")  # rate coding -> LIF (a reset every NIR reader reproduces) -> spike counts
model = neuro.SpikingMLP(data.n_features, [128], data.n_classes, time_steps=20, lif=lif)
optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
trainer = neuro.Trainer(model, neuro.BPTT(), optimizer, data, epochs=5, batch_size=32, progress=False)
for record in trainer.fit():
    print(f"epoch {record['epoch']}: loss {record['train_loss']:.3f}, val accuracy {100 * record['val_accuracy']:.1f}%")
test = trainer.evaluate("test")
print(f"test accuracy {100 * test['accuracy']:.2f}% on {test['count']} digits")
path = Path(args.out) / "model.nir"
neuro.write_nir(model, path)  # topology + float parameters, read by other tools
print(f"NIR graph written to {path}")
