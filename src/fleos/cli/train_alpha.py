"""`fleos train-alpha`: the 2-layer CNN's train-α gap to the EoS, split into measured terms.

Example (a finished run that recorded the Rao-Blackwellized outputs and the kernel Qf):
    fleos train-alpha --results results --config config/config.yaml
"""

from __future__ import annotations

import argparse
import sys

from fleos.cli.args import InputError, out_file


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-alpha",
        help="split a finished cnn2 run's train-α gap to the EoS into Σ, channel and "
             "fluctuation terms",
        description="For every sampled (n, C) of a cnn2 experiment: train and test α from the "
        "EoS, from the EoS kernel formula at the sampled Σ, from the GP at the sampled mean "
        "kernel, Rao-Blackwellized and sampled (fleos.analysis.train_alpha). Prints a Markdown "
        "table; --out also writes every column, with the three terms, as JSON.",
    )
    p.add_argument("--results", required=True, help="the run's results folder")
    p.add_argument("--config", required=True, help="the run's config file")
    p.add_argument("--experiment", default="cnn2",
                   help="the cnn2 experiment of the config (default: cnn2)")
    p.add_argument("--out", type=out_file, help="JSON file for the rows (all columns)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fleos.analysis.train_alpha import ResultsError, decompose_run, markdown_table
    from fleos.cli.args import write_json_output
    from fleos.config import load_config_file

    try:
        config = load_config_file(args.config)
    except (FileNotFoundError, ValueError) as err:
        raise InputError(f"--config: {err}") from None
    try:
        rows = decompose_run(args.results, config, args.experiment)
    except ResultsError as err:
        raise InputError(f"--results {args.results}: {err}") from None
    except KeyError as err:
        raise InputError(f"--experiment {args.experiment}: {err.args[0]}") from None
    except ValueError as err:
        raise InputError(f"--config {args.config}: {err}") from None
    print(markdown_table(rows), file=sys.stdout)
    if args.out:
        write_json_output({"experiment": args.experiment, "rows": rows}, args.out)
    return 0
