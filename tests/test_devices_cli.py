"""``neuro devices``: emulate over a pty in its own process, probe it, and clear one-line errors.

The emulator runs as a real ``python -m neuro devices emulate`` process (the pty crosses a
process boundary as with a board); the other commands run through ``neuro.cli.main.main``
in-process (same parser and error handling as the console, without another torch start-up).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devices.emulator import AffineTanhSubstrate, Emulator
from neuro.cli.main import main
from tests.conftest import REPO_ROOT


def _neuro(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_emulate_in_a_process_then_probe_it_through_the_pty(tmp_path, capsys):
    link = tmp_path / "ttyNH0"
    proc = subprocess.Popen([sys.executable, "-m", "neuro", "devices", "emulate", "--substrate", "affine",
                             "--n-in", "5",
                             "--n-out", "2", "--link", str(link), "--duration", "120"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().strip()
        assert port == str(link) and link.is_symlink(), proc.stderr.read() if not port else port
        rc, out, err = _neuro(capsys, "devices", "probe", port, "--forward", "3", "--timeout", "2")
        assert rc == 0, err
        assert f"{port}: affine-tanh (neurohil-emu 1.0), protocol v1" in out
        assert "inputs 5 in [-1, 1], outputs 2" in out and "W [2, 5], b [2]" in out and "over 3" in out
        # the running emulator is listed, under a header
        rc, out, _ = _neuro(capsys, "devices", "list")
        assert rc == 0 and "EMULATOR PORT\tSERVES\tPID" in out and f"{port}\taffine-tanh\t{proc.pid}" in out
        # --json is strict JSON (no NaN), even for a device that has measured nothing yet
        rc, out, _ = _neuro(capsys, "devices", "probe", port, "--json", "--timeout", "2")
        assert rc == 0
        parsed = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in --json output"))
        assert parsed["describe"]["n_in"] == 5
    finally:
        proc.terminate()  # SIGTERM: the emulator stops cleanly and prints its summary
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "served 7 requests, measured 3 samples" in out  # HELLO, HEALTH, 3 FORWARD; then HELLO, HEALTH for --json
    assert not link.exists()


def test_probe_errors_are_one_line(tmp_path, capsys):
    rc, _, err = _neuro(capsys, "devices", "probe", str(tmp_path / "ttyUSB9"))
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(f"error: cannot open serial port {tmp_path / 'ttyUSB9'}: No such file or directory")
    with Emulator(AffineTanhSubstrate(3, 2), link=tmp_path / "v2", protocol_versions=(2, 2)) as emu:
        rc, _, err = _neuro(capsys, "devices", "probe", emu.port, "--timeout", "1")
    assert rc == 2 and err.count("\n") == 1
    assert "error: protocol version mismatch on" in err and "device speaks protocol v2..v2" in err


def test_emulate_rejects_unknown_substrates_and_bad_fault_rates(capsys):
    rc, _, err = _neuro(capsys, "devices", "emulate", "--substrate", "nonsense", "--duration", "1")
    assert rc == 2 and err.startswith("error: unknown substrate 'nonsense'; valid: ") and err.count("\n") == 1
    assert "affine" in err and "wave:scattering" in err and "serial" not in err  # a serial port cannot be emulated
    rc, _, err = _neuro(capsys, "devices", "emulate", "--substrate", "wave:foo", "--duration", "1")
    assert rc == 2 and "unknown substrate 'wave:foo'" in err and "affine" in err
    rc, _, err = _neuro(capsys, "devices", "emulate", "--drop", "1.5", "--duration", "1")
    assert rc == 2 and "fault rate drop must be a probability in [0, 1], got 1.5" in err
    with pytest.raises(SystemExit):
        main(["devices", "emulate", "--help"])
    assert "Substrates available now: affine" in " ".join(capsys.readouterr().out.split())
    rc, out, _ = _neuro(capsys, "devices", "list")
    assert rc == 0 and out.strip()


def test_emulate_for_config_serves_one_device_per_block(tmp_path, capsys):
    cfg = tmp_path / "phys.toml"
    cfg.write_text('[data]\ndataset = "digits"\nlimit = 32\n[model]\nkind = "physical_mlp"\nphysical = [8]\n'
                   'hidden = [6, 6, 6]\nsubstrate_options = { noise = 0.0, n_control = 2 }\n[rule]\nname = "mfff"\n')
    rc, out, err = _neuro(capsys, "devices", "emulate", "--for-config", str(cfg), "--link-dir", str(tmp_path / "nh"),
                          "--duration", "0.2")
    assert rc == 0, err
    lines = out.splitlines()
    assert json.loads(lines[0]) == [f"serial:{tmp_path / 'nh' / f'block{k}'}" for k in range(3)]
    assert "block 0: wave:scattering (74 -> 8)" in lines[1] and "block 2: wave:scattering (6 -> 8)" in lines[3]
    assert lines[-1] == "served 0 requests, measured 0 samples; faults injected: none"
    assert not list((tmp_path / "nh").iterdir())  # links removed when it stops
    rc, _, err = _neuro(capsys, "devices", "emulate", "--for-config", str(cfg))
    assert rc == 2 and "--for-config needs --link-dir" in err
