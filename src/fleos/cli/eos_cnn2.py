"""`fleos eos cnn2`: solve the 2-layer CNN equations of state (Eq. 8) over C and print JSON.

Example (Fig. 3, n = 1600):
    fleos eos cnn2 --n 1600 --S 64 --N 20 --sigma2 0.1 --sigma-a2 2 --sigma-w2 2 \
        --C 1280 640 320 160 --n-test 1000 --data-seed 0 --teacher-seed 0 --json --analytic
Output: ONE JSON document {"gp": {...}, "solutions": [...], "settings": {...}}. `gp` holds the
C → ∞ observables; each solution holds C, the solver status (converged, iterations, residual,
seconds, message) and the observables of fleos.theory.eos.cnn2.cnn2_observables (alpha_train,
alpha_test, normalized train MSE, test MSE, sigma_eigs descending) with their ratios to the
GP. With --analytic each solution also holds "analytic": Eq. 9 (fleos.theory.eos.cnn2_analytic) and
the test α of GP inference with Q_f(analytic Σ). With --matched-samples K, each solution
also holds "matched": the moment-matched EoS (fleos.theory.eos.cnn2_matched) and its Monte
Carlo SE. Exit code 1 if any requested C did not converge (Eq. 8 or, when on, the
moment-matched EoS; the JSON is still printed, with converged=false); exit code 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from fleos.cli.args import (
    InputError,
    check_training_data,
    nonneg_int,
    number_type,
    out_file,
    positive_float,
    positive_int,
    read_npz,
    terminal_progress,
    write_json_output,
)
from fleos.config import MATCHED_BATCH, THEORY_DEFAULTS

_MATCHED_DEFAULT = THEORY_DEFAULTS["cnn2"]["matched_samples"]
_matched_samples = number_type(int, lambda v: v >= 0 and v % MATCHED_BATCH == 0,
                               f"0 (off) or a positive multiple of {MATCHED_BATCH}")


def register(arch_subparsers: argparse._SubParsersAction) -> None:
    p = arch_subparsers.add_parser(
        "cnn2",
        help="2-layer CNN equations of state (Eq. 8), annealed from the GP limit over C",
        description="Solve Eq. 8 for the 2-layer erf CNN at each channel count C (annealing "
        "from the GP solution), with GP test predictions and optionally Eq. 9.",
    )
    p.add_argument("--data", help="npz file with X (n × N·S), y, optional X_test, y_test "
                   "(else a teacher draw); N = width / S")
    p.add_argument("--n", type=positive_int, default=1600,
                   help="training-set size (teacher data)")
    p.add_argument("--S", type=positive_int, default=64, help="patch size S")
    p.add_argument("--N", type=positive_int, default=None,
                   help="number of patches N (teacher data: default 20; with --data it must "
                        "equal the width of X / S)")
    p.add_argument("--n-test", type=nonneg_int, default=1000,
                   help="test-set size (teacher data)")
    p.add_argument("--data-seed", type=nonneg_int, default=0)
    p.add_argument("--teacher-seed", type=nonneg_int, default=0)
    p.add_argument("--activation", default="erf", choices=["erf", "linear"])
    p.add_argument("--sigma2", type=positive_float, default=0.1, help="likelihood noise σ²")
    p.add_argument("--sigma-a2", type=positive_float, default=2.0,
                   help="readout prior variance σ_a²")
    p.add_argument("--sigma-w2", type=positive_float, default=2.0,
                   help="input prior variance σ_w²")
    p.add_argument("--C", type=positive_float, nargs="+", required=True, help="channel counts")
    p.add_argument("--tol", type=positive_float, default=1e-8,
                   help="relative residual tolerance")
    p.add_argument("--max-iter", type=positive_int, default=60)
    p.add_argument("--method", default="anderson", choices=["anderson", "newton_krylov"])
    p.add_argument("--analytic", action="store_true", help="add Eq. 9 (needs the teacher w*)")
    p.add_argument("--matched-samples", type=_matched_samples, default=0,
                   help="importance samples per evaluation of the moment-matched EoS "
                        "(fleos.theory.eos.cnn2_matched), solved at every C beside Eq. 8; "
                        "a multiple of 128; 0 = off, the default here because it takes "
                        f"minutes per C at the paper's n = 1600 (the workflow's "
                        f"theory.matched_samples defaults to {_MATCHED_DEFAULT})")
    p.add_argument("--matched-seed", type=nonneg_int, default=0,
                   help="seed of the moment-matched EoS's common random normals")
    p.add_argument("--json", action="store_true", help="print JSON (the default output)")
    p.add_argument("--out", type=out_file,
                   help="write the JSON to this file instead of stdout")
    p.set_defaults(func=run)


def _load(args: argparse.Namespace) -> tuple[Any, dict[str, np.ndarray], dict[str, Any]]:
    """(CNN2Problem, teacher arrays, data settings) from --data or a fleos.nets.data teacher
    draw; the problem is built as the workflow builds it (fleos.theory.runs.cnn2_problem)."""
    from fleos.nets.datasets import Dataset
    from fleos.theory.runs import cnn2_problem

    model = {"S": args.S, "N": args.N, "sigma_w2": args.sigma_w2, "sigma_a2": args.sigma_a2,
             "activation": args.activation}
    if args.data:
        arrays = read_npz(args.data, "--data", ("X", "y"))
        X, y = arrays["X"], arrays["y"]
        source = f"--data {args.data}"
        if X.ndim != 2:
            raise InputError(f"{source}: X must be 2-D (n × N·S), got shape {X.shape}")
        check_training_data(X, y, source, arrays.get("X_test"), arrays.get("y_test"))
        if X.shape[1] % args.S:
            raise InputError(f"{source}: the width {X.shape[1]} of X is not a multiple of "
                             f"--S {args.S}")
        if args.N is not None and args.N * args.S != X.shape[1]:
            raise InputError(f"--N {args.N}: X of {source} has {X.shape[1]} columns = "
                             f"{X.shape[1] // args.S} patches of --S {args.S}")
        if ("X_test" in arrays) != ("y_test" in arrays):
            raise InputError(f"{source}: X_test and y_test must be given together")
        model["N"] = X.shape[1] // args.S
        n_test = len(arrays["X_test"]) if "X_test" in arrays else 0
        _require_memory(args, len(X), n_test, model["N"], f"{source} (n = {len(X)})")
        teacher = {k: v for k, v in arrays.items() if k.startswith("teacher_")}
        ds = Dataset(X, y, arrays.get("X_test", X[:0]), arrays.get("y_test", y[:0]), teacher)
        return cnn2_problem(ds, model, args.sigma2), teacher, {"data": args.data}
    args.N = model["N"] = 20 if args.N is None else args.N
    _require_memory(args, args.n, args.n_test, args.N, f"--n {args.n}")
    from fleos.nets.data import make_dataset

    ds = make_dataset("cnn2", model, args.n, args.n_test, args.teacher_seed, args.data_seed)
    return (cnn2_problem(ds, model, args.sigma2), ds.teacher,
            {"data_seed": args.data_seed, "teacher_seed": args.teacher_seed})


def _require_memory(args: argparse.Namespace, n: int, n_test: int, N: int, n_arg: str) -> None:
    """Refuse, before the data are drawn or the solve starts, a size this machine cannot hold."""
    from fleos.cli.memory import cnn2_terms, require_memory

    require_memory(cnn2_terms(n, n_test, N, args.S, args.matched_samples, n_arg))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _public(obs: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready observables (drop the per-point predictions)."""
    out = {k: v for k, v in obs.items() if k not in ("f_train", "f_test")}
    out["sigma_eigs"] = [float(v) for v in obs["sigma_eigs"]]
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def run(args: argparse.Namespace) -> int:
    import fleos  # noqa: F401  (float64)
    from fleos.theory.eos.cnn2 import cnn2_gp_observables, cnn2_observables, sweep_cnn2
    from fleos.theory.eos.cnn2_analytic import analytic_observables
    from fleos.theory.runs import cnn2_matched_row

    t0 = time.perf_counter()
    try:
        problem, teacher, data_settings = _load(args)
    except ValueError as err:
        raise InputError(str(err)) from None
    gp = _public(cnn2_gp_observables(problem))
    results = sweep_cnn2(problem, args.C, tol=args.tol, max_iter=args.max_iter,
                         method=args.method,
                         progress=terminal_progress("C"))
    solutions = []
    for C, res in zip(args.C, results, strict=True):
        t_obs = time.perf_counter()
        obs = _public(cnn2_observables(problem, res.x))
        row: dict[str, Any] = {
            "C": C, "converged": bool(res.converged), "iterations": int(res.iterations),
            "residual": float(res.residual), "seconds": float(res.seconds),
            "message": res.message, **obs,
            "alpha_train_over_gp": _ratio(obs["alpha_train"], gp["alpha_train"]),
            "alpha_test_over_gp": _ratio(obs["alpha_test"], gp["alpha_test"]),
            "train_mse_over_gp": _ratio(obs["train_mse_normalized"],
                                        gp["train_mse_normalized"]),
            "top_sigma_eig_over_gp": _ratio(obs["sigma_eigs"][0], gp["sigma_eigs"][0]),
        }
        if args.analytic:
            try:
                row["analytic"] = analytic_observables(problem, C, teacher)
            except ValueError as err:
                raise InputError(f"--analytic: {err}") from None
        if args.matched_samples:
            row["matched"] = cnn2_matched_row(problem, float(C), res.x, {
                "matched_samples": args.matched_samples, "matched_seed": args.matched_seed},
                log=_stderr)[0]
        row["observables_seconds"] = time.perf_counter() - t_obs
        solutions.append(row)
    doc = {
        "gp": gp,
        "solutions": solutions,
        "settings": {
            "n": problem.n, "S": problem.S, "N": problem.N,
            "n_test": 0 if problem.P_test is None else int(problem.P_test.shape[0]),
            "sigma2": problem.sigma2, "sigma_a2": problem.sigma_a2,
            "sigma_w2": problem.sigma_w2, "activation": problem.activation,
            "C": list(args.C), "tol": args.tol, "max_iter": args.max_iter,
            "method": args.method, "matched_samples": args.matched_samples,
            "matched_seed": args.matched_seed, **data_settings,
            "total_seconds": time.perf_counter() - t0,
        },
    }
    write_json_output(doc, args.out)
    return 0 if all(s["converged"] and s.get("matched", {}).get("matched_converged", True)
                    for s in solutions) else 1
