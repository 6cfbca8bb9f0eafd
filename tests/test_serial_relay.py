"""The byte-level fault relay, and the serial driver and emulated firmware through it.

The relay (:mod:`devices.serial.relay`) knows nothing of frames: it moves random-sized byte
chunks between two ptys, drops/flips/duplicates/truncates/stalls them, and blocks in its
writes (back-pressure).  These tests pin the relay itself, then show the driver and firmware
cannot deadlock or starve behind it: exactly-once delivery under every fault kind, big frames
in both directions at once, truncated requests, bounded requests, NaN replies, malformed and
dirty device text, and link statistics that survive a failure.
"""

from __future__ import annotations

import json
import os
import pty
import select
import struct
import threading
import time
import tty

import numpy as np
import pytest
import torch

from devices.emulator import AffineTanhSubstrate, Emulator, Faults
from devices.serial import protocol as P
from devices.serial.driver import SerialDevice, clean_text, write_failure_evidence
from devices.serial.relay import TO_DEVICE, TO_HOST, ByteFaults, Relay
from neuro.errors import DeviceError
from simulators.errors import SettingError


def _raw(path) -> int:
    fd = os.open(str(path), os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    return fd


def _read_exactly(fd: int, n: int, timeout: float = 5.0) -> bytes:
    out = bytearray()
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        if select.select([fd], [], [], 0.05)[0]:
            out += os.read(fd, n - len(out))
    return bytes(out)


class FakeDevice:  # noqa: D101
    """A bare pty whose master end the test drives by hand (the 'device' behind a relay)."""

    def __enter__(self):
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        return self

    def __exit__(self, *exc):
        os.close(self.master)
        os.close(self.slave)


# ------------------------------------------------------------------------- relay itself
def test_relay_without_faults_is_transparent_both_ways(tmp_path, no_leaks):
    rng = np.random.default_rng(0)
    up, down = rng.bytes(50_000), rng.bytes(30_000)
    with FakeDevice() as dev, Relay(dev.path, link=tmp_path / "r0", seed=1) as relay:
        host = _raw(relay.port)
        try:
            got_up, sent = b"", 0
            end = time.monotonic() + 10
            while len(got_up) < len(up) and time.monotonic() < end:  # write and read at once (the relay blocks)
                r, w, _ = select.select([dev.master], [host] if sent < len(up) else [], [], 0.05)
                if w:
                    sent += os.write(host, up[sent: sent + 1000])
                if r:
                    got_up += os.read(dev.master, 65536)
            os.write(dev.master, down[:4000])
            got_down = _read_exactly(host, 4000)
        finally:
            os.close(host)
        counts = relay.summary()
    assert got_up == up and got_down == down[:4000]
    assert counts[TO_DEVICE]["bytes_in"] == counts[TO_DEVICE]["bytes_out"] == len(up)
    assert counts[TO_DEVICE]["chunks"] > 12  # 1..4096-byte reads: the stream was cut into many chunks
    assert not (tmp_path / "r0").exists()


def test_relay_blocks_in_its_writes_and_then_reads_neither_side(tmp_path, no_leaks):
    """Back-pressure: a host that does not read stalls the relay's write to it; meanwhile bytes
    the host writes are not carried to the device.  Once the host reads, all arrive in order."""
    payload = np.random.default_rng(1).bytes(400_000)
    with FakeDevice() as dev, Relay(dev.path, seed=2) as relay:
        host = _raw(relay.port)
        try:
            sent = 0
            end = time.monotonic() + 10
            while relay.blocked_on != TO_HOST and time.monotonic() < end:  # fill the path to the silent host
                if select.select([], [dev.master], [], 0.05)[1] and sent < len(payload):
                    sent += os.write(dev.master, payload[sent: sent + 4096])
            assert relay.blocked_on == TO_HOST
            os.write(host, b"ping from the host")
            time.sleep(0.3)
            assert not select.select([dev.master], [], [], 0)[0]  # the relay is stuck writing: nothing carried
            while sent < len(payload):  # now the host reads everything while the device sends the rest
                if select.select([], [dev.master], [], 0.01)[1]:
                    sent += os.write(dev.master, payload[sent: sent + 4096])
                if select.select([host], [], [], 0)[0]:
                    os.read(host, 65536)
            got = b""
            end = time.monotonic() + 5
            while len(got) < 18 and time.monotonic() < end:
                if select.select([host], [], [], 0.01)[0]:
                    os.read(host, 65536)
                if select.select([dev.master], [], [], 0.01)[0]:
                    got += os.read(dev.master, 100)
            assert got == b"ping from the host"
        finally:
            os.close(host)
        assert relay.blocked_s[TO_HOST] > 0.25


def test_relay_faults_are_what_they_say_and_seeded(no_leaks):
    """Each chunk comes out dropped, 1-3 bits flipped, twice, as a prefix, or unchanged."""
    chunks = [bytes(np.random.default_rng(k).integers(0, 256, 1 + k % 97, dtype=np.uint8)) for k in range(400)]
    faults = ByteFaults(drop=0.1, flip=0.1, duplicate=0.1, truncate=0.1)
    outputs = []
    for _ in range(2):  # same seed, same chunks: same faults
        relay = Relay("/unused", faults=faults, seed=9)
        r, w = os.pipe()  # the relay writes a chunk's result into a pipe, read back at once
        relay._dev = w
        try:
            out = []
            for c in chunks:
                relay._forward(TO_DEVICE, c)
                out.append(os.read(r, 65536) if select.select([r], [], [], 0)[0] else b"")
        finally:
            relay._close_dev()
            os.close(r)
        outputs.append((out, [rec.kind for rec in relay.fault_log]))
    assert outputs[0] == outputs[1]
    out, kinds = outputs[0]
    seen = {"drop": 0, "flip": 0, "duplicate": 0, "truncate": 0, "none": 0}
    for c, o in zip(chunks, out):
        if o == c:
            seen["none"] += 1
        elif o == b"":
            seen["drop" if len(c) else "none"] += 1  # (a truncation to nothing is counted below)
        elif o == c + c:
            seen["duplicate"] += 1
        elif len(o) < len(c) and c.startswith(o):
            seen["truncate"] += 1
        else:
            assert len(o) == len(c)
            flipped = sum(bin(a ^ b).count("1") for a, b in zip(o, c))
            assert 1 <= flipped <= 3
            seen["flip"] += 1
    assert kinds.count("duplicate") == seen["duplicate"] and kinds.count("flip") == seen["flip"]
    assert kinds.count("drop") + kinds.count("truncate") == seen["drop"] + seen["truncate"]
    assert all(seen[k] > 15 for k in ("drop", "flip", "duplicate", "truncate"))  # ~40 expected of each
    with pytest.raises(SettingError, match="byte fault rate flip must be a probability"):
        Relay("/nonexistent", faults=ByteFaults(flip=2.0))


# ------------------------------------------------------------- driver through the relay
def _emulator(tmp_path, substrate=None, **kw) -> Emulator:
    return Emulator(substrate or AffineTanhSubstrate(6, 3, seed=2), link=tmp_path / "ttyNH0", **kw)


def test_every_byte_fault_both_ways_every_sample_exactly_once(tmp_path, no_leaks):
    """A drifting device (each measurement shifts its outputs) behind a relay that drops, flips,
    duplicates, truncates and stalls chunks both ways: every sample measured once, delivered once,
    in order; device-side CRC of measured == driver-side CRC of delivered."""
    drift = 1e-3
    faults = ByteFaults(drop=0.03, flip=0.03, duplicate=0.03, truncate=0.03, delay=0.01, delay_s=0.15, max_chunk=64)
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(4, 6, generator=g) * 2 - 1 for _ in range(120)]
    with _emulator(tmp_path, AffineTanhSubstrate(6, 3, seed=2, drift=drift)) as emu:
        with Relay(emu.port, faults=faults, seed=4, link=tmp_path / "relay") as relay:
            with SerialDevice(relay.port, timeout=0.05, retries=40) as dev:
                got = [dev.forward(x) for x in batches]
                link = dev.link_stats()
            injected = relay.summary()
        measured = emu.firmware.counts["samples_measured"]
        assert dev.delivered_crc == emu.firmware.measured_crc != 0
    reference = AffineTanhSubstrate(6, 3, seed=2, drift=drift)
    assert all(torch.equal(a, reference.forward(x)) for a, x in zip(got, batches))
    assert measured == link["samples"] == 480
    for d in (TO_DEVICE, TO_HOST):
        for kind in ("drop", "flip", "duplicate", "truncate"):
            assert injected[d][kind] > 0, (d, kind)
    assert "requests_failed" not in link and link["state"] == "open"
    assert link["timeout"] > 0 and link["stale reply"] > 0  # duplicated replies were drained, not taken twice


def test_big_frames_both_ways_through_a_blocking_relay_do_not_deadlock(tmp_path, no_leaks):
    """1 MiB requests and replies (more than the pty buffers hold); every reply is late, so each
    resend is written while the reply streams back through a relay whose writes block.  The
    earlier driver, which did not read while it wrote, failed here after 20 s ("no reply ...
    after 21 tries": each side blocked writing to the other); this one drains the replies."""
    sub = AffineTanhSubstrate(1024, 1024, seed=3, drift=1e-3)
    faults = Faults(delay=1.0, delay_s=0.15)  # every reply held past the driver's timeout
    g = torch.Generator().manual_seed(1)
    xs = [torch.rand(255, 1024, generator=g) * 2 - 1 for _ in range(3)]
    with _emulator(tmp_path, sub, faults=faults, max_batch=255) as emu, \
            Relay(emu.port, faults=ByteFaults(max_chunk=65536), seed=1) as relay:
        t0 = time.monotonic()
        with SerialDevice(relay.port, timeout=0.1, retries=20, request_timeout=20.0) as dev:
            got = [dev.forward(x) for x in xs]
            link = dev.link_stats()
        elapsed = time.monotonic() - t0
        assert dev.delivered_crc == emu.firmware.measured_crc
        assert emu.firmware.counts["samples_measured"] == 765
    reference = AffineTanhSubstrate(1024, 1024, seed=3, drift=1e-3)
    assert all(torch.equal(a, reference.forward(x)) for a, x in zip(got, xs))
    assert link["timeout"] >= 3 and link.get("stale reply", 0) >= 1  # resends overlapped late replies
    assert relay.blocked_s[TO_HOST] + relay.blocked_s[TO_DEVICE] > 0  # back-pressure really happened
    assert elapsed < 15


def test_a_truncated_request_does_not_stop_the_device_answering_the_next(tmp_path, no_leaks):
    """Half a FORWARD, then a HEALTH request at once: the HEALTH is answered without waiting for
    the frame timeout; so is a request after a 14-byte header that declares 1 MiB; and after
    silence the device holds no partial frame."""
    with _emulator(tmp_path, frame_timeout=1.0) as emu:
        host = _raw(emu.port)
        try:
            forward = P.encode_frame(P.MsgType.FORWARD, 5, P.encode_samples(np.zeros((8, 6), np.float32)))
            huge = P.HEADER.pack(P.MAGIC, 1, P.MsgType.SET_PARAMS, 6, P.MAX_PAYLOAD)
            huge += P.HEADER_CHECK.pack(P._header_check(huge))
            for seq, junk in ((7, forward[: len(forward) // 2]), (8, huge), (9, b"NH")):
                t0 = time.monotonic()
                os.write(host, junk + P.encode_frame(P.MsgType.HEALTH, seq))
                parser, frames = P.FrameParser(), []
                while not frames and time.monotonic() - t0 < 2:
                    if select.select([host], [], [], 0.01)[0]:
                        frames = parser.feed(os.read(host, 4096))
                assert [f.seq for f in frames] == [seq] and frames[0].type == P.reply_type(P.MsgType.HEALTH)
                assert time.monotonic() - t0 < 0.8  # before the 1 s frame timeout: look-ahead, not the timer
            os.write(host, forward[:30])  # a truncated frame with nothing behind it
            time.sleep(1.3)
            assert emu._parser.pending == 0 and emu._parser.stats.expired >= 1  # dropped by the frame timeout
            assert emu._parser.stats.superseded == 2
        finally:
            os.close(host)


def test_a_request_ends_within_its_bound_and_the_link_stats_survive(tmp_path, no_leaks):
    """A relay that loses everything towards the device: the request fails with one line within
    request_timeout (not retries x write timeouts), and link_stats/save_link_stats keep the evidence."""
    with _emulator(tmp_path) as emu, Relay(emu.port, seed=3) as relay:
        port = relay.port
        dev = SerialDevice(port, timeout=0.05, retries=1000, request_timeout=0.6)
        dev.open()
        try:
            dev.forward(torch.zeros(2, 6))
            relay.faults[TO_DEVICE] = ByteFaults(drop=1.0)
            t0 = time.monotonic()
            with pytest.raises(DeviceError) as err:
                dev.forward(torch.zeros(2, 6))
            elapsed = time.monotonic() - t0
        finally:
            dev.close()
    msg = str(err.value)
    assert 0.55 <= elapsed <= 1.5 and "\n" not in msg
    assert msg.startswith(f"no reply from serial device {port} to FORWARD within its time limit of 0.6 s")
    stats = dev.link_stats()
    assert stats["state"] == "failed" and stats["last_error"] == msg and stats["requests_failed"] == 1
    assert stats["stopped_because"].startswith("FORWARD seq 3: no reply") and stats["samples"] == 2
    assert 0.55 <= stats["request_max_s"] <= 1.5 and stats["request_timeout_s"] == 0.6
    assert stats["timeout"] >= 3  # resent every 0.05 s meanwhile (fewer on a loaded machine)
    path = write_failure_evidence([object(), dev], tmp_path / "run", err.value)
    saved = json.loads(path.read_text())
    assert saved["error"] == msg and saved["error_type"] == "DeviceError" and saved["devices"][0]["state"] == "failed"
    link_file = json.loads(next((tmp_path / "run").glob("serial_link_*.json")).read_text())
    assert link_file["last_error"] == msg and link_file["delivered_crc"] == dev.delivered_crc
    lines = next((tmp_path / "run").glob("serial_link_*.jsonl")).read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert events[-1]["kind"] == "failed" and events[-1]["request"] == "FORWARD"


def test_an_interrupted_request_is_recorded(tmp_path, no_leaks):
    with _emulator(tmp_path) as emu:
        dev = SerialDevice(emu.port, timeout=0.05, retries=100)
        dev.open()
        emu.faults.drop = 1.0  # nothing is answered any more
        timer = threading.Timer(0.2, lambda: setattr(dev, "_pump", _raise_interrupt))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                dev.forward(torch.zeros(1, 6))
        finally:
            timer.join()
            dev.close()
    stats = dev.link_stats()
    assert stats["state"] == "interrupted" and "KeyboardInterrupt" in stats["last_error"]
    assert stats["stopped_because"].startswith("FORWARD seq 2:")
    json.dumps(stats)  # JSON-able


def _raise_interrupt(wait):
    raise KeyboardInterrupt


class NaNFor:
    """A substrate whose first ``n`` measurements are all NaN."""

    def __init__(self, n: int):
        self.inner, self.n = AffineTanhSubstrate(6, 3, seed=2), n
        self.n_in, self.n_out, self.input_range = 6, 3, (-1.0, 1.0)

    def forward(self, x):
        y = self.inner.forward(x)
        self.n -= 1
        return torch.full_like(y, float("nan")) if self.n >= 0 else y

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("refuse", [True, False])
def test_nan_measurements_are_measured_again_then_a_clear_error(tmp_path, no_leaks, refuse):
    """The firmware refuses to send NaN (DEVICE_FAULT, resend); a board that sends it anyway is
    caught by the driver (measured again with a new seq); a board that always does, fails clearly."""
    x = torch.rand(4, 6) * 2 - 1
    with _emulator(tmp_path, NaNFor(2)) as emu, SerialDevice(emu.port, timeout=0.2, retries=3) as dev:
        emu.firmware.refuse_nonfinite = refuse
        y = dev.forward(x)
        link = dev.link_stats()
        assert dev.delivered_crc == emu.firmware.measured_crc
        assert torch.isfinite(y).all() and torch.equal(y, AffineTanhSubstrate(6, 3, seed=2).forward(x))
        if refuse:
            assert link["device error"] == 2 and emu.firmware.counts["nonfinite_refused"] == 2
        else:
            assert link["non-finite reply"] == 2 and link["samples_refused"] == 8 and link["samples"] == 4
            assert emu.firmware.counts["samples_measured"] == 12  # 3 measurements, all crossed the link once
    with _emulator(tmp_path, NaNFor(10**9)) as emu, SerialDevice(emu.port, timeout=0.2, retries=2) as dev:
        emu.firmware.refuse_nonfinite = refuse
        with pytest.raises(DeviceError) as err:
            dev.forward(x)
    if refuse:
        assert str(err.value) == (f"serial device {emu.port} failed FORWARD 3 times in a row (measurement not finite "
                                  "(NaN/inf), nothing sent; resend); check the device")
    else:
        assert str(err.value) == (f"serial device {emu.port} returned NaN or infinite measurements in 3 FORWARD "
                                  "requests in a row; the device is faulty (check its supply, ADC and firmware)")
    assert dev.link_stats()["state"] == "failed" and dev.link_stats()["last_error"] == str(err.value)


def test_malformed_and_dirty_device_errors_are_one_clean_line(tmp_path, no_leaks):
    """An ERROR frame with a 1-byte payload, and one whose text has NULs, control bytes and 70 KB."""
    dirty = "ADC\x00 rail\x07 low\n\r" + "x" * 70_000

    def answer(frame, stats, original):
        if frame.type != P.MsgType.FORWARD:
            return original(frame, stats)
        if frame.seq == 2:
            return P.encode_frame(P.MsgType.ERROR, frame.seq, b"\x08")
        text = struct.pack("<H", P.ErrorCode.SUBSTRATE_FAULT) + dirty.encode()
        return P.encode_frame(P.MsgType.ERROR, frame.seq, text)

    with _emulator(tmp_path) as emu, SerialDevice(emu.port, timeout=0.2) as dev:
        original = emu.firmware.handle
        emu.firmware.handle = lambda frame, stats=None: answer(frame, stats, original)
        with pytest.raises(DeviceError) as malformed:
            dev.forward(torch.zeros(1, 6))
        with pytest.raises(DeviceError) as long:
            dev.forward(torch.zeros(1, 6))
    assert str(malformed.value) == (f"serial device {emu.port} sent a malformed ERROR reply to FORWARD (ERROR payload "
                                    "has 1 bytes, needs at least 2); the firmware does not follow protocol v1")
    msg = str(long.value)
    assert msg.startswith(f"serial device {emu.port} rejected FORWARD: SUBSTRATE_FAULT: ADC rail low xxx")
    assert msg.endswith("... (69813 more characters)") and len(msg) < 400 and msg.isprintable()
    assert clean_text("a\x00b\n\tc", limit=3) == "a b... (2 more characters)"


def test_max_rows_splits_forward_frames(tmp_path, no_leaks):
    """Smaller frames for a noisy link: 12 rows at max_rows=5 are three FORWARD frames (5, 5, 2)."""
    reference = AffineTanhSubstrate(6, 3, seed=2)
    x = torch.rand(12, 6) * 2 - 1
    with _emulator(tmp_path) as emu, SerialDevice(emu.port, timeout=0.2, max_rows=5) as dev:
        y = dev.forward(x)
        assert emu.firmware.counts["forward_requests"] == 3 and emu.firmware.counts["samples_measured"] == 12
    assert torch.equal(y, torch.cat([reference.forward(x[i:i + 5]) for i in (0, 5, 10)]))
    with pytest.raises(DeviceError, match="max_rows must be >= 1, got 0"):
        SerialDevice("loop://", max_rows=0)
