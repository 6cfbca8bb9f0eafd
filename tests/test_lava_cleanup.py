"""Nothing outlives a killed ``neuro deploy``: no Lava process, no /dev/shm segment, no job folder.

Without Lava: the runner's cleanup (:func:`devices.lava_runner.install_cleanup`) in a stand-in
runner that creates a segment and two worker processes, its parent killed with SIGKILL.

With Lava: one trained run (the demo's digits network, 1 epoch) is deployed with ``neuro deploy`` in a
subprocess whose Lava run hangs on purpose (``NEUROHIL_LAVA_TEST_HANG_S``, read by
:func:`devices.lava_backend.run_lava`), so Lava's worker processes and shared memory are
alive when the deploy process is signalled.  Residue is then looked for in /proc and
/dev/shm for 10 s.  Skipped, with the reason, without ``.venv-lava``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devices.lava_backend import TEST_HANG_ENV, live_group_members
from devices.lava_env import lava_python

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc") or not os.path.isdir("/dev/shm"),
                                reason="needs Linux /proc and /dev/shm")
needs_lava = [pytest.mark.lava, pytest.mark.skipif(not lava_python().exists(),
                                                   reason=f"no Lava environment at {lava_python()} (make setup-lava)")]

REPO_ROOT = Path(__file__).resolve().parents[1]


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # state ppid pgrp ...


def _children(pid: int) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and (_stat(int(e)) or ["", "-1"])[1] == str(pid)]


def _mapped_shm(pids) -> set[str]:
    names = set()
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/dev/shm/") and not parts[5].endswith(" (deleted)"):
                names.add(parts[5][len("/dev/shm/"):])  # (multiprocessing's semaphores are unlinked at once)
    return names


STAND_IN_RUNNER = """
import json, os, sys, time, multiprocessing as mp
sys.path.insert(0, sys.argv[3])
from devices import lava_runner
job, parent = sys.argv[1], int(sys.argv[2])
lava_runner.install_cleanup(job, parent)
from multiprocessing import shared_memory
seg = shared_memory.SharedMemory(create=True, size=4096)  # as Lava's channels: created here, mapped by workers
ctx = mp.get_context("fork")
workers = [ctx.Process(target=time.sleep, args=(600,)) for _ in range(2)]
for w in workers:
    w.start()
with open(os.path.join(job, "ready.json"), "w") as f:
    json.dump({"segment": seg.name.lstrip("/"), "workers": [w.pid for w in workers]}, f)
time.sleep(600)
"""

STAND_IN_PARENT = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], str(os.getpid()), sys.argv[3]],
                 start_new_session=True)
time.sleep(600)
"""


def test_runner_cleanup_when_its_parent_is_killed_without_lava(tmp_path):
    """The stand-in runner leads its group, maps a /dev/shm segment and has two workers; SIGKILL its parent."""
    job = tmp_path / "neurohil-lava-job"
    job.mkdir()
    (job / "inputs.npz").write_bytes(b"x" * 1000)
    parent = subprocess.Popen([sys.executable, "-c", STAND_IN_PARENT, STAND_IN_RUNNER, str(job), str(REPO_ROOT)])
    ready = job / "ready.json"
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.exists(), "the stand-in runner did not start"
    time.sleep(0.2)
    info = json.loads(ready.read_text())
    runner = _children(parent.pid)[0]
    members = live_group_members(runner)
    assert set(info["workers"]) <= set(members) and runner in members
    assert (Path("/dev/shm") / info["segment"]).exists()
    parent.kill()
    parent.wait()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10 and (live_group_members(runner) or job.exists()
                                           or (Path("/dev/shm") / info["segment"]).exists()):
        time.sleep(0.05)
    try:
        assert live_group_members(runner) == [], "processes outlived the parent"
        assert not (Path("/dev/shm") / info["segment"]).exists(), "shared memory left in /dev/shm"
        assert not job.exists(), "job folder left behind"
    finally:
        for pid in live_group_members(runner) or []:
            os.kill(pid, signal.SIGKILL)
        (Path("/dev/shm") / info["segment"]).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from neuro import workflow
    from neuro.demo import example_config

    config = example_config("digits_loihi.toml")  # the demo's deployable network
    config["run"]["out_dir"] = str(tmp_path_factory.mktemp("runs"))
    config["train"]["epochs"] = 1
    config["data"] = {**config.get("data", {}), "limit": 300}
    run, _ = workflow.train(config, overwrite=True, progress=False, echo=lambda *a: None)
    return run.path


def _start_deploy_and_wait_for_lava(run_path: Path, tmp: Path):
    """Start ``neuro deploy`` (hanging Lava run); return (process, runner pid, job dir, shm names mapped)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), TEST_HANG_ENV: "600", "TMPDIR": str(tmp)}
    deploy = subprocess.Popen([sys.executable, "-m", "neuro", "deploy", str(run_path), "--samples", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + 240
    runner = None
    while time.monotonic() < deadline:
        assert deploy.poll() is None, f"deploy ended early: {deploy.stderr.read()}"
        if runner is None:
            runner = next((p for p in _children(deploy.pid)
                           if b"lava_runner.py" in Path(f"/proc/{p}/cmdline").read_bytes()), None)
        if runner is not None:
            members = live_group_members(runner) or []
            shm = _mapped_shm(members)
            # the hang starts after Lava launched its workers: several processes and their channels mapped
            if len(members) >= 4 and len(shm) >= 4:
                time.sleep(1.0)  # let every worker finish starting
                members = live_group_members(runner) or []
                argv = Path(f"/proc/{runner}/cmdline").read_bytes().split(b"\0")
                job = Path(argv[argv.index(b"--parent") - 1].decode())
                return deploy, runner, job, _mapped_shm(members), members
        time.sleep(0.2)
    deploy.kill()
    pytest.fail("the Lava run did not start within 240 s")


@needs_lava[0]
@needs_lava[1]
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["SIGKILL", "SIGTERM", "SIGINT"])
def test_killed_deploy_leaves_no_lava_process_shared_memory_or_job_folder(trained_run, tmp_path, sig):
    deploy, runner, job, shm, members = _start_deploy_and_wait_for_lava(trained_run, tmp_path)
    try:
        _kill_and_check(deploy, runner, job, shm, members, tmp_path, sig)
    finally:
        if deploy.poll() is None:
            deploy.kill()
        for pid in live_group_members(runner) or []:  # only what this test started: the runner's group
            os.kill(pid, signal.SIGKILL)
        for name in shm:  # and its segments, should the test have failed
            Path("/dev/shm", name).unlink(missing_ok=True)


def _kill_and_check(deploy, runner, job, shm, members, tmp_path, sig):
    assert job.is_dir() and job.parent == tmp_path and job.name.startswith("neurohil-lava-")
    assert all((Path("/dev/shm") / s).exists() for s in shm)
    assert len(members) >= 4, members  # the runner, Lava's workers, its shm manager, the resource tracker
    os.kill(deploy.pid, sig)
    try:
        # 5 s grace for the runner's own cleanup, then SIGKILL of its group; the rest is interpreter exit.  The
        # bound is generous because this test runs beside others under `make test -n 2` (Lava's workers spin).
        deploy.wait(timeout=90)
    except subprocess.TimeoutExpired:
        state = (_stat(deploy.pid) or ["gone"])[0]
        wchan = Path(f"/proc/{deploy.pid}/wchan").read_text() if Path(f"/proc/{deploy.pid}/wchan").exists() else "?"
        deploy.kill()
        _, err = deploy.communicate()
        pytest.fail(f"deploy did not exit within 90 s of {sig.name} (state {state}, wchan {wchan}); "
                    f"runner group {live_group_members(runner)}; its stderr: {err[-2000:]}")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        left = live_group_members(runner)
        shm_left = {s for s in shm if (Path("/dev/shm") / s).exists()}
        if not left and not shm_left and not job.exists():
            break
        time.sleep(0.1)
    waited = time.monotonic() - t0
    assert live_group_members(runner) == [], "Lava processes outlived the deploy process"
    assert [p for p in members if _stat(p) and _stat(p)[0] not in ("Z", "X")] == []
    assert {s for s in shm if (Path("/dev/shm") / s).exists()} == set(), "shared memory left in /dev/shm"
    assert not job.exists(), f"job folder {job} left behind"
    assert list(tmp_path.glob("neurohil-lava-*")) == []
    assert waited < 10
