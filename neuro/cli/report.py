"""``neuro report``: (re)write a run's plots and report.html."""

from __future__ import annotations

from neuro import workflow
from neuro.runs import Run


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write a run's plots and report.html",
        description="Rebuild the plots and report.html of runs/<name> from its metrics and checkpoint (a continual "
                    "run: its accuracy matrix R, subspace sizes and task table, also of a stopped run).",
    )
    p.add_argument("run", help="run directory, e.g. runs/demo-bptt")
    p.set_defaults(func=run)


def run(args) -> int:
    from neuro.cli.train import continual_run

    if continual_run(args.run):  # a task stream: the accuracy-matrix report, not the per-epoch one
        from neuro.continual.workflow import rewrite_continual_report

        path = rewrite_continual_report(Run.find(args.run).path)
        print(f"report: {path}")
        return 0
    run_dir, exp = workflow.load_run(args.run)
    path = workflow.write_report(run_dir, exp)
    print(f"report: {path}")
    return 0
