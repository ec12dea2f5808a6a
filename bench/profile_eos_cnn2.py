"""Profile: where the Eq. 8 Fig. 3 sweep of the 2-layer CNN spends its time (paper size).

Run by hand (never in CI), from the repository root:
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        taskset -c 1 .venv/bin/python bench/profile_eos_cnn2.py --out /tmp/profile_cnn2_core1.json
    .venv/bin/python bench/profile_eos_cnn2.py --out /tmp/profile_cnn2_default.json

(On jax 0.10.2 the XLA flags alone leave XLA on both cores; `taskset` pins it to one.)

The sweep is the product's (`fleos.theory.eos.cnn2.sweep_cnn2` + `cnn2_observables` at every
C + `cnn2_gp_observables`), run twice in one process: cold (compilation included) and warm.
During the warm sweep the solvers' map call is wrapped (in this script only) to count its
evaluations and time them with `block_until_ready`; the rest of the solve is the solver's
Python and NumPy work. Then each piece of one map evaluation is timed alone, on the Σ of the
smallest C (the cost does not depend on Σ's values): Q_f (forward, tiled), the Cholesky of
K_f and the explicit K_f⁻¹ (block-recursive; `cho_solve` against I for reference), the trace
term's closed-form pullback (and jax's VJP patch by patch, its previous form, for reference),
and, as references for levers, the same kernels with the linear activation (GEMMs only), in
float32, and one JVP of the map (the cost unit of Newton with exact JVPs). Every piece is the
median of --reps calls after one warm-up call; compilation is the first minus the second call of the
map and of the observables in the fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np


def _loadavg() -> list[str]:
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1600)
    ap.add_argument("--S", type=int, default=64)
    ap.add_argument("--N", type=int, default=20)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--C", type=float, nargs="+",
                    default=[5000, 2560, 1280, 640, 320, 160, 80, 40])
    ap.add_argument("--data-seed", type=int, default=1)
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    if args.reps < 1:
        ap.error("--reps must be >= 1")

    import jax
    import jax.numpy as jnp
    import jax.scipy.linalg as jsl

    import fleos
    from fleos.core import gp, kernels
    from fleos.nets.data import make_dataset
    from fleos.theory import solvers
    from fleos.theory.eos import cnn2

    fleos.limit_blas_threads()
    load0 = _loadavg()
    f64 = jnp.float64

    cfg = {"S": args.S, "N": args.N, "activation": "erf", "sigma_w2": 2.0, "sigma_a2": 2.0}
    ds = make_dataset("cnn2", cfg, n=args.n, n_test=args.n_test, teacher_seed=0,
                      data_seed=args.data_seed)
    pb = cnn2.CNN2Problem.from_arrays(ds.X, ds.y, args.N, args.S, ds.X_test, ds.y_test,
                                      sigma2=0.1, sigma_a2=2.0, sigma_w2=2.0)

    cpu: dict[str, float] = {}

    def sweep() -> tuple[float, list, list, float, dict]:
        c0 = time.process_time()
        t0 = time.perf_counter()
        gp_obs = cnn2.cnn2_gp_observables(pb)
        res = cnn2.sweep_cnn2(pb, args.C, tol=args.tol)
        t1 = time.perf_counter()
        obs = [cnn2.cnn2_observables(pb, r.x) for r in res]
        t2 = time.perf_counter()
        cpu["last_sweep"] = time.process_time() - c0
        return t2 - t0, res, obs, (t2 - t1), gp_obs

    # ---- compilation: first minus second call of what the sweep compiles, in this fresh process
    def first_minus_second(fn) -> float:
        t = time.perf_counter()
        fn()
        first = time.perf_counter() - t
        t = time.perf_counter()
        fn()
        return first - (time.perf_counter() - t)

    compile_obs_s = first_minus_second(lambda: cnn2.cnn2_gp_observables(pb))
    compile_map_s = first_minus_second(lambda: cnn2.solve_cnn2(pb, 1e12, max_iter=1))

    # ---- a first sweep (anything compiled late), then the warm sweep with a counting map
    cold_s, _, _, _, _ = sweep()
    cpu["cold_sweep"] = cpu["last_sweep"]
    fp0, _ = cnn2._EOS_FP["erf"]
    calls: list[float] = []
    # The solvers call the map through the jitted `solvers._flat_eval`; counting is done
    # around that call (outside any trace), so each count is one executed evaluation.
    flat0 = solvers._flat_eval

    def flat_counted(fun, *a):
        t = time.perf_counter()
        out = jax.block_until_ready(flat0(fun, *a))
        calls.append(time.perf_counter() - t)
        return out

    solvers._flat_eval = flat_counted
    try:
        t_gp = time.perf_counter()
        cnn2.cnn2_gp_observables(pb)
        gp_obs_s = time.perf_counter() - t_gp
        warm_s, results, obs, obs_s, gp_obs = sweep()
    finally:
        solvers._flat_eval = flat0
    map_calls = calls  # the warm sweep's evaluations only: the cold sweep ran unwrapped
    map_s = sum(map_calls)
    solve_s = sum(r.seconds for r in results)
    load1 = _loadavg()

    rows = []
    for C, r, o in zip(args.C, results, obs, strict=True):
        rows.append({"C": C, "converged": r.converged, "iterations": r.iterations,
                     "residual": r.residual, "solve_s": round(r.seconds, 2),
                     "alpha_test_over_gp": o["alpha_test"] / gp_obs["alpha_test"],
                     "alpha_train_over_gp": o["alpha_train"] / gp_obs["alpha_train"],
                     "top_sigma_eig_times_S": float(o["sigma_eigs"][0] * args.S)})

    # ---- the pieces of one map evaluation, timed alone
    Sigma = jnp.asarray(results[-1].x, f64)  # the smallest C

    cpu_pieces: dict[str, float] = {}

    pieces: dict[str, float] = {}

    def timed(name: str, fn, *a) -> None:
        jax.block_until_ready(fn(*a))
        ts, cs = [], []
        for _ in range(args.reps):
            c = time.process_time()
            t = time.perf_counter()
            jax.block_until_ready(fn(*a))
            ts.append(time.perf_counter() - t)
            cs.append(time.process_time() - c)
        pieces[name] = statistics.median(ts)
        cpu_pieces[name] = statistics.median(cs)

    P, y, Pt = pb.P, pb.y, pb.P_test
    s2, sa2 = pb.sigma2, pb.sigma_a2
    N = pb.N
    PT = jnp.swapaxes(P, 0, 1)

    @jax.jit
    def chol_and_inverse(Qf):
        fit = gp.gp_fit(Qf, y, s2)
        return gp.discrepancy(fit), cnn2._inverse_from_cholesky(fit.chol)

    @jax.jit
    def chol_and_cho_solve_inverse(Qf):  # K_f⁻¹ by two triangular solves against I
        fit = gp.gp_fit(Qf, y, s2)
        Kinv = jsl.cho_solve((fit.chol, True), jnp.eye(y.shape[0], dtype=Qf.dtype))
        return gp.discrepancy(fit), Kinv

    @jax.jit
    def chol_only(Qf):
        return jnp.linalg.cholesky(Qf + s2 * jnp.eye(Qf.shape[0], dtype=Qf.dtype))

    def make_vjp_autodiff(activation):  # jax.vjp patch by patch: the previous trace term
        @jax.jit
        def vjp_loop(A, Sig, PT_):
            def body(i, B):
                _, pullback = jax.vjp(lambda s: kernels.cnn2_output_kernel(
                    PT_[i][:, None], PT_[i][:, None], s, 1.0, activation), Sig)
                return B + pullback(A)[0]
            return jax.lax.fori_loop(0, N, body, jnp.zeros_like(Sig)) * (sa2 / N)
        return vjp_loop

    def vjp_closed(A, Sig, P_, activation="erf"):
        return kernels.cnn2_output_kernel_vjp(P_, Sig, A, sa2, activation)

    vjp_autodiff_erf = make_vjp_autodiff("erf")
    qf = kernels.cnn2_output_kernel

    Qf = qf(P, P, Sigma, sa2, "erf")
    eps, Kinv = chol_and_inverse(Qf)
    A = jnp.outer(eps, eps) - Kinv

    scale = cnn2._scale(pb)
    u = jnp.linalg.inv(Sigma) / scale
    margs = (P, y, jnp.asarray(1.0 / args.C[-1], f64), jnp.asarray(s2, f64),
             jnp.asarray(sa2, f64), jnp.asarray(2.0, f64), jnp.asarray(scale, f64),
             jnp.asarray(-1.0, f64))

    timed("map_evaluation", fp0, u, *margs)
    timed("trace_term", cnn2.trace_term, P, y, Sigma, s2, sa2, "erf")
    timed("Qf_train_erf", qf, P, P, Sigma, sa2, "erf")
    timed("Qf_train_linear_gemm_only", qf, P, P, Sigma, sa2, "linear")
    timed("cholesky_Kf", chol_only, Qf)
    timed("cholesky_and_Kf_inverse", chol_and_inverse, Qf)
    timed("cholesky_and_Kf_inverse_cho_solve", chol_and_cho_solve_inverse, Qf)
    timed("vjp_closed_form_erf", vjp_closed, A, Sigma, P)
    timed("vjp_closed_form_linear_gemm_only", vjp_closed, A, Sigma, P, "linear")
    timed("vjp_autodiff_patch_loop_erf", vjp_autodiff_erf, A, Sigma, PT)
    timed("Qf_test_erf", qf, Pt, P, Sigma, sa2, "erf")
    timed("observables_one_C", lambda s: cnn2.cnn2_observables(pb, s)["alpha_test"], Sigma)

    # float32: the same kernels in single precision, and the error they make
    P32, Pt32, S32 = P.astype(jnp.float32), Pt.astype(jnp.float32), Sigma.astype(jnp.float32)
    A32 = A.astype(jnp.float32)
    timed("Qf_train_erf_float32", qf, P32, P32, S32, sa2, "erf")
    timed("vjp_closed_form_erf_float32", vjp_closed, A32, S32, P32)
    Qf32 = qf(P32, P32, S32, sa2, "erf").astype(f64)
    B64 = vjp_closed(A, Sigma, P)
    B32 = vjp_closed(A32, S32, P32).astype(f64)
    fit64, fit32 = gp.gp_fit(Qf, y, s2), gp.gp_fit(Qf32, y, s2)
    Qt64 = qf(Pt, P, Sigma, sa2, "erf")
    Qt32 = qf(Pt32, P32, S32, sa2, "erf").astype(f64)
    a_te64 = float(gp.alpha(pb.y_test, gp.gp_predict(fit64, Qt64), s2))
    a_te32 = float(gp.alpha(pb.y_test, gp.gp_predict(fit32, Qt32), s2))
    a_tr64 = float(gp.alpha(y, gp.gp_train_mean(fit64, y), s2))
    a_tr32 = float(gp.alpha(y, gp.gp_train_mean(fit32, y), s2))
    Bsym = lambda B: 0.5 * (B + B.T)  # noqa: E731
    float32_error = {
        "Qf_max_abs_rel_to_max": float(jnp.max(jnp.abs(Qf32 - Qf)) / jnp.max(jnp.abs(Qf))),
        "trace_term_rel_frobenius": float(jnp.linalg.norm(Bsym(B32) - Bsym(B64))
                                          / jnp.linalg.norm(Bsym(B64))),
        # the error of T(Λ) = (S/σ_w²) I − B/C in units of the solver's relative residual
        "map_error_in_residual_units_at_smallest_C": float(
            jnp.linalg.norm(Bsym(B32) - Bsym(B64)) / args.C[-1] / scale),
        "alpha_train_rel": abs(a_tr32 - a_tr64) / abs(a_tr64),
        "alpha_test_rel": abs(a_te32 - a_te64) / abs(a_te64),
    }
    # the closed-form pullback against the autodiff one, at this Σ
    B_ad = vjp_autodiff_erf(A, Sigma, PT)
    closed_vs_autodiff = float(jnp.max(jnp.abs(Bsym(B64) - Bsym(B_ad))) / jnp.max(jnp.abs(B_ad)))

    # Newton with exact JVPs: the cost of one jitted JVP of the map (forward over reverse)
    jvp_map = jax.jit(lambda v, t, *a: jax.jvp(lambda w: fp0(w, *a), (v,), (t,))[1])
    timed("jvp_of_map", jvp_map, u, u, *margs)

    # low rank: how far Σ is from the GP's multiple of I
    Sgp = cnn2.gp_sigma(pb)
    ev = np.sort(np.abs(np.linalg.eigvalsh(np.asarray(Sigma - Sgp))))[::-1]
    rel = ev / ev[0]
    low_rank = {f"rank_for_rel_{e:g}": int(np.sum(rel > e)) for e in (1e-2, 1e-4, 1e-8)}
    low_rank["top_eigs_of_Sigma_minus_Sgp_times_S"] = [float(v * args.S) for v in ev[:6]]

    out = {
        "settings": {"n": args.n, "S": args.S, "N": args.N, "n_test": args.n_test,
                     "C": args.C, "tol": args.tol, "teacher_seed": 0,
                     "data_seed": args.data_seed, "reps": args.reps,
                     "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")},
        "machine": {"node": platform.node(), "cpus": os.cpu_count(),
                    "loadavg_start": load0, "loadavg_after_sweeps": load1,
                    "loadavg_end": _loadavg()},
        "sweep_cold_s": round(cold_s, 2),
        "sweep_warm_s": round(warm_s, 2),
        "sweep_cold_cpu_s": round(cpu["cold_sweep"], 2),
        "sweep_warm_cpu_s": round(cpu["last_sweep"], 2),
        "compile_s": {"map": round(compile_map_s, 2), "observables": round(compile_obs_s, 2)},
        "warm": {"gp_observables_s": round(gp_obs_s, 2),
                 "solves_s": round(solve_s, 2),
                 "map_evaluations": len(map_calls),
                 "map_s": round(map_s, 2),
                 "map_median_s": round(statistics.median(map_calls), 3),
                 "solver_overhead_s": round(solve_s - map_s, 2),
                 "observables_all_C_s": round(obs_s, 2)},
        "rows": rows,
        "pieces_median_s": {k: round(v, 4) for k, v in pieces.items()},
        "pieces_median_cpu_s": {k: round(v, 4) for k, v in cpu_pieces.items()},
        "float32_error": float32_error,
        "vjp_closed_form_vs_autodiff_max_rel": closed_vs_autodiff,
        "low_rank_Sigma_minus_gp": low_rank,
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
