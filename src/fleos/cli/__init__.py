"""The `fleos` command line: `fleos sample`, `fleos eos {cnn2,fcn,cnn3}`, `fleos fls`.

Each subcommand lives in its own module with a `register(subparsers)` function that adds its
parser and sets `func` to the callable that runs it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from fleos import __version__
    from fleos.cli import eos, fls, sample

    parser = argparse.ArgumentParser(
        prog="fleos",
        description=(
            "Feature-learning equations of state (Seroussi, Naveh & Ringel, Nat. Commun. 2023): "
            "Langevin sampling of finite-width networks and the EoS that predict their kernels."
        ),
    )
    parser.add_argument("--version", action="version", version=f"fleos {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sample.register(sub)
    eos.register(sub)
    fls.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from fleos import limit_blas_threads

    limit_blas_threads()  # one BLAS thread beside XLA's pool (fleos/__init__.py)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
