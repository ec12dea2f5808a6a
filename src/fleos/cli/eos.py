"""`fleos eos ARCH ...`: solve the equations of state and print JSON.

One module per architecture registers its own parser: `eos_cnn2` (Eq. 8/9), `eos_fcn` (Eq. 5),
`eos_cnn3` (Fig. 5 predictions from empirical kernels).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from fleos.cli import eos_cnn2, eos_cnn3, eos_fcn

    parser = subparsers.add_parser(
        "eos",
        help="solve the equations of state for one architecture",
        description="Solve the equations of state (Seroussi, Naveh & Ringel 2023) and print JSON.",
    )
    arch = parser.add_subparsers(dest="arch", required=True, metavar="ARCH")
    eos_cnn2.register(arch)
    eos_fcn.register(arch)
    eos_cnn3.register(arch)
