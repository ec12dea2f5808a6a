"""`fleos eos fcn`: solve the FCN equations of state (Eq. 5) over widths and print JSON.

Example (Fig. 2b setting):
    fleos eos fcn --n 1024 --d 128 --depth 3 --scaling mean_field --sigma2 0.01 \
        --sigma-w2 2 --sigma-a2 2 --widths 512 256 128 --json
Output: one JSON document {"problem": {...}, "gp": [...], "solutions": [...]}; `gp` holds the
GP-limit observables per width (width-independent in standard scaling, width-dependent in
mean-field scaling where Q_f ∝ 1/N), each solution holds the solver status and the
observables of fleos.theory.eos.fcn.fcn_observables (ratios to the GP of the same width).
Exit code 1 if any width did not converge (the JSON is still printed), 2 for bad input.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from fleos.cli.args import (
    InputError,
    check_training_data,
    nonneg_float,
    nonneg_int,
    number_type,
    out_file,
    positive_float,
    positive_int,
    read_npz,
    terminal_progress,
    write_json_output,
)
from fleos.nets.models import DEFAULT_SCALING, SCALINGS

_depth = number_type(int, lambda v: v >= 2, "an integer >= 2 (an FCN has at least 2 layers)")


def register(arch_subparsers: argparse._SubParsersAction) -> None:
    p = arch_subparsers.add_parser(
        "fcn",
        help="FCN equations of state (Eq. 5) over widths, solved from the GP limit down",
        description="Solve Eq. 5 for an L-layer erf FCN at each width, from large to small, each "
        "warm-started at the previous one (Newton on the precision form, fleos.theory.eos.fcn).",
    )
    p.add_argument("--data", help="npz file with X, y, X_test, y_test (else a teacher draw)")
    p.add_argument("--n", type=positive_int, default=1024,
                   help="training-set size (teacher data)")
    p.add_argument("--d", type=positive_int, default=128,
                   help="input dimension (teacher data)")
    p.add_argument("--n-test", type=nonneg_int, default=1000,
                   help="test-set size (teacher data)")
    p.add_argument("--data-seed", type=nonneg_int, default=1)
    p.add_argument("--teacher-seed", type=nonneg_int, default=0)
    p.add_argument("--depth", type=_depth, default=3, help="layers L >= 2 (Eq. 1)")
    p.add_argument("--scaling", default=DEFAULT_SCALING, choices=SCALINGS)
    p.add_argument("--activation", default="erf", choices=["erf", "linear"])
    p.add_argument("--sigma2", type=positive_float, default=0.01, help="likelihood noise σ²")
    p.add_argument("--sigma-w2", type=positive_float, default=2.0)
    p.add_argument("--sigma-a2", type=positive_float, default=2.0)
    p.add_argument("--ridge", type=nonneg_float, default=0.0,
                   help="ridge added to Q^(l) (Eq. 5)")
    p.add_argument("--widths", type=positive_float, nargs="+", required=True)
    p.add_argument("--tol", type=positive_float, default=1e-8)
    p.add_argument("--max-iter", type=positive_int, default=50)
    p.add_argument("--method", default="newton_krylov", choices=["newton_krylov", "anderson"])
    p.add_argument("--json", action="store_true", help="print JSON (the default output)")
    p.add_argument("--out", type=out_file,
                   help="write the JSON to this file instead of stdout")
    p.set_defaults(func=run)


def load_dataset_arg(args: argparse.Namespace) -> Any:
    """The Dataset of --data, or a fleos.nets.data teacher draw."""
    if args.data:
        from fleos.nets.datasets import load_dataset

        read_npz(args.data, "--data")  # missing file or not an npz: named as the argument
        try:
            ds = load_dataset(args.data)
        except ValueError as err:
            raise InputError(f"--data {args.data}: {err}") from None
        check_training_data(np.asarray(ds.X), np.asarray(ds.y), f"--data {args.data}",
                            np.asarray(ds.X_test), np.asarray(ds.y_test))
        X = np.asarray(ds.X).reshape(len(ds.X), -1)
        _require_memory(args, len(X), len(ds.X_test), X.shape[1],
                        f"--data {args.data} (n = {len(X)})")
        return ds
    from fleos.nets.data import make_dataset

    _require_memory(args, args.n, args.n_test, args.d, f"--n {args.n}")
    return make_dataset("fcn", _model(args), args.n, args.n_test, args.teacher_seed,
                        args.data_seed)


def _require_memory(args: argparse.Namespace, n: int, n_test: int, d: int, n_arg: str) -> None:
    """Refuse, before the data are drawn or the solve starts, a size this machine cannot hold."""
    from fleos.cli.memory import fcn_terms, require_memory

    require_memory(fcn_terms(n, n_test, d, args.depth, args.method, n_arg))


def _model(args: argparse.Namespace) -> dict[str, Any]:
    """The ``model:`` block of an fcn experiment with these settings."""
    return {"d": args.d, "sigma_w2": args.sigma_w2, "sigma_a2": args.sigma_a2,
            "depth": args.depth, "scaling": args.scaling, "activation": args.activation}


def run(args: argparse.Namespace) -> int:
    import fleos  # noqa: F401  (float64)
    from fleos.theory.eos import fcn
    from fleos.theory.runs import fcn_problem

    # built as the workflow builds it
    pb = fcn_problem(load_dataset_arg(args), _model(args), args.sigma2, args.ridge)
    results = fcn.sweep_fcn(pb, args.widths, tol=args.tol, max_iter=args.max_iter,
                            method=args.method,
                         progress=terminal_progress("N"))
    gp_rows = []
    for w in args.widths:
        o = fcn.fcn_observables(pb, fcn.gp_x(pb), w)
        gp_rows.append({"width": w, **{k: o[k] for k in
                                       ("train_mse", "alpha_train", "alpha_test", "sigma_eigs")}})
    doc = {
        "problem": {"n": pb.n, "d": pb.d, "n_test": 0 if pb.X_test is None else len(pb.X_test),
                    "depth": pb.depth, "scaling": pb.scaling, "activation": pb.activation,
                    "sigma2": pb.sigma2, "sigma_w2": pb.sigma_w2, "sigma_a2": pb.sigma_a2,
                    "ridge": pb.ridge, "tol": args.tol, "method": args.method,
                    "data": args.data or {"teacher_seed": args.teacher_seed,
                                          "data_seed": args.data_seed}},
        "gp": gp_rows,
        "solutions": [fcn.result_summary(pb, w, r)
                      for w, r in zip(args.widths, results, strict=True)],
    }
    write_json_output(doc, args.out)
    return 0 if all(r.converged for r in results) else 1
