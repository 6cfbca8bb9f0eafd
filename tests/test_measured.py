"""The ``measured`` substrate family: folders of measured pairs, fitted forward models, noise
estimate and re-injection, drift, files, CLI, and that model-free training never differentiates it.

Reference numbers on the PhyLL acoustic data (``neuro substrate fit ../shared/data/phyll_acoustic``,
seed 0, one thread; not re-run here, it takes about a minute): validation / test RMSE linear
0.0349 / 0.0361, quadratic 0.0267 / 0.0262, MLP 0.0199 / 0.0173 (chosen); estimated noise 0.0182
(RMS over outputs), test RMSE / noise 0.95.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from neuro.build import build_experiment
from neuro.cli.main import main as cli
from simulators.errors import SettingError
from simulators.measured import (
    FittedDevice,
    MeasuredOptions,
    MeasuredPairs,
    MeasuredSubstrate,
    estimate_noise,
    fit_device,
    load_pairs,
    model_forward,
)
from simulators.substrate import SUBSTRATE_FAMILIES, open_substrate_spec, substrate_names

PHYLL = Path(__file__).resolve().parents[2] / "shared" / "data" / "phyll_acoustic"


# ------------------------------------------------------------------ synthetic devices
def quadratic_truth(x: torch.Tensor) -> torch.Tensor:
    """A known device: three outputs, quadratic in the 4 inputs (so the quadratic class is exact)."""
    return torch.stack(
        [(x[:, 0] + 0.5 * x[:, 1]) ** 2, x[:, 2] * x[:, 3] + 0.3 * x[:, 0], 1.0 - x[:, 1] ** 2 + 0.2 * x[:, 3]], 1
    )


def write_pairs(
    folder: Path, n: int, sigma: float = 0.05, seed: int = 0, header: str | None = "zeros"
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 4, generator=g, dtype=torch.float64)
    y = quadratic_truth(x) + sigma * torch.randn(n, 3, generator=g, dtype=torch.float64)
    folder.mkdir(parents=True, exist_ok=True)
    for name, t in (("x_data.csv", x), ("y_data.csv", y)):
        lines = [",".join(repr(float(v)) for v in row) for row in t]
        if header == "zeros":
            lines.insert(0, ",".join("0" for _ in range(t.shape[1])))
        elif header == "names":
            lines.insert(0, ",".join(f"c{j}" for j in range(t.shape[1])))
        (folder / name).write_text("\n".join(lines) + "\n")
    return x.float(), y.float()


@pytest.fixture(scope="module")
def device_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dev") / "toy_device"
    write_pairs(folder, 1000, sigma=0.02)
    return folder


@pytest.fixture(scope="module")
def fitted(device_dir) -> FittedDevice:
    return fit_device(load_pairs(device_dir), seed=0, classes=("linear", "quadratic"), noise=True)


# ------------------------------------------------------------------ folders
@pytest.mark.parametrize("header", ["zeros", "names", None])
def test_load_pairs_reads_the_format_and_splits_by_position(tmp_path, header):
    x, y = write_pairs(tmp_path / "d", 1000, header=header)
    p = load_pairs(tmp_path / "d")
    assert (p.n_in, p.n_out, p.x.shape[0]) == (4, 3, 1000)
    assert torch.allclose(p.x, x) and torch.allclose(p.y, y)
    assert p.split() == {"train": slice(0, 900), "val": slice(900, 930), "test": slice(930, 1000)}
    # the authors' split of 10,000 pairs
    ten = MeasuredPairs(torch.zeros(10000, 1), torch.zeros(10000, 1), "n", "s", "m")
    assert ten.split() == {"train": slice(0, 9000), "val": slice(9000, 9300), "test": slice(9300, 10000)}


def _one_line_error(folder) -> str:
    with pytest.raises(SettingError) as info:
        load_pairs(folder)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 300
    return msg


def test_corrupt_or_mismatched_folders_are_one_line_errors(tmp_path):
    assert "does not exist" in _one_line_error(tmp_path / "nowhere")
    write_pairs(tmp_path / "a", 100)
    (tmp_path / "a" / "y_data.csv").unlink()
    assert "has no y_data.csv or y.csv" in _one_line_error(tmp_path / "a")
    write_pairs(tmp_path / "b", 100)
    lines = (tmp_path / "b" / "y_data.csv").read_text().splitlines()
    (tmp_path / "b" / "y_data.csv").write_text("\n".join(lines[:-3]) + "\n")
    assert "x_data.csv has 100 samples but y_data.csv has 97" in _one_line_error(tmp_path / "b")
    write_pairs(tmp_path / "c", 100)
    lines = (tmp_path / "c" / "x_data.csv").read_text().splitlines()
    lines[5] = lines[5] + ",0.5"
    (tmp_path / "c" / "x_data.csv").write_text("\n".join(lines))
    assert "line 6 has 5 columns" in _one_line_error(tmp_path / "c")
    write_pairs(tmp_path / "d", 100)
    lines = (tmp_path / "d" / "y_data.csv").read_text().splitlines()
    lines[7] = "0.1,oops,0.3"
    (tmp_path / "d" / "y_data.csv").write_text("\n".join(lines))
    assert "line 8 has a cell that is not a number ('oops')" in _one_line_error(tmp_path / "d")
    write_pairs(tmp_path / "e", 100)
    lines = (tmp_path / "e" / "x_data.csv").read_text().splitlines()
    lines[2] = "nan,0.1,0.2,0.3"
    (tmp_path / "e" / "x_data.csv").write_text("\n".join(lines))
    assert "non-finite" in _one_line_error(tmp_path / "e")
    write_pairs(tmp_path / "f", 10)
    assert "at least 40" in _one_line_error(tmp_path / "f")
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "x_data.csv").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "g" / "y_data.csv").write_text("1\n")
    assert "cannot be read as text" in _one_line_error(tmp_path / "g")


def test_cli_fit_error_is_one_line_exit_2(tmp_path, capsys):
    write_pairs(tmp_path / "bad", 100)
    (tmp_path / "bad" / "x_data.csv").write_text("1,2\n3\n")
    assert cli(["substrate", "fit", str(tmp_path / "bad"), "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: measured data file") and "\n" not in err


# ------------------------------------------------------------------ fitting
def test_quadratic_class_recovers_a_quadratic_device_and_the_noise(tmp_path):
    """On a device whose mean response is quadratic, the quadratic class is exact: its test RMSE and
    the learning-curve noise estimate both approach the true noise std (0.05)."""
    write_pairs(tmp_path / "q", 4000, sigma=0.05, seed=3)
    p = load_pairs(tmp_path / "q")
    dev = fit_device(p, seed=0, classes=("linear", "quadratic"))
    assert dev.kind == "quadratic"
    assert dev.meta["classes"]["linear"]["val_rmse"] > 1.5 * dev.meta["classes"]["quadratic"]["val_rmse"]
    assert dev.meta["test_rmse"] == pytest.approx(0.05, rel=0.15)
    assert dev.meta["noise_rms"] == pytest.approx(0.05, rel=0.15)
    assert all(s == pytest.approx(0.05, rel=0.25) for s in dev.meta["noise_sigma"])
    assert dev.meta["rmse_over_noise"] == pytest.approx(dev.meta["test_rmse"] / dev.meta["noise_rms"])
    # the test RMSE reported is that of the kept model on the last 7 % of the pairs
    sp = p.split()["test"]
    assert dev.meta["test_rmse"] == pytest.approx(
        float((dev.predict(p.x[sp]) - p.y[sp]).pow(2).mean().sqrt()), rel=1e-5
    )


def test_noise_estimate_is_zero_for_a_noise_free_device():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1200, 4, generator=g)
    est = estimate_noise("quadratic", x, quadratic_truth(x))
    assert float(est["sigma"].max()) < 1e-3


def test_fit_is_deterministic_by_seed(device_dir):
    p = load_pairs(device_dir)
    settings = {"hidden": [16], "epochs": 3}
    a = fit_device(p, seed=0, classes=("mlp",), settings=settings, noise=False)
    b = fit_device(p, seed=0, classes=("mlp",), settings=settings, noise=False)
    c = fit_device(p, seed=1, classes=("mlp",), settings=settings, noise=False)
    assert a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert a.meta == b.meta
    assert not torch.equal(a.tensors["W0"], c.tensors["W0"])


def test_mlp_forward_matches_an_independent_evaluation():
    g = torch.Generator().manual_seed(0)
    t = {
        "mu": torch.rand(3, generator=g),
        "sd": torch.rand(3, generator=g) + 0.5,
        "W0": torch.randn(5, 3, generator=g),
        "b0": torch.randn(5, generator=g),
        "W1": torch.randn(2, 5, generator=g),
        "b1": torch.randn(2, generator=g),
    }
    x = torch.rand(4, 3, generator=g)
    u = (x - t["mu"]) / t["sd"]
    z = u @ t["W0"].T + t["b0"]
    ref = (z / (1 + torch.exp(-z))) @ t["W1"].T + t["b1"]
    assert torch.allclose(model_forward("mlp", t, x), ref, atol=1e-6)
    # quadratic features: [1, u, u_i u_j (i <= j)] for 2 inputs is [1, u0, u1, u0^2, u0 u1, u1^2]
    tq = {"mu": torch.zeros(2), "sd": torch.ones(2), "W": torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])}
    xq = torch.tensor([[0.5, -2.0]])
    assert float(model_forward("quadratic", tq, xq)) == pytest.approx(1 + 1 - 6 + 1 - 5 + 24)


def test_saved_model_is_plain_and_round_trips(tmp_path, fitted):
    path = fitted.save(tmp_path / "m.pt")
    blob = torch.load(path, weights_only=True)  # no pickled code
    assert blob["format"] == "neurohil-measured-v1" and isinstance(blob["meta"], str)
    back = FittedDevice.load(path)
    x = torch.rand(7, 4)
    assert back.kind == fitted.kind and torch.equal(back.predict(x), fitted.predict(x))
    assert back.meta == json.loads(json.dumps(fitted.meta))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(SettingError, match=r"cannot be read .*neuro substrate fit") as info:
        FittedDevice.load(tmp_path / "junk.pt")
    assert "\n" not in str(info.value)
    torch.save({"format": "neurohil-measured-v1", "kind": "linear", "meta": "{}", "tensors": {}}, tmp_path / "empty.pt")
    with pytest.raises(SettingError, match="is damaged"):
        FittedDevice.load(tmp_path / "empty.pt")


def test_cli_fit_writes_model_plot_and_report(tmp_path, device_dir, capsys):
    out = tmp_path / "fit" / "model.pt"
    rc = cli(["substrate", "fit", str(device_dir), "--out", str(out), "--classes", "linear", "quadratic"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "fitted quadratic to 1000 pairs of toy_device" in text
    report = json.loads((tmp_path / "fit" / "fit_report.json").read_text())
    assert report["kind"] == "quadratic" and len(report["test_rmse_per_output"]) == 3
    assert (tmp_path / "fit" / "parity.png").stat().st_size > 10_000
    assert "parity.png" in (tmp_path / "fit" / "fit_report.html").read_text()
    sub = open_substrate_spec(f"measured:{out}", 4, 3, options={"noise": 0.0})
    x = torch.rand(5, 4)
    assert torch.allclose(sub.forward(x), FittedDevice.load(out).predict(x).clamp(min=report["output_floor"]))


# ------------------------------------------------------------------ the substrate
def test_registered_emulatable_and_sizes_checked(tmp_path, fitted):
    assert "measured:<name|path>" in substrate_names(emulatable_only=True)
    assert SUBSTRATE_FAMILIES.get("measured").meta["emulatable"]
    path = fitted.save(tmp_path / "m.pt")
    with pytest.raises(SettingError, match=r"has 3 outputs, but the layer asks for 5") as info:
        open_substrate_spec(f"measured:{path}", 4, 5)
    assert "\n" not in str(info.value)
    with pytest.raises(SettingError, match=r"has 4 inputs; n_in 6"):
        open_substrate_spec(f"measured:{path}", 6, 3)
    with pytest.raises(SettingError, match="no such model file or data folder"):
        open_substrate_spec("measured:no_such_device_here", 4, 3)
    with pytest.raises(SettingError, match="unknown option 'nosie'"):
        open_substrate_spec(f"measured:{path}", 4, 3, options={"nosie": 1})
    sub = open_substrate_spec(f"measured:{path}", 2, 3)  # two device inputs become control inputs
    assert sub.n_control == 2 and sub.get_params()["control"].shape == (2,)


def test_noise_is_reinjected_with_the_estimated_std(fitted):
    sub = MeasuredSubstrate(fitted, 4, 3, MeasuredOptions(seed=5))
    x = torch.full((20000, 4), 0.5)
    y = sub.forward(x)
    clean = sub.exact_forward(x[:1])
    resid = y - clean
    sigma = fitted.sigma
    assert sigma.min() > 0.01
    assert torch.allclose(resid.std(0), sigma, rtol=0.05)
    assert torch.allclose(resid.mean(0), torch.zeros(3), atol=4 * float(sigma.max()) / math.sqrt(20000))
    # same seed, same measurements; noise 0: exactly the fitted model
    again = MeasuredSubstrate(fitted, 4, 3, MeasuredOptions(seed=5))
    assert torch.equal(again.forward(x), y)
    quiet = MeasuredSubstrate(fitted, 4, 3, MeasuredOptions(noise=0.0))
    xs = torch.rand(9, 4)
    assert torch.equal(quiet.forward(xs), fitted.predict(xs).clamp(min=fitted.meta["output_floor"]))


def test_drift_of_the_hidden_mixing_follows_device_time(fitted):
    opts = MeasuredOptions(drift=0.05, drift_tick=10, perturb_at=(35,), perturb_scale=0.5, noise=0.0, seed=2)
    a, b = MeasuredSubstrate(fitted, 4, 3, opts), MeasuredSubstrate(fitted, 4, 3, opts)
    x = torch.rand(1, 4) * 0.5 + 0.25
    before = a.exact_forward(x)
    for _ in range(4):
        a.forward(torch.rand(10, 4))  # 40 samples
    b.forward(torch.rand(3, 4))
    b.advance_time(37)  # same device time, other batch sizes
    assert a.clock == b.clock == 40
    assert torch.equal(a._state.hidden["M"], b._state.hidden["M"])
    assert a._state.ticks == 4 and a._state.perturbations == 1
    m = a._state.hidden["M"]
    # 4 steps of 0.05/2 and one of 0.5/2 (s = 1/sqrt(4)): the mixing is visibly off identity, not wildly
    dev = float((m - torch.eye(4)).pow(2).mean().sqrt())
    assert 0.1 < dev < 0.6
    assert not torch.allclose(a.exact_forward(x), before)
    c = MeasuredSubstrate(fitted, 4, 3, MeasuredOptions(noise=0.0))
    c.advance_time(10_000)
    assert torch.equal(c._state.hidden["M"], torch.eye(4))  # no drift asked: none


def test_inputs_out_of_range_and_state_round_trip(fitted):
    sub = MeasuredSubstrate(fitted, 4, 3, MeasuredOptions(drift=0.1, drift_tick=4, seed=1))
    with pytest.raises(Exception, match=r"inputs must lie in \[0.0, 1.0\]"):
        sub.forward(torch.full((1, 4), 1.5))
    sub.forward(torch.rand(9, 4))
    state = sub.state_dict()
    nxt = sub.forward(torch.full((3, 4), 0.3))
    other = MeasuredSubstrate(fitted, 4, 3, MeasuredOptions(drift=0.1, drift_tick=4, seed=1))
    other.load_state_dict(state)
    assert torch.equal(other.forward(torch.full((3, 4), 0.3)), nxt)


# ------------------------------------------------------------------ training on it
def _config(path: Path, rule: dict) -> dict:
    return {
        "run": {"name": "m", "seed": 0, "progress": False},
        "data": {"dataset": "digits", "limit": 64},
        "model": {
            "kind": "physical_mlp",
            "substrate": f"measured:{path}",
            "physical": [3],
            "hidden": [4, 4],
            "input_pad": 0,
        },
        "rule": rule,
        "optim": {"name": "adam", "lr": 1e-2},
        "train": {"epochs": 1, "batch_size": 32},
    }


def test_mfff_never_differentiates_the_measured_device_pat_uses_it_as_twin(tmp_path):
    """A device with 4 + 64 + 10 inputs would be odd; use the digits block widths (64 + 10 -> 3, then 4 -> 3)
    through two fitted devices of the right widths, written as files."""
    g = torch.Generator().manual_seed(0)
    paths = []
    for n_in in (74, 4):
        x = torch.rand(200, n_in, generator=g)
        y = torch.stack([x[:, :3].sum(1), x[:, 1:].mean(1), (x[:, 0] - 0.5) ** 2], 1) + 0.01 * torch.randn(
            200, 3, generator=g
        )
        dev = fit_device(MeasuredPairs(x, y, f"toy{n_in}", "mem", "0"), classes=("linear",), noise=False)
        paths.append(dev.save(tmp_path / f"d{n_in}.pt"))
    for rule, expect_exact in (
        ({"name": "mfff", "variant": "supervised"}, False),
        ({"name": "mfff"}, False),
        ({"name": "pat", "twin": "exact"}, True),
    ):
        cfg = _config(paths[0], rule)
        cfg["model"]["substrates"] = [f"measured:{p}" for p in paths]
        exp = build_experiment(cfg)
        subs = [layer.substrate for layer in exp.model.physical_layers()]
        assert all(isinstance(s, MeasuredSubstrate) for s in subs)
        exp.trainer(None, progress=False).fit()
        assert all(s.grad_touches == 0 for s in subs)
        assert all(s.n_evals > 0 for s in subs)
        assert (sum(s.exact_calls for s in subs) > 0) == expect_exact


@pytest.mark.skipif(not (PHYLL / "x_data.csv").is_file(), reason="../shared/data/phyll_acoustic is not here")
def test_phyll_acoustic_folder_matches_its_source_note():
    """The facts of SOURCE.txt: md5s, 10,000 pairs of 20 x 20, a header of zeros skipped, ranges."""
    md5 = {f: hashlib.md5((PHYLL / f).read_bytes()).hexdigest() for f in ("x_data.csv", "y_data.csv")}
    assert md5 == {"x_data.csv": "8c578965bd26108221e9340507bb6fd2", "y_data.csv": "5fcb38a763cf817dd5d0d5d3ce56a2d0"}
    p = load_pairs(PHYLL)
    assert p.x.shape == (10000, 20) and p.y.shape == (10000, 20)
    assert 0 <= float(p.x.min()) and float(p.x.max()) <= 1 and 0 <= float(p.y.min()) and float(p.y.max()) < 1.94
    assert p.split()["test"] == slice(9300, 10000)


def test_runs_behind_the_serial_emulator(tmp_path, fitted):
    """The measured substrate served by the emulated firmware over a pty measures what it measures in-process."""
    from devices.emulator import Emulator
    from devices.serial import SerialDevice

    path = fitted.save(tmp_path / "m.pt")
    served = open_substrate_spec(f"measured:{path}", 3, 3, seed=4, options={"drift": 0.01, "drift_tick": 4})
    reference = open_substrate_spec(f"measured:{path}", 3, 3, seed=4, options={"drift": 0.01, "drift_tick": 4})
    with Emulator(served, link=tmp_path / "ttyNH0") as emu, SerialDevice(emu.port, timeout=0.5) as dev:
        assert (dev.n_in, dev.n_out, dev.input_range) == (3, 3, (0.0, 1.0))
        assert dev.describe()["device"]["kind"] == "measured:toy_device"
        dev.set_params({"control": torch.tensor([0.25])})
        reference.set_params({"control": torch.tensor([0.25])})
        for _ in range(3):
            x = torch.rand(5, 3)
            assert torch.allclose(dev.forward(x), reference.forward(x), atol=1e-6)
        assert served.clock == reference.clock == 15
