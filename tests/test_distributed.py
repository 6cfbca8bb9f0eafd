"""Data-parallel training (issue 16): 2 gloo ranks on this machine against 1 process.

- For bptt (rate-coded input spikes), ff (paired dropout, random wrong labels), mfff (SPSA on the
  control inputs of a noise-free wave substrate) and pat (fitted twins, trained on every rank's
  shard), 2 ranks with shards of each global batch of 33 samples (16 + 17, so the weighting by
  shard size is exercised) give the weights of 1 process with the whole batches after 5 steps.
  A control run whose ranks draw their spikes locally (not for the global batch) must differ.
- A 2-"node" run (two torchrun invocations, c10d rendezvous on 127.0.0.1) trains and checkpoints;
  the checkpoint resumed by 1 process continues like an uninterrupted single-process run.
- ``neuro train --nproc 2`` with one rank killed ends within 60 s with one error line naming the
  rank, and leaves no process behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT

TOL = 1e-6
STEPS = 5
BATCH = 33
SMALL = {"dataset": "digits", "limit": STEPS * BATCH, "val_fraction": 0.0}
PHYSICAL = {"kind": "physical_mlp", "substrate": "wave:scattering", "physical": [24], "hidden": [16, 16],
            "substrate_options": {"noise": 0.0, "n_control": 4}}
# SGD: the weights after 5 steps are then linear in the gradients, so float rounding of the
# all-reduce (about 1e-7 relative) stays at that level; Adam divides by sqrt(v) and lifts the
# rounding of near-zero gradient entries to about 1e-6 .. 1e-5 (see the report of issue 16).
CONFIGS = {
    "bptt": {"model": {"kind": "spiking_mlp", "hidden": [32], "time_steps": 8, "encoder": "rate",
                       "readout": "membrane_max"},
             "rule": {"name": "bptt"}, "optim": {"name": "sgd", "lr": 0.5}},
    "ff": {"model": {"kind": "mlp", "hidden": [32, 32]},
           "rule": {"name": "ff", "dropout": 0.2}, "optim": {"name": "sgd", "lr": 0.5}},
    "mfff": {"model": PHYSICAL, "rule": {"name": "mfff", "variant": "supervised", "spsa_eps": 0.05},
             "optim": {"name": "sgd", "lr": 0.2}},
    "pat": {"model": PHYSICAL, "rule": {"name": "pat", "twin_samples": 64, "twin_epochs": 2, "twin_hidden": 16},
            "optim": {"name": "sgd", "lr": 0.2}},
}


def config_of(name: str) -> dict:
    c = CONFIGS[name]
    return {"data": dict(SMALL), "train": {"epochs": 1, "batch_size": BATCH}, "run": {"progress": False}, **c}


def train_weights(name: str) -> tuple[dict, dict, int, dict]:
    from neuro.build import build_experiment

    exp = build_experiment(config_of(name))
    initial = {k: v.detach().clone() for k, v in exp.model.state_dict().items() if torch.is_tensor(v)}
    trainer = exp.trainer(None, progress=False)
    (record,) = trainer.fit()
    final = {k: v.detach().clone() for k, v in exp.model.state_dict().items() if torch.is_tensor(v)}
    return initial, final, trainer.step, record


def _rank_worker(rank: int, world: int, store: str, out: str) -> None:
    """One rank: train every config, then the control (spikes drawn per rank), save rank 0's weights."""
    import torch.distributed as dist

    import neuro.trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    results = {name: train_weights(name)[1:] for name in CONFIGS}
    real = neuro.trainer.batch_shard
    neuro.trainer.batch_shard = lambda shard: contextlib.nullcontext()  # control: each rank draws for its shard only
    try:
        results["control"] = train_weights("bptt")[1:]
    finally:
        neuro.trainer.batch_shard = real
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def relative_error(ref: dict, got: dict) -> float:
    """max over tensors of max|ref - got| / max|ref|."""
    return max(float((ref[k] - got[k]).abs().max() / ref[k].abs().max().clamp_min(1e-30))
               for k in ref if ref[k].is_floating_point())


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    import torch.multiprocessing as mp

    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank_worker, args=(2, str(tmp / "store"), str(tmp / "out.pt")), nprocs=2, join=True)
    return torch.load(tmp / "out.pt", weights_only=False)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_ranks_equal_one_process(name, two_rank_results):
    initial, single, steps, record = train_weights(name)
    assert steps == STEPS
    ranks, rank_steps, rank_record = two_rank_results[name]
    assert rank_steps == STEPS
    keys = [k for k in initial if initial[k].is_floating_point()]
    moved = float(torch.cat([(single[k] - initial[k]).flatten() for k in keys]).norm()
                  / torch.cat([initial[k].flatten() for k in keys]).norm())
    assert moved > 1e-3, f"{name}: 5 steps barely changed the weights ({moved:.2e}); the comparison would be empty"
    err = relative_error(single, ranks)
    assert err <= TOL, f"{name}: 2 ranks differ from 1 process by {err:.2e} (relative)"
    # metrics reduced over the ranks: means of the global batches, counts summed
    metrics = [k for k in record if k.startswith("train_") or k.startswith("n_")]
    assert metrics and set(metrics) == {k for k in rank_record if k.startswith("train_") or k.startswith("n_")}
    for k in metrics:
        if k.startswith("n_"):
            assert rank_record[k] == record[k], k
        else:
            assert rank_record[k] == pytest.approx(record[k], rel=1e-5, abs=1e-7), k


def test_control_with_per_rank_spikes_differs(two_rank_results):
    """The equality needs every sample's spikes to be the single process's: drawn per rank, they are not."""
    _, single, _, _ = train_weights("bptt")
    control, _, _ = two_rank_results["control"]
    assert relative_error(single, control) > 1e-3


def test_shard_split_and_weights():
    from neuro.functional.sharding import split

    for total in (1, 2, 7, 33, 64):
        for world in (1, 2, 3, 4):
            shards = [split(total, world, r) for r in range(world)]
            if total >= world:
                assert [s.start for s in shards] == [0, *[s.stop for s in shards[:-1]]] and shards[-1].stop == total
                assert abs(sum(s.weight for s in shards) - 1.0) < 1e-12
                assert max(s.size for s in shards) - min(s.size for s in shards) <= 1
            else:  # fewer samples than ranks: every rank computes the whole batch with weight 1/world
                assert all(s.whole and abs(s.weight - 1 / world) < 1e-12 for s in shards)


def test_rank_placeholder_in_substrate_specs(monkeypatch):
    from neuro.distributed import expand_rank
    from neuro.substrates import substrate_label

    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert expand_rank("serial:/dev/ttyUSB{rank}") == "serial:/dev/ttyUSB3"
    assert expand_rank("serial:/tmp/nh/host-{local_rank}") == "serial:/tmp/nh/host-1"
    assert substrate_label("serial:/dev/ttyUSB{rank}") == "serial:/dev/ttyUSB3"


# --------------------------------------------------------------- launched jobs
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **extra}


LAUNCH_CONFIG = ["--set", "data.limit=128", "--set", "data.val_fraction=0.0", "--set", "model.hidden=[16]",
                 "--set", "model.time_steps=6", "--set", "model.readout=\"membrane_max\"",
                 "--set", "optim.name=\"sgd\"",
                 "--set", "optim.lr=0.5", "--set", "train.batch_size=32", "--no-progress"]


@pytest.mark.slow
def test_two_nodes_train_checkpoint_and_resume_on_one(tmp_path):
    """Two torchrun invocations (--nnodes 2, c10d rendezvous on 127.0.0.1) train 1 epoch and checkpoint;
    1 process resumes to epoch 2 and matches an uninterrupted single-process run of 2 epochs."""
    from neuro import workflow
    from neuro.build import build_experiment
    from neuro.cli.main import build_parser
    from neuro.cli.train import _config
    from neuro.trainer import load_checkpoint

    port = _free_port()
    neuro_args = ["train", "--epochs", "1", "--name", "two-nodes", "--out", str(tmp_path / "runs"), *LAUNCH_CONFIG]
    # each node writes to its own file, not a pipe: a node blocked on a full pipe that nobody reads (the test waits on
    # the other node first) would stall the other node's collectives, and both would hang
    logs = [(tmp_path / f"node{i}.log").open("w+") for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"test-{port}",
             "--max-restarts", "0", "-m", "neuro", *neuro_args],
            cwd=tmp_path, env=_env(), stdout=log, stderr=subprocess.STDOUT, text=True)
        for log in logs
    ]
    try:
        for p in procs:
            p.wait(timeout=240)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.wait()
    outs = []
    for log in logs:
        log.seek(0)
        outs.append((log.read(), ""))
        log.close()
    assert all(p.returncode == 0 for p in procs), [o[0][-3000:] for o in outs]
    run_dir = tmp_path / "runs" / "two-nodes"
    assert "2 processes" in "".join(o[0] for o in outs)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["epoch"] == 1 and state["step"] == 4

    workflow.resume(run_dir, epochs=2, progress=False, echo=lambda *_: None)  # 1 process
    resumed = load_checkpoint(run_dir / "checkpoint.pt")
    assert resumed["epoch"] == 2 and resumed["step"] == 8

    args = build_parser().parse_args(neuro_args[:1] + ["--epochs", "2", *LAUNCH_CONFIG])
    exp = build_experiment(_config(args))
    exp.trainer(None, progress=False).fit()
    reference = {k: v for k, v in exp.model.state_dict().items() if torch.is_tensor(v)}
    got = {k: v for k, v in resumed["model"].items() if torch.is_tensor(v)}
    assert relative_error(reference, got) <= TOL
    epochs = [r for r in (run_dir / "metrics.jsonl").read_text().splitlines() if '"event": "epoch"' in r]
    assert len(epochs) == 2


def _pids_with(tag: str) -> dict[int, dict]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        pairs = dict(e.decode(errors="replace").split("=", 1) for e in env if b"=" in e)
        if pairs.get("NEUROHIL_TEST_TAG") == tag:
            found[int(entry.name)] = pairs
    return found


@pytest.mark.slow
def test_killing_one_rank_ends_the_job_with_one_line(tmp_path):
    tag = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-m", "neuro", "train", "--nproc", "2", "--epochs", "200", "--name", "victim",
         "--out", str(tmp_path / "runs"), *LAUNCH_CONFIG],
        cwd=tmp_path, env=_env(NEUROHIL_TEST_TAG=tag), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = tmp_path / "runs" / "victim" / "metrics.jsonl"
        deadline = time.monotonic() + 180
        while not (metrics.exists() and metrics.stat().st_size) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        ranks = {int(env["RANK"]): pid for pid, env in _pids_with(tag).items() if "RANK" in env}
        assert set(ranks) == {0, 1}
        os.kill(ranks[1], signal.SIGKILL)
        killed = time.monotonic()
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - killed < 60
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"error: rank 1 (pid {ranks[1]}) was killed by SIGKILL; every other rank was stopped"], err
    time.sleep(0.5)
    assert _pids_with(tag) == {}, "processes of the job were left behind"


@pytest.mark.slow
def test_device_failure_on_one_rank_ends_the_job_naming_rank_and_port(tmp_path):
    """Hardware in the loop at scale: each rank opens its own emulated serial devices through
    ``{rank}`` in the substrate specs; when rank 1's devices vanish mid-run, the job ends within the
    driver's limits (3 s reconnect window) with one error line naming rank 1 and its port."""
    import tomli_w

    from devices.emulator import emulators_for_model
    from neuro.build import build_experiment

    config = {"run": {"name": "hil", "seed": 1, "progress": False, "out_dir": str(tmp_path / "runs")},
              "data": {"dataset": "digits", "limit": 256},
              "model": {"kind": "physical_mlp", "physical": [24], "hidden": [16, 16],
                        "substrate_options": {"noise": 0.0, "n_control": 4}},
              "rule": {"name": "mfff", "variant": "supervised"}, "train": {"epochs": 500, "batch_size": 32}}
    model = build_experiment(config).model  # the simulated physics the emulators serve
    emus = {r: emulators_for_model(model, tmp_path / f"links{r}", seed=r) for r in (0, 1)}
    config["model"]["substrates"] = [f"serial:{tmp_path}/links{{rank}}/block{k}" for k in range(2)]
    config["model"]["substrate_options"]["serial"] = {"timeout": 0.25, "retries": 4, "reconnect_timeout": 3.0}
    (tmp_path / "hil.toml").write_text(tomli_w.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "neuro", "train", "--nproc", "2", str(tmp_path / "hil.toml")],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = tmp_path / "runs" / "hil" / "metrics.jsonl"
        deadline = time.monotonic() + 180
        while not (metrics.exists() and metrics.stat().st_size) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        for e in emus[1]:
            e.stop()
        stopped = time.monotonic()
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - stopped < 30
    finally:
        if proc.poll() is None:
            proc.kill()
        for e in emus[0] + emus[1]:
            e.stop()
    assert proc.returncode == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert errors[0].startswith("error: rank 1: serial device ") and f"{tmp_path}/links1/block" in errors[0], errors[0]


def test_launcher_reports_one_line(tmp_path):
    """The launcher's summary of a failed job: the rank that failed first, ranks that failed alike merged,
    ranks that only lost their peers (exit 3) or were stopped by torchrun (SIGTERM) never blamed."""
    from types import SimpleNamespace

    from neuro.distributed import DistributedError
    from neuro.parallel import PEER_LOST_EXIT, _report_failure

    def failure(exitcode, timestamp, pid):
        return SimpleNamespace(exitcode=exitcode, timestamp=timestamp, pid=pid)

    killed = {0: failure(PEER_LOST_EXIT, 10, 100), 1: failure(-9, 11, 101), 2: failure(-15, 9, 102)}
    expected = r"^rank 1 \(pid 101\) was killed by SIGKILL; every other rank was stopped$"
    with pytest.raises(DistributedError, match=expected):
        _report_failure(killed, tmp_path)
    # The survivor aborted in C++ (SIGABRT) in the same second as its peer was killed: not blamed.
    aborted = {0: failure(-6, 10, 100), 1: failure(-9, 10, 101)}
    with pytest.raises(DistributedError, match=expected):
        _report_failure(aborted, tmp_path)
    # An abort with no other cause is still reported as what it is.
    alone = {0: failure(-6, 10, 100), 1: failure(PEER_LOST_EXIT, 10, 101)}
    with pytest.raises(DistributedError, match=r"^rank 0 \(pid 100\) was killed by SIGABRT"):
        _report_failure(alone, tmp_path)
    (tmp_path / "rank0.txt").write_text("data root /x is not a directory")
    (tmp_path / "rank2.txt").write_text("data root /x is not a directory")
    alike = {0: failure(2, 10, 100), 1: failure(PEER_LOST_EXIT, 10, 101), 2: failure(2, 11, 102)}
    with pytest.raises(DistributedError, match=r"^ranks 0, 2: data root /x is not a directory$"):
        _report_failure(alike, tmp_path)
