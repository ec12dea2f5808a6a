"""`fleos collect`: a finished run's tables, figures and costs, into a folder to commit.

Example:
    fleos collect --results results/paper_cpu_fcn --config config/paper_cpu_fcn.yaml \\
        --out docs/results/paper_cpu_fcn --note "load average 3-12 (helpers beside it)"
"""

from __future__ import annotations

import argparse
import sys

from fleos.cli.args import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "collect",
        help="copy a finished run's tables and figures, with its costs, into a folder",
        description="Copy results/tables/fig*, results/figures/fig*.png of a finished run into "
        "--out, with jobs.csv (wall and CPU time of every sampling job) and RUN.md (config, "
        "command, machine, gates, notes). Samples and other arrays are not copied.",
    )
    p.add_argument("--results", required=True, help="the run's results folder")
    p.add_argument("--config", required=True, help="the run's config file")
    p.add_argument("--out", required=True, help="folder to write (created if missing)")
    p.add_argument("--run-command", help="the command that made the run (written to RUN.md)")
    p.add_argument("--note", action="append", default=[],
                   help="a line for RUN.md (e.g. the system load); repeatable")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fleos.analysis.collect import collect_run

    if not Path(args.config).is_file():
        raise InputError(f"--config {args.config}: no such file")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InputError(f"--out {args.out}: exists and is not a folder")
    try:
        written = collect_run(args.results, args.config, args.out, args.run_command,
                              args.note)
    except FileNotFoundError as err:
        raise InputError(f"--results {args.results}: {err}") from None
    print("\n".join(str(p) for p in written), file=sys.stdout)
    return 0
