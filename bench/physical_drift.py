"""Robustness to drift: mfff trained on a drifting physical system vs backprop offline, then deployed.

    .venv/bin/python bench/physical_drift.py --dataset vowels --epochs 30 --drift 0.01

Three trainings on the same 3-block ``physical_mlp`` (``wave:scattering``, same seeds):

1. ``insilico`` on the drift-free system (the offline network);
2. ``mfff`` on the drift-free system (reference);
3. ``mfff`` on the drifting system (hidden parameters random-walk with relative step ``drift`` every
   ``drift_tick`` samples of device time), with the offline network deployed on the same drifting
   device and evaluated at every epoch end (:class:`neuro.deployment.DeployedBaseline`).

Run 3 is written to ``runs/<name>/`` with ``report.html`` (accuracy vs device time of both).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from bench.physical_table import RULES, config
from neuro import workflow
from neuro.build import build_experiment
from neuro.deployment import DeployedBaseline
from neuro.runs import Run

ROOT = Path(__file__).resolve().parents[1]


def drifting(cfg: dict, drift: float, tick: int) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["model"]["substrate_options"] = {**cfg["model"]["substrate_options"], "drift": drift, "drift_tick": tick}
    return cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="vowels")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--drift", type=float, default=0.01)
    ap.add_argument("--tick", type=int, default=256)
    ap.add_argument("--out", default="runs")
    ap.add_argument("--name", default="physical-drift")
    ap.add_argument(
        "--mfff", default="mfff (supervised FF)", help="label of the mfff entry of bench/physical_table.py RULES"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ins_rule, ins_lr, _ = RULES["insilico (backprop through exact simulator)"]
    ff_rule, ff_lr, _ = RULES[args.mfff]

    offline = build_experiment(config(args.dataset, ins_rule, ins_lr, args.epochs))
    offline.trainer(None, progress=False).fit()
    offline_test = offline.trainer(None, progress=False).evaluate("test")["accuracy"]
    print(f"offline insilico, drift-free: test {100 * offline_test:.2f}%", flush=True)

    still = build_experiment(config(args.dataset, ff_rule, ff_lr, args.epochs))
    still_trainer = still.trainer(None, progress=False)
    still_trainer.fit()
    still_test = still_trainer.evaluate("test")["accuracy"]
    print(f"mfff, drift-free: test {100 * still_test:.2f}%", flush=True)

    cfg = drifting(config(args.dataset, ff_rule, ff_lr, args.epochs), args.drift, args.tick)
    cfg["run"].update({"name": args.name, "out_dir": args.out})
    exp = build_experiment(cfg)
    deployed_exp = build_experiment(
        drifting(config(args.dataset, ins_rule, ins_lr, args.epochs), args.drift, args.tick)
    )
    deployed_exp.model.load_state_dict(offline.model.state_dict(), strict=False)
    # the deployed copy's substrates start fresh at device time 0 (same device, same seed), with
    # the offline network's digital weights and controls
    fresh = build_experiment(drifting(config(args.dataset, ins_rule, ins_lr, args.epochs), args.drift, args.tick)).model
    for a, b in zip(deployed_exp.model.physical_layers(), fresh.physical_layers()):
        a.substrate = b.substrate
        a._written = {}
    hook = DeployedBaseline(deployed_exp.model, deployed_exp.rule)
    run = Run.create(exp.run.out_dir, exp.run.name, overwrite=True)
    run.write_config(exp.config)
    trainer = exp.trainer(run, progress=False, hooks=(hook,))
    for r in trainer.fit():
        print(
            f"epoch {r['epoch']}: mfff (drift) val {100 * r['val_accuracy']:.2f}%  deployed val "
            f"{100 * r['deployed_val_accuracy']:.2f}%",
            flush=True,
        )
    test = workflow.finish(exp, trainer, run)
    hook.sync_clocks(exp.model)
    deployed_test = hook.accuracy(exp.data.test)
    result = {
        "dataset": args.dataset,
        "mfff": args.mfff,
        "epochs": args.epochs,
        "drift": args.drift,
        "tick": args.tick,
        "offline_test_drift_free": offline_test,
        "mfff_test_drift_free": still_test,
        "mfff_test_drift": test["accuracy"],
        "deployed_test_drift": deployed_test,
        "device_time_end": exp.model.blocks[0].physical.substrate.clock,
        "report": str(run.path / "report.html"),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
