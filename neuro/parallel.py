"""``neuro train`` on several processes: the per-rank workflow and the ``--nproc`` launcher.

Every rank runs :func:`train` (or :func:`resume`) as started by torchrun::

    torchrun --nproc-per-node 2 -m neuro train examples/digits_bptt.toml       # one host
    neuro train --nproc 2 examples/digits_bptt.toml                             # the same, shorter

Each rank builds the experiment from the same config and seed (so the same data, model and
generators), joins the process group, and trains its shard of every batch (see
:mod:`neuro.distributed`).  Rank 0 alone creates the run directory and writes config, metrics,
checkpoints and the report; the test split is evaluated by all ranks together.

The launcher (:func:`launch_local`) is torchrun itself (``torch.distributed.run``, standalone c10d
rendezvous on this host, no restarts), called in-process so that a failed job ends with one line:
the failing rank's own ``error: rank R: ...`` (a device that failed names its port), or, for a rank
that died without a word (killed, crashed), ``error: rank R (pid P) was killed by SIGKILL ...``.
Ranks that only lost their peers exit quietly with status :data:`PEER_LOST_EXIT`; torchrun stops
every remaining rank, so no process is left behind.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from neuro import config as cfg
from neuro import distributed
from neuro.build import build_experiment, count_parameters
from neuro.errors import UserFacingError
from neuro.runs import Run

#: exit status of a rank that stopped because another rank failed (the launcher names the other one)
PEER_LOST_EXIT = 3
LAUNCHER_ENV = "NEUROHIL_LAUNCHER"
#: under the launcher, a rank's one-line error goes to <this folder>/rank<R>.txt; the launcher prints it once
ERROR_DIR_ENV = "NEUROHIL_ERROR_DIR"


def _rank_config(config: dict, ctx: distributed.Context) -> dict:
    """The config a rank builds from: a CUDA device becomes ``cuda:<local rank>``."""
    run = dict(config.get("run", {}))
    device = str(run.get("device", "cpu"))
    if device == "cuda" and ctx.active:
        run["device"] = f"cuda:{ctx.local_rank}"
    return {**config, "run": run}


def _device_of(config: dict) -> str:
    return str(config.get("run", {}).get("device", "cpu"))


def train(config: dict, *, overwrite: bool = False, progress: bool | None = None,
          echo=print) -> tuple[Run | None, dict]:
    """One rank's part of ``neuro train``; returns (the run on rank 0, else None; test scores)."""
    from neuro.workflow import _echo_epochs

    ctx = distributed.init_from_env(_device_of(config))
    exp = build_experiment(_rank_config(config, ctx))
    run = None
    if ctx.is_main:
        run = Run.create(exp.run.out_dir, exp.run.name, overwrite=overwrite)
        run.write_config(_resolved_template(config, exp.config))
        echo(
            f"run {run.path}: {exp.config['model']['kind']} ({count_parameters(exp.model)} parameters) "
            f"on {exp.data.name}, rule {exp.rule.name}, {exp.train.epochs} epochs, {ctx.world} processes "
            f"(global batch {exp.train.batch_size})"
        )
    trainer = exp.trainer(run, progress=(progress if ctx.is_main else False),
                          hooks=(_echo_epochs(echo, exp.train.epochs),) if ctx.is_main else ())
    trainer.fit()
    return run, _finish(exp, trainer, run, echo)


def resume(run_path: str | os.PathLike, *, epochs: int | None = None, progress: bool | None = None,
           echo=print) -> tuple[Run | None, dict]:
    """One rank's part of ``neuro train --resume``: any number of processes continues any checkpoint."""
    from neuro.workflow import _echo_epochs

    run = Run.open(run_path)
    config = cfg.load_toml(run.config_path)
    if epochs is not None:
        config.setdefault("train", {})["epochs"] = epochs
    ctx = distributed.init_from_env(_device_of(config))
    exp = build_experiment(_rank_config(config, ctx))
    trainer = exp.trainer(run if ctx.is_main else None, progress=(progress if ctx.is_main else False),
                          hooks=(_echo_epochs(echo, exp.train.epochs),) if ctx.is_main else ())
    trainer.resume(run.checkpoint_path)
    distributed.barrier()  # every rank has read the checkpoint before rank 0 may overwrite it
    if ctx.is_main:
        run.truncate_records_after(trainer.epoch)
        run.write_config(_resolved_template(config, exp.config))
        echo(f"resuming {run.path} after epoch {trainer.epoch} of {exp.train.epochs} on {ctx.world} processes")
    trainer.fit()
    return (run if ctx.is_main else None), _finish(exp, trainer, run if ctx.is_main else None, echo)


def _finish(exp, trainer, run: Run | None, echo) -> dict:
    from neuro.workflow import write_report

    test = trainer.evaluate("test")  # every rank evaluates its shard; totals reduced
    if run is not None:
        run.log({"event": "test", "epoch": trainer.epoch, **test})
        write_report(run, exp)
        echo(f"test accuracy {100 * test['accuracy']:.2f}% (loss {test['loss']:.4f}); "
             f"report: {run.path / 'report.html'}")
    return test


def _resolved_template(config: dict, resolved: dict) -> dict:
    """The resolved config, but with the run's device as the user wrote it (not rank 0's ``cuda:0``)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in resolved.items()}
    if "device" in config.get("run", {}):
        out["run"]["device"] = config["run"]["device"]
    return out


def run_worker(fn, *args, **kwargs):
    """Run ``fn`` as one rank: errors get the rank's number; a rank that only lost its peers under
    the ``--nproc`` launcher exits quietly (the launcher names the rank that failed)."""
    try:
        return fn(*args, **kwargs)
    except distributed.PeerLostError:
        if os.environ.get(LAUNCHER_ENV):
            # Leave at once: tearing down a process group whose peer vanished can abort in C++
            # ("terminate called ...") and print a second, misleading error under the launcher's.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(PEER_LOST_EXIT)
        raise
    except distributed.DistributedError:
        raise
    except UserFacingError as exc:
        folder = os.environ.get(ERROR_DIR_ENV)
        if folder:  # the launcher prints it, once for all ranks that failed alike
            (Path(folder) / f"rank{distributed.env_rank()}.txt").write_text(str(exc), encoding="utf-8")
            raise SystemExit(2) from None
        raise distributed.DistributedError(f"rank {distributed.env_rank()}: {exc}") from None
    finally:
        distributed.shutdown()


# ----------------------------------------------------------------- launcher
def launch_local(nproc: int, neuro_args: list[str], *, monitor_interval: float = 0.2) -> int:
    """Run ``python -m neuro NEURO_ARGS`` on ``nproc`` processes of this host through torchrun.

    Returns 0 on success, 2 after a failure whose rank already printed its error line; raises a
    one-line :class:`~neuro.distributed.DistributedError` for a rank that died without one.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args
    from torch.distributed.run import run as torchrun

    if nproc < 1:
        raise distributed.DistributedError(f"--nproc must be >= 1, got {nproc}")
    argv = ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
            f"--monitor-interval={monitor_interval}", "-m", "neuro", *neuro_args]
    quiet = [logging.getLogger(n) for n in ("torch.distributed", "torch.distributed.elastic", "torch.distributed.run")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.CRITICAL)
    errors = tempfile.TemporaryDirectory(prefix="neurohil-errors-")
    os.environ[LAUNCHER_ENV] = "1"
    os.environ[ERROR_DIR_ENV] = errors.name
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        torchrun(parse_args(argv))
        return 0
    except ChildFailedError as exc:
        return _report_failure(exc.failures, Path(errors.name))
    finally:
        os.environ.pop(LAUNCHER_ENV, None)
        os.environ.pop(ERROR_DIR_ENV, None)
        errors.cleanup()
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def _report_failure(failures: dict, error_dir: Path) -> int:
    """One line: the error of the rank that failed first (not one that merely lost its peers or was
    stopped by torchrun), naming every rank that failed with the same message."""
    import signal

    messages = {}
    for path in error_dir.glob("rank*.txt"):
        messages[int(path.stem[4:])] = path.read_text(encoding="utf-8").strip()

    # Consequences rank after causes: a rank that lost its peers or was stopped by torchrun, and
    # one that aborted (SIGABRT from a collective library whose peer vanished), is blamed only when
    # no rank failed otherwise. Timestamps are whole seconds, so they rarely separate the ranks.
    consequence = {PEER_LOST_EXIT: 2, -signal.SIGTERM: 2, -signal.SIGABRT: 1}

    def blame(item):
        rank, f = item
        return (consequence.get(f.exitcode, 0), f.timestamp, rank)

    rank, failure = min(failures.items(), key=blame)
    if messages:
        first = rank if rank in messages else min(messages)
        alike = sorted(r for r, m in messages.items() if m == messages[first])
        who = f"rank {alike[0]}" if len(alike) == 1 else f"ranks {', '.join(map(str, alike))}"
        raise distributed.DistributedError(f"{who}: {messages[first]}")
    if failure.exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-failure.exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-failure.exitcode}"
    else:
        how = f"exited with status {failure.exitcode} (its traceback is above)"
    raise distributed.DistributedError(f"rank {rank} (pid {failure.pid}) {how}; every other rank was stopped")


def forward_args(args) -> list[str]:
    """The ``neuro train`` command line of parsed ``args`` (without ``--nproc``), for the workers."""
    out = ["train"]
    if args.config:
        out.append(str(Path(args.config)))
    for item in args.overrides:
        out += ["--set", item]
    for flag, value in (("--name", args.name), ("--dataset", args.dataset), ("--rule", args.rule),
                        ("--epochs", args.epochs), ("--seed", args.seed), ("--out", args.out),
                        ("--resume", args.resume)):
        if value is not None:
            out += [flag, str(value)]
    if args.overwrite:
        out.append("--overwrite")
    if args.no_progress:
        out.append("--no-progress")
    return out
