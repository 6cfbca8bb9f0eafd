"""``neuro demo``: the main job on embedded defaults, nothing to download or configure.

The demo is data: ``examples/demo.toml`` lists its parts in order, each naming an example config
(``examples/*.toml``, the same files users train with and the tests load), the run name to use,
optionally the number of torch threads and a ``[part.deploy]`` table (target, samples) that deploys
the trained run.  Every part writes ``<out>/<name>/`` and returns a one-line summary.  A part whose
config has a ``[continual]`` section is a continual-learning part: its task stream is trained once per
name in ``strategies`` (``continual.strategy``; default: the config's own) as runs
``<out>/<name>-<strategy>/``, and its summary gives ACC and BWT of each (:mod:`neuro.continual.demo`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from neuro import config as cfg
from neuro import workflow
from neuro.errors import ConfigError
from neuro.examples import example_config, examples_dir  # noqa: F401 - re-exported: tests and users import them here

MANIFEST = "demo.toml"


@dataclass
class DemoPart:
    """One part of the demo: train ``config`` as run ``name`` (with ``threads`` torch threads), then maybe deploy.

    ``strategies``: continual configs only, the strategies to compare on the config's task stream.
    """

    title: str
    config: str
    name: str
    threads: int = 0
    deploy: dict = field(default_factory=dict)
    strategies: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.threads < 0:
            raise ConfigError(f"demo part '{self.name}': threads must be >= 0 (0: leave torch's default)")
        if self.strategies:
            from neuro.continual.base import STRATEGIES

            for name in self.strategies:
                STRATEGIES.get(name, where=f"demo part '{self.name}' strategies")
        unknown = set(self.deploy) - {"target", "samples"}
        if unknown:
            raise ConfigError(
                f"demo part '{self.name}': unknown deploy key '{sorted(unknown)[0]}'; valid: target, samples"
            )


def demo_parts(manifest: str | Path | None = None) -> list[DemoPart]:
    """The parts listed in ``examples/demo.toml`` (or ``manifest``), checked."""
    path = Path(manifest) if manifest else examples_dir() / MANIFEST
    data = cfg.load_toml(path)
    parts = data.get("part")
    if not isinstance(parts, list) or not parts:
        raise ConfigError(f"{path} lists no [[part]] tables")
    return [cfg.parse_spec(DemoPart, p, f"part[{k}]") for k, p in enumerate(parts)]


def part_config(part: DemoPart, out_dir: str | Path) -> dict:
    """The part's example config with ``run.name`` and ``run.out_dir`` set for the demo."""
    config = example_config(part.config)
    config["run"] = {**config.get("run", {}), "name": part.name, "out_dir": str(out_dir)}
    return config


def run_part(part: DemoPart, out_dir: Path, echo=print) -> str:
    threads = torch.get_num_threads()
    if part.threads:
        torch.set_num_threads(part.threads)
    try:
        config = part_config(part, out_dir)
        if "continual" in config:
            return _continual_part(part, config, out_dir, echo)
        if part.strategies:
            raise ConfigError(f"demo part '{part.name}': strategies need a config with a [continual] section, "
                              f"and {part.config} has none")
        run, test = workflow.train(config, overwrite=True, echo=echo)
    finally:
        torch.set_num_threads(threads)
    line = f"{part.title}: test accuracy {100 * test['accuracy']:.2f}%"
    evals = sum(r.get("n_physical_evals", 0) for r in run.records() if r.get("event") == "epoch")
    if evals:
        line += f" after {evals:.0f} physical evaluations"
    if part.deploy:
        line += "; " + _deploy(part, run.path, echo)
        return line
    return f"{line}  ->  {run.path / 'report.html'}"


def _continual_part(part: DemoPart, config: dict, out_dir: Path, echo) -> str:
    from neuro.continual.demo import run_continual_part

    strategies = part.strategies or [config["continual"].get("strategy", "finetune")]
    results = run_continual_part(config, out_dir, name=part.name, strategies=strategies, echo=echo)
    cells = []
    for strategy, summary in results.items():
        bwt = summary["BWT"]
        cells.append(f"{strategy} ACC {100 * summary['ACC']:.1f}%"
                     + (f" BWT {100 * bwt:+.1f}%" if bwt is not None else ""))
    return f"{part.title}: " + ", ".join(cells) + f"  ->  {out_dir / f'{part.name}-{strategies[0]}' / 'report.html'}"


def _deploy(part: DemoPart, run_path: Path, echo) -> str:
    from devices.lava_env import lava_status
    from neuro.deploy import deploy_loihi

    ok, detail = lava_status()
    if not ok:
        echo(f"Lava is not available ({detail}); deploying to the fixed-point twin only")
    r = deploy_loihi(
        run_path,
        target=part.deploy.get("target", "loihi-sim"),
        samples=int(part.deploy.get("samples", 50)),
        lava=ok,
        echo=echo,
    )
    line = (
        f"deployed {r['samples']} samples: float {100 * r['float_accuracy']:.1f}%, twin {100 * r['twin_accuracy']:.1f}%"
    )
    if ok:
        exact = r["twin_lava_spikes_equal"] and r["twin_lava_voltages_equal"]
        return line + f", Lava {100 * r['lava_accuracy']:.1f}% (bit-exact with the twin: {exact})"
    return line + f"; Lava skipped: {detail}"


def run_demo(out_dir: str | Path = "runs", echo=print) -> list[str]:
    out_dir = Path(out_dir)
    parts = demo_parts()
    lines = []
    start = time.perf_counter()
    for k, part in enumerate(parts, 1):
        echo(f"[{k}/{len(parts)}] {part.title}")
        lines.append(run_part(part, out_dir, echo))
    echo(f"\ndemo finished in {time.perf_counter() - start:.0f} s:")
    for line in lines:
        echo(f"  {line}")
    return lines
