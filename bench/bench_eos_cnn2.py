"""Benchmark: the Fig. 3 theory sweep of the 2-layer CNN EoS (Eq. 8) at the paper's size,
against the paper's method (scipy.optimize.newton_krylov with finite-difference JVPs).

Run by hand (never in CI):
    .venv/bin/python bench/bench_eos_cnn2.py                 # n=1600, S=64, N=20, 8 C values
    .venv/bin/python bench/bench_eos_cnn2.py --baseline-C 1280 --baseline-limit 600

Ours: fleos.theory.eos.cnn2.sweep_cnn2 (Anderson on the precision, annealed from the GP with 1/C
extrapolation; exact VJP trace term; fused arcsin) + test predictions on n_test points at
every C. Baseline: scipy's newton_krylov (finite-difference Jacobian-vector products, LGMRES,
the paper's "Newton-Krylov method, which does not require explicit gradients") on the same
residual T(Λ) − Λ, evaluated by the same jitted function (so the ratio measures the
algorithms, not our faster kernel), warm-started from the GP at the largest C as in the paper.
The baseline is time-limited: if it does not finish, its per-C time is extrapolated from the
evaluations made, and the report says so.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np


class _TimeUp(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1600)
    ap.add_argument("--S", type=int, default=64)
    ap.add_argument("--N", type=int, default=20)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--C", type=float, nargs="+",
                    default=[1280, 960, 640, 480, 320, 240, 200, 160])
    ap.add_argument("--method", default="anderson", choices=["anderson", "newton_krylov"])
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--baseline-C", type=float, nargs="*", default=[1280.0],
                    help="C values for the scipy baseline (annealed in this order)")
    ap.add_argument("--baseline-limit", type=float, default=600.0,
                    help="wall-time limit of the baseline (s)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import scipy.optimize

    import fleos  # noqa: F401
    from fleos.nets.data import make_dataset
    from fleos.theory.eos import cnn2

    load0 = open("/proc/loadavg").read().split()[:3]
    cfg = {"S": args.S, "N": args.N, "sigma_w2": 2.0, "sigma_a2": 2.0, "activation": "erf"}
    ds = make_dataset("cnn2", cfg, args.n, args.n_test, 0, 0)
    pb = cnn2.CNN2Problem.from_arrays(ds.X, ds.y, args.N, args.S, ds.X_test, ds.y_test,
                                      sigma2=0.1, sigma_a2=2.0, sigma_w2=2.0)
    # Warm up compilation (reported separately: it is paid once per process and shape).
    t = time.perf_counter()
    cnn2.cnn2_gp_observables(pb)
    cnn2.solve_cnn2(pb, 1e12, max_iter=2, method=args.method)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(cnn2.trace_term(pb.P, pb.y, cnn2.gp_sigma(pb), 0.1, 2.0, "erf"))
    eval_s = time.perf_counter() - t

    # ---- ours: full sweep + test predictions
    t0 = time.perf_counter()
    gp = cnn2.cnn2_gp_observables(pb)
    results = cnn2.sweep_cnn2(pb, args.C, tol=args.tol, method=args.method)
    rows = []
    for C, r in zip(args.C, results, strict=True):
        obs = cnn2.cnn2_observables(pb, r.x)
        rows.append({"C": C, "converged": r.converged, "iterations": r.iterations,
                     "residual": r.residual, "solve_seconds": round(r.seconds, 2),
                     "alpha_test_over_gp": obs["alpha_test"] / gp["alpha_test"],
                     "alpha_train_over_gp": obs["alpha_train"] / gp["alpha_train"],
                     "top_sigma_eig_times_S": float(obs["sigma_eigs"][0] * args.S)})
    sweep_s = time.perf_counter() - t0
    load1 = open("/proc/loadavg").read().split()[:3]

    # ---- baseline: scipy newton_krylov with finite-difference JVPs on the same map
    scale = cnn2._scale(pb)
    f64 = jnp.float64
    fp, _ = cnn2._EOS_FP["erf"]
    base_rows = []
    t_base = time.perf_counter()
    u = np.asarray(jnp.linalg.inv(cnn2.gp_sigma(pb)) / scale)
    for C in args.baseline_C:
        fargs = (pb.P, pb.y, jnp.asarray(1.0 / C, f64), jnp.asarray(pb.sigma2, f64),
                 jnp.asarray(pb.sigma_a2, f64), jnp.asarray(pb.sigma_w2, f64),
                 jnp.asarray(scale, f64))
        calls = {"n": 0}
        t_c = time.perf_counter()

        def F(x, fargs=fargs, calls=calls):
            if time.perf_counter() - t_base > args.baseline_limit:
                raise _TimeUp
            calls["n"] += 1
            v = jnp.asarray(x.reshape(args.S, args.S))
            return np.asarray(fp(v, *fargs) - v).ravel()

        status = "converged"
        try:
            sol = scipy.optimize.newton_krylov(F, u.ravel(), f_tol=args.tol / args.S,
                                               method="lgmres", maxiter=200)
            u = sol.reshape(args.S, args.S)
            res = float(np.linalg.norm(F(sol)))
        except _TimeUp:
            status = "time limit reached"
            res = float("nan")
        except scipy.optimize.NoConvergence as err:
            status = f"no convergence: {err}"
            res = float("nan")
        secs = time.perf_counter() - t_c
        base_rows.append({"C": C, "status": status, "residual": res,
                          "residual_evaluations": calls["n"], "seconds": round(secs, 1),
                          "seconds_per_evaluation": secs / max(calls["n"], 1)})
        if status != "converged":
            break
    ours_evals = sum(r["iterations"] + 1 for r in rows)
    out = {
        "settings": {"n": args.n, "S": args.S, "N": args.N, "n_test": args.n_test,
                     "C": args.C, "tol": args.tol, "method": args.method, "teacher_seed": 0,
                     "data_seed": 0, "sigma2": 0.1, "sigma_a2": 2.0, "sigma_w2": 2.0},
        "machine": {"node": platform.node(), "cpus": __import__("os").cpu_count(),
                    "loadavg_start": load0, "loadavg_after_sweep": load1,
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
        "compile_seconds": round(compile_s, 1),
        "one_evaluation_seconds": round(eval_s, 2),
        "ours": {"sweep_seconds_incl_test_predictions": round(sweep_s, 1),
                 "map_evaluations": ours_evals, "rows": rows},
        "baseline_scipy_newton_krylov_fd": base_rows,
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    import fleos

    fleos.limit_blas_threads()  # as the CLI and the workflow (bench/RESULTS.md "BLAS threads")
    main()
