"""Photonic networks (issue 21): vowels as in Shen et al. 2017, digits in situ, optical DFA.

    .venv/bin/python -m bench.photonic_table                       # everything (about 20 min on one core)
    .venv/bin/python -m bench.photonic_table --parts vowels --seeds 0 1
    .venv/bin/python -m bench.photonic_table --parts digits --digits-epochs 3
    .venv/bin/python -m bench.photonic_table --parts digits --rows insilico mfff_spsa_hwlr_rg --digits-seeds 0 1 2
    .venv/bin/python -m bench.photonic_table --select /tmp/photonic_table.jsonl

Vowels (``vowels4``: ae/ah/iy/uw, log f0-F3, talker-disjoint split; ``photonic_mlp`` of three 4x4
Clements SVD layers, homodyne detection, per-channel electronic gain and offset), per seed:

1. in silico: Adam through the *ideal* chip (``pretrain_in_silico``, 100 epochs, batch 64, lr 0.03 cosine);
   test accuracy on the ideal chip;
2. deployed: the same phases written onto the non-ideal chip of the budget :data:`BUDGET` (same seed),
   measured (per-shot phase noise included);
3. hardware-aware in silico: as 1 with phase errors ``N(0, 0.1^2)`` rad sampled per sample and step,
   then deployed on the same chip;
4. in situ: from 2, SPSA on the measured loss only (rule ``insitu``, eps 0.02, 800 steps of 64 samples,
   Adam lr 0.01 cosine), measured test accuracy.

Digits (8x8, 1797 samples; ``--digits-seeds``): ``physical_mlp`` with two photonic hidden layers
(``photonic:clements``, intensity detection, 64 outputs each, 64 digital units after each) trained by
``insilico`` backprop through the simulator vs in situ by ``mfff`` (pairwise contrastive, SPSA on the
phases with their own learning rate ``optim.hardware_lr``, no gradient through the mesh); a 64-256-256 ReLU
``mlp`` trained by backprop vs ``dfa`` with the error projection digital or optical
(``neuro.functional.optical_projection``).

Each digits run records the final-epoch validation accuracy (``val_accuracy``, the dataset's own val split,
disjoint from test) beside the test accuracy; ``--rows`` takes a key of :data:`DIGITS_KEYS` (exactly that row) or
a substring of row labels.  ``--select runs.jsonl`` trains nothing: it chooses the in-situ row among
:data:`DIGITS_SELECTION` candidates (and the DFA row) by mean validation accuracy only, then prints validation and
test per seed (``bench/notes_digits_validation.md``).

Prints markdown tables and writes every number as JSON lines (``--json``).  Run with ``torch.set_num_threads(1)``
(done here); timings are not claimed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from neuro.build import build_experiment
from neuro.data.vowels4 import load_vowels4
from neuro.layers.photonic_mlp import PhotonicMLPSpec, build_photonic_mlp, deploy_photonic, mesh_report
from neuro.report.photonic import draw_accuracy_vs_noise, draw_meshes
from neuro.rules.base import Batch
from neuro.rules.photonic import InSitu, InSituSpec, accuracy_with, pretrain_in_silico, twin_physics

#: the non-ideality budget of the deployed chip (simulators.photonic.PhotonicOptions fields)
BUDGET = {"phase_error": 0.1, "phase_noise": 0.01, "dac_bits": 8, "crosstalk": 0.05}
AWARE_NOISE = 0.1
VOWEL_MODEL = {"layers": [4, 4, 4], "substrate_options": {"detection": "homodyne"}}
PRETRAIN = {"epochs": 100, "lr": 0.03, "batch": 64}
INSITU = {"steps": 800, "batch": 64, "lr": 0.01, "eps": 0.02}


def vowels_seed(seed: int, ds, mesh_png: Path | None = None) -> dict:
    torch.manual_seed(seed)
    out = {"seed": seed}
    t0 = time.perf_counter()
    model = build_photonic_mlp(PhotonicMLPSpec(seed=seed, **VOWEL_MODEL), ds)
    pretrain_in_silico(model, ds.train.x, ds.train.y, seed=seed, **PRETRAIN)
    out["insilico_ideal"] = accuracy_with(model, ds.test.x, ds.test.y, twin_physics(True))
    deploy_photonic(model, **BUDGET)
    out["deployed"] = accuracy_with(model, ds.test.x, ds.test.y)
    out["fidelity_deployed"] = _mean_fidelity(model)
    aware = build_photonic_mlp(PhotonicMLPSpec(seed=seed, **VOWEL_MODEL), ds)
    pretrain_in_silico(aware, ds.train.x, ds.train.y, seed=seed, phase_noise=AWARE_NOISE, **PRETRAIN)
    out["aware_ideal"] = accuracy_with(aware, ds.test.x, ds.test.y, twin_physics(True))
    deploy_photonic(aware, **BUDGET)
    out["aware_deployed"] = accuracy_with(aware, ds.test.x, ds.test.y)
    rule = InSitu(InSituSpec(eps=INSITU["eps"], seed=seed))
    opt = torch.optim.Adam(model.parameters(), lr=INSITU["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, INSITU["steps"])
    g = torch.Generator().manual_seed(seed + 1)
    evals0 = model.counters()[0]
    for _ in range(INSITU["steps"]):
        idx = torch.randperm(len(ds.train.y), generator=g)[:INSITU["batch"]]
        opt.zero_grad(set_to_none=True)
        rule.step(model, Batch(ds.train.x[idx], ds.train.y[idx]))
        opt.step()
        sched.step()
    out["insitu_evals"] = model.counters()[0] - evals0
    out["insitu"] = accuracy_with(model, ds.test.x, ds.test.y)
    out["fidelity_insitu"] = _mean_fidelity(model)
    if mesh_png is not None:
        draw_meshes(mesh_report(model), mesh_png)
    out["wall_s"] = time.perf_counter() - t0
    return out


def _mean_fidelity(model) -> float:
    fids = [m["fidelity"] for layer in mesh_report(model)["layers"] for m in layer["meshes"].values()]
    return sum(fids) / len(fids)


def accuracy_vs_noise(seed: int, ds, levels=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2)) -> dict:
    """Test accuracy of the in-silico design on chips with only per-shot phase noise ``sigma`` (rad)."""
    torch.manual_seed(seed)
    out = {}
    for label, noise in (("insilico", 0.0), ("hwaware", AWARE_NOISE)):
        model = build_photonic_mlp(PhotonicMLPSpec(seed=seed, **VOWEL_MODEL), ds)
        pretrain_in_silico(model, ds.train.x, ds.train.y, seed=seed, phase_noise=noise, **PRETRAIN)
        out[label] = []
        for s in levels:
            deploy_photonic(model, phase_noise=s)
            out[label].append(accuracy_with(model, ds.test.x, ds.test.y))
    return {"phase_noise": list(levels), **out}


MLP_MODEL = {"kind": "mlp", "hidden": [256, 256]}
DIGITS = {
    "photonic physical_mlp, insilico (backprop through the simulator)": (
        {"kind": "physical_mlp", "substrate": "photonic:clements", "physical": [64], "hidden": [64, 64]},
        {"name": "insilico"}, 3e-3),
    "photonic physical_mlp, mfff in situ (contrastive, SPSA phases)": (
        {"kind": "physical_mlp", "substrate": "photonic:clements", "physical": [64], "hidden": [64, 64]},
        {"name": "mfff", "variant": "contrastive"}, 1e-2),
    "photonic physical_mlp, mfff in situ (contrastive, phases fixed)": (
        {"kind": "physical_mlp", "substrate": "photonic:clements", "physical": [64], "hidden": [64, 64]},
        {"name": "mfff", "variant": "contrastive", "spsa_every": 0}, 1e-2),
    "photonic physical_mlp, mfff in situ (contrastive, SPSA phases every 10 steps, eps 0.01)": (
        {"kind": "physical_mlp", "substrate": "photonic:clements", "physical": [64], "hidden": [64, 64]},
        {"name": "mfff", "variant": "contrastive", "spsa_every": 10, "spsa_eps": 0.01}, 1e-2),
    "photonic physical_mlp, mfff in situ (contrastive, SPSA phases every step, eps 0.01, hardware_lr 1e-3)": (
        {"kind": "physical_mlp", "substrate": "photonic:clements", "physical": [64], "hidden": [64, 64]},
        {"name": "mfff", "variant": "contrastive", "spsa_every": 1, "spsa_eps": 0.01}, 1e-2, {"hardware_lr": 1e-3}),
    "photonic physical_mlp, mfff in situ (SPSA phases, eps 0.01, hardware_lr 1e-3, readout_grad)": (
        {"kind": "physical_mlp", "substrate": "photonic:clements", "physical": [64], "hidden": [64, 64]},
        {"name": "mfff", "variant": "contrastive", "spsa_every": 1, "spsa_eps": 0.01, "readout_grad": True}, 1e-2,
        {"hardware_lr": 1e-3}),
    "photonic physical_mlp, mfff in situ (contrastive, no SPSA: power-on phases kept, readout-grad)": (
        {"kind": "physical_mlp", "substrate": "photonic:clements", "physical": [64], "hidden": [64, 64]},
        {"name": "mfff", "variant": "contrastive", "spsa_every": 0, "readout_grad": True}, 1e-2),
    "mlp 64-256-256, backprop": ({"kind": "mlp", "hidden": [256, 256]}, {"name": "bptt"}, 3e-3),
    "mlp 64-256-256, dfa digital": (MLP_MODEL, {"name": "dfa", "projection": "digital"}, 3e-3),
    "mlp 64-256-256, dfa optical": (MLP_MODEL, {"name": "dfa", "projection": "optical"}, 3e-3),
}


#: short names of the digits rows: a ``--rows`` entry equal to a key picks exactly that row; any other entry picks
#: every row whose label contains it
DIGITS_KEYS = dict(zip(
    ("insilico", "mfff_spsa", "mfff_fixed", "mfff_every10", "mfff_spsa_hwlr", "mfff_spsa_hwlr_rg", "mfff_fixed_rg",
     "bptt", "dfa_digital", "dfa_optical"), DIGITS))


def pick_rows(wanted: list[str] | None) -> list[str]:
    """The DIGITS labels selected by ``--rows`` (all when ``wanted`` is empty), in table order."""
    if not wanted:
        return list(DIGITS)
    exact = {DIGITS_KEYS[w] for w in wanted if w in DIGITS_KEYS}
    loose = [w for w in wanted if w not in DIGITS_KEYS]
    return [label for label in DIGITS if label in exact or any(w in label for w in loose)]


def digits_run(model: dict, rule: dict, lr: float, epochs: int, seed: int, optim: dict | None = None) -> dict:
    """One digits run; ``optim`` adds ``[optim]`` keys (e.g. ``hardware_lr``: the phases' own learning rate)."""
    cfg = {"run": {"name": f"digits-{rule['name']}", "seed": seed, "progress": False}, "data": {"dataset": "digits"},
           "model": {**model, "seed": seed} if model["kind"] == "physical_mlp" else dict(model), "rule": dict(rule),
           "optim": {"name": "adam", "lr": lr, "schedule": "cosine", **(optim or {})},
           "train": {"epochs": epochs, "batch_size": 64}}
    exp = build_experiment(cfg)
    trainer = exp.trainer(None, progress=False)
    t0 = time.perf_counter()
    records = trainer.fit()
    wall = time.perf_counter() - t0
    return {"val_accuracy": trainer.evaluate("val")["accuracy"], "test_accuracy": trainer.evaluate("test")["accuracy"],
            "val_curve": [r.get("val_accuracy") for r in records], "wall_s": wall}


#: the in-situ candidates of the digits selection (issue 21) and the baselines they are compared with
DIGITS_SELECTION = {
    "baseline": "insilico",
    "candidates": ("mfff_fixed", "mfff_spsa_hwlr", "mfff_spsa_hwlr_rg", "mfff_fixed_rg"),
    "dfa_baseline": "bptt",
    "dfa_candidates": ("dfa_optical", "dfa_digital"),
}


def select_by_validation(records: list[dict], candidates, baseline: str) -> dict:
    """Pick the candidate row with the highest mean final-epoch VALIDATION accuracy; compare its test accuracy.

    ``records``: JSON lines of ``--parts digits`` (``row`` = a label, or a key of :data:`DIGITS_KEYS`; ``seed``,
    ``val_accuracy``, ``test_accuracy`` in [0, 1]).  Only candidates run on every seed of the baseline count; the
    test accuracy never enters the choice (ties in mean validation go to the earlier candidate).  Returns the
    per-row ``{seed: (val, test)}``, the chosen key, its mean test minus the baseline's (points) and the per-seed
    test gaps (points).
    """
    label_to_key = {label: key for key, label in DIGITS_KEYS.items()}
    rows: dict[str, dict[int, tuple[float, float]]] = {}
    for rec in records:
        key = label_to_key.get(rec.get("row"), rec.get("row"))
        if "val_accuracy" in rec:
            rows.setdefault(key, {})[int(rec["seed"])] = (float(rec["val_accuracy"]), float(rec["test_accuracy"]))
    if baseline not in rows:
        raise ValueError(f"no records of the baseline row {baseline!r}; run --rows {baseline} first")
    seeds = sorted(rows[baseline])
    ready = [c for c in candidates if c in rows and all(s in rows[c] for s in seeds)]
    if not ready:
        raise ValueError(f"no candidate of {list(candidates)} has records on every seed {seeds}")
    mean_val = {c: statistics.mean(rows[c][s][0] for s in seeds) for c in ready}
    chosen = max(ready, key=lambda c: (mean_val[c], -ready.index(c)))
    gaps = [100 * (rows[chosen][s][1] - rows[baseline][s][1]) for s in seeds]
    return {"rows": rows, "seeds": seeds, "ready": ready, "mean_val": mean_val, "chosen": chosen,
            "gap": statistics.mean(gaps), "gaps": gaps}


def selection_table(sel: dict, baseline: str) -> str:
    """Markdown: per row, val / test per seed, mean ± std of each, test gap to the baseline; the chosen row marked."""
    seeds = sel["seeds"]
    head = "| row | " + " | ".join(f"seed {s} val / test" for s in seeds)
    head += f" | val mean ± std | test mean ± std | test vs {baseline} (per seed) |"
    lines = [head, "|---" * (len(seeds) + 4) + "|"]
    base = sel["rows"][baseline]
    for key in [baseline, *sel["ready"]]:
        r = sel["rows"][key]
        cells = " | ".join(f"{100 * r[s][0]:.2f} / {100 * r[s][1]:.2f}" for s in seeds)
        gaps = [100 * (r[s][1] - base[s][1]) for s in seeds]
        gap = "" if key == baseline else f"{statistics.mean(gaps):+.2f} ({' / '.join(f'{g:+.2f}' for g in gaps)})"
        name = f"**{key}** (chosen)" if key == sel["chosen"] else key
        lines.append(f"| {name} | {cells} | {_ms([r[s][0] for s in seeds])} | {_ms([r[s][1] for s in seeds])} "
                     f"| {gap} |")
    return "\n".join(lines)


def _ms(values) -> str:
    v = [100 * x for x in values]
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):.2f} ± {sd:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["vowels", "noise", "digits"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--digits-seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--digits-epochs", type=int, default=15)
    ap.add_argument("--rows", nargs="+", default=None, help="only the digits rows whose label contains one of these")
    ap.add_argument("--json", default="/tmp/photonic_table.jsonl")
    ap.add_argument("--select", default=None, metavar="JSONL",
                    help="train nothing: read digits records (with val_accuracy) from JSONL and pick the in-situ row "
                         "and the DFA row by mean validation accuracy (DIGITS_SELECTION), then print val and test")
    ap.add_argument("--figures", default=str(Path(__file__).resolve().parent),
                    help="folder for photonic_mesh_vowels4.png (first seed, after in situ) and "
                         "photonic_noise_vowels4.png")
    args = ap.parse_args(argv)
    if args.select:
        records = [json.loads(line) for line in Path(args.select).read_text().splitlines() if line.strip()]
        records = [r for r in records if r.get("part") == "digits"]
        for cand, base in (("candidates", "baseline"), ("dfa_candidates", "dfa_baseline")):
            try:
                sel = select_by_validation(records, DIGITS_SELECTION[cand], DIGITS_SELECTION[base])
            except ValueError as err:
                print(f"{cand}: {err}")
                continue
            print(f"\nchosen by mean validation accuracy: {sel['chosen']} "
                  f"(test vs {DIGITS_SELECTION[base]}: {sel['gap']:+.2f} points)")
            print(selection_table(sel, DIGITS_SELECTION[base]))
        return 0
    torch.set_num_threads(1)
    with open(args.json, "a") as log:
        if "vowels" in args.parts:
            ds = load_vowels4()
            rows = []
            for seed in args.seeds:
                png = Path(args.figures) / "photonic_mesh_vowels4.png" if seed == args.seeds[0] else None
                r = vowels_seed(seed, ds, png)
                rows.append(r)
                log.write(json.dumps({"part": "vowels4", "budget": BUDGET, **r}) + "\n")
                log.flush()
                print(json.dumps(r), flush=True)
            print(f"\nvowels4, seeds {args.seeds}, budget {BUDGET}, test accuracy (%) mean ± std:")
            print("| in silico (ideal chip) | deployed on budget chip | hardware-aware, deployed "
                  "| in situ (SPSA) on budget chip |")
            print("|---|---|---|---|")
            print(f"| {_ms([r['insilico_ideal'] for r in rows])} | {_ms([r['deployed'] for r in rows])} | "
                  f"{_ms([r['aware_deployed'] for r in rows])} | {_ms([r['insitu'] for r in rows])} |")
        if "noise" in args.parts:
            r = accuracy_vs_noise(args.seeds[0], load_vowels4())
            log.write(json.dumps({"part": "vowels4_noise", "seed": args.seeds[0], **r}) + "\n")
            log.flush()
            print("\naccuracy vs per-shot phase noise:", json.dumps(r), flush=True)
            draw_accuracy_vs_noise(r, Path(args.figures) / "photonic_noise_vowels4.png")
        if "digits" in args.parts:
            rows = []
            for label in pick_rows(args.rows):
                model, rule, lr, *extra = DIGITS[label]
                accs, vals = [], []
                for seed in args.digits_seeds:
                    r = digits_run(model, rule, lr, args.digits_epochs, seed, *extra)
                    accs.append(r["test_accuracy"])
                    vals.append(r["val_accuracy"])
                    log.write(json.dumps({"part": "digits", "row": label, "seed": seed, "epochs": args.digits_epochs,
                                          "lr": lr, **r}) + "\n")
                    log.flush()
                    print(f"digits {label}: seed {seed} val {100 * r['val_accuracy']:.2f} % "
                          f"test {100 * r['test_accuracy']:.2f} % ({r['wall_s']:.0f} s)", flush=True)
                rows.append((label, vals, accs))
            print(f"\n| digits, {args.digits_epochs} epochs, seeds {args.digits_seeds} "
                  "| val accuracy (%, final epoch) | test accuracy (%) |")
            print("|---|---|---|")
            for label, vals, accs in rows:
                print(f"| {label} | {_ms(vals)} | {_ms(accs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
