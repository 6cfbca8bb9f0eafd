"""Against the real Lava: the twin is bit-exact with Loihi2SimCfg(select_tag="fixed_pt"); deployment; errors.

These run Lava in ``.venv-lava`` through devices/lava_backend.py.  They skip, with the reason, only
when that environment is absent.  Each test batches its cases into one or two Lava runs.
"""

from __future__ import annotations

import json
import os

import nir
import numpy as np
import pytest
import torch

from devices.base import Device
from devices.lava_backend import LavaLoihi, live_group_members, run_lava
from devices.lava_env import lava_python
from neuro.errors import DeviceError, IncompatibleError
from neuro.export.loihi import LoihiExport, LoihiFixedPointSpec, LoihiLayerSpec
from simulators import loihi as fx

pytestmark = [
    pytest.mark.lava,
    pytest.mark.skipif(
        not lava_python().exists(),
        reason=f"no Lava environment at {lava_python()} (create .venv-lava: make setup-lava)",
    ),
]


def _random_export(seed: int, sizes: list[int], bias: bool, delta_synapse_layer: int | None = None) -> LoihiExport:
    g = torch.Generator().manual_seed(seed)
    layers, specs = [], []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        du = int(torch.randint(0, 4096, (1,), generator=g))
        p = fx.LoihiLayerParams(
            weights=2 * torch.randint(-128, 128, (b, a), generator=g),
            weight_exp=int(torch.randint(-3, 4, (1,), generator=g)),
            du=4095 if k == delta_synapse_layer else du,  # 4095: no current memory (exported as nir.LIF)
            dv=int(torch.randint(0, 1000, (1,), generator=g)),
            vth=int(torch.randint(20, 3000, (1,), generator=g)),
            bias_mant=torch.randint(-4096, 4096, (b,), generator=g) if bias else torch.zeros(b, dtype=torch.int64),
            bias_exp=torch.tensor(int(torch.randint(0, 4, (1,), generator=g)) if bias else 0),
        )
        layers.append(p)
        specs.append(
            LoihiLayerSpec(f"fc{k}", f"lif{k}", a, b, p.weight_exp, p.du, p.dv, p.vth, int(p.bias_exp), 0.01, 1.0)
        )
    return LoihiExport(LoihiFixedPointSpec(dt=1e-3, time_steps=0, layers=specs), layers)


def _assert_equal_traces(twin, lava, layers, where):
    for k in range(layers):
        for name, a, b in (
            ("spikes", twin.spikes[k], lava.spikes[k]),
            ("u", twin.currents[k], lava.currents[k]),
            ("v", twin.voltages[k], lava.voltages[k]),
        ):
            a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
            assert a.shape == b.shape, (where, k, name)
            if not torch.equal(a.to(b.dtype), b):
                t = int(torch.nonzero(a.to(b.dtype) != b)[0, 0])
                raise AssertionError(f"{where}: layer {k} {name} first differs at step {t}")


@pytest.mark.parametrize("sizes, bias, seed, delta", [([12, 9, 5], True, 0, None), ([30, 20, 10, 4], False, 1, 1)])
def test_pipelined_run_is_bit_exact_with_lava_lif(sizes, bias, seed, delta):
    """Plain LIF (reset to zero), one continuous stream: every step, every layer, spikes, u and v."""
    export = _random_export(seed, sizes, bias, delta)
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(80, 1, sizes[0], generator=g) < 0.3
    twin = fx.run_network(x, export.layers, pipelined=True)
    res = run_lava(export, x[:, 0], record_state=True)
    assert res.info["neuron"] == "LIF" and "fixed_pt" in res.info["run_config"]
    assert all(int(s.sum()) > 0 for s in twin.spikes)  # every layer spikes: the comparison is not vacuous
    squeeze = fx.LoihiTrace(
        [s[:, 0] for s in twin.spikes], [u[:, 0] for u in twin.currents], [v[:, 0] for v in twin.voltages]
    )
    _assert_equal_traces(squeeze, res, len(sizes) - 1, f"LIF {sizes} bias={bias}")


def test_wrap_around_and_saturation_edges_are_bit_exact_with_lava():
    """Weights and exponents large enough to wrap the 24-bit current and saturate the voltage."""
    w = torch.tensor([[254, 254, 254, 254], [-256, -256, -256, -256], [254, -256, 254, 254]])
    layer = fx.LoihiLayerParams(
        w, weight_exp=7, du=10, dv=0, vth=fx.VTH_MAX, bias_mant=torch.tensor([4095, -4096, 0]), bias_exp=torch.tensor(7)
    )
    spec = LoihiFixedPointSpec(
        dt=1e-3, time_steps=0, layers=[LoihiLayerSpec("fc0", "lif0", 4, 3, 7, 10, 0, fx.VTH_MAX, 7, 1.0, 1.0)]
    )
    export = LoihiExport(spec, [layer])
    g = torch.Generator().manual_seed(5)
    x = torch.rand(60, 1, 4, generator=g) < 0.7
    twin = fx.run_network(x, [layer], pipelined=True)
    u, v = twin.currents[0][:, 0], twin.voltages[0][:, 0]
    assert int(((u[1:] - u[:-1]).abs() > fx.UV_MAX).sum()) > 0  # wrapped at least once
    assert int((v.abs() == fx.UV_MAX - 1).sum()) > 0  # saturated at least once
    res = run_lava(export, x[:, 0], record_state=True)
    squeeze = fx.LoihiTrace([twin.spikes[0][:, 0]], [u], [v])
    _assert_equal_traces(squeeze, res, 1, "edges")


@pytest.mark.parametrize("sizes, bias, seed", [([16, 12, 6], True, 2), ([40, 16, 6], False, 4)])
def test_batched_samples_with_lifreset_equal_the_local_time_twin(sizes, bias, seed):
    """Many samples in one Lava run (LIFReset, periodic reset): each sample equals the twin's independent run."""
    export = _random_export(seed, sizes, bias)
    g = torch.Generator().manual_seed(200 + seed)
    x = torch.rand(9, 12, sizes[0], generator=g) < 0.35
    twin = fx.run_network(x, export.layers, record_state=True)
    with LavaLoihi(export, record_state=True) as device:  # the Device contract over run_lava_batch
        assert isinstance(device, Device)
        out = device.forward(x)
        res = device.last_result
    assert torch.equal(out, twin.spikes[-1].float()) and device.health()["runs"] == 1
    assert res.info["neuron"] == "LIFReset"
    assert all(int(s.sum()) > 0 for s in twin.spikes)
    _assert_equal_traces(twin, res, len(sizes) - 1, f"LIFReset {sizes} bias={bias}")


# ------------------------------------------------------------------ trained network
@pytest.mark.slow
def test_trained_digits_network_deploys_bit_exact_on_100_samples_and_loses_at_most_one_point(tmp_path, capsys):
    """Train the demo's digits network, then `neuro deploy RUN --target loihi-sim --samples 100`."""
    from neuro import workflow
    from neuro.cli.main import main
    from neuro.demo import example_config
    from neuro.deploy import encode_inputs, float_trace_from_spikes, scores_from_spikes
    from neuro.workflow import load_run

    config = example_config("digits_loihi.toml")  # the demo's network, trained a little longer
    config["run"]["out_dir"] = str(tmp_path / "runs")
    config["train"]["epochs"] = 8
    run, test = workflow.train(config, overwrite=True, progress=False, echo=lambda *a: None)
    assert test["accuracy"] > 0.9
    capsys.readouterr()
    assert main(["deploy", str(run.path), "--target", "loihi-sim", "--samples", "100"]) == 0
    stdout = capsys.readouterr().out
    assert "accuracy on 100 test samples: float" in stdout
    assert "twin == Lava: spikes True, voltages True, currents True" in stdout
    out = run.path / "deploy-loihi" / "loihi-sim"
    for name in (
        "network.nir",
        "fixed_point.json",
        "fixed_point.npz",
        "deploy.json",
        "report.html",
        "raster.png",
        "voltage.png",
    ):
        assert (out / name).is_file(), name
    r = json.loads((out / "deploy.json").read_text())
    assert r["samples"] == 100 and "fixed_pt" in r["lava"]["run_config"]
    assert r["twin_lava_spikes_equal"] and r["twin_lava_voltages_equal"] and r["twin_lava_currents_equal"]
    assert r["spike_agreement_twin_lava"] == [1.0, 1.0]
    assert r["twin_accuracy"] == r["lava_accuracy"]
    # float -> fixed point on the whole test split (twin; Lava equals it, above)
    _, exp = load_run(run.path)
    model = exp.model.eval()
    export = LoihiExport.load(out)
    h = encode_inputs(model, exp.data.test.x, 0)
    y = exp.data.test.y
    acc_float = float(
        (scores_from_spikes("spike_count", float_trace_from_spikes(model, h)[-1][0]).argmax(1) == y).float().mean()
    )
    acc_twin = float((scores_from_spikes("spike_count", export.run_twin(h).spikes[-1]).argmax(1) == y).float().mean())
    assert len(y) > 300
    assert acc_float - acc_twin <= 0.01, (acc_float, acc_twin)


# ------------------------------------------------------------------ errors
def test_missing_lava_environment_is_one_clear_error(monkeypatch, tmp_path, capsys):
    from neuro.cli.main import main

    missing = "/nonexistent/venv-lava/bin/python"
    monkeypatch.setenv("NEUROHIL_LAVA_PYTHON", missing)
    with pytest.raises(DeviceError, match=f"no Lava environment: {missing} does not exist"):
        run_lava(_random_export(0, [3, 2], False), np.zeros((4, 3)))
    # the CLI says so before loading the run (which need not exist yet)
    assert main(["deploy", str(tmp_path / "some-run"), "--samples", "5"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: no Lava environment: {missing} does not exist; create .venv-lava "
        "(`make setup-lava`, Python 3.10) or point NEUROHIL_LAVA_PYTHON at its python"
    ]


def test_network_loihi_cannot_hold_is_refused_before_lava_starts():
    export = _random_export(0, [3, 2], False)
    export.layers[0].weights[1, 2] = 512
    with pytest.raises(IncompatibleError, match=r"layer 0 does not fit Loihi 2: weights span \[.*, 512\]"):
        run_lava(export, np.zeros((4, 3)))


def test_runner_error_comes_back_as_one_message_with_lavas_text(monkeypatch):
    """An NIR graph with a node Loihi deployment does not support: the runner (in .venv-lava) refuses it."""
    export = _random_export(0, [3, 2], False)
    good = export.nir_graph

    def with_delay():
        g = good()
        g.nodes["delay"] = nir.Delay(delay=np.ones(2))
        g.edges = [("lif0", "delay") if e == ("lif0", "output") else e for e in g.edges] + [("delay", "output")]
        return g

    monkeypatch.setattr(export, "nir_graph", with_delay)
    with pytest.raises(
        DeviceError, match=r"^Lava run failed: ValueError: node 'delay' is Delay; only Affine/Linear -> CubaLIF|LIF"
    ):
        run_lava(export, np.zeros((4, 3)))


def _shared_memory_blocks() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")} if os.path.isdir("/dev/shm") else set()


def _mapped_by_some_process(blocks: set[str]) -> set[str]:
    """The blocks some live process still maps (another test's Lava run, say): in use, not leaked."""
    mapped = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/maps") as f:
                text = f.read()
        except OSError:
            continue
        mapped |= {b for b in blocks if b in text}
    return mapped


def test_hanging_runner_is_killed_at_the_time_limit_with_its_lava_workers():
    assert os.getpid() in live_group_members(os.getpgrp())  # the /proc reading sees a live group
    export = _random_export(0, [3, 2], False)
    before = _shared_memory_blocks()
    with pytest.raises(DeviceError, match=r"did not finish within 12 s and was killed \(process group (\d+)\)") as info:
        run_lava(export, np.zeros((4, 3)), timeout_s=12, debug_hang_s=600)
    pgid = int(info.value.args[0].split("process group ")[1].split(")")[0])
    assert live_group_members(pgid) == []  # the runner and every Lava worker process it started are dead
    # the killed run's shared-memory blocks were unlinked, not left in /dev/shm
    new = _shared_memory_blocks() - before
    assert new - _mapped_by_some_process(new) == set()
