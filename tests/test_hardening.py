"""Issue 22 hardening: every listed traceback is a one-line ``error:`` with exit 2; safe checkpoints; divergence stops.

CLI cases call ``neuro.cli.main.main`` in this process (``neuro`` fixture: exit status and stderr
as a subprocess would give them; an escaping exception fails the test), a few run ``python -m
neuro`` as a user would (``cli``).  The runs they need are trained once per module (tiny: 100
digits, 1 epoch).
"""

from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from neuro import workflow
from neuro.build import build_experiment
from neuro.errors import CheckpointError, NeuroError
from neuro.runs import Run
from neuro.trainer import CHECKPOINT_FORMAT, load_checkpoint, rng_state, set_rng_state

TINY_SNN = {"run": {"name": "snn", "seed": 1}, "data": {"dataset": "digits", "limit": 100},
            "model": {"hidden": [8], "time_steps": 4}, "optim": {"name": "adam", "lr": 0.01},
            "train": {"epochs": 1, "batch_size": 32}}
TINY_MLP = {**TINY_SNN, "run": {"name": "mlp", "seed": 1}, "model": {"kind": "mlp", "hidden": [8]}}
TINY_PHYS = {"run": {"name": "phys", "seed": 0}, "data": {"dataset": "digits", "limit": 60},
             "model": {"kind": "physical_mlp", "substrate": "wave:scattering", "physical": [16], "hidden": [8],
                       "substrate_options": {"noise": 0.01, "n_control": 8}},
             "rule": {"name": "mfff", "variant": "contrastive"}, "optim": {"name": "adam", "lr": 0.01},
             "train": {"epochs": 1, "batch_size": 32}}


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture
def neuro(capsys):
    """``neuro(*args)``: run the CLI in-process; returns a CompletedProcess (returncode, stdout, stderr)."""
    from neuro.cli.main import main

    def call(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["neuro", *args], code, out.out, out.err)

    return call


def _train(config: dict, out: Path) -> Path:
    config = {**config, "run": {**config["run"], "out_dir": str(out)}}
    run, _ = workflow.train(config, overwrite=True, progress=False, echo=lambda *a: None)
    return run.path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return {"snn": _train(TINY_SNN, out), "mlp": _train(TINY_MLP, out), "phys": _train(TINY_PHYS, out)}


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- CLI: one line, exit 2
def test_infinite_learning_rate_stops_with_a_clear_error(cli, tmp_path):
    proc = cli("train", "--set", "optim.lr=inf", "--set", "data.limit=100", "--set", "model.hidden=[8]",
               "--set", "model.time_steps=4", "--epochs", "1", "--out", str(tmp_path), "--no-progress")
    assert_one_line_error(proc, "learning rate is inf", "optim.lr must be a finite number")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("kind", ["mlp", "phys"])
def test_deploy_of_a_non_spiking_run_is_refused(neuro, runs, kind):
    name = {"mlp": "mlp", "phys": "physical_mlp"}[kind]
    assert_one_line_error(neuro("deploy", str(runs[kind]), "--twin-only"), f"is a {name} model",
                          "only spiking_mlp runs deploy")


def test_read_only_out_folder(neuro, tmp_path):
    if os.geteuid() == 0:  # root writes into a chmod 555 folder; sysfs refuses even root
        out = Path("/sys/neurohil-test-out")
        if not Path("/sys").is_dir():
            pytest.skip("running as root without /sys: no read-only folder to try")
        fragment = "/sys/neurohil-test-out"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        out, fragment = ro, "is not writable"
    proc = neuro("train", "--set", "data.limit=50", "--set", "model.hidden=[8]", "--epochs", "1", "--out", str(out),
               "--no-progress")
    assert_one_line_error(proc, fragment)


def test_out_that_is_a_file(neuro, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    assert_one_line_error(neuro("train", "--set", "data.limit=50", "--epochs", "1", "--out", str(f), "--no-progress"),
                          "is a file, not a folder")
    assert_one_line_error(neuro("demo", "--out", str(f / "sub")), "is a file, not a folder")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to simulate a full disk")
def test_full_disk_when_writing_the_checkpoint(neuro, tmp_path):
    run = tmp_path / "x"
    run.mkdir()
    (run / "checkpoint.pt.tmp").symlink_to("/dev/full")  # every write to it fails with ENOSPC
    proc = neuro("train", "--set", "data.limit=50", "--set", "model.hidden=[8]", "--set", "model.time_steps=4",
               "--epochs", "1", "--out", str(tmp_path), "--name", "x", "--overwrite", "--no-progress")
    assert_one_line_error(proc, "cannot write checkpoint", "No space left on device", "no checkpoint was written")
    assert not (run / "checkpoint.pt").exists() and not (run / "checkpoint.pt.tmp").exists()


def test_checkpoint_that_is_a_list(neuro, runs, tmp_path):
    run = _copy_run(runs["snn"], tmp_path / "r")
    torch.save([1, 2, 3], run / "checkpoint.pt")
    assert_one_line_error(neuro("eval", str(run)), "not a NeuroHIL checkpoint", "holds a list")


def test_checkpoint_that_lacks_keys(neuro, runs, tmp_path):
    run = _copy_run(runs["snn"], tmp_path / "r")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    del state["rng"], state["optimizer"]
    torch.save(state, run / "checkpoint.pt")
    assert_one_line_error(neuro("eval", str(run)), "the checkpoint lacks optimizer, rng")


def test_optimizer_changed_before_resume(neuro, runs, tmp_path):
    run = _copy_run(runs["snn"], tmp_path / "r")
    cfg = run / "config.toml"
    text = cfg.read_text()
    assert 'name = "adam"' in text
    cfg.write_text(text.replace('name = "adam"', 'name = "sgd"'))
    proc = neuro("train", "--resume", str(run), "--epochs", "2", "--no-progress")
    assert_one_line_error(proc, "optimizer state is for Adam, this run builds SGD", "optim.name changed")


def test_oversized_integer_in_vowdata(neuro, tmp_path):
    folder = tmp_path / "data" / "hillenbrand_vowels"
    folder.mkdir(parents=True)
    rows = [f"{g}{t:02d}{v} 300 120 700 1200 2500 3500 0 0 0 0 0 0 0 0 0"
            for g in "mw" for t in range(1, 9) for v in ("ae", "iy")]
    rows[3] = rows[3].replace(" 1200 ", " 99999999999999999999999 ")
    (folder / "vowdata.dat").write_text("\n".join(rows) + "\n")
    proc = neuro("train", "--set", "data.dataset=vowels", "--set", f"data.root={tmp_path / 'data'}", "--epochs", "1",
               "--out", str(tmp_path / "runs"), "--no-progress")
    assert_one_line_error(proc, "line 4 has an integer too large for int64 (99999999999999999999999)")


def test_emulate_with_negative_inputs(neuro):
    assert_one_line_error(neuro("devices", "emulate", "--n-in", "-1", "--duration", "1"), "--n-in must be >= 1")


def test_emulate_with_a_link_in_a_missing_folder(neuro):
    proc = neuro("devices", "emulate", "--link", "/nonexistent/dir/x", "--duration", "1")
    assert_one_line_error(proc, "folder /nonexistent/dir does not exist")


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-5"])
def test_deploy_timeout_must_be_finite_and_positive(neuro, runs, value):
    assert_one_line_error(neuro("deploy", str(runs["snn"]), "--timeout", value),
                          "--timeout must be a finite number of seconds > 0")


@pytest.mark.parametrize("value", [math.nan, math.inf, 0.0, -1.0])
def test_run_lava_refuses_bad_timeouts_before_starting(value):
    from devices.lava_backend import run_lava
    from simulators.errors import SettingError

    with pytest.raises(SettingError, match="timeout_s must be a finite number of seconds > 0"):
        run_lava(object(), np.zeros((2, 2)), timeout_s=value)


# ---------------------------------------------------------------- safe checkpoints
class _RunsCode:
    """Unpickling this calls ``exec`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_checkpoint_that_would_run_code_is_refused_and_the_code_does_not_run(cli, runs, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": _RunsCode(marker)}, evil)
    # the file really runs the code when unpickled the unsafe way (the test's own check, in a sandbox copy)
    torch.load(evil, weights_only=False)
    assert marker.read_text() == "ran"
    marker.unlink()
    with pytest.raises(CheckpointError, match=r"holds objects other than tensors and plain values \(builtins.exec\)"):
        load_checkpoint(evil)
    assert not marker.exists()
    run = _copy_run(runs["snn"], tmp_path / "shared-run")
    shutil.copy(evil, run / "checkpoint.pt")
    assert_one_line_error(cli("eval", str(run)), "refusing to unpickle it")
    assert_one_line_error(cli("train", "--resume", str(run), "--no-progress"), "refusing to unpickle it")
    assert not marker.exists()


def test_checkpoints_load_with_weights_only_true(runs):
    state = torch.load(runs["snn"] / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["format"] == CHECKPOINT_FORMAT and state["optimizer_name"] == "Adam"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(runs["phys"] / "checkpoint.pt") == []


def _draws():
    return (random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.standard_normal()),
            float(torch.rand(1)))


def test_rng_states_survive_a_safe_round_trip(tmp_path):
    random.seed(5)
    np.random.seed(7)
    torch.manual_seed(9)
    random.gauss(0, 1)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's state
    torch.save({"rng": rng_state()}, tmp_path / "s.pt")
    expected = _draws()
    _draws()  # move every generator on
    set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    assert _draws() == expected


def test_checkpoint_of_the_earlier_format_still_loads(runs, tmp_path):
    """Earlier checkpoints stored ``np.random.get_state()`` (an ndarray): read with NumPy arrays of numbers allowed."""
    state = torch.load(runs["snn"] / "checkpoint.pt", weights_only=True)
    np.random.seed(3)
    np.random.standard_normal()
    state["rng"]["numpy"] = np.random.get_state()
    expected = float(np.random.standard_normal())
    torch.save(state, tmp_path / "old.pt")
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    np.random.seed(0)
    set_rng_state(loaded["rng"])
    assert float(np.random.standard_normal()) == expected


def test_numpy_object_array_is_still_refused(tmp_path):
    torch.save({"x": np.array([print], dtype=object)}, tmp_path / "o.pt")
    with pytest.raises(CheckpointError, match="refusing to unpickle|cannot be read safely"):
        load_checkpoint(tmp_path / "o.pt")


# ---------------------------------------------------------------- divergence
def _poison_after_first_epoch(config: dict, tmp_path: Path):
    exp = build_experiment({**config, "train": {**config["train"], "epochs": 2}})
    run = Run.create(tmp_path, "d")
    trainer = exp.trainer(run, progress=False)
    trainer.epochs = 1
    trainer.fit()
    good = {k: v.clone() for k, v in exp.model.state_dict().items()}
    with torch.no_grad():
        next(exp.model.parameters())[0, 0] = float("nan")  # as an infinite step would leave it
    trainer.epochs = 2
    return trainer, run, good


@pytest.mark.parametrize("config, fragment", [
    (TINY_MLP, r"training diverged: the loss is nan at step \d+ \(epoch 2\)"),
    # spiking outputs stay finite (a NaN membrane never crosses the threshold): the parameters are checked
    (TINY_SNN, r"training diverged: parameter layers.0.linear.weight is not finite after epoch 2"),
])
def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, config, fragment):
    trainer, run, good = _poison_after_first_epoch(config, tmp_path)
    before = run.checkpoint_path.read_bytes()
    with pytest.raises(NeuroError, match=fragment + r".*the checkpoint of epoch 1 is kept .*lower optim.lr"):
        trainer.fit()
    assert run.checkpoint_path.read_bytes() == before
    state = load_checkpoint(run.checkpoint_path)
    assert state["epoch"] == 1
    assert all(torch.equal(state["model"][k], good[k]) for k in good)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to simulate a full disk")
def test_full_disk_keeps_the_previous_checkpoint(tmp_path):
    exp = build_experiment(TINY_SNN)
    run = Run.create(tmp_path, "f")
    trainer = exp.trainer(run, progress=False)
    trainer.fit()
    before = run.checkpoint_path.read_bytes()
    tmp = run.checkpoint_path.with_name("checkpoint.pt.tmp")
    tmp.symlink_to("/dev/full")
    with pytest.raises(CheckpointError, match="No space left on device; the previous checkpoint is intact"):
        trainer.save_checkpoint(run.checkpoint_path)
    assert run.checkpoint_path.read_bytes() == before and not tmp.exists()
