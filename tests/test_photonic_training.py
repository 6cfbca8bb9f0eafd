"""Training photonic networks (issue 21, part 3): wrapping phases, deploy, hwaware/insitu rules, DFA, vowels4."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuro.data.vowels4 import CLASSES, load_vowels4_with_talkers
from neuro.functional.optical_projection import OpticalProjection
from neuro.layers.mlp import MLP
from neuro.layers.photonic_mlp import PhotonicMLPSpec, build_photonic_mlp, deploy_photonic, mesh_report
from neuro.layers.physical import PhysicalLayer
from neuro.rules.base import Batch
from neuro.rules.dfa import DFA, DFASpec
from neuro.rules.photonic import (
    HWAware,
    HWAwareSpec,
    InSitu,
    InSituSpec,
    accuracy_with,
    pretrain_in_silico,
    twin_physics,
)
from neuro.substrates import open_substrate
from simulators.photonic import PHASE_KEYS, PhotonicOptions, PhotonicSubstrate, fidelity, mesh_matrix, mesh_spec


class _Data:
    def __init__(self, n_features, n_classes):
        self.n_features, self.n_classes = n_features, n_classes


def _vowels():
    try:
        return load_vowels4_with_talkers()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"Hillenbrand vowels not available: {exc}")


# ------------------------------------------------------------------ hardware parameters
def test_phases_wrap_and_sigma_clamps():
    layer = PhysicalLayer(open_substrate("photonic:clements", 3, 3, seed=1, options={}), "p")
    assert layer.param_periodic["v_theta"] and not layer.param_periodic["sigma"]
    with torch.no_grad():
        layer.hardware["v_theta"].fill_(1.3)
        layer.hardware["u_out"].fill_(-2.5)
        layer.hardware["sigma"].fill_(1.3)
    layer.sync_params()
    assert torch.allclose(layer.hardware["v_theta"], torch.full_like(layer.hardware["v_theta"], -0.7))
    assert torch.allclose(layer.hardware["u_out"], torch.full_like(layer.hardware["u_out"], -0.5))
    assert torch.allclose(layer.hardware["sigma"], torch.ones_like(layer.hardware["sigma"]))
    # a wrapped phase is the same phase: the response is unchanged by a full turn (2 units of pi rad)
    x = torch.rand(5, 3) * 2 - 1
    y0 = layer.exact(x).detach()
    with torch.no_grad():
        layer.hardware["v_phi"].add_(2.0)
    assert torch.allclose(layer.exact(x).detach(), y0, atol=1e-5)


def test_wave_parameters_still_clamp_to_the_input_range():
    sub = open_substrate("wave:scattering", 4, 6, seed=0, options={"n_control": 3})
    layer = PhysicalLayer(sub, "w")
    with torch.no_grad():
        layer.hardware["control"].fill_(5.0)
    layer.sync_params()
    assert float(layer.hardware["control"].detach().max()) == pytest.approx(sub.input_range[1])


# ------------------------------------------------------------------ simulator extensions
def test_exact_forward_phase_noise_matches_a_hand_built_perturbed_mesh():
    opt = PhotonicOptions(n_in=3, n_out=3, detection="homodyne", seed=2)
    sub = PhotonicSubstrate(opt)
    x = torch.tensor([[0.3, -0.5, 0.8]], dtype=torch.float64)
    sigma = 0.2
    y = sub.exact_forward(x, ideal=True, phase_noise=sigma, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    draws = {m: sigma * torch.randn(1, s.n_heaters, generator=g, dtype=torch.float64) for m, s in opt.specs().items()}
    p = {k: v.to(torch.float64) * (1.0 if k == "sigma" else math.pi) for k, v in sub.get_params().items()}
    mats = {}
    for mesh in ("v", "u"):
        spec = mesh_spec(3, "clements")
        ph = torch.cat([p[f"{mesh}_{k}"] for k in PHASE_KEYS]) + draws[mesh][0]
        k = spec.n_mzi
        mats[mesh] = mesh_matrix(spec, ph[:k], ph[k:2 * k], ph[2 * k:])
    field = mats["u"] @ (p["sigma"].to(torch.complex128) * (mats["v"] @ x[0].to(torch.complex128)))
    assert torch.allclose(y[0], field.real, atol=1e-10)
    # no noise asked: the ideal response, and it differs from the noisy one
    y0 = sub.exact_forward(x, ideal=True)
    assert float((y0 - y).abs().max()) > 1e-3


def test_fidelity_values():
    eye = torch.eye(2, dtype=torch.complex128)
    assert fidelity(eye, eye) == pytest.approx(1.0)
    assert fidelity(eye, 1j * eye) == pytest.approx(1.0)  # a global phase does not count
    assert fidelity(eye, torch.diag(torch.tensor([1, -1], dtype=torch.complex128))) == pytest.approx(0.0)
    # a lossy copy: |tr(U^dagger t U)| / N = t
    u = torch.linalg.qr(torch.randn(4, 4, dtype=torch.complex128))[0]
    assert fidelity(u, 0.9 * u) == pytest.approx(0.9)


def test_deploy_keeps_the_design_and_lowers_fidelity():
    torch.manual_seed(0)
    model = build_photonic_mlp(PhotonicMLPSpec(layers=[4, 3], substrate_options={"detection": "homodyne"}),
                               _Data(3, 3))
    x = torch.rand(16, 3) * 2 - 1
    ideal = model(x, physics=twin_physics(True)).detach()
    before = model(x).detach()
    assert torch.allclose(before, ideal, atol=1e-5)  # an ideal chip measures the design
    assert all(m["fidelity"] == pytest.approx(1.0, abs=1e-9) for layer in mesh_report(model)["layers"]
               for m in layer["meshes"].values())
    settings = [dict(layer.hardware.items()) for layer in model.physical_layers()]
    settings = [{k: v.detach().clone() for k, v in s.items()} for s in settings]
    deploy_photonic(model, phase_error=0.2, crosstalk=0.05, dac_bits=6)
    for layer, s in zip(model.physical_layers(), settings):
        for k, v in s.items():
            assert torch.allclose(layer.substrate.get_params()[k], v, atol=1e-6)
    assert torch.allclose(model(x, physics=twin_physics(True)).detach(), ideal, atol=1e-5)
    assert float((model(x).detach() - ideal).abs().max()) > 1e-2
    fids = [m["fidelity"] for layer in mesh_report(model)["layers"] for m in layer["meshes"].values()]
    assert max(fids) < 0.999 and min(fids) > 0.5


# ------------------------------------------------------------------ rules
def test_hwaware_gradients_are_those_of_the_ideal_chip():
    torch.manual_seed(0)
    model = build_photonic_mlp(PhotonicMLPSpec(layers=[3], substrate_options={"detection": "homodyne",
                                                                             "phase_error": 0.3}), _Data(3, 3))
    x, y = torch.rand(8, 3) * 2 - 1, torch.randint(0, 3, (8,))
    HWAware(HWAwareSpec(twin="ideal")).step(model, Batch(x, y))
    p = model.blocks[0].physical.hardware["v_theta"]
    got = p.grad.clone()
    # central finite difference of the ideal-chip loss in one phase entry
    layer = model.blocks[0].physical

    def loss_at(value):
        with torch.no_grad():
            p[0] = value
            return float(F.cross_entropy(model(x, physics=twin_physics(True)), y))

    v0, h = float(p[0].detach()), 1e-3
    fd = (loss_at(v0 + h) - loss_at(v0 - h)) / (2 * h)
    loss_at(v0)
    assert got[0].item() == pytest.approx(fd, rel=2e-2, abs=1e-4)
    assert layer.substrate.options.phase_error == 0.3  # the chip itself is not ideal; the twin is


def test_insitu_spsa_averages_to_the_true_gradient():
    torch.manual_seed(0)
    model = build_photonic_mlp(PhotonicMLPSpec(layers=[3], substrate_options={"detection": "homodyne"}),
                               _Data(3, 3)).double()
    x, y = (torch.rand(16, 3, dtype=torch.float64) * 2 - 1), torch.randint(0, 3, (16,))
    params = [p for p in model.parameters()]
    loss = F.cross_entropy(model(x, physics=twin_physics(True)), y)
    true = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
    rule = InSitu(InSituSpec(eps=1e-3, directions=300, seed=1))
    evals0 = model.counters()[0]
    metrics = rule.step(model, Batch(x, y))
    est = torch.cat([p.grad.reshape(-1) for p in params])
    cos = float(F.cosine_similarity(est, true, dim=0))
    assert cos > 0.85, cos
    assert metrics["n_physical_evals"] == 2 * 300 * 16 == model.counters()[0] - evals0


def test_insitu_recovers_a_deployed_network_on_vowels4():
    ds, _ = _vowels()
    torch.manual_seed(0)
    model = build_photonic_mlp(PhotonicMLPSpec(layers=[4, 4], substrate_options={"detection": "homodyne"}), ds)
    pretrain_in_silico(model, ds.train.x, ds.train.y, epochs=25, lr=0.05, batch=64)
    ideal = accuracy_with(model, ds.test.x, ds.test.y, twin_physics(True))
    assert ideal > 0.9
    deploy_photonic(model, phase_error=0.15, crosstalk=0.05)
    deployed = accuracy_with(model, ds.test.x, ds.test.y)
    rule = InSitu(InSituSpec(eps=0.02))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randperm(len(ds.train.y), generator=g)[:64]
        opt.zero_grad(set_to_none=True)
        rule.step(model, Batch(ds.train.x[idx], ds.train.y[idx]))
        opt.step()
    after = accuracy_with(model, ds.test.x, ds.test.y)
    assert deployed < ideal - 0.05 and after > deployed + 0.05, (ideal, deployed, after)


# ------------------------------------------------------------------ DFA
def _mlp_and_batch():
    torch.manual_seed(3)
    model = MLP(6, [5, 4], 3)
    return model, torch.randn(7, 6), torch.randint(0, 3, (7,))


def _hand_dfa_grads(model, x, y, B):
    """DFA by hand: delta_k = (B_k e) * relu'(a_k), grad W_k = delta_k^T u_{k-1}; readout exact."""
    with torch.no_grad():
        us, hs, acts, u = [x], [], [], x
        for layer in model.layers:
            a = u @ layer.linear.weight.T + layer.linear.bias
            h = torch.relu(a)
            acts.append(a)
            hs.append(h)
            u = h / torch.sqrt(h.pow(2).mean(1, keepdim=True) + 1e-12) if model.normalize else h
            us.append(u)
        feats = torch.cat(us[1:], 1)
        s = feats @ model.readout.weight.T + model.readout.bias
        e = (torch.softmax(s, 1) - F.one_hot(y, 3).float()) / len(y)
        proj = e @ B.T
        out, start = [], 0
        for k, a in enumerate(acts):
            n = a.shape[1]
            delta = proj[:, start:start + n] * (a > 0).float()
            start += n
            out.append((delta.T @ us[k], delta.sum(0)))
        return out, (e.T @ feats, e.sum(0))


def test_dfa_digital_update_matches_hand_computation():
    model, x, y = _mlp_and_batch()
    rule = DFA(DFASpec(projection="digital", seed=4))
    rule.step(model, Batch(x, y))
    hidden, (gr_w, gr_b) = _hand_dfa_grads(model, x, y, rule.B)
    for layer, (gw, gb) in zip(model.layers, hidden):
        assert torch.allclose(layer.linear.weight.grad, gw, atol=1e-4)
        assert torch.allclose(layer.linear.bias.grad, gb, atol=1e-5)
    assert torch.allclose(model.readout.weight.grad, gr_w, atol=1e-5)
    assert torch.allclose(model.readout.bias.grad, gr_b, atol=1e-6)


def test_optical_projection_recovers_the_signed_linear_projection():
    op = OpticalProjection(2000, 10, seed=5, beta=0.7)
    e = torch.randn(4, 10, dtype=torch.float64) * 0.1
    got = op.project(e)
    want = e @ op.matrix().T
    assert torch.allclose(got, want, atol=1e-9 * float(want.abs().max()) + 1e-12)
    assert torch.allclose(op.project(-e), -got, atol=1e-9)  # the sign is recovered
    # the stated scale: E[B_opt^2] = (C + 3) / C^2 (2000 x 10 entries: relative std of the mean about 3 %)
    assert float(op.matrix().pow(2).mean()) == pytest.approx(13 / 100, rel=0.12)
    assert op.n_measurements == 4 * 4
    # an intensity alone has lost the sign: |R e|^2 = |R (-e)|^2
    assert torch.allclose(op.intensity(e), op.intensity(-e))


def test_dfa_optical_update_equals_digital_dfa_with_the_recovered_matrix():
    model, x, y = _mlp_and_batch()
    rule = DFA(DFASpec(projection="optical", seed=4))
    rule.step(model, Batch(x, y))
    hidden, _ = _hand_dfa_grads(model, x, y, rule.optical.matrix().float())
    for layer, (gw, gb) in zip(model.layers, hidden):
        assert torch.allclose(layer.linear.weight.grad, gw, atol=1e-4)
        assert torch.allclose(layer.linear.bias.grad, gb, atol=1e-5)


def test_dfa_trains_a_physical_mlp_digital_layers_only():
    from neuro.layers.physical_mlp import PhysicalMLPSpec, build_physical_mlp
    model = build_physical_mlp(PhysicalMLPSpec(substrate="photonic:clements", physical=[5], hidden=[6, 6]), _Data(4, 3))
    x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
    DFA(DFASpec(projection="optical")).step(model, Batch(x, y))
    assert all(b.digital.linear.weight.grad is not None and float(b.digital.linear.weight.grad.abs().sum()) > 0
               for b in model.blocks)
    assert all(p.grad is None for layer in model.physical_layers() for p in layer.hardware.values())


def test_mfff_readout_grad_trains_digital_layers_through_the_readout_never_through_a_mesh():
    from neuro.layers.physical_mlp import PhysicalMLPSpec, build_physical_mlp
    from neuro.rules.mfff import MFFF, MFFFSpec

    x, y = torch.rand(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    grads = {}
    for flag in (False, True):
        torch.manual_seed(0)
        model = build_physical_mlp(PhysicalMLPSpec(substrate="photonic:clements", physical=[5], hidden=[6, 6]),
                                   _Data(4, 3))
        MFFF(MFFFSpec(variant="contrastive", spsa_every=1, spsa_eps=0.01, readout_grad=flag)).step(model, Batch(x, y))
        grads[flag] = ([b.digital.linear.weight.grad.clone() for b in model.blocks],
                       [p.grad.clone() for layer in model.physical_layers() for p in layer.hardware.values()])
    # the readout's cross-entropy adds to every block's digital gradient ...
    assert all(float((a - b).abs().max()) > 1e-6 for a, b in zip(grads[False][0], grads[True][0]))
    # ... and nothing reaches the phases except their SPSA estimate (same draws: equal)
    assert all(torch.equal(a, b) for a, b in zip(grads[False][1], grads[True][1]))


def test_hardware_lr_reaches_the_phases_of_a_built_experiment():
    from neuro.build import build_experiment

    cfg = {"data": {"dataset": "vowels4"}, "model": {"kind": "photonic_mlp"},
           "rule": {"name": "insitu"}, "optim": {"name": "adam", "lr": 0.01, "hardware_lr": 1e-3}}
    _vowels()
    exp = build_experiment(cfg)
    groups = exp.optimizer.param_groups
    hardware = {id(p) for layer in exp.model.physical_layers() for p in layer.hardware.values()}
    assert [g["lr"] for g in groups] == [0.01, 1e-3]
    assert {id(p) for p in groups[1]["params"]} == hardware and not hardware & {id(p) for p in groups[0]["params"]}


# ------------------------------------------------------------------ data
def test_vowels4_is_talker_disjoint_and_scaled():
    ds, talkers = _vowels()
    assert ds.n_classes == 4 and ds.class_names == CLASSES and ds.n_features == 4
    sets = {k: set(v) for k, v in talkers.items()}
    assert not (sets["train"] & sets["test"]) and not (sets["train"] & sets["val"]) and not (sets["val"] & sets["test"])
    assert len(sets["train"]) + len(sets["val"]) + len(sets["test"]) == 139
    assert np.allclose(ds.train.x.mean(0).numpy(), 0, atol=1e-5)
    assert np.allclose(ds.train.x.std(0, unbiased=False).numpy(), 1, atol=1e-4)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 534
    assert sorted(torch.bincount(ds.test.y).tolist())[0] > 30


# ------------------------------------------------------------------ example configs
@pytest.mark.parametrize("name", ["vowels4_photonic_insilico", "vowels4_photonic_insitu", "digits_photonic_mfff",
                                  "digits_dfa_optical"])
def test_example_configs_build(name):
    import tomllib
    from pathlib import Path

    from neuro.build import build_experiment

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.toml"
    cfg = tomllib.loads(path.read_text())
    if cfg["data"]["dataset"] == "vowels4":
        _vowels()
    exp = build_experiment(cfg)
    trainer = exp.trainer(None, progress=False)  # runs the rule's compatibility check
    assert trainer.rule.name == cfg["rule"]["name"]
