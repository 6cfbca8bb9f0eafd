"""Continual-learning table: ACC / BWT of HLOP, fine-tuning, EWC, GPM-style projection and the multitask
upper bound on permuted MNIST (and HLOP around forward-forward), several seeds, with wall times.

    python -m bench.continual_table                                  # full protocol (examples/pmnist_hlop.toml)
    python -m bench.continual_table --preset reduced    # 3 tasks, 3000 samples/task, 784-100-100-10, T = 10
    python -m bench.continual_table --strategies hlop,finetune --seeds 0 --rules bptt
    python -m bench.continual_table --preset reduced --set continual.ewc_lambda=1000
    python -m bench.continual_table --partial runs/continual-table/full-bptt-hlop-s1   # R so far of a stopped run

Each (rule, strategy, seed) is one ``neuro train --continual`` run in ``--out`` (default
runs/continual-table); one JSON line per run is appended to ``<out>/table.jsonl`` and a Markdown table
(mean and per-seed ACC, BWT, wall time) is printed at the end.  Runs already in table.jsonl are skipped,
so an interrupted table continues; a run stopped mid-stream (same config) continues after its last
finished task (``--restart``: from task 0).  Wall times are only comparable on an idle machine with the same
thread count (``--threads``, default 1).  A stopped run continues with ``neuro train --resume RUN`` (after its
last finished task); ``--partial RUN ...`` prints the R rows, mean accuracy, BWT so far and task times of runs,
finished or not, from their ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from neuro import config as cfg

REDUCED = [
    "continual.tasks=3", "data.limit=3000", "model.hidden=[100,100]", "model.time_steps=10",
    "continual.subspace=[80,25,15]", "continual.increment=[70,9,9]",
]
# FF settings: goodness (mean square activity) against threshold 0.5, labels written into the first 10 pixels.
FF = ["rule.name=ff", "rule.threshold=0.5", "rule.goodness=mean_squares"]
# "ff-mlp": FF on a ReLU MLP of the same sizes (no biases), a softmax readout trained on the FF features
# (prediction by the readout), SGD lr 0.05.  On the spiking MLP, FF with SGD stayed at chance in one epoch.
FF_MLP = FF + ["rule.readout=true", "rule.predict=readout", "optim.lr=0.05"]


def as_mlp(config: dict) -> dict:
    """``config`` with its spiking [model] replaced by a bias-free ReLU MLP of the same hidden sizes."""
    hidden = list(config["model"].get("hidden", [800, 800]))
    return {**config, "model": {"kind": "mlp", "hidden": hidden, "bias": False}}


def stopped_run(config: dict, out: Path, name: str) -> Path | None:
    """The directory of an earlier run of ``config`` that stopped after a finished task, else None.

    Its saved config must agree with ``config`` (:func:`neuro.config.agrees_with`), so a run started
    with other settings is never continued; it is then trained again from task 0.
    """
    from neuro.continual.workflow import latest_task_checkpoint

    path = out / name
    if not (path / "config.toml").is_file() or latest_task_checkpoint(path) is None:
        return None
    return path if cfg.agrees_with(config, cfg.load_toml(path / "config.toml")) else None


def run_one(config: dict, out: Path, name: str, resume: bool = True) -> dict:
    """Train one table entry; a run of the same config stopped after a finished task continues there.

    ``wall_s`` is this call's wall time; ``train_s`` sums the per-task training times over all tasks
    (they are kept in the task checkpoints, so a resumed run reports its whole training time).
    """
    from neuro.continual.workflow import resume_continual, train_continual

    config = cfg.apply_overrides(config, [f"run.name={name}", f"run.out_dir={out}", "run.progress=false"])
    echo = lambda *a: print(*a, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    earlier = stopped_run(config, out, name) if resume else None
    if earlier is not None:
        run, summary = resume_continual(earlier, progress=False, echo=echo)
    else:
        run, summary = train_continual(config, overwrite=True, progress=False, echo=echo)
    return {"name": name, "ACC": summary["ACC"], "BWT": summary["BWT"], "R": summary["R"],
            "wall_s": time.perf_counter() - t0, "train_s": summary["train_time_s"], "run": str(run.path),
            "resumed": earlier is not None}


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["rule"], r["strategy"]), []).append(r)
    lines = ["| rule | strategy | ACC (%) | BWT (%) | seeds: ACC / BWT (%) | wall time per run (s) |",
             "|---|---|---|---|---|---|"]
    for (rule, strategy), rs in groups.items():
        accs = [100 * r["ACC"] for r in rs]
        bwts = [100 * r["BWT"] for r in rs if r["BWT"] is not None]
        per = "; ".join(f"s{r['seed']}: {100 * r['ACC']:.2f} / "
                        + (f"{100 * r['BWT']:+.2f}" if r["BWT"] is not None else "-")
                        for r in rs)
        lines.append(f"| {rule} | {strategy} | {sum(accs) / len(accs):.2f} | "
                     + (f"{sum(bwts) / len(bwts):+.2f}" if bwts else "-")
                     + f" | {per} | {sum(r['wall_s'] for r in rs) / len(rs):.0f} |")
    return "\n".join(lines)


def partial(run_dir: str | Path) -> str:
    """Markdown lines: the R rows a (possibly stopped) continual run has logged, with per-task train time (s).

    BWT so far after ``n`` tasks: ``(1/(n-1)) sum_(j<n-1) (R[n-1][j] - R[j][j])`` (percent).
    """
    path = Path(run_dir)
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    tasks = [r for r in rows if r.get("event") == "task"]
    R = [r["R_row"] for r in tasks]
    lines = [f"{path.name}: {len(tasks)} tasks finished",
             "| after task | R row (%) | mean (%) | BWT so far (%) | train time (s) |", "|---|---|---|---|---|"]
    for i, r in enumerate(tasks):
        seen = R[i][: i + 1]
        bwt = sum(R[i][j] - R[j][j] for j in range(i)) / i if i else None
        lines.append(f"| {i + 1} ({r['task_name']}) | " + " ".join(f"{100 * v:.1f}" for v in seen)
                     + f" | {100 * sum(seen) / len(seen):.2f} | " + (f"{100 * bwt:+.2f}" if bwt is not None else "-")
                     + f" | {r['train_time_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="examples/pmnist_hlop.toml")
    p.add_argument("--preset", choices=("full", "reduced"), default="full")
    p.add_argument("--strategies", default="hlop,finetune,ewc,gpm,multitask")
    p.add_argument("--rules", default="bptt,ff,ff-mlp",
                   help="wrapped rules: bptt (every strategy), ff (spiking, HLOP only), ff-mlp (HLOP and finetune)")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default="runs/continual-table")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--restart", action="store_true",
                   help="train stopped runs again from task 0 (default: continue after their last finished task)")
    p.add_argument("--partial", nargs="+", metavar="RUN", help="print the R rows logged so far by these runs and exit")
    args = p.parse_args(argv)
    if args.partial:
        print("\n\n".join(partial(run) for run in args.partial))
        return 0
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "table.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    have = {(r["rule"], r["strategy"], r["seed"], r["preset"]) for r in done}
    base = cfg.load_toml(args.config)
    for rule in args.rules.split(","):
        for strategy in args.strategies.split(","):
            if rule not in ("bptt", "ff-mlp") and strategy != "hlop":
                continue
            if rule == "ff-mlp" and strategy not in ("hlop", "finetune"):
                continue
            for seed in (int(s) for s in args.seeds.split(",")):
                if (rule, strategy, seed, args.preset) in have:
                    continue
                overrides = (REDUCED if args.preset == "reduced" else []) + {"ff": FF, "ff-mlp": FF_MLP}.get(rule, [])
                overrides += [f"continual.strategy={strategy}", f"run.seed={seed}", f"continual.stream_seed={seed}"]
                config = cfg.apply_overrides(base, overrides + args.overrides)
                if rule == "ff-mlp":
                    config = as_mlp(config)
                name = f"{args.preset}-{rule}-{strategy}-s{seed}"
                print(f"== {name}", flush=True)
                result = run_one(config, out, name, resume=not args.restart)
                result.update(rule=rule, strategy=strategy, seed=seed, preset=args.preset,
                              overrides=overrides + args.overrides)
                with open(log, "a") as fh:
                    fh.write(json.dumps(result) + "\n")
                done.append(result)
    print(table([r for r in done if r["preset"] == args.preset]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
