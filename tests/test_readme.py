"""Every `neuro` command in README.md runs as written (with shortened training), so the README cannot rot.

Each command is taken from the README's code blocks, in order, and run in a scratch folder that has the
repository's ``examples/``; runs go to ``runs/`` there, as for a user.  Training commands get
``--set train.epochs=1 --set data.limit=...`` appended (and ``--resume`` a total of 2 epochs), deploys run
10 samples, emulators a few seconds.  Commands on MNIST skip when its files are absent.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neuro.data import data_root

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def readme_commands() -> list[tuple[list[str], bool]]:
    """``(argv after 'neuro', background)`` for every `.venv/bin/neuro` command in README.md's code blocks."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current = [] if line.strip() in ("```", "```bash", "```sh") else ["#not-shell"]
            else:
                if current[:1] != ["#not-shell"]:
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    out = []
    for block in blocks:
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                background = part.endswith("&")
                part = part.rstrip("&").strip()
                if part.startswith(".venv/bin/neuro "):
                    out.append((shlex.split(part)[1:], background))
    return out


def _has_mnist() -> bool:
    try:
        return (data_root(None) / "mnist").is_dir()
    except Exception:  # noqa: BLE001 - no data folder at all
        return False


def shorten(argv: list[str], tmp: Path) -> list[str] | None:
    """The command as the test runs it (shorter), or None to skip it."""
    argv = [a.replace("/tmp/", f"{tmp}/dev-") for a in argv]
    cmd = argv[0]
    if any("mnist" in a for a in argv) and not _has_mnist():
        return None
    if "--ray" in argv:  # needs a running Ray cluster at that address; the Ray path is tested in test_sweep.py
        return None
    if cmd == "sweep":
        argv = [a if a != "0-4" else "0-1" for a in argv]
        return [*argv, "--set", "train.epochs=1", "--set", "data.limit=200"]
    if cmd == "train":
        if "--resume" in argv:
            return [*argv, "--epochs", "2", "--no-progress"]
        limit = "120" if any("serial" in a for a in argv) else "300"
        extra = ["--set", "continual.tasks=2"] if any("hlop" in a for a in argv) else []
        if any("sfq" in a for a in argv):  # evaluating on pulses takes minutes; tests/test_sfq_net.py covers it
            extra += ["--set", "model.eval_on=rate_model"]
        return [*argv, "--no-progress", "--set", "train.epochs=1", "--set", f"data.limit={limit}", *extra]
    if cmd == "deploy":
        out = list(argv)
        if "--samples" in out:
            out[out.index("--samples") + 1] = "10"
        return out
    if cmd == "devices" and argv[1] == "emulate":
        if "--link" not in argv and "--link-dir" not in argv:  # so the test knows when the pty is up
            argv = [*argv, "--link", str(tmp / f"dev-emulator-{abs(hash(tuple(argv))) % 10**6}")]
        return [*argv, "--duration", "120"]
    return argv


def test_readme_lists_the_commands_we_expect():
    commands = [a for a, _ in readme_commands()]
    assert ["train", "examples/digits_bptt.toml"] in [a[:2] for a in commands]
    assert any(a[0] == "deploy" for a in commands) and any(a[:2] == ["devices", "emulate"] for a in commands)
    assert len(commands) >= 15


def test_every_readme_command_runs(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NEUROHIL_DATA": str(data_root(None)) if _has_mnist() else ""}
    env = {k: v for k, v in env.items() if v}
    background = []
    ran = 0
    try:
        for argv, in_background in readme_commands():
            argv = shorten(argv, tmp_path)
            if argv is None:
                continue
            cmd = [sys.executable, "-m", "neuro", *argv]
            if in_background:
                proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
                background.append(proc)
                deadline = time.time() + 60
                # wait until the emulator's links exist (it prints them once they are up)
                link_dir = Path(argv[argv.index("--link-dir") + 1]) if "--link-dir" in argv else None
                while link_dir is not None and time.time() < deadline and not (link_dir / "block2").exists():
                    assert proc.poll() is None, proc.stdout.read()
                    time.sleep(0.2)
                continue
            if argv[:2] == ["devices", "emulate"]:  # a foreground emulator: serve while the next commands probe it
                proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
                background.append(proc)
                link = Path(argv[argv.index("--link") + 1])
                deadline = time.time() + 60
                while time.time() < deadline and not link.exists():
                    assert proc.poll() is None, proc.stdout.read()
                    time.sleep(0.2)
                continue
            res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert res.returncode == 0, f"`neuro {' '.join(argv)}` failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
            assert "Traceback" not in res.stderr, res.stderr
            ran += 1
    finally:
        for proc in background:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert ran >= 10
    assert (tmp_path / "runs" / "digits-bptt" / "report.html").is_file()
    assert (tmp_path / "runs" / "digits-loihi" / "deploy-loihi").is_dir()


def test_python_api_example_runs(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "python_api.py"), "--out", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    accuracy = float(res.stdout.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 80, res.stdout  # 5 epochs of a 64-128-10 spiking MLP on digits
    assert (tmp_path / "model.nir").is_file()
