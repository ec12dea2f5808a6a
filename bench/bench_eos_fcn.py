"""Benchmark: 3-layer FCN EoS (Eq. 5) at the paper's Fig. 2b size, n=1024, d=128, MF scaling.

Ours: fleos.theory.eos.fcn.solve_fcn straight from the GP point at each width (Newton on the
precision form of Eq. 5: exact JAX JVPs via jax.linearize, early-terminating GMRES with
Eisenstat-Walker forcing, free-energy line search, positive-definite step curve). The first
width is timed cold (compilation included) and again warm.
Baseline (the paper's method): scipy.optimize.newton_krylov with finite-difference JVPs on the
same residual function (jitted), from the same GP start at the first width, time-limited; if it
does not finish within --baseline-limit seconds we report its residual history and an
extrapolation of the time to reach the same tolerance from its observed convergence rate
(stated as an extrapolation).

Run by hand:  .venv/bin/python bench/bench_eos_fcn.py [--widths 512 250 1000 2000]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize as so
from jax.flatten_util import ravel_pytree

import fleos  # enables float64
from fleos.nets.data import make_dataset
from fleos.theory.eos import fcn


def _timed_solve(pb: fcn.FCNProblem, width: float, tol: float) -> tuple[dict, object]:
    t, c = time.perf_counter(), time.process_time()
    r = fcn.solve_fcn(pb, width, tol=tol)
    rec = {"width": width, "converged": r.converged, "newton_steps": r.iterations,
           "jvps": r.matvecs, "residual": r.residual,
           "residual_paper_form": fcn.residual_blocks(pb, r.x, width),
           "wall_seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c,
           "history": list(r.history), "message": r.message}
    return rec, r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--widths", type=float, nargs="+", default=[512.0])
    ap.add_argument("--sigma2", type=float, default=0.01)
    ap.add_argument("--scaling", default="mean_field")
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--baseline-limit", type=float, default=150.0)
    args = ap.parse_args()
    load0 = open("/proc/loadavg").read().split()[:3]
    cfg = {"d": args.d, "sigma_w2": 2.0, "sigma_a2": 2.0, "depth": 3}
    ds = make_dataset("fcn", cfg, args.n, 1000, teacher_seed=0, data_seed=1)
    pb = fcn.FCNProblem(ds.X, ds.y, ds.X_test, ds.y_test, sigma2=args.sigma2,
                        scaling=args.scaling)
    out: dict = {"n": args.n, "d": args.d, "scaling": args.scaling, "sigma2": args.sigma2,
                 "tol": args.tol, "ours": []}
    w1 = args.widths[0]
    cold, r1 = _timed_solve(pb, w1, args.tol)
    cold["note"] = "cold: includes compilation"
    out["ours"].append(cold)
    print(json.dumps(cold, default=float), flush=True)
    for w in args.widths:
        rec, r = _timed_solve(pb, w, args.tol)
        obs = fcn.fcn_observables(pb, r.x, w)
        rec["observables"] = {k: obs[k] for k in ("train_mse_over_gp", "alpha_train_over_gp",
                                                  "alpha_test_over_gp", "sigma_top_over_gp")}
        out["ours"].append(rec)
        print(json.dumps(rec, default=float), flush=True)
    # Baseline: scipy newton_krylov with finite-difference JVPs on the same (jitted) residual.
    data, p = fcn._data(pb), fcn._params(pb, w1)
    u_gp = fcn._invert_blocks(fcn.gp_x(pb))
    sc = fcn._scales(u_gp)
    v0, unravel = ravel_pytree(u_gp)
    Rj = jax.jit(lambda v: ravel_pytree(fcn._RESIDUALS["erf"](unravel(v), data, p, sc))[0])
    Rj(v0).block_until_ready()
    hist: list[tuple[float, float]] = []
    t0, c0 = time.perf_counter(), time.process_time()

    class Timeout(Exception):
        pass

    def F(v: np.ndarray) -> np.ndarray:
        return np.asarray(Rj(jnp.asarray(v)))

    def callback(v: np.ndarray, f: np.ndarray) -> None:
        hist.append((time.perf_counter() - t0, float(np.linalg.norm(f))))
        if time.perf_counter() - t0 > args.baseline_limit:
            raise Timeout

    r0 = float(jnp.linalg.norm(Rj(v0)))
    finished = False
    try:
        so.newton_krylov(F, np.asarray(v0), f_tol=args.tol, method="lgmres", callback=callback,
                         maxiter=200)
        finished = True
    except Timeout:
        pass
    except Exception as e:  # noqa: BLE001  (report, e.g. NoConvergence)
        out["baseline_error"] = repr(e)[:200]
    base = {"finished": finished, "r0": r0, "history": hist,
            "wall_seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
    if hist and not finished:
        (t_end, r_end) = hist[-1]
        if 0 < r_end < r0:
            rate = math.log(r0 / r_end) / t_end
            base["extrapolated_seconds_to_tol"] = math.log(r0 / args.tol) / rate
        else:
            base["extrapolated_seconds_to_tol"] = math.inf
    base["note"] = (f"scipy newton_krylov (finite-difference JVPs, lgmres) on the same residual "
                    f"from the same GP start, width {w1:g}")
    out["baseline_scipy_fd"] = base
    out["machine"] = f"{platform.node()} {platform.machine()} cpus={jax.device_count()}"
    out["loadavg_start"] = load0
    out["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    out["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    fleos.limit_blas_threads()  # as the CLI and the workflow (bench/RESULTS.md "BLAS threads")
    main()
