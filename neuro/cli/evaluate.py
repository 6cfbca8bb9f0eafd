"""``neuro eval``: evaluate a run's checkpoint on a split."""

from __future__ import annotations

from neuro import workflow


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a trained run", description="Evaluate the checkpoint of runs/<name> on a data split."
    )
    p.add_argument("run", help="run directory (e.g. runs/demo-bptt) or run name under runs/")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="which split (default test)")
    p.set_defaults(func=run)


def run(args) -> int:
    result = workflow.evaluate(args.run, args.split, progress=True)
    print(
        f"{args.split}: accuracy {100 * result['accuracy']:.2f}%  loss {result['loss']:.4f}  ({result['count']} "
        "samples)"
    )
    return 0
