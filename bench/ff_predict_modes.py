"""A trained forward-forward run's accuracy with both of FF's predictions, on validation and test.

FF classifies by goodness (for each label ``c``, the goodness of the input embedded with ``c``, summed over the
prediction layers; ``rule.predict = "goodness"``) or by the linear readout trained on a neutral-label pass
(``rule.predict = "readout"``, needs ``rule.readout = true``).  A run reports the one its config names; this script
reloads the final checkpoint and evaluates both, so the choice between them can be made on the validation split.

    python -m bench.ff_predict_modes runs/ff18/ff-hinton/trials/_config_-seed0 runs/ff18/ff-hinton/trials/_config_-seed1

Prints one JSON line per run: ``{"run", "goodness_val", "goodness_test", "readout_val", "readout_test"}`` (%).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from neuro.errors import NeuroError
from neuro.workflow import load_run

MODES = ("goodness", "readout")


def predict_modes(run_path: str) -> dict:
    """Validation and test accuracy (%) of ``run_path``'s checkpoint under each prediction of :data:`MODES`."""
    _, exp = load_run(run_path)
    spec = getattr(exp.rule, "spec", None)
    if spec is None or not hasattr(spec, "predict"):
        raise NeuroError(f"{run_path}: rule `{exp.rule.name}` is not forward-forward; it has no prediction modes")
    if not spec.readout:
        raise NeuroError(f"{run_path}: trained without rule.readout = true, so it has no readout to evaluate")
    out = {"run": str(run_path)}
    for mode in MODES:
        exp.rule.spec = dataclasses.replace(spec, predict=mode)
        trainer = exp.trainer(None, progress=False)
        for split in ("val", "test"):
            out[f"{mode}_{split}"] = round(100 * trainer.evaluate(split)["accuracy"], 2)
    exp.rule.spec = spec
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories of FF runs trained with rule.readout = true")
    args = p.parse_args(argv)
    for run in args.runs:
        try:
            print(json.dumps(predict_modes(run)), flush=True)
        except NeuroError as exc:
            raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
