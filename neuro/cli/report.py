"""``neuro report``: (re)write a run's plots and report.html."""

from __future__ import annotations

from neuro import workflow


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write a run's plots and report.html",
        description="Rebuild the plots and report.html of runs/<name> from its metrics and checkpoint.",
    )
    p.add_argument("run", help="run directory, e.g. runs/demo-bptt")
    p.set_defaults(func=run)


def run(args) -> int:
    run_dir, exp = workflow.load_run(args.run)
    path = workflow.write_report(run_dir, exp)
    print(f"report: {path}")
    return 0
