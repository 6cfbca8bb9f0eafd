"""The CLI as a user types it: help everywhere, a training round trip, one-line errors."""

from __future__ import annotations

import gzip
import json
import struct

import pytest
import torch

from neuro.cli.main import COMMAND_MODULES, build_parser


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_every_command_has_help(cli):
    out = cli("--help")
    assert out.returncode == 0
    names = _subcommands()
    assert len(names) == len(COMMAND_MODULES) or len(names) >= 5
    for name in names:
        assert name in out.stdout
        sub = cli(name, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "usage: neuro " + name in sub.stdout


def _assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for fragment in fragments:
        assert fragment in err, err


def test_unknown_config_key(cli, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[model]\nhiden = [64]\n")
    _assert_one_line_error(
        cli("train", str(cfg), "--out", str(tmp_path)), "unknown key 'model.hiden'", "did you mean 'hidden'"
    )


def test_wrong_type_and_bad_toml(cli, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[train]\nepochs = "ten"\n')
    _assert_one_line_error(cli("train", str(cfg)), "train.epochs must be an integer", "'ten'")
    cfg.write_text("[train\nepochs = 3\n")
    _assert_one_line_error(cli("train", str(cfg)), "is not valid TOML")
    _assert_one_line_error(cli("train", str(tmp_path / "nope.toml")), "nope.toml not found")
    _assert_one_line_error(
        cli("train", "--set", "model.lif.reset=hard"), "model.lif.reset = 'hard' is not one of subtract, zero"
    )
    _assert_one_line_error(cli("train", "--rule", "backprop"), "rule.name = 'backprop' is not one of")


def test_missing_mnist_file(cli, tmp_path):
    (tmp_path / "mnist").mkdir()
    proc = cli("train", "--dataset", "mnist", "--out", str(tmp_path / "runs"), env={"NEUROHIL_DATA": str(tmp_path)})
    _assert_one_line_error(proc, "train-images-idx3-ubyte.gz")


def _write_idx(path, magic, dims, payload: bytes):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    with gzip.open(path, "wb") as fh:
        fh.write(header + payload)


def test_corrupt_idx_file(cli, tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    # a label file's magic where an image file belongs
    _write_idx(d / "train-images-idx3-ubyte.gz", 0x00000801, [10], bytes(10))
    _write_idx(d / "train-labels-idx1-ubyte.gz", 0x00000801, [10], bytes(10))
    _write_idx(d / "t10k-images-idx3-ubyte.gz", 0x00000803, [10, 28, 28], bytes(7840))
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", 0x00000801, [10], bytes(10))
    proc = cli("train", "--dataset", "mnist", "--out", str(tmp_path / "runs"), env={"NEUROHIL_DATA": str(tmp_path)})
    _assert_one_line_error(proc, "train-images-idx3-ubyte.gz", "magic")
    # truncated gzip
    raw = (d / "t10k-images-idx3-ubyte.gz").read_bytes()
    _write_idx(d / "train-images-idx3-ubyte.gz", 0x00000803, [10, 28, 28], bytes(7840))
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    proc = cli("train", "--dataset", "mnist", "--out", str(tmp_path / "runs"), env={"NEUROHIL_DATA": str(tmp_path)})
    _assert_one_line_error(proc, "t10k-images-idx3-ubyte.gz")


def test_train_eval_report_resume_round_trip(cli, tmp_path):
    out = tmp_path / "runs"
    common = ["--set", "data.limit=120", "--set", "model.hidden=[16]", "--set", "model.time_steps=6", "--no-progress"]
    proc = cli("train", "--name", "a", "--epochs", "2", "--out", str(out), *common)
    assert proc.returncode == 0, proc.stderr
    run = out / "a"
    for name in (
        "config.toml",
        "metrics.jsonl",
        "checkpoint.pt",
        "curves.png",
        "raster.png",
        "rates.png",
        "report.html",
        "provenance.json",
        "console.log",
    ):
        assert (run / name).is_file(), name
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["seed"] == 0 and prov["versions"]["torch"] and prov["versions"]["neurohil"] == "0.1.0"
    assert set(prov["git"]) == {"commit", "dirty"} and prov["machine"]["logical_cores"] >= 1
    assert "test accuracy" in (run / "console.log").read_text()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["epoch", "epoch", "test"]
    html = (run / "report.html").read_text()
    assert "curves.png" in html and "raster.png" in html

    ev = cli("eval", str(run), "--split", "test")
    assert ev.returncode == 0, ev.stderr
    acc = float(ev.stdout.split("accuracy ")[1].split("%")[0])
    assert acc == pytest.approx(100 * records[-1]["accuracy"], abs=1e-6 + 0.005)

    # train 1 epoch, then resume to 2: same weights as the 2-epoch run above
    assert cli("train", "--name", "b", "--epochs", "1", "--out", str(out), *common).returncode == 0
    res = cli("train", "--resume", "b", "--out", str(out), "--epochs", "2", "--no-progress")  # by name under --out
    assert res.returncode == 0, res.stderr
    wa = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    wb = torch.load(out / "b" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    records_b = [json.loads(line) for line in (out / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records_b if r["event"] == "epoch"] == [1, 2]

    # resuming a finished run says how to train further
    fin = cli("train", "--resume", str(out / "b"), "--no-progress")
    assert fin.returncode == 0 and "already finished its 2 epochs" in fin.stdout and "--epochs 12" in fin.stdout

    rep = cli("report", str(run))
    assert rep.returncode == 0 and "report.html" in rep.stdout
    html = (run / "report.html").read_text()
    assert "Configuration (resolved; config.toml)" in html and "torch" in html and "seed" in html
    _assert_one_line_error(cli("eval", str(tmp_path)), "no run at", "no config.toml")


def test_switching_the_rule_drops_the_old_rules_settings_and_unset_removes_one(cli, tmp_path):
    cfg = tmp_path / "phys.toml"
    cfg.write_text(
        '[data]\ndataset = "digits"\nlimit = 100\n[model]\nkind = "physical_mlp"\nphysical = [16]\n'
        'hidden = [16]\n[rule]\nname = "mfff"\nvariant = "contrastive"\n[train]\nepochs = 1\n'
    )
    common = ["--out", str(tmp_path / "runs"), "--no-progress"]
    proc = cli("train", str(cfg), "--rule", "insilico", *common)
    assert proc.returncode == 0, proc.stderr
    assert "note: rule.name is now 'insilico' (was 'mfff'): dropped rule.variant" in proc.stdout
    proc = cli("train", str(cfg), "--unset", "rule.variant", *common)
    assert proc.returncode == 0, proc.stderr
    _assert_one_line_error(cli("train", str(cfg), "--unset", "rule.nothing", *common), "--unset 'rule.nothing'")


def test_info_lists_backends(cli):
    proc = cli("info")
    assert proc.returncode == 0, proc.stderr
    assert "lif-native" in proc.stdout and "torch 2.13" in proc.stdout


def test_library_warnings_reach_stderr_as_named_lines():
    import subprocess
    import sys

    code = (
        "import logging; from neuro.cli.main import configure_logging; configure_logging(); "
        "logging.getLogger('devices.serial').info('not shown'); "
        "logging.getLogger('devices.serial').warning('reconnected after port loss')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "devices.serial: reconnected after port loss"
    assert "not shown" not in out.stderr
