"""The `fleos` command line: `fleos sample`, `fleos eos {cnn2,fcn,cnn3}`, `fleos fls`,
`fleos job` (what the workflow's rules run), `fleos collect` (a finished run, to commit) and
`fleos train-alpha` (a finished cnn2 run's train-α gap to the EoS, split into measured terms).

Each subcommand lives in its own module with a `register(subparsers)` function that adds its
parser and sets `func` to the callable that runs it.

One convention for every subcommand (`EXIT_STATUS`, shown in each --help): exit 2 for bad
input, with one line on stderr naming the argument or file; exit 1 for a run that failed or
did not converge; 0 otherwise. Argument values are checked by the `type=` functions of
`fleos.cli.args` (argparse reports them through `Parser.error`), input files by `read_npz`
and `check_training_data`, which raise `InputError`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fleos.cli.args import InputError, Parser


def build_parser() -> argparse.ArgumentParser:
    from fleos import __version__
    from fleos.cli import collect, eos, fls, job, sample, train_alpha

    parser = Parser(
        prog="fleos",
        description=(
            "Feature-learning equations of state (Seroussi, Naveh & Ringel, Nat. Commun. 2023): "
            "Langevin sampling of finite-width networks and the EoS that predict their kernels."
        ),
    )
    parser.add_argument("--version", action="version", version=f"fleos {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)
    sample.register(sub)
    eos.register(sub)
    fls.register(sub)
    job.register(sub)
    collect.register(sub)
    train_alpha.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from fleos import limit_blas_threads

    limit_blas_threads()  # one BLAS thread beside XLA's pool (fleos/__init__.py)
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        # `eos` names its architecture (a subcommand); `fls --arch` is a list of options
        sub = args.arch if args.command == "eos" else ""
        prog = " ".join(["fleos", args.command, sub]).strip()
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
