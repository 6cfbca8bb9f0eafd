"""Sweeps (issue 16): grid x seeds, the summary statistics, and a Ray Tune sweep on a local Ray instance."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from conftest import REPO_ROOT

from neuro.errors import ConfigError
from neuro.sweep import mean_std, parse_grid, parse_seeds, summarize, sweep, trials_of

TINY = {  # a ReLU MLP on digits, trained by backprop: learns in one epoch, in seconds
    "data": {"dataset": "digits", "limit": 300},
    "model": {"kind": "mlp", "hidden": [32]},
    "rule": {"name": "bptt"},
    "train": {"epochs": 1, "batch_size": 32},
}


def test_grid_and_seeds_parse():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    grid = parse_grid(["optim.lr=[1e-3,3e-3]", "model.hidden=[[64],[128]]"])
    assert grid == [("optim.lr", [1e-3, 3e-3]), ("model.hidden", [[64], [128]])]
    trials = trials_of(grid, [0, 1])
    assert len(trials) == 8 and len({t.name for t in trials}) == 8
    for bad in ("optim.lr=1e-3", "lr=[1]", "optim.lr=[]"):
        with pytest.raises(ConfigError):
            parse_grid([bad])
    for bad in ("4-0", "a", "1,1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_summary_statistics_against_numpy():
    trials = trials_of([("optim.lr", [0.1, 0.2])], [0, 1, 2])
    acc = [0.5, 0.7, 0.6, 0.9, 0.8, 0.95]
    results = [{"test_accuracy": a, "val_accuracy": a - 0.1, "train_loss": 1 - a, "time_s": 1.0} for a in acc]
    results[4] = {"error": "RuntimeError: boom"}
    rows = summarize(trials, results)
    assert [r["n"] for r in rows] == [3, 2] and [r["failed"] for r in rows] == [0, 1]
    assert math.isclose(rows[0]["test_accuracy_mean"], np.mean(acc[:3]))
    assert math.isclose(rows[0]["test_accuracy_std"], np.std(acc[:3], ddof=1))
    assert math.isclose(rows[1]["test_accuracy_std"], np.std([0.9, 0.95], ddof=1))
    assert rows[1].get("best") and not rows[0].get("best")
    assert mean_std([1.0]) == (1.0, None)


def test_bad_grid_is_one_line_error(cli, tmp_path):
    res = cli("sweep", "--grid", "optim.lr=0.1", "--out", str(tmp_path))
    assert res.returncode == 2 and res.stderr.strip().startswith("error: --grid")
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_ray_sweep_two_settings_two_seeds(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'ray[tune]' (part of the test extra)")
    pytest.importorskip("ray.tune", reason="Ray Tune is not installed: pip install 'ray[tune]'")
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))  # Ray's worker processes import neuro from this checkout
    monkeypatch.setenv("TUNE_DISABLE_SIGINT_HANDLER", "1")  # leave Ctrl-C (and pytest-xdist's shutdown) alone
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = sweep(TINY, ["optim.lr=[0.0003, 0.01]"], "0-1", name="ray-sweep", out_dir=str(tmp_path),
                    ray_address="local", echo=lambda *a: None)
    finally:
        ray.shutdown()
    trials = [json.loads(line) for line in (out["path"] / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == 4, trials
    assert all("error" not in t for t in trials), trials
    expected = [(0.0003, 0), (0.0003, 1), (0.01, 0), (0.01, 1)]
    assert sorted((t["setting"]["optim.lr"], t["seed"]) for t in trials) == expected
    for t in trials:  # each number is the one its run logged
        records = [json.loads(line) for line in open(f"{t['run_dir']}/metrics.jsonl")]
        assert [r["accuracy"] for r in records if r["event"] == "test"] == [t["test_accuracy"]]
    rows = list(csv.DictReader(open(out["path"] / "summary.csv")))
    assert [r["setting"] for r in rows] == ["optim.lr=0.0003", "optim.lr=0.01"]
    for row, lr in zip(rows, (0.0003, 0.01)):
        accs = [t["test_accuracy"] for t in trials if t["setting"]["optim.lr"] == lr]
        assert int(row["n"]) == 2
        assert math.isclose(float(row["test_accuracy_mean"]), np.mean(accs))
        assert math.isclose(float(row["test_accuracy_std"]), np.std(accs, ddof=1), abs_tol=1e-12)
    # 0.01 trains a 32-unit MLP in one epoch; 0.0003 barely moves it
    assert float(rows[1]["test_accuracy_mean"]) > float(rows[0]["test_accuracy_mean"])
    assert (out["path"] / "report.html").read_text().count("seed") >= 1


def test_stopped_trial_continues_to_the_uninterrupted_result(tmp_path):
    """A trial stopped after an epoch (its checkpoint of the same settings on disk) continues there and ends
    with the uninterrupted trial's test accuracy; a changed setting, or restart, trains it again from epoch 0."""
    import torch

    from neuro import workflow
    from neuro.sweep import run_trial, trial_config

    base = {**TINY, "train": {"epochs": 3, "batch_size": 32}}
    trial = trials_of([("optim.lr", [3e-3])], [0])[0]
    whole = run_trial(trial_config(base, trial, str(tmp_path / "a")))
    stopped = trial_config({**base, "train": {"epochs": 1, "batch_size": 32}}, trial, str(tmp_path / "b"))
    run, _ = workflow.train(stopped, progress=False, echo=lambda *a, **k: None)
    (run.path / "config.toml").write_text((run.path / "config.toml").read_text().replace("epochs = 1", "epochs = 3"))
    resumed = run_trial(trial_config(base, trial, str(tmp_path / "b")))
    assert resumed["resumed"] and not whole["resumed"]
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    a = torch.load(tmp_path / "a" / trial.name / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / trial.name / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = trials_of([("optim.lr", [3e-3])], [0])[0]
    changed = run_trial(trial_config({**base, "model": {"kind": "mlp", "hidden": [16]}}, other, str(tmp_path / "b")))
    assert not changed["resumed"]
    assert not run_trial(trial_config(base, trial, str(tmp_path / "b")), resume=False)["resumed"]


def test_local_sweep_writes_learning_curves_of_every_trial(tmp_path):
    """curves.csv holds every trial's per-epoch validation accuracy exactly as its run logged it; the report
    shows the curves figure."""
    base = {**TINY, "data": {"dataset": "digits", "limit": 300, "val_fraction": 0.2},
            "train": {"epochs": 2, "batch_size": 32}}
    out = sweep(base, ["optim.lr=[0.0003, 0.01]"], "0", name="curves", out_dir=str(tmp_path), workers=1,
                echo=lambda *a: None)
    rows = list(csv.DictReader(open(out["path"] / "curves.csv")))
    assert len(rows) == 4  # 2 settings x 1 seed x 2 epochs
    for t in out["trials"]:
        logged = [r["val_accuracy"] for r in (json.loads(x) for x in open(f"{t['run_dir']}/metrics.jsonl"))
                  if r["event"] == "epoch"]
        assert [float(r["val_accuracy"]) for r in rows if r["label"] == t["label"]] == logged
    assert (out["path"] / "curves.png").is_file() and "curves.png" in (out["path"] / "report.html").read_text()
