"""`fleos fls`: the feature-learning scale of Fig. 2c (width at which χ = 1 against n).

Example:
    fleos fls --arch fcn_standard fcn_mf cnn2 --n 64 128 256 512 1024 --seeds 1 2 3 --json
Prints one JSON document {"curves": [fleos.theory.fls.fls_curve(...) per arch]}.
"""

from __future__ import annotations

import argparse

from fleos.cli.args import (
    nonneg_int,
    out_file,
    positive_float,
    positive_int,
    write_json_output,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from fleos.theory.fls import ARCHS

    p = subparsers.add_parser(
        "fls",
        help="feature-learning scale: width at which χ = 1 vs n (Fig. 2c)",
        description="Width N (FCN) or channels C (CNN) at which the FLS χ of Eq. 6 equals 1, "
        "evaluated at the GP solution, for teacher data of each size n.",
    )
    p.add_argument("--arch", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--n", type=positive_int, nargs="+", required=True,
                   help="training-set sizes")
    p.add_argument("--seeds", type=nonneg_int, nargs="+", default=[1, 2, 3], help="data seeds")
    p.add_argument("--teacher-seed", type=nonneg_int, default=0)
    p.add_argument("--d", type=positive_int, help="FCN input dimension (default 128)")
    p.add_argument("--S", type=positive_int, help="CNN patch size (default 64)")
    p.add_argument("--N", type=positive_int, help="CNN number of patches (default 20)")
    p.add_argument("--sigma2", type=positive_float,
                   help="noise σ² (default: per arch, see fleos.theory.fls)")
    p.add_argument("--json", action="store_true", help="print JSON (the default output)")
    p.add_argument("--out", type=out_file,
                   help="write the JSON to this file instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fleos.cli.memory import fls_terms, require_memory, total_bytes
    from fleos.theory.fls import DEFAULTS, fls_curve

    # The largest (arch, n) sets the peak: one curve point at a time holds memory.
    runs = []
    for arch in args.arch:
        cfg = DEFAULTS[arch]
        runs += [fls_terms(arch, n, args.d or cfg.get("d", 0), cfg.get("depth", 0),
                           args.N or cfg.get("N", 0), args.S or cfg.get("S", 0))
                 for n in args.n]
    require_memory(max(runs, key=lambda terms: total_bytes(terms)[0]))
    curves = []
    for arch in args.arch:
        opts = {"sigma2": args.sigma2}
        if arch.startswith("fcn"):
            opts["d"] = args.d
        else:
            opts.update(S=args.S, N=args.N)
        curves.append(fls_curve(arch, args.n, tuple(args.seeds), args.teacher_seed, **opts))
    write_json_output({"curves": curves}, args.out)
    return 0
