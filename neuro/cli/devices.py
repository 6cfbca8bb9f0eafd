"""``neuro devices``: serial hardware at the bench: list ports, probe a device, emulate one."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import threading
import time

from neuro.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "devices",
        help="serial devices: list, probe, emulate",
        description="Serial hardware-in-the-loop devices (NeuroHIL protocol v1).",
    )
    dsub = p.add_subparsers(dest="devices_command", metavar="SUBCOMMAND")
    dsub.required = True

    q = dsub.add_parser(
        "list",
        help="list serial ports on this machine",
        description="List serial ports (pyserial's list_ports) and /dev/serial/by-id links.",
    )
    q.set_defaults(func=run_list)

    q = dsub.add_parser(
        "probe",
        help="identify a device and read its health",
        description="Open PORT, say HELLO, print the device's identity and health.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    q.add_argument("port", help="/dev/ttyUSB0, an emulator link or pty path, socket://host:port, loop://")
    q.add_argument("--timeout", type=float, default=0.5, help="seconds to wait for each reply")
    q.add_argument("--retries", type=int, default=2, help="resends of a request before giving up")
    q.add_argument(
        "--forward",
        type=int,
        default=0,
        metavar="N",
        help="also time N single-sample FORWARD round trips at mid-range inputs",
    )
    q.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    q.set_defaults(func=run_probe)

    from devices.emulator import substrate_names

    q = dsub.add_parser(
        "emulate",
        help="serve a simulator substrate over a pty as a device",
        description=(
            "Run NeuroHIL firmware in Python over a pseudo-terminal. The first line printed is "
            "the port to open (the --link path if given, else the pty). Substrates available now: "
            f"{', '.join(substrate_names())} (photonic and SFQ join when they exist)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    q.add_argument("--substrate", default="affine", help=f"one of: {', '.join(substrate_names())}")
    q.add_argument(
        "--for-config",
        metavar="CONFIG",
        help="instead of --substrate: emulate every layer substrate of this training config (TOML, e.g. each "
        "block of a physical_mlp) exactly as built in-process, one pty per block under --link-dir; "
        "prints the model.substrates value that trains through them",
    )
    q.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --for-config: override a config setting, as in `neuro train --set`",
    )
    q.add_argument("--link-dir", help="with --for-config: folder for the links block0, block1, ...")
    q.add_argument("--n-in", type=int, default=8, help="inputs of the substrate")
    q.add_argument("--n-out", type=int, default=4, help="outputs of the substrate")
    q.add_argument("--seed", type=int, default=0, help="seed of the substrate and of the fault injection")
    q.add_argument(
        "--noise",
        type=float,
        default=None,
        help="measurement noise of the substrate (0 = off; default: the substrate's)",
    )
    q.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="substrate option, e.g. --option n_control=8 (repeatable; same names as model.substrate_options)",
    )
    q.add_argument(
        "--link",
        help="stable symlink to the pty (re-created after each emulated disconnect), "
        "like /dev/serial/by-id/...; needed for hosts to reconnect",
    )
    q.add_argument("--max-batch", type=int, default=256, help="largest FORWARD batch the device accepts")
    q.add_argument(
        "--protocol-version", type=int, default=None, help="speak only this protocol version (test mismatches)"
    )
    q.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: until Ctrl-C)")
    f = q.add_argument_group("fault injection (probabilities per frame)")
    f.add_argument("--drop", type=float, default=0.0, help="lose a request or a reply")
    f.add_argument("--corrupt", type=float, default=0.0, help="flip one bit of a request or a reply")
    f.add_argument("--garbage", type=float, default=0.0, help="send random bytes before a reply")
    f.add_argument("--delay", type=float, default=0.0, help="hold a reply back --delay-s seconds")
    f.add_argument("--delay-s", type=float, default=0.5, help="length of a delay (beyond the host's timeout)")
    f.add_argument("--error", type=float, default=0.0, help="answer a FORWARD with a transient device error")
    f.add_argument("--disconnect-at", default="", metavar="N,M,...", help="vanish after these request counts")
    f.add_argument("--down-s", type=float, default=0.2, help="how long the port stays gone")
    q.add_argument("--verbose", action="store_true", help="log every injected fault")
    q.set_defaults(func=run_emulate)


def _emulator_registry():
    """Folder where running ``neuro devices emulate`` processes announce their ports (one JSON file each)."""
    from pathlib import Path

    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/neurohil-{os.getuid()}"
    return Path(base) / "neurohil-emulators"


class _announced:
    """While the block runs, list ``ports`` (with what they serve) for ``neuro devices list``."""

    def __init__(self, entries: list[dict]) -> None:
        self.path = _emulator_registry() / f"{os.getpid()}.json"
        self.entries = entries

    def __enter__(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"pid": os.getpid(), "emulators": self.entries}), encoding="utf-8")
        except OSError:
            pass  # listing is a convenience; serving must not depend on it
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _running_emulators() -> list[dict]:
    out = []
    folder = _emulator_registry()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            os.kill(int(record["pid"]), 0)  # still running?
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a crashed emulator's stale entry
            continue
        out.extend({**e, "pid": record["pid"]} for e in record["emulators"])
    return out


def run_list(args) -> int:
    from pathlib import Path

    from serial.tools import list_ports

    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    by_id = Path("/dev/serial/by-id")
    links = sorted(by_id.iterdir()) if by_id.is_dir() else []
    emulators = _running_emulators()
    if not ports and not links and not emulators:
        print("no serial ports found; plug a device in, or start one with `neuro devices emulate --link /tmp/ttyNH0`")
        return 0
    if ports or links:
        print("SERIAL PORT\tDESCRIPTION\tHARDWARE ID")
        for p in ports:
            print(f"{p.device}\t{p.description}\t{p.hwid}")
        for link in links:
            print(f"{link}\t-> {link.resolve()}\t")
    if emulators:
        print("EMULATOR PORT\tSERVES\tPID")
        for e in emulators:
            print(f"{e['port']}\t{e['serves']}\t{e['pid']}")
    return 0


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def run_probe(args) -> int:
    import torch

    from devices import SerialDevice

    with SerialDevice(args.port, timeout=args.timeout, retries=args.retries, reconnect_timeout=0.0) as dev:
        desc = dev.describe()
        health = dev.health()
        latency = None
        if args.forward > 0:
            lo, hi = dev.input_range
            x = torch.full((1, dev.n_in), (lo + hi) / 2)
            times = []
            for _ in range(args.forward):
                t0 = time.perf_counter()
                dev.forward(x)
                times.append(time.perf_counter() - t0)
            times.sort()
            latency = {"n": len(times), "median_ms": 1e3 * times[len(times) // 2], "max_ms": 1e3 * times[-1]}
    if args.json:  # strict JSON: non-finite numbers (e.g. a rate with no requests yet) become null
        print(
            json.dumps(
                _finite({"describe": desc, "health": health, "forward_latency": latency}), default=str, allow_nan=False
            )
        )
        return 0
    print(
        f"{args.port}: {desc['device'].get('kind', desc['kind'])} ({desc['firmware']}), protocol "
        f"v{desc['protocol_version']}"
    )
    print(
        f"  inputs {desc['n_in']} in [{desc['input_range'][0]:g}, {desc['input_range'][1]:g}], outputs "
        f"{desc['n_out']}, "
        f"max batch {desc['max_batch']}"
    )
    params = ", ".join(f"{k} {v}" for k, v in desc["params"].items()) or "none"
    print(f"  hardware parameters: {params}")
    d = health["device"]
    print(
        f"  health: {d['frames_ok']} frames ok, {d['bad_frames']} bad, {d['replays']} replays, {d['errors']} errors, "
        f"up {d['uptime_s']:.1f} s"
    )
    if latency:
        print(
            f"  FORWARD round trip: median {latency['median_ms']:.3f} ms, max {latency['max_ms']:.3f} ms over "
            f"{latency['n']}"
        )
    return 0


def _disconnects(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--disconnect-at takes request counts like 100,250, got '{text}'") from None


def _options(pairs: list[str]) -> dict:
    import tomllib

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option takes KEY=VALUE, got '{pair}'")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value  # a bare word: a string
    return out


def _faults(args):
    from devices.emulator import Faults

    return Faults(
        drop=args.drop,
        corrupt=args.corrupt,
        garbage=args.garbage,
        delay=args.delay,
        delay_s=args.delay_s,
        error=args.error,
        disconnect_at=_disconnects(args.disconnect_at),
        down_s=args.down_s,
    )


def _summary(emus) -> str:
    faults: dict[str, int] = {}
    for e in emus:
        for k, v in e.fault_summary().items():
            faults[k] = faults.get(k, 0) + v
    seen = ", ".join(f"{k} x{v}" for k, v in faults.items()) or "none"
    return (
        f"served {sum(e.requests for e in emus)} requests, measured "
        f"{sum(e.firmware.counts['samples_measured'] for e in emus)} samples; faults injected: {seen}"
    )


def _wait(stop: threading.Event, duration: float | None) -> None:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait(duration)
    except KeyboardInterrupt:
        pass


def run_emulate_config(args) -> int:
    from devices.emulator import emulators_for_model
    from neuro import config as cfg
    from neuro.build import build_experiment

    if not args.link_dir:
        raise ConfigError("--for-config needs --link-dir DIR (where the links block0, block1, ... go)")
    config = cfg.apply_overrides(cfg.load_toml(args.for_config), args.overrides)
    model = build_experiment(config).model
    emus = emulators_for_model(model, args.link_dir, faults=_faults(args), seed=args.seed, max_batch=args.max_batch)
    try:
        print(json.dumps([f"serial:{e.port}" for e in emus]), flush=True)
        for k, e in enumerate(emus):
            d = e.firmware.substrate.describe()
            print(
                f"block {k}: {d.get('kind', '?')} ({e.firmware.substrate.n_in} -> {e.firmware.substrate.n_out}) on "
                f"{e.slave_path} (link {e.port})",
                flush=True,
            )
        print(
            f"train through them: neuro train {args.for_config} --set 'model.substrates=<first line>'; Ctrl-C to stop",
            flush=True,
        )
        entries = [
            {"port": e.port, "serves": f"{e.firmware.substrate.describe().get('kind', '?')} (block {k})"}
            for k, e in enumerate(emus)
        ]
        with _announced(entries):
            _wait(threading.Event(), args.duration)
    finally:
        for e in emus:
            e.stop()
    print(_summary(emus), flush=True)
    return 0


def run_emulate(args) -> int:
    import logging

    from devices.emulator import Emulator, make_substrate

    if args.verbose:
        logging.getLogger().setLevel(logging.INFO)
    if args.for_config:
        return run_emulate_config(args)
    for flag, value in (("--n-in", args.n_in), ("--n-out", args.n_out), ("--max-batch", args.max_batch)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if args.duration is not None and not 0 < args.duration < 1e9:
        raise ConfigError(f"--duration must be a finite number of seconds > 0, got {args.duration}")
    if args.link:
        from pathlib import Path

        folder = Path(args.link).absolute().parent
        if not folder.is_dir():
            raise ConfigError(
                f"--link {args.link}: folder {folder} does not exist; create it or pick a path in an "
                "existing folder (e.g. /tmp/ttyNH0)"
            )
    options = _options(args.option)
    if args.noise is not None:
        options["noise"] = args.noise
    substrate = make_substrate(args.substrate, args.n_in, args.n_out, args.seed, options)
    faults = _faults(args)
    versions = (args.protocol_version,) * 2 if args.protocol_version else None
    kwargs = {"protocol_versions": versions} if versions else {}
    emu = Emulator(substrate, faults=faults, seed=args.seed, link=args.link, max_batch=args.max_batch, **kwargs)
    emu.open()
    signal.signal(signal.SIGTERM, lambda *_: emu.request_stop())
    desc = substrate.describe()
    print(emu.port, flush=True)
    print(
        f"emulating {desc.get('kind', args.substrate)} ({substrate.n_in} -> {substrate.n_out}) on {emu.slave_path}"
        f"{f' (link {args.link})' if args.link else ''}, protocol v{emu.firmware.version}; Ctrl-C to stop",
        flush=True,
    )
    try:
        with _announced([{"port": emu.port, "serves": str(desc.get("kind", args.substrate))}]):
            emu.serve_forever(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        emu.request_stop()
    print(_summary([emu]), flush=True)
    return 0
