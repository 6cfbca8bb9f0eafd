"""``neuro demo``: train, evaluate and report small networks on embedded defaults."""

from __future__ import annotations

from neuro.demo import run_demo


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the demo on embedded defaults (about 20 s on 2 idle cores)",
        description="Train and evaluate small networks on built-in data, write runs and reports, print where they are.",
    )
    p.add_argument("--out", default="runs", help="folder for the demo runs (default runs)")
    p.set_defaults(func=run)


def run(args) -> int:
    from neuro.cli.train import check_out_dir

    check_out_dir(args.out, "--out")
    run_demo(args.out)
    return 0
