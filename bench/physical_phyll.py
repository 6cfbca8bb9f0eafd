"""The PhyLL protocol (Momeni et al., Science 2023), 10 seeds: mfff vs backprop vs digital-only vs PAT.

    python -m bench.physical_phyll                      # the table: 2 substrates x 5 arms x 10 seeds
    python -m bench.physical_phyll --seeds 0 1 --substrates measured:phyll_acoustic
    python -m bench.physical_phyll --arms digital --set optim.lr=5e-3   # one arm, a config override
    python -m bench.physical_phyll --validate --arms mfff --set rule.theta=8   # tuning: never the test split
    python -m bench.physical_phyll --summarize a.jsonl b.jsonl          # table + paired differences of saved rows
    python -m bench.physical_phyll --drift              # drift + a sudden change on the measured substrate
    python -m bench.physical_phyll --diagnose           # why the supervised variant's deeper blocks learn little

Table: the network of ``examples/vowels_phyll.toml`` (2 blocks, 20 -> 20 physical layer driven with
``|h|/||h||``, linear digital layer on ``[y; h]``) on ``vowels_phyll`` (random 80/20 split per seed),
on each substrate (``measured:phyll_acoustic``: fitted to the authors' cavity measurements, noise
re-injected; ``wave:scattering``: 1 % noise, no control inputs), every arm with the same seed, split,
architecture, Adam lr and number of optimizer steps (200 full-batch epochs x 10 steps):

- ``mfff``: PhyLL (supervised FF, cosine-to-random-direction goodness, pairwise loss, goodness prediction);
- ``insilico``: backprop of the readout's cross-entropy through the substrate's exact model
  (``exact_forward``; for the measured substrate: the fitted model), evaluated on the noisy device;
- ``pat``: measured forward, backward through the exact model (the fitted model is the twin);
- ``digital``: mfff on the network with the physical layers *and their drive* removed: each block is
  ``a_l = W_l a_{l-1} + b_l`` on the raw block input (no ``|h|/||h||``, no concatenation), widths widened
  to the physical network's trainable parameter budget (20 -> 31 -> 31: 1,643 parameters against
  2 x (40 x 20 + 20) = 1,640; the goodness directions are 31-dimensional);
- ``wire``: the earlier stand-in, physics replaced by the identity but its drive kept: the digital layer
  reads ``[|h|/||h||; h]`` (exactly 1,640 parameters).  ``|h|`` is itself a digital nonlinearity, so this
  is "physics replaced by the cheapest digital nonlinearity", not "physics removed".

Test accuracy on the noisy substrate, mean +- std over seeds, then mfff minus every other arm paired by
seed.  ``--validate`` trains on 80 % of each seed's train split and scores the other 20 % (the test
split is never read): hyperparameters were chosen that way.  Every run uses one thread; the numbers are
accuracies, not timings, so a busy machine changes only how long it takes (about 95 s of one idle core
per seed for the 8 runs of the earlier table).  Raw results: physical_phyll_2026-12-02.jsonl (first
table; its ``digital`` rows are today's ``wire``) and physical_phyll_2026-12-02b.jsonl (this table).

Drift (``--drift``): on the measured substrate the hidden input mixing random-walks (relative step
``--drift-step`` per 256 samples) and jumps (relative size ``--jump``) at mid-run; ``mfff`` trains in
situ on it, while the networks trained on the drift-free device (``mfff`` and ``insilico``) are
deployed on the same device at the in-situ run's final device time.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from neuro.build import build_experiment  # noqa: E402
from simulators.substrate import SUBSTRATE_FAMILIES  # noqa: E402

EXAMPLE = ROOT / "examples" / "vowels_phyll.toml"
SUBSTRATES = ("measured:phyll_acoustic", "wave:scattering")
ARMS = ("mfff", "insilico", "pat", "digital", "wire")
INNER_STEPS = 10
#: widths of the digital-only network: 20 -> 31 -> 31 has 21*31 + 32*31 = 1,643 trainable parameters, the
#: budget of the physical network's digital layers (2 x (40*20 + 20) = 1,640)
DIGITAL_HIDDEN = (31, 31)


class WireSubstrate:
    """No physics: ``y = e`` (the physical layer removed; same widths, so the same parameter count)."""

    input_range = (-1.0, 1.0)

    def __init__(self, n: int) -> None:
        self.n_in = self.n_out = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().float().clone()

    def exact_forward(self, x, params=None):
        return x

    def set_params(self, params) -> None:
        if params:
            raise KeyError(next(iter(params)))

    def get_params(self) -> dict:
        return {}

    def reset(self) -> None:
        pass

    def describe(self) -> dict:
        return {"kind": "wire", "n_in": self.n_in, "n_out": self.n_out, "input_range": list(self.input_range)}


def open_wire(variant, n_in, n_out, *, seed=0, options):
    if n_in != n_out:
        raise ValueError(f"wire needs n_in == n_out, got {n_in}, {n_out}")
    return WireSubstrate(n_in)


SUBSTRATE_FAMILIES.register("wire", open_wire, variants=(), emulatable=False, replace=True)


def base_config() -> dict:
    with open(EXAMPLE, "rb") as fh:
        cfg = tomllib.load(fh)
    cfg["run"]["progress"] = False
    return cfg


def arm_config(arm: str, substrate: str, seed: int, epochs: int) -> dict:
    cfg = copy.deepcopy(base_config())
    cfg["run"]["seed"] = seed  # the split and the negative labels
    cfg["model"]["seed"] = seed  # the initial weights (and, for wave:*, the random medium)
    cfg["run"]["name"] = f"phyll-{arm}-{seed}"
    cfg["train"]["epochs"] = epochs
    cfg["model"]["substrate"] = substrate
    if substrate.startswith("wave:"):
        cfg["model"]["substrate_options"] = {"n_control": 0, "noise": 0.01}
    if arm in ("digital", "wire"):
        cfg["model"]["substrate"] = "wire"
        cfg["model"].pop("substrate_options", None)
    if arm == "digital":  # physical layers removed (and their drive, |h| / ||h||); widths widened to the budget
        cfg["model"]["skip"] = False
        cfg["model"]["hidden"] = list(DIGITAL_HIDDEN)
        cfg["model"]["physical"] = [cfg["model"]["input_pad"] + 12, *DIGITAL_HIDDEN[:-1]]
    if arm == "insilico":
        cfg["rule"] = {"name": "insilico"}
    if arm == "pat":
        cfg["rule"] = {"name": "pat", "twin": "exact"}
    return cfg


def build_arm(arm: str, substrate: str, seed: int, epochs: int, overrides: dict | None = None):
    """The experiment of one arm; ``overrides``: ``{"section.key": value}`` applied to the config."""
    cfg = arm_config(arm, substrate, seed, epochs)
    for key, value in (overrides or {}).items():
        section, name = key.split(".", 1)
        cfg[section][name] = value
    exp = build_experiment(cfg)
    if arm in ("insilico", "pat"):
        exp.rule.inner_steps = INNER_STEPS  # the same number of optimizer steps as mfff's inner steps
    if arm == "digital":
        for block in exp.model.blocks:
            block.encoder = torch.nn.Identity()  # the wire then hands h itself to the digital layer
    return exp


def holdout_validation(data, seed: int, fraction: float = 0.2):
    """``data`` with its *train* split cut in two: the last ``fraction`` of a seeded permutation becomes the
    evaluation split (named ``test`` so the trainer's evaluation reads it); the real test split is dropped."""
    n = len(data.train)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(10_000 + seed))
    k = int(round(fraction * n))
    fit, val = perm[: n - k], perm[n - k :]
    cut = type(data.train)
    return dataclasses.replace(
        data,
        train=cut(data.train.x[fit], data.train.y[fit]),
        test=cut(data.train.x[val], data.train.y[val]),
    )


def run_arm(
    arm: str, substrate: str, seed: int, epochs: int, overrides: dict | None = None, validate: bool = False
) -> dict:
    exp = build_arm(arm, substrate, seed, epochs, overrides)
    if validate:
        exp.data = holdout_validation(exp.data, seed)
    trainer = exp.trainer(None, progress=False)
    start = time.perf_counter()
    records = trainer.fit()
    wall = time.perf_counter() - start
    out = {
        "arm": arm,
        "substrate": substrate,
        "seed": seed,
        "epochs": epochs,
        "test_accuracy": trainer.evaluate("test")["accuracy"],
        "train_accuracy": trainer.evaluate("train")["accuracy"],
        "n_physical_evals": sum(r.get("n_physical_evals", 0.0) for r in records),
        "wall_s": wall,
        "n_params": sum(p.numel() for b in exp.model.blocks for p in b.digital.parameters()),
        "overrides": overrides or {},
        "split": "validation (20 % of train)" if validate else "test",
    }
    if arm in ("mfff", "digital", "wire") and exp.rule.name == "mfff" and not exp.rule.uses_readout:
        out["block_accuracy"] = exp.rule.block_accuracies(exp.model, exp.data.test.x, exp.data.test.y)
    return out


#: arms without a physical layer: their rows do not depend on the substrate (one run serves every substrate)
SUBSTRATE_FREE = ("digital", "wire")


def summarize(rows: list[dict]) -> None:
    """Mean +- std over seeds per (substrate, arm label), then mfff minus each other arm paired by seed (same
    split, same initial digital weights): mean +- std of the per-seed difference, and its standard error.
    Rows of the arms in :data:`SUBSTRATE_FREE` stand for every substrate of the table."""
    split = rows[0].get("split", "test") if rows else "test"
    subs = sorted({r["substrate"] for r in rows if r["arm"] not in SUBSTRATE_FREE}) or sorted(
        {r["substrate"] for r in rows}
    )
    by: dict[tuple[str, str], dict[int, float]] = {}
    order: dict[str, int] = {}
    for r in rows:
        label = r.get("label", r["arm"])
        order[label] = ARMS.index(r["arm"])
        for sub in subs if r["arm"] in SUBSTRATE_FREE else [r["substrate"]]:
            by.setdefault((sub, label), {})[r["seed"]] = 100 * r["test_accuracy"]
    keys = sorted(by, key=lambda k: (k[0], order[k[1]], k[1]))
    print(f"\n| substrate | arm | {split} accuracy (%), mean +- std | seeds | per seed |")
    print("|---|---|---|---|---|")
    for sub, arm in keys:
        acc = [by[sub, arm][s] for s in sorted(by[sub, arm])]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        print(
            f"| {sub} | {arm} | {statistics.mean(acc):.2f} +- {sd:.2f} | {len(acc)} | "
            f"{' '.join(f'{a:.1f}' for a in acc)} |"
        )
    print("\n| substrate | mfff minus | paired difference (points), mean +- std | standard error | seeds |")
    print("|---|---|---|---|---|")
    for sub, arm in keys:
        if arm == "mfff" or (sub, "mfff") not in by:
            continue
        common = sorted(set(by[sub, arm]) & set(by[sub, "mfff"]))
        d = [by[sub, "mfff"][s] - by[sub, arm][s] for s in common]
        if not d:
            continue
        sd = statistics.stdev(d) if len(d) > 1 else 0.0
        print(f"| {sub} | {arm} | {statistics.mean(d):+.2f} +- {sd:.2f} | {sd / len(d) ** 0.5:.2f} | {len(d)} |")


def load_rows(paths: list[str], mode: str = "table") -> list[dict]:
    """Rows of ``mode`` from JSON-lines files; a later row for the same (substrate, arm, seed) replaces an
    earlier one."""
    rows: dict[tuple, dict] = {}
    for path in paths:
        with open(path) as fh:
            for line in fh:
                r = json.loads(line)
                if r.get("mode") == mode:
                    rows[r["substrate"], r.get("label", r["arm"]), r["seed"]] = r
    return list(rows.values())


# ---------------------------------------------------------------- drift
def drift_run(seed: int, epochs: int, drift: float, jump_at: int, jump: float) -> dict:
    """mfff in situ on a drifting measured device vs networks trained offline (drift-free) then deployed."""
    still = build_experiment(arm_config("mfff", "measured:phyll_acoustic", seed, epochs))
    t_still = still.trainer(None, progress=False)
    t_still.fit()
    acc_still = t_still.evaluate("test")["accuracy"]
    offline_bp = build_experiment(arm_config("insilico", "measured:phyll_acoustic", seed, epochs))
    offline_bp.rule.inner_steps = INNER_STEPS
    offline_bp.trainer(None, progress=False).fit()

    def drifting(arm: str) -> dict:
        cfg = arm_config(arm, "measured:phyll_acoustic", seed, epochs)
        cfg["model"]["substrate_options"] = {"drift": drift, "perturb_at": [jump_at], "perturb_scale": jump}
        return cfg

    insitu = build_experiment(drifting("mfff"))
    t_insitu = insitu.trainer(None, progress=False)
    t_insitu.fit()
    clock = insitu.model.blocks[0].physical.substrate.clock
    acc_insitu = t_insitu.evaluate("test")["accuracy"]
    out = {
        "seed": seed,
        "drift": drift,
        "perturb_at": jump_at,
        "perturb_scale": jump,
        "device_time": clock,
        "mfff_drift_free": acc_still,
        "mfff_in_situ_drift": acc_insitu,
    }
    for label, trained in (("offline_mfff_deployed", still), ("offline_insilico_deployed", offline_bp)):
        free = trained.trainer(None, progress=False).evaluate("test")["accuracy"]
        deployed = build_experiment(drifting("mfff" if label == "offline_mfff_deployed" else "insilico"))
        deployed.model.load_state_dict(trained.model.state_dict(), strict=False)
        for layer in deployed.model.physical_layers():
            layer.substrate.advance_time(clock)  # the same device, at the in-situ run's final device time
            layer._written = {}
        out[label.replace("deployed", "drift_free")] = free
        out[label] = deployed.trainer(None, progress=False).evaluate("test")["accuracy"]
    return out


# ---------------------------------------------------------------- diagnosis
def logistic_probe(seed: int, validate: bool, weight_decay: float = 1e-3) -> float:
    """Accuracy of a multinomial logistic regression ``softmax(W u + b)`` on the 12 features alone
    (``u``: the features z-scored with the training mean/std; loss: mean cross-entropy + ``weight_decay *
    ||(W, b)||^2``, minimized by L-BFGS), on the seed's test split or, with ``validate``, on its validation
    holdout: how far a linear classifier gets on this task (84 + 7 parameters, no physics)."""
    data = build_arm("digital", "wave:scattering", seed, 1).data
    if validate:
        data = holdout_validation(data, seed)
    mu, sd = data.train.x.mean(0), data.train.x.std(0)
    x_tr, x_te = (data.train.x - mu) / sd, (data.test.x - mu) / sd
    torch.manual_seed(seed)
    net = torch.nn.Linear(x_tr.shape[1], data.n_classes)
    opt = torch.optim.LBFGS(net.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x_tr), data.train.y)
        loss = loss + weight_decay * sum((p**2).sum() for p in net.parameters())
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((net(x_te).argmax(1) == data.test.y).float().mean())


def diagnose(seed: int, epochs: int, only: list[int] | None = None) -> list[dict]:
    """Per-block goodness accuracy of the supervised variant on the default 3-block network (vowels),
    without and with the skip concatenation, and with PhyLL's goodness/loss."""
    from bench.physical_table import config as table_config

    rows = []
    variants = {
        "supervised (default architecture)": ({}, {}),
        "supervised + skip": ({"skip": True}, {}),
        "supervised + skip, cosine goodness, pairwise loss": (
            {"skip": True},
            {"goodness": "cosine_random", "loss": "pairwise", "theta": 4.0},
        ),
        "supervised, noise-free physics": ({"substrate_options": {"noise": 0.0, "n_control": 8}}, {}),
        "supervised, pairwise loss": ({}, {"loss": "pairwise", "theta": 4.0}),
        "supervised, cosine goodness, pairwise loss": (
            {},
            {"goodness": "cosine_random", "loss": "pairwise", "theta": 4.0},
        ),
    }
    for i, (label, (model, rule)) in enumerate(variants.items()):
        if only and i not in only:
            continue
        cfg = table_config(
            "vowels", {"name": "mfff", "variant": "supervised", **rule}, 2e-2, epochs, seed=seed, model=model
        )
        cfg["run"]["progress"] = False
        exp = build_experiment(cfg)
        tr = exp.trainer(None, progress=False)
        tr.fit()
        acc = tr.evaluate("test")["accuracy"]
        blocks = exp.rule.block_accuracies(exp.model, exp.data.test.x, exp.data.test.y)
        rows.append({"variant": label, "test_accuracy": acc, "block_accuracy": blocks})
        print(
            f"{label:55s} test {100 * acc:.1f}%  per block {' / '.join(f'{100 * b:.0f}' for b in blocks)} %", flush=True
        )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--substrates", nargs="+", default=list(SUBSTRATES))
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--json", default="/tmp/physical_phyll.jsonl")
    ap.add_argument(
        "--validate",
        action="store_true",
        help="tuning mode: train on 80 %% of each seed's train split, score the other 20 %% (never the test split)",
    )
    ap.add_argument("--tag", default="", help="label suffix of these rows, e.g. 'lr 5e-3' (kept apart in the table)")
    ap.add_argument(
        "--summarize", nargs="+", metavar="JSONL", help="print the table of these result files and run nothing"
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="config override for every arm (value parsed as JSON, else a string), e.g. optim.lr=2e-3",
    )
    ap.add_argument("--drift", action="store_true", help="run the drift/perturbation comparison instead")
    ap.add_argument(
        "--drift-step", type=float, default=0.01, help="relative random-walk step of the input mixing per 256 samples"
    )
    ap.add_argument("--jump", type=float, default=1.0, help="relative size of the sudden change at mid-run")
    ap.add_argument(
        "--logistic",
        type=float,
        nargs="*",
        default=None,
        metavar="WEIGHT_DECAY",
        help="linear-classifier ceiling: logistic regression on the 12 features (default weight decay 1e-3)",
    )
    ap.add_argument("--diagnose", action="store_true", help="per-block accuracies of the supervised variant (vowels)")
    ap.add_argument("--diagnose-epochs", type=int, default=30)
    ap.add_argument(
        "--diagnose-only", type=int, nargs="*", default=None, help="indices of the diagnosis variants to run"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.summarize:
        summarize(load_rows(args.summarize, "validate" if args.validate else "table"))
        return 0
    with open(args.json, "a") as log:
        if args.logistic is not None:
            for wd in args.logistic or [1e-3]:
                acc = [100 * logistic_probe(seed, args.validate, wd) for seed in args.seeds]
                sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
                where = "validation" if args.validate else "test"
                print(
                    f"logistic regression, weight decay {wd:g}, {where}: {statistics.mean(acc):.2f} +- {sd:.2f} "
                    f"({' '.join(f'{a:.1f}' for a in acc)})"
                )
                log.write(json.dumps({"mode": "logistic", "split": where, "weight_decay": wd, "accuracy": acc}) + "\n")
            return 0
        if args.diagnose:
            for row in diagnose(args.seeds[0], args.diagnose_epochs, args.diagnose_only):
                log.write(json.dumps({"mode": "diagnose", **row}) + "\n")
            return 0
        if args.drift:
            rows = []
            for seed in args.seeds:
                # mid-run: half the device time of one block in a drift-free run of this length
                per_epoch = 2 * 207 * INNER_STEPS
                r = drift_run(seed, args.epochs, args.drift_step, per_epoch * args.epochs // 2, args.jump)
                log.write(json.dumps({"mode": "drift", **r}) + "\n")
                log.flush()
                rows.append(r)
                print(json.dumps(r), flush=True)
            keys = [k for k in rows[0] if k.startswith(("mfff_", "offline_"))]
            print("\n| seeds | " + " | ".join(keys) + " |")
            print("|---|" + "---|" * len(keys))
            print(
                f"| {len(rows)} | "
                + " | ".join(
                    f"{100 * statistics.mean(r[k] for r in rows):.1f} +- "
                    f"{100 * (statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0):.1f}"
                    for k in keys
                )
                + " |"
            )
            return 0
        overrides = {}
        for item in args.overrides:
            key, _, text = item.partition("=")
            try:
                overrides[key] = json.loads(text)
            except json.JSONDecodeError:
                overrides[key] = text
        rows = []
        for sub in args.substrates:
            for seed in args.seeds:
                for arm in args.arms:
                    r = run_arm(arm, sub, seed, args.epochs, overrides, args.validate)
                    mode = "validate" if args.validate else "table"
                    r["label"] = f"{arm} ({args.tag})" if args.tag else arm
                    log.write(json.dumps({"mode": mode, **r}) + "\n")
                    log.flush()
                    rows.append(r)
                    print(
                        f"{sub:24s} {arm:9s} seed {seed}: {r['split'].split()[0]} "
                        f"{100 * r['test_accuracy']:.1f}%  ({r['wall_s']:.0f} s)",
                        flush=True,
                    )
        summarize(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
