"""Continual learning: Oja's subspace rule, projection, HLOP around rules, baselines, streams, workflow."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuro.continual.base import ContinualSpec, build_strategy, capture_inputs, projectable_layers, reduce_activity
from neuro.continual.hlop import HebbianProjection
from neuro.continual.workflow import acc_bwt, latest_task_checkpoint, resume_continual, train_continual
from neuro.data.dataset import Dataset, Split
from neuro.data.streams import dataset_list, permutation, permuted, split_classes
from neuro.errors import ConfigError, NeuroError
from neuro.functional.subspace import (
    energy_basis,
    oja_subspace_step,
    orthonormal_rows,
    principal_angles,
    project_gradient,
    project_inputs,
)
from neuro.layers.mlp import MLP
from neuro.layers.spiking_mlp import SpikingMLP
from neuro.rules.base import Batch
from neuro.rules.bptt import BPTT
from neuro.trainer import Trainer


def gaussian_with_covariance(n: int, eigenvalues: list[float], seed: int):
    """A random orthonormal eigenbasis U (columns) and a sampler of x ~ N(0, U diag(l) U^T)."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    scale = torch.tensor(eigenvalues, dtype=torch.float64).sqrt()

    def sample(m: int) -> torch.Tensor:
        return (torch.randn(m, n, generator=g, dtype=torch.float64) * scale) @ U.t()

    return U, sample


# ------------------------------------------------------------------------ math
def test_principal_angles_golden():
    # span{e1, e2} vs span{e1, cos(a) e2 + sin(a) e3}: angles 0 and a
    a = 0.3
    A = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    B = torch.tensor([[1.0, 0, 0], [0, math.cos(a), math.sin(a)]])
    angles = principal_angles(A, B)
    assert torch.allclose(angles, torch.tensor([0.0, a], dtype=torch.float64), atol=1e-12)
    # tiny angles are resolved (not lost to arccos rounding)
    eps = 1e-7
    C = torch.tensor([[1.0, 0, 0], [0, math.cos(eps), math.sin(eps)]], dtype=torch.float64)
    assert principal_angles(A.double(), C)[1].item() == pytest.approx(eps, rel=1e-4)


@pytest.mark.parametrize("momentum", [False, True])
def test_oja_subspace_converges_to_principal_subspace(momentum):
    n, k = 24, 4
    eig = [10.0, 8.0, 6.0, 4.0] + [1.0 / (i + 1) for i in range(n - k)]
    U, sample = gaussian_with_covariance(n, eig, seed=1)
    g = torch.Generator().manual_seed(2)
    H = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64)).Q.t().contiguous()
    M = torch.zeros_like(H) if momentum else None
    for step in range(3000):
        lr = 0.02 if step < 2000 else 0.002  # a smaller rate at the end averages out the sampling noise
        H, M = oja_subspace_step(H, sample(512), lr=lr, momentum=M, beta=0.9)
    angles = principal_angles(H, U[:, :k].t())
    assert angles.max().item() < 1e-2
    # the rows themselves are orthonormal (the fixed point of the anti-Hebbian term)
    assert torch.allclose(H @ H.t(), torch.eye(k, dtype=torch.float64), atol=1e-2)


def test_oja_frozen_rows_stay_and_new_rows_learn_the_residual():
    n = 20
    eig = [9.0, 7.0, 5.0, 3.0] + [0.2] * (n - 4)
    U, sample = gaussian_with_covariance(n, eig, seed=3)
    frozen = U[:, :2].t().clone()  # the top-2 directions, as learned on an old task
    g = torch.Generator().manual_seed(4)
    new = torch.randn(2, n, generator=g, dtype=torch.float64)
    new = torch.linalg.qr(new.t()).Q.t()
    H = torch.cat([frozen, new])
    M = torch.zeros_like(H)
    for step in range(3000):
        lr = 0.02 if step < 2000 else 0.002
        H, M = oja_subspace_step(H, sample(512), lr=lr, momentum=M, n_frozen=2)
    assert torch.equal(H[:2], frozen)
    # the free rows span the next two principal directions (the principal subspace of the residual)
    assert principal_angles(H[2:], U[:, 2:4].t()).max().item() < 1e-2


def test_projected_update_is_orthogonal_to_the_stored_subspace():
    g = torch.Generator().manual_seed(0)
    H = torch.randn(7, 30, generator=g, dtype=torch.float64)  # raw lateral weights, not orthonormal
    Q = orthonormal_rows(H)
    G = torch.randn(12, 30, generator=g, dtype=torch.float64)
    Gp = project_gradient(G, Q)
    assert (Gp @ H.t()).abs().max().item() < 1e-6 * G.abs().max().item()
    # and it changes nothing outside the subspace
    v = torch.randn(30, generator=g, dtype=torch.float64)
    v_out = project_inputs(v, Q)
    assert torch.allclose(Gp @ v_out, G @ v_out, atol=1e-10)


def test_gradient_projection_equals_update_from_projected_inputs():
    """G (I - Q^T Q) == the weight gradient autograd computes when the layer's input is projected (BPTT, T steps)."""
    torch.manual_seed(0)
    T, B, n, m = 5, 4, 9, 3
    x = torch.rand(T, B, n)
    Q = orthonormal_rows(torch.randn(3, n))
    W = torch.randn(m, n, requires_grad=True)
    target = torch.randn(T, B, m)

    def loss_of(inp):
        v = torch.zeros(B, m)
        total = 0.0
        for t in range(T):  # a leaky integrator, so the weight gradient sums over time steps
            v = 0.8 * v + inp[t] @ W.t()
            total = total + ((torch.tanh(v) - target[t]) ** 2).sum()
        return total

    (g_plain,) = torch.autograd.grad(loss_of(x), W)
    # the same postsynaptic signals with the projected input in the weight's outer product:
    x_tilde = project_inputs(x, Q)
    W2 = W.detach().clone().requires_grad_(True)

    def loss_split(inp, inp_for_grad):
        v = torch.zeros(B, m)
        total = 0.0
        for t in range(T):
            cur = inp[t] @ W2.detach().t() + inp_for_grad[t] @ (W2 - W2.detach()).t()
            v = 0.8 * v + cur
            total = total + ((torch.tanh(v) - target[t]) ** 2).sum()
        return total

    (g_tilde,) = torch.autograd.grad(loss_split(x, x_tilde), W2)
    assert torch.allclose(project_gradient(g_plain, Q), g_tilde, atol=1e-5)


def test_energy_basis_golden():
    # A = rows along e1 (energy 9 per row) and e2 (energy 1): 90 % of the energy is e1 alone
    A = torch.zeros(20, 5, dtype=torch.float64)
    A[:10, 0] = 3.0
    A[10:, 1] = 1.0
    M = energy_basis(A, 0.9)
    assert M.shape[0] == 1 and abs(abs(M[0, 0].item()) - 1.0) < 1e-12
    M2 = energy_basis(A, 0.95, M)
    assert M2.shape[0] == 2
    assert principal_angles(M2, torch.eye(5, dtype=torch.float64)[:2]).max().item() < 1e-10


# ------------------------------------------------------------------- streams
def _toy_dataset(x, y, xt, yt, n_classes, name="toy"):
    empty = Split(torch.zeros(0, x.shape[1]), torch.zeros(0, dtype=torch.long))
    return Dataset(name, Split(x, y), empty, Split(xt, yt), x.shape[1], n_classes, (x.shape[1],),
                   tuple(str(i) for i in range(n_classes)), "synthetic")


def test_permuted_stream_is_fixed_by_seed():
    g = torch.Generator().manual_seed(0)
    base = _toy_dataset(torch.rand(30, 16, generator=g), torch.randint(0, 3, (30,), generator=g),
                        torch.rand(10, 16, generator=g), torch.randint(0, 3, (10,), generator=g), 3)
    s1, s2 = permuted(base, 4, seed=5), permuted(base, 4, seed=5)
    assert [t.name for t in s1.tasks] == [t.name for t in s2.tasks]
    assert sorted(t.name for t in s1.tasks) == ["perm0", "perm1", "perm2", "perm3"]
    for t1, t2 in zip(s1.tasks, s2.tasks):
        assert torch.equal(t1.dataset().train.x, t2.dataset().train.x)
    k = int(s1[0].name[4:])
    perm = permutation(16, 5, k)
    assert sorted(perm.tolist()) == list(range(16))
    assert torch.equal(s1[0].dataset().test.x, base.test.x[:, torch.from_numpy(perm)])
    assert torch.equal(s1[0].dataset().test.y, base.test.y)
    assert s1.scenario == "domain" and s1.class_mask(0) is None
    assert not np.array_equal(permutation(16, 5, k), permutation(16, 6, k))  # another seed, other permutations


def test_split_stream_and_dataset_list():
    y = torch.arange(40) % 4
    base = _toy_dataset(torch.rand(40, 3), y, torch.rand(8, 3), torch.arange(8) % 4, 4)
    s = split_classes(base, classes_per_task=2, scenario="task")
    assert [t.classes for t in s.tasks] == [(0, 1), (2, 3)]
    assert set(s[1].dataset().train.y.tolist()) == {2, 3} and len(s[1].dataset().train) == 20
    assert s.class_mask(1).tolist() == [False, False, True, True]
    with pytest.raises(ConfigError, match="classes_per_task"):
        split_classes(base, classes_per_task=3)
    lst = dataset_list([base, base])
    assert lst.n_classes == 8 and set(lst[1].dataset().train.y.tolist()) == {4, 5, 6, 7}
    assert len(lst.joint().train) == 80


def test_acc_bwt_golden():
    R = [[0.9, None, None], [0.8, 0.95, None], [0.7, 0.9, 0.85]]
    acc, bwt = acc_bwt(R)
    assert acc == pytest.approx((0.7 + 0.9 + 0.85) / 3)
    assert bwt == pytest.approx(((0.7 - 0.9) + (0.9 - 0.95)) / 2)
    assert acc_bwt([[0.5, 0.7]]) == (pytest.approx(0.6), None)  # the joint (multitask) row


def test_subspace_schedule_is_the_authors():
    spec = ContinualSpec()
    sizes = [spec.subspace_sizes(t, 3, [784, 800, 800]) for t in range(10)]
    # 80/200/100, +70 per task, the increment lowered by 20 at tasks 3, 6 and 9
    assert [s[0] for s in sizes] == [80, 150, 220, 270, 320, 370, 400, 430, 460, 470]
    assert sizes[9] == [470, 590, 490]  # 80 + 2*70 + 3*50 + 3*30 + 10


# --------------------------------------------------------------- HLOP on models
def _two_task_toy(seed=0, n=40, r=6, m=600):
    """Two domain-incremental tasks on different random r-dimensional input subspaces of R^n,
    each with its own labelling (4 classes) of its latent code: training the second overwrites the first."""
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for _ in range(2):
        U = torch.linalg.qr(torch.randn(n, r, generator=g)).Q  # [n, r]
        Wl = torch.randn(4, r, generator=g)

        def make(count, U=U, Wl=Wl):
            z = torch.randn(count, r, generator=g)
            return (z @ U.t()).float(), (z @ Wl.t()).argmax(1)

        x, y = make(m)
        xt, yt = make(400)
        tasks.append(_toy_dataset(x, y, xt, yt, 4))
    return tasks


def _train_tasks(strategy, model, tasks, epochs=30):
    accs = []
    for i, data in enumerate(tasks):
        strategy.begin_task(i, model, data)
        opt = torch.optim.SGD([p for p in model.parameters() if p.dim() > 1 or i == 0], lr=0.05)
        Trainer(model, strategy, opt, data, epochs=epochs, batch_size=32, seed=i, progress=False).fit()
        strategy.end_task(i, model, data)
        with torch.no_grad():
            accs.append([float((strategy.predict(model, d.test.x).argmax(1) == d.test.y).float().mean())
                         for d in tasks])
    return accs


@pytest.mark.parametrize("name", ["hlop", "finetune"])
def test_two_task_toy_hlop_keeps_the_first_task(name):
    torch.manual_seed(0)
    tasks = _two_task_toy()
    model = MLP(40, [64], 4, bias=False, normalize=False)
    spec = ContinualSpec(strategy=name, subspace=[8, 24], increment=[8, 24], hebbian_lr=[0.01],
                         hebbian_iterations=5)
    strategy = build_strategy(spec, BPTT())
    strategy.check_compatible(model)
    R = _train_tasks(strategy, model, tasks)
    first_after_first, first_after_second = R[0][0], R[1][0]
    assert first_after_first > 0.9 and R[1][1] > 0.85  # both tasks are learned
    if name == "hlop":
        assert abs(first_after_second - first_after_first) <= 0.01
    else:
        assert first_after_second < first_after_first - 0.15


def test_hlop_projects_every_wrapped_update_from_spiking_activity():
    """HLOP around BPTT on a spiking MLP: the projected weight updates annihilate the frozen subspace,
    and the lateral weights learn from the layers' actual inputs (captured during the step)."""
    torch.manual_seed(0)
    model = SpikingMLP(12, [16], 3, time_steps=6, encoder="rate")
    spec = ContinualSpec(strategy="hlop", subspace=[4, 5], increment=[3, 3], hebbian_lr=[0.05])
    hlop = build_strategy(spec, BPTT(), seed=0)
    assert isinstance(hlop, HebbianProjection)
    hlop.check_compatible(model)
    data = _toy_dataset(torch.rand(64, 12), torch.randint(0, 3, (64,)), torch.rand(8, 12), torch.randint(0, 3, (8,)), 3)
    hlop.begin_task(0, model, data)
    H0 = {k: v.clone() for k, v in hlop.H.items()}
    hlop.step(model, Batch(data.train.x, data.train.y))
    assert all(not torch.equal(H0[k], hlop.H[k]) for k in H0)  # Hebbian learning happened on both layers
    hlop.end_task(0, model, data)
    hlop.begin_task(1, model, data)
    assert hlop.sizes() == {"layers.0": 4, "layers.1": 5}
    assert {k: v.shape[0] for k, v in hlop.H.items()} == {"layers.0": 7, "layers.1": 8}
    model.zero_grad()
    hlop.step(model, Batch(data.train.x, data.train.y))
    for layer in hlop.layers:
        frozen = hlop.H[layer.name][: hlop.n_frozen[layer.name]]
        g = layer.weight.grad
        assert g.abs().max() > 0
        assert (g.double() @ frozen.double().t()).abs().max().item() < 1e-6 * max(g.abs().max().item(), 1.0)


def test_capture_inputs_sees_what_each_layer_received():
    torch.manual_seed(0)
    model = SpikingMLP(5, [7], 2, time_steps=4, encoder="rate")
    layers = projectable_layers(model)
    assert [l.name for l in layers] == ["layers.0", "layers.1"]
    x = torch.rand(3, 5)
    with capture_inputs(layers, "spikes") as seen:
        trace = model.forward_trace(x)
    assert torch.equal(seen["layers.1"][0], trace.spikes["layers.0"].reshape(-1, 7))
    assert "forward_trace" not in model.layers[0].__dict__  # the wrapper is removed again
    # weighted rate: sum_t l^(T-1-t) x_t / sum_t l^(T-1-t), l = exp(-dt / tau_mem)
    s = trace.spikes["layers.0"]
    lam = math.exp(-model.layers[1].params.dt / model.layers[1].params.tau_mem)
    w = torch.tensor([lam**3, lam**2, lam, 1.0])
    expected = (w[:, None, None] * s).sum(0) / w.sum()
    assert torch.allclose(reduce_activity(s, layers[1], "weighted_rate"), expected, atol=1e-6)


def test_ewc_penalty_gradient_matches_finite_difference():
    torch.manual_seed(0)
    model = MLP(6, [5], 3, bias=False, normalize=False)
    spec = ContinualSpec(strategy="ewc", ewc_lambda=3.0, fisher_samples=20)
    ewc = build_strategy(spec, BPTT())
    data = _toy_dataset(torch.randn(20, 6), torch.randint(0, 3, (20,)), torch.randn(4, 6), torch.randint(0, 3, (4,)), 3)
    ewc.end_task(0, model, data)
    assert all(f.sum() > 0 for f in ewc.fisher.values())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    batch = Batch(data.train.x[:8], data.train.y[:8])

    def total_loss():
        base = F.cross_entropy(model(batch.x), batch.y)
        pen = sum(0.5 * 3.0 * (ewc.fisher[n] * (p - ewc.star[n]) ** 2).sum() for n, p in model.named_parameters())
        return base + pen

    model.zero_grad()
    ewc.step(model, batch)
    p = model.layers[0].linear.weight
    analytic = p.grad[1, 2].item()
    eps = 1e-3
    with torch.no_grad():
        p[1, 2] += eps
        up = total_loss().item()
        p[1, 2] -= 2 * eps
        down = total_loss().item()
        p[1, 2] += eps
    assert analytic == pytest.approx((up - down) / (2 * eps), rel=1e-3, abs=1e-5)


class _NoLossRule(BPTT):
    """BPTT that writes no gradient of its own: the EWC penalty alone drives the weights."""

    def step(self, model, batch):
        return {}


def _ewc_penalty_descent(lr: float, stiffness: float, bind: bool, steps: int = 20) -> float:
    """|w - w*| after ``steps`` SGD steps on the EWC penalty alone, from |w - w*| = 1."""
    model = torch.nn.Linear(2, 2, bias=False)
    ewc = build_strategy(ContinualSpec(strategy="ewc", ewc_lambda=2.0), _NoLossRule())
    w, name = model.weight, "weight"
    ewc.fisher = {name: torch.full_like(w, stiffness / 2.0)}
    ewc.star = {name: w.detach().clone()}
    with torch.no_grad():
        w.add_(1.0)
    opt = torch.optim.SGD([w], lr=lr)
    if bind:
        ewc.bind_optimizer(opt)
    batch = Batch(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        metrics = ewc.step(model, batch)
        opt.step()
    assert metrics["ewc_capped"] == (1.0 if bind and lr * stiffness > 1 else 0.0)
    return float((w.detach() - ewc.star[name]).abs().max())


def test_ewc_stiffness_cap_keeps_sgd_stable():
    # explicit SGD on k/2 (w - w*)^2 multiplies the distance by (1 - lr k) each step
    assert _ewc_penalty_descent(0.1, 5.0, bind=True) == pytest.approx(0.5**20, rel=1e-4)  # below the cap: untouched
    assert _ewc_penalty_descent(0.1, 30.0, bind=False) == pytest.approx(2.0**20, rel=1e-4)  # lr k = 3: diverges
    assert _ewc_penalty_descent(0.1, 30.0, bind=True) < 1e-6  # capped at 1 / lr: lands on w* in one step


def test_gpm_projects_away_from_the_stored_activity():
    torch.manual_seed(0)
    model = MLP(10, [8], 3, bias=False, normalize=False)
    spec = ContinualSpec(strategy="gpm", gpm_threshold=[0.99], gpm_samples=50)
    gpm = build_strategy(spec, BPTT())
    gpm.check_compatible(model)
    x = torch.randn(50, 3) @ torch.randn(3, 10)  # rank-3 inputs
    data = _toy_dataset(x, torch.randint(0, 3, (50,)), x[:5], torch.randint(0, 3, (5,)), 3)
    gpm.end_task(0, model, data)
    assert gpm.sizes()["layers.0.linear"] == 3
    model.zero_grad()
    gpm.step(model, Batch(torch.randn(16, 10), torch.randint(0, 3, (16,))))
    g = model.layers[0].linear.weight.grad
    assert (g @ x.t()).abs().max().item() < 1e-5 * g.abs().max().item() * x.abs().max().item()


# ------------------------------------------------------------------ workflow
def _toy_config(tmp_path, strategy="hlop", **continual):
    return {
        "run": {"name": "toy", "seed": 0, "out_dir": str(tmp_path), "progress": False},
        "data": {"dataset": "digits", "val_fraction": 0.0},
        "model": {"kind": "spiking_mlp", "hidden": [24], "time_steps": 4},
        "rule": {"name": "bptt"},
        "optim": {"name": "sgd", "lr": 0.1},
        "train": {"epochs": 1, "batch_size": 64},
        "continual": {"strategy": strategy, "stream": "split", "scenario": "task", "subspace": [8, 8],
                      "increment": [4, 4], "hebbian_lr": [0.01], **continual},
    }


def test_workflow_logs_R_and_resumes_to_the_same_result(tmp_path):
    config = _toy_config(tmp_path / "a", shuffle_order=False)
    run, summary = train_continual(config, echo=lambda *a: None)
    R = summary["R"]
    assert len(R) == 5 and all(len(r) == 5 for r in R)
    assert all(R[i][j] is None for i in range(5) for j in range(i + 1, 5))
    records = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    tasks = [r for r in records if r["event"] == "task"]
    assert [r["task"] for r in tasks] == [0, 1, 2, 3, 4]
    assert [r["R_row"] for r in tasks] == R
    final = [r for r in records if r["event"] == "continual"][0]
    acc, bwt = acc_bwt(R)
    assert final["ACC"] == pytest.approx(acc) and final["BWT"] == pytest.approx(bwt)
    for name in ("report.html", "accuracy_matrix.png", "subspace_sizes.png", "checkpoint.pt"):
        assert (run.path / name).is_file(), name
    # 8, then +4 per task, the increment lowered by 20 (to 0) at task 3: 8, 12, 16, 16, 16
    assert [r["subspace_sizes"]["layers.0"] for r in tasks] == [8, 12, 16, 16, 16]

    # interrupted after two tasks, then resumed: the same R as the uninterrupted run
    config_b = _toy_config(tmp_path / "b", shuffle_order=False)
    run_b, partial = train_continual(config_b, echo=lambda *a: None, stop_after=2)
    assert latest_task_checkpoint(run_b.path).name == "task-01.pt"
    _, resumed = resume_continual(run_b.path, echo=lambda *a: None)
    assert resumed["R"] == R
    events = [json.loads(line)["event"] for line in run_b.metrics_path.read_text().splitlines()]
    assert events.count("task") == 5 and events.count("continual") == 1


def test_unknown_strategy_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'hlop'"):
        train_continual(_toy_config(tmp_path, strategy="hlopp"), echo=lambda *a: None)


def test_cli_continual_flag(tmp_path, cli):
    import tomli_w

    config = _toy_config(tmp_path)
    config["continual"]["stream"] = "split"
    path = tmp_path / "c.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    proc = cli("train", str(path), "--continual", "finetune", "--no-progress", "--set", "continual.tasks=5")
    assert proc.returncode == 0, proc.stderr
    assert "ACC" in proc.stdout and "BWT" in proc.stdout
    bad = cli("train", str(path), "--continual", "nope", "--no-progress")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and len(bad.stderr.strip().splitlines()) == 1
    # `neuro report` rebuilds the continual report (accuracy matrix), not the per-epoch one
    run = tmp_path / "toy"
    R = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]["R"]
    for name in ("report.html", "accuracy_matrix.png"):
        (run / name).unlink()
    rep = cli("report", str(run))
    assert rep.returncode == 0, rep.stderr
    html = (run / "report.html").read_text()
    assert (run / "accuracy_matrix.png").is_file() and "Accuracy matrix R" in html
    assert f"{round(100 * R[-1][0], 2)}" in html


def test_report_of_a_stopped_continual_run(tmp_path):
    from neuro.continual.workflow import rewrite_continual_report

    run, partial = train_continual(_toy_config(tmp_path), echo=lambda *a: None, stop_after=2)
    (run.path / "report.html").unlink(missing_ok=True)
    html = rewrite_continual_report(run.path).read_text()
    assert "Accuracy matrix R" in html
    for row in partial["R"]:  # every logged accuracy of the two finished tasks is in the table
        for v in row:
            if v is not None:
                assert f">{100 * v:.3g}<" in html, v  # the report shows 3 significant digits


def test_hlop_wraps_forward_forward_too():
    """The same wrapper around FF (per-layer graphs, positive and negative passes): every projected update
    annihilates its layer's frozen subspace, and the lateral weights saw FF's own (label-embedded) inputs."""
    from neuro.rules.ff import FF, FFSpec

    torch.manual_seed(0)
    model = MLP(20, [16, 12], 4, bias=False, normalize=True)
    rule = FF(FFSpec(readout=True, predict="readout"), n_classes=4)
    hlop = build_strategy(ContinualSpec(strategy="hlop", subspace=[5, 4, 6], increment=[2], hebbian_lr=[0.02]), rule)
    hlop.check_compatible(model)
    assert [l.name for l in hlop.layers] == ["layers.0.linear", "layers.1.linear", "readout"]
    data = _toy_dataset(torch.rand(48, 20), torch.randint(0, 4, (48,)), torch.rand(8, 20), torch.randint(0, 4, (8,)), 4)
    hlop.begin_task(0, model, data)
    for _ in range(3):
        model.zero_grad()
        hlop.step(model, Batch(data.train.x, data.train.y))
    hlop.end_task(0, model, data)
    hlop.begin_task(1, model, data)
    model.zero_grad()
    hlop.step(model, Batch(data.train.x, data.train.y))
    for layer in hlop.layers:
        frozen = hlop.H[layer.name][: hlop.n_frozen[layer.name]].double()
        g = layer.weight.grad.double()
        assert g.abs().max() > 0, layer.name
        assert (g @ frozen.t()).abs().max().item() < 1e-6 * max(g.abs().max().item(), 1.0), layer.name


# ------------------------------------------------------- task-incremental head
def test_restrict_scores_trains_only_the_task_classes():
    """Inside restrict_scores the loss is the cross-entropy over the task's classes alone (computed here
    independently on the sliced scores) and the other classes' output rows get exactly zero gradient."""
    from neuro.continual.base import restrict_scores

    torch.manual_seed(0)
    model = MLP(12, [16], 6, bias=False, normalize=False)
    x, y = torch.rand(20, 12), torch.randint(2, 4, (20,))
    mask = torch.zeros(6, dtype=torch.bool)
    mask[[2, 3]] = True
    with torch.no_grad():
        expected = F.cross_entropy(model(x)[:, 2:4], y - 2).item()
    with restrict_scores(model, mask):
        metrics = BPTT().step(model, Batch(x, y))
    assert metrics["loss"] == pytest.approx(expected, rel=1e-6)
    g = model.readout.weight.grad
    assert g[[0, 1, 4, 5]].abs().max().item() == 0.0 and g[[2, 3]].abs().max().item() > 0
    assert torch.isfinite(model.layers[0].linear.weight.grad).all()
    assert torch.isfinite(model(x)).all()  # the hook is gone after the block


@pytest.mark.parametrize("head", ["task", "all"])
def test_workflow_train_head(tmp_path, head):
    """train_head = "task": after task 0 (digits 0-1) the output rows of digits 2-9 are still their initial
    values; "all" trains every row against every task."""
    from neuro.build import build_experiment
    from neuro.continual.workflow import load_task_checkpoint

    config = _toy_config(tmp_path, strategy="finetune", shuffle_order=False, train_head=head)
    config["model"].update(readout="membrane_max", lif={"input_gain": "unit", "tau_syn": 0.0})  # the demo's
    initial = build_experiment(config).model.layers[-1].linear.weight.detach().clone()
    run, _ = train_continual(config, echo=lambda *a: None, stop_after=1)
    trained = load_task_checkpoint(latest_task_checkpoint(run.path))["model"]["layers.1.linear.weight"]
    moved = (trained - initial).abs().amax(1)
    assert moved[:2].min() > 0
    if head == "task":
        assert moved[2:].max().item() == 0.0
    else:
        assert moved[2:].min() > 0


def test_demo_part_hlop_learns_every_task_and_keeps_them(tmp_path):
    """The demo's continual part (examples/split_digits_hlop.toml, seed 0; chance is 50 % per task):
    with HLOP every task is learned to >= 80 % (30 points above chance) and the final row loses at most
    3 points on any old task (BWT >= -1 %); fine-tuning learns each task (>= 75 %) and forgets (BWT <= -3 %,
    at least 3 points worse)."""
    from neuro.continual.demo import run_demo_part

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = run_demo_part(tmp_path, echo=lambda *a: None)
    finally:
        torch.set_num_threads(threads)
    hlop, finetune = results["hlop"], results["finetune"]
    R = hlop["R"]
    assert len(R) == 5
    assert min(R[i][i] for i in range(5)) >= 0.80, R
    assert min(R[4][j] - R[j][j] for j in range(4)) >= -0.03, R
    assert hlop["BWT"] >= -0.01 and finetune["BWT"] <= -0.03, (hlop["BWT"], finetune["BWT"])
    assert hlop["BWT"] - finetune["BWT"] >= 0.03
    assert min(finetune["R"][i][i] for i in range(5)) >= 0.75, finetune["R"]  # it learns each task, then forgets
    for strategy in ("hlop", "finetune"):
        assert (tmp_path / f"demo-continual-{strategy}" / "report.html").is_file()


def test_demo_lists_the_continual_part():
    from neuro.demo import DemoPart, demo_parts, run_part

    parts = {p.name: p for p in demo_parts()}
    assert parts["demo-continual"].config == "split_digits_hlop.toml"
    assert parts["demo-continual"].strategies == ["hlop", "finetune"]
    bad = DemoPart(title="t", config="digits_bptt.toml", name="x", strategies=["hlop"])
    with pytest.raises(ConfigError, match="strategies need a config with a \\[continual\\] section"):
        run_part(bad, "unused")
    with pytest.raises(ConfigError, match="did you mean 'hlop'"):
        DemoPart(title="t", config="split_digits_hlop.toml", name="x", strategies=["hlopp"]).check()


def test_table_partial_rows_of_a_stopped_run(tmp_path):
    """bench.continual_table --partial: R rows, mean and BWT so far (hand-computed: after 2 tasks
    mean (80 + 95) / 2 = 87.50, BWT 80 - 90 = -10.00; after 3, BWT ((70 - 90) + (85 - 95)) / 2 = -15.00)."""
    from bench.continual_table import partial

    rows = [{"event": "epoch", "task": 0}, {"event": "task", "task": 0, "task_name": "a", "R_row": [0.9, None, None],
            "train_time_s": 10.0}, {"event": "task", "task": 1, "task_name": "b", "R_row": [0.8, 0.95, None],
            "train_time_s": 12.0}, {"event": "task", "task": 2, "task_name": "c", "R_row": [0.7, 0.85, 1.0],
            "train_time_s": 11.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = partial(tmp_path).splitlines()
    assert lines[0].endswith("3 tasks finished")
    assert lines[3] == "| 1 (a) | 90.0 | 90.00 | - | 10 |"
    assert lines[4] == "| 2 (b) | 80.0 95.0 | 87.50 | -10.00 | 12 |"
    assert lines[5] == "| 3 (c) | 70.0 85.0 100.0 | 85.00 | -15.00 | 11 |"


def test_table_continues_a_stopped_run_of_the_same_config_only(tmp_path):
    """bench.continual_table.run_one: a run of the same config stopped after a finished task continues
    there (same R as the uninterrupted run, resumed = True); one with other settings is trained again."""
    from bench.continual_table import run_one

    def config(**continual):
        return _toy_config(tmp_path / "unused", shuffle_order=False, **continual)

    _, whole = train_continual({**config(), "run": {**config()["run"], "out_dir": str(tmp_path / "a"), "name": "x"}},
                               echo=lambda *a: None)
    stopped = {**config(), "run": {**config()["run"], "out_dir": str(tmp_path / "b"), "name": "x"}}
    train_continual(stopped, echo=lambda *a: None, stop_after=2)
    row = run_one(config(), tmp_path / "b", "x")
    assert row["resumed"] and row["R"] == whole["R"]
    # other settings under the same name: not continued, trained from task 0
    row = run_one(config(hebbian_lr=[0.02]), tmp_path / "b", "x")
    assert not row["resumed"] and len(row["R"]) == 5


def test_hlop_subspace_bench_measures_captured_energy(tmp_path, capsys):
    from bench.hlop_subspace import main as subspace_main
    from bench.hlop_subspace import subspace_energy
    from neuro.continual.workflow import load_continual_run

    torch.manual_seed(0)
    X = torch.randn(200, 3) @ torch.randn(3, 12) + 0.01 * torch.randn(200, 12)
    eigvecs = torch.linalg.eigh(X.double().t() @ X.double()).eigenvectors.flip(1)
    hlop, best = subspace_energy(X, eigvecs[:, :3].t().float())  # the top-3 eigenvectors: as good as it gets
    assert hlop == pytest.approx(best, abs=1e-6) and best > 0.99
    hlop, best = subspace_energy(X, eigvecs[:, 3:6].t().float())  # three weak directions: almost nothing
    assert hlop < 1e-3 and best > 0.99
    rand = torch.randn(5, 12)
    hlop, best5 = subspace_energy(X, rand)
    assert 0 < hlop <= best5 + 1e-12

    run, _ = train_continual(_toy_config(tmp_path, shuffle_order=False), echo=lambda *a: None, stop_after=1)
    spec, exp, stream, strategy, task = load_continual_run(run.path)
    assert task == 0 and strategy.H["layers.0"].shape == (8, 64)
    subspace_main([str(run.path), "--task", "0", "--samples", "100"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("layers.")]
    assert [r[:3] for r in rows] == [["layers.0", "64", "8"], ["layers.1", "24", "8"]]
    assert 0 < float(rows[0][4]) <= float(rows[0][5]) <= 100.0  # HLOP never above the best k-subspace
    for r in rows[1:]:  # a hidden layer of this tiny network may stay silent: then no fraction exists
        assert (float(r[3]) == 0 and r[4] == r[5] == "nan") or 0 < float(r[4]) <= float(r[5]) <= 100.0
    with pytest.raises(NeuroError, match="no checkpoint for task 3"):
        load_continual_run(run.path, 3)
    with pytest.raises(SystemExit, match="^error: .*no checkpoint for task 3; it has task-00.pt$"):
        subspace_main([str(run.path), "--task", "3"])
