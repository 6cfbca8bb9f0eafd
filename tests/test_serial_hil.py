"""The serial driver against the emulated firmware, through a real pty (pyserial/termios path)."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from devices import SerialDevice
from devices.base import Device
from devices.emulator import AffineTanhSubstrate, Emulator, Faults
from neuro.errors import DeviceError
from simulators.substrate import Substrate


def _emulator(tmp_path, substrate=None, **kw) -> Emulator:
    return Emulator(substrate or AffineTanhSubstrate(6, 3, seed=2), link=tmp_path / "ttyNH0", **kw)


def test_driver_is_a_device_and_a_substrate_and_measures_like_the_simulator(tmp_path, no_leaks):
    reference = AffineTanhSubstrate(6, 3, seed=2)
    with _emulator(tmp_path, max_batch=8) as emu, SerialDevice(emu.port, timeout=0.2) as dev:
        assert isinstance(dev, Device) and isinstance(dev, Substrate)
        assert os.path.realpath(emu.port).startswith("/dev/pts/")
        assert (dev.n_in, dev.n_out, dev.input_range) == (6, 3, (-1.0, 1.0))
        desc = dev.describe()
        assert desc["kind"] == "serial:affine-tanh" and desc["params"] == {"W": [3, 6], "b": [3]}
        x = torch.rand(21, 6) * 2 - 1  # 21 rows: three FORWARD frames of at most 8
        assert torch.equal(dev.forward(x), torch.cat([reference.forward(x[i:i + 8]) for i in (0, 8, 16)]))
        new = {"W": torch.full((3, 6), 0.25), "b": torch.tensor([0.0, 0.5, -0.5])}
        dev.set_params(new)
        back = dev.get_params()
        assert all(torch.equal(back[k], new[k]) for k in new) and torch.equal(dev.written_params["b"], new["b"])
        y = dev.forward(torch.ones(1, 6))
        assert torch.allclose(y, torch.tanh(torch.tensor([[1.5, 2.0, 1.0]])), atol=1e-6)
        dev.reset()
        health = dev.health()
        assert health["device"]["frames_ok"] == 9  # HELLO, 3 FORWARD, SET, READ, FORWARD, RESET, HEALTH
        assert health["link"]["samples"] == 22 and health["link"]["requests"] == 9 and "timeout" not in health["link"]
    assert not (tmp_path / "ttyNH0").exists()


def test_int16_samples_are_quantized_over_the_advertised_ranges(tmp_path, no_leaks):
    reference = AffineTanhSubstrate(6, 3, seed=2)
    with _emulator(tmp_path) as emu, SerialDevice(emu.port, timeout=0.2, sample_format="int16") as dev:
        x = torch.rand(50, 6) * 2 - 1
        y = dev.forward(x)
        xq = torch.from_numpy(np.round((x.numpy() + 1) / 2 * 65535) / 65535 * 2 - 1).float()
        err = (y - reference.forward(xq)).abs().max().item()
        assert 0 < err <= 1 / 65535 + 1e-6  # output quantization: half a step of 2/65535


def test_faults_every_sample_delivered_exactly_once_and_in_order(tmp_path, no_leaks, caplog):
    """Drops, bit flips, garbage, delays past the timeout, device errors and two disconnects:
    a drifting device (each measurement shifts its outputs) shows any lost, duplicated,
    re-measured or reordered sample."""
    caplog.set_level(logging.INFO, logger="devices")
    drift = 1e-3
    reference = AffineTanhSubstrate(6, 3, seed=2, drift=drift)
    faults = Faults(drop=0.03, corrupt=0.03, garbage=0.03, delay=0.01, delay_s=0.12, error=0.02,
                    disconnect_at=(40, 110), down_s=0.1)
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(4, 6, generator=g) * 2 - 1 for _ in range(150)]
    with _emulator(tmp_path, AffineTanhSubstrate(6, 3, seed=2, drift=drift), faults=faults, seed=11) as emu:
        with SerialDevice(emu.port, timeout=0.05, retries=10, reconnect_timeout=3.0) as dev:
            got = [dev.forward(x) for x in batches]
            link = dev.link_stats()
        injected = [r.kind for r in emu.fault_log]
        measured = emu.firmware.counts["samples_measured"]
        assert dev.delivered_crc == emu.firmware.measured_crc != 0
    want = [reference.forward(x) for x in batches]
    # exactly once: the device measured each sample once; count, order and checksum agree
    assert measured == sum(len(x) for x in batches) == link["samples"] == 600
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert float(torch.cat(got).double().sum()) == pytest.approx(float(torch.cat(want).double().sum()), abs=0)
    # the faults happened, and the driver names each kind it recovered from
    for kind in ("dropped request", "dropped reply", "corrupted reply", "garbage bytes", "device error"):
        assert kind in injected, kind
    assert injected.count("disconnect") == 2 and link["reconnects"] == 2 and link["port lost"] == 2
    assert link["device error"] == injected.count("device error")
    assert link["timeout"] >= injected.count("dropped request") and link["bad frame"] >= 1
    text = caplog.text
    for phrase in ("timeout on FORWARD seq", "bad frame on FORWARD seq", "device error on FORWARD seq",
                   "port lost on FORWARD seq", "reconnected after port loss"):
        assert phrase in text, phrase


def test_reconnect_after_reboot_rewrites_the_hardware_parameters(tmp_path, no_leaks):
    sub = AffineTanhSubstrate(6, 3, seed=2)
    with _emulator(tmp_path, sub, faults=Faults(disconnect_at=(3,), down_s=0.05)) as emu:
        with SerialDevice(emu.port, timeout=0.1) as dev:
            dev.set_params({"b": torch.tensor([1.0, 2.0, 3.0])})
            sub.set_params({"b": torch.zeros(3)})  # the board "loses" its settings ...
            emu.firmware.boot_id ^= 1  # ... because it rebooted while unplugged
            dev.forward(torch.zeros(1, 6))  # request 3: executed, then the port vanishes
            assert dev.counts["rewrites_after_reboot"] == 1
            assert torch.equal(dev.get_params()["b"], torch.tensor([1.0, 2.0, 3.0]))


def test_protocol_version_mismatch_is_one_clear_line(tmp_path, no_leaks):
    with _emulator(tmp_path, protocol_versions=(2, 2)) as emu:
        with pytest.raises(DeviceError) as err:
            SerialDevice(emu.port, timeout=0.2).open()
    msg = str(err.value)
    assert "protocol version mismatch" in msg and "v1..v1" in msg and "v2" in msg and "\n" not in msg


def test_dead_ports_give_one_line_errors(tmp_path, no_leaks):
    with pytest.raises(DeviceError, match=r"cannot open serial port .*nothing-here.*neuro devices list") as err:
        SerialDevice(str(tmp_path / "nothing-here")).open()
    assert "\n" not in str(err.value)
    # loop:// echoes our own request back: a port that opens but where no device answers
    with pytest.raises(DeviceError, match=r"no reply from serial device loop:// to HELLO after 2 tries"):
        SerialDevice("loop://", timeout=0.05, retries=1).open()
    with pytest.raises(DeviceError, match="is not open"):
        SerialDevice("loop://").forward(torch.zeros(1, 2))


def test_a_device_that_never_comes_back_is_reported(tmp_path, no_leaks):
    emu = _emulator(tmp_path).start()
    try:
        dev = SerialDevice(emu.port, timeout=0.05, retries=1, reconnect_timeout=0.3)
        dev.open()
        emu.stop()
        with pytest.raises(DeviceError, match=r"is gone .* did not come back within 0.3 s"):
            dev.forward(torch.zeros(1, 6))
        dev.close()
    finally:
        emu.stop()
