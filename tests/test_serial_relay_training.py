"""Training through three emulated devices behind byte-level fault relays (blocking writes).

Each physical block's substrate is served by an :class:`Emulator` on a pty; a
:class:`Relay` sits between the driver and each emulator and drops, flips, duplicates,
truncates and stalls arbitrary byte chunks in both directions, knowing nothing of frames.
The in-process run (same config, noise off) is the reference: the weights must agree bit
for bit, and every device's CRC of what it measured must equal the driver's CRC of what was
delivered (each measurement crossed the link exactly once, in order).
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from devices.emulator import Emulator, emulators_for_model
from devices.serial.driver import SerialDevice, write_failure_evidence
from devices.serial.relay import ByteFaults, Relay
from neuro import workflow
from neuro.build import build_experiment
from neuro.errors import DeviceError
from neuro.runs import Run
from neuro.trainer import load_checkpoint

PHYSICAL, HIDDEN, N_CONTROL = 24, [16, 16, 16], 4  # three physical blocks: three devices


def config(out, name: str, substrates: list[str] | None = None, *, epochs: int = 2, limit: int = 96,
           driver: dict | None = None) -> dict:
    model = {"kind": "physical_mlp", "physical": [PHYSICAL], "hidden": HIDDEN,
             "substrate_options": {"noise": 0.0, "n_control": N_CONTROL}}
    if substrates:
        model["substrates"] = substrates
        model["substrate_options"]["serial"] = driver or {"timeout": 0.25, "retries": 40, "reconnect_timeout": 5.0}
    return {"run": {"name": name, "seed": 1, "progress": False, "out_dir": str(out)},
            "data": {"dataset": "digits", "limit": limit},
            "model": model, "rule": {"name": "mfff"}, "optim": {"name": "adam", "lr": 0.01},
            "train": {"epochs": epochs, "batch_size": 32}}


pytestmark = pytest.mark.usefixtures("no_pty_left_behind")


class Bench:
    """Three emulators (the substrates the in-process model builds) each behind a relay."""

    def __init__(self, tmp_path, faults: ByteFaults, seed: int, cfg_kw: dict | None = None) -> None:
        model = build_experiment(config(tmp_path, "emu", **(cfg_kw or {}))).model
        self.emus: list[Emulator] = emulators_for_model(model, tmp_path / "links", seed=seed)
        self.relays: list[Relay] = []
        try:
            for k, e in enumerate(self.emus):
                relay = Relay(e.port, faults=faults, seed=100 * seed + 2 * k, link=tmp_path / f"relay{k}")
                self.relays.append(relay.start())
        except BaseException:
            self.stop()
            raise

    @property
    def links(self) -> list[str]:
        return [f"serial:{r.port}" for r in self.relays]

    def stop(self) -> None:
        for r in self.relays:
            r.stop()
        for e in self.emus:
            e.stop()

    def injected(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for r in self.relays:
            for counts in r.summary().values():
                for k, v in counts.items():
                    total[k] = total.get(k, 0) + v
        return total


def link_summaries(run: Run) -> dict[str, dict]:
    return {d["port"]: d for d in (json.loads(p.read_text()) for p in run.path.glob("serial_link_*.json"))}


def weights(run: Run) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_checkpoint(run.checkpoint_path)["model"].items() if isinstance(v, torch.Tensor)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cache = {}

    def get(**kw):
        key = tuple(sorted(kw.items()))
        if key not in cache:
            cache[key] = workflow.train(config(tmp_path_factory.mktemp("ref"), "ref", **kw), echo=lambda *a: None)
        return cache[key]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_training_through_byte_faults_both_ways_is_identical_to_in_process(tmp_path, seed, reference):
    """1 % dropped + 1 % bit-flipped chunks in both directions, blocking writes, chunk sizes 1..4096."""
    ref_run, ref_test = reference()
    bench = Bench(tmp_path, ByteFaults(drop=0.01, flip=0.01), seed)
    try:
        run, test = workflow.train(config(tmp_path, "relay", bench.links), echo=lambda *a: None)
        fw = [(e.firmware.counts["samples_measured"], e.firmware.measured_crc) for e in bench.emus]
        injected = bench.injected()
        relays = [r.port for r in bench.relays]
    finally:
        bench.stop()
    assert test == ref_test  # same accuracy and loss, bit for bit
    ref_w, w = weights(ref_run), weights(run)
    assert ref_w.keys() == w.keys() and all(torch.equal(ref_w[k], w[k]) for k in ref_w)
    links = link_summaries(run)
    for port, (n, crc) in zip(relays, fw):  # exactly once: device-side CRC of measured == driver-side CRC of delivered
        assert links[port]["samples"] == n > 0 and links[port]["delivered_crc"] == crc, port
        assert links[port]["state"] == "open" and links[port]["last_error"] is None
    assert injected["drop"] + injected["flip"] > 0 and injected["chunks"] > 200  # faults really hit the stream


@pytest.mark.slow
def test_training_through_heavy_byte_faults_and_stalls_ends_within_the_bound(tmp_path, reference):
    """5 % drop + 5 % flip + 2 % stalls (blocking the relay 0.3 s): the run completes, identical, or fails
    with one clear line, and no request ever takes longer than its configured bound."""
    request_timeout = 5.0
    # frames of at most 8 rows (2.4 KiB for block 0): at 5 % loss per chunk, a 9.5 KiB frame cut into many
    # chunks rarely arrives whole, and 31 tries in a row can fail (a clear error, as the other branch checks)
    driver = {"timeout": 0.1, "retries": 30, "reconnect_timeout": 1.0, "request_timeout": request_timeout,
              "max_rows": 8}
    ref_run, ref_test = reference(epochs=1, limit=64)
    bench = Bench(tmp_path, ByteFaults(drop=0.05, flip=0.05, delay=0.02, delay_s=0.3), seed=5,
                  cfg_kw={"epochs": 1, "limit": 64})
    exp = build_experiment(config(tmp_path, "heavy", bench.links, epochs=1, limit=64, driver=driver))
    devices = [s for s in (getattr(m, "substrate", None) for m in exp.model.modules()) if isinstance(s, SerialDevice)]
    run = Run.create(exp.run.out_dir, exp.run.name)
    t0 = time.monotonic()
    try:
        try:
            trainer = exp.trainer(run, progress=False)
            trainer.fit()
            test, error = workflow.finish(exp, trainer, run), None
        except DeviceError as exc:
            test, error = None, exc
            write_failure_evidence(devices, run.path, exc)
        fw = [(e.firmware.counts["samples_measured"], e.firmware.measured_crc) for e in bench.emus]
        injected = bench.injected()
    finally:
        bench.stop()
    elapsed = time.monotonic() - t0
    stats = [d.link_stats() for d in devices]
    assert len(devices) == 3 and injected["delay"] > 0 and injected["drop"] > 0
    assert all(s["request_max_s"] <= request_timeout + 0.5 for s in stats), [s["request_max_s"] for s in stats]
    if error is None:
        assert test == ref_test
        assert [(s["samples"], s["delivered_crc"]) for s in stats] == [(n, c) for n, c in fw]
    else:  # one clear line, and the evidence is on disk
        assert "\n" not in str(error) and str(error).startswith(("no reply from serial device", "serial link to"))
        failure = json.loads((run.path / "serial_failure.json").read_text())
        assert failure["error"] == str(error) and any(d["state"] == "failed" for d in failure["devices"])
    assert elapsed < 120
