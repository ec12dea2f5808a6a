"""Benchmark: the Fig. 3 theory sweep of the 2-layer CNN EoS (Eq. 8) at the paper's size,
against the paper's method (scipy.optimize.newton_krylov with finite-difference JVPs).

Run by hand (never in CI):
    .venv/bin/python bench/bench_eos_cnn2.py                 # n=1600, S=64, N=20, 8 C values
    .venv/bin/python bench/bench_eos_cnn2.py --baseline-C 1280 --baseline-limit 600

Ours: fleos.theory.eos.cnn2.sweep_cnn2 (Anderson on the precision, annealed from the GP with 1/C
extrapolation; closed-form pullback for the trace term; fused arcsin) + test predictions on
n_test points at every C. Baseline: scipy's newton_krylov (finite-difference Jacobian-vector
products, LGMRES, the paper's "Newton-Krylov method, which does not require explicit
gradients") on the same residual T(Λ) − Λ, evaluated by the same jitted function (so the
ratio measures the algorithms, not our faster kernel), warm-started from the GP at the
largest C as in the paper.
The baseline is time-limited: if it does not finish, its per-C time is extrapolated from the
evaluations made, and the report says so.

Before/after on one machine (bench/RESULTS.md, "The Eq. 8 sweep, before and after"):
    git archive <old commit> src | tar -x -C /tmp/fleos_before
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        taskset -c 1 .venv/bin/python bench/bench_eos_cnn2.py --compare-src /tmp/fleos_before/src \
        --C 5000 2560 1280 640 320 160 80 40 --data-seed 1 --rounds 2
runs the sweep (with test predictions) in fresh processes, alternately importing fleos from
that tree and from this checkout's src/ (order swapped every round, so drift in the machine's
load hits both), and reports per run: wall and CPU seconds, map evaluations, the time of one
evaluation, the load average, and the largest difference between the two codes' Σ at each C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
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
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--compare-src", metavar="DIR",
                    help="before/after mode: fleos source tree of the 'before' code")
    ap.add_argument("--rounds", type=int, default=2, help="before/after rounds (--compare-src)")
    ap.add_argument("--sweep-only", metavar="NPZ", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    if args.compare_src is not None:
        if not os.path.isdir(os.path.join(args.compare_src, "fleos")):
            ap.error(f"--compare-src: no fleos package under {args.compare_src!r}")
        compare(args)
        return
    if args.sweep_only is not None:
        sweep_only(args)
        return

    import jax
    import jax.numpy as jnp
    import scipy.optimize

    import fleos  # noqa: F401
    from fleos.theory.eos import cnn2

    load0 = open("/proc/loadavg").read().split()[:3]
    pb, compile_s = _problem_and_compile(args)
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
                     "data_seed": args.data_seed, "sigma2": 0.1, "sigma_a2": 2.0, "sigma_w2": 2.0},
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


def _problem_and_compile(args: argparse.Namespace) -> tuple:
    """The benchmark's 2-layer CNN problem (Gaussian inputs, the cnn2 teacher of
    `make_dataset`, σ² = 0.1, σ_a² = σ_w² = 2, erf), and the seconds spent compiling the
    solver on it (reported separately: paid once per process and shape)."""
    from fleos.nets.data import make_dataset
    from fleos.theory.eos import cnn2

    cfg = {"S": args.S, "N": args.N, "sigma_w2": 2.0, "sigma_a2": 2.0, "activation": "erf"}
    ds = make_dataset("cnn2", cfg, args.n, args.n_test, 0, args.data_seed)
    pb = cnn2.CNN2Problem.from_arrays(ds.X, ds.y, args.N, args.S, ds.X_test, ds.y_test,
                                      sigma2=0.1, sigma_a2=2.0, sigma_w2=2.0)
    t = time.perf_counter()
    cnn2.cnn2_gp_observables(pb)
    cnn2.solve_cnn2(pb, 1e12, max_iter=2, method=args.method)
    return pb, time.perf_counter() - t


def _loadavg() -> list[str]:
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def sweep_only(args: argparse.Namespace) -> None:
    """One timed sweep (+ test predictions) with whatever fleos is importable; JSON on stdout,
    the solutions Σ (one per C) in the .npz at args.sweep_only."""
    import jax
    import numpy as np

    import fleos
    from fleos.theory import solvers
    from fleos.theory.eos import cnn2

    fleos.limit_blas_threads()
    pb, compile_s = _problem_and_compile(args)
    evals = []
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(cnn2.trace_term(pb.P, pb.y, cnn2.gp_sigma(pb), 0.1, 2.0, "erf"))
        evals.append(time.perf_counter() - t)
    # Count the solvers' map evaluations (each one call of the jitted `_flat_eval`).
    calls = [0]
    flat0 = solvers._flat_eval

    def counted(fun, *a):  # noqa: ANN001, ANN002, ANN202
        calls[0] += 1
        return flat0(fun, *a)

    solvers._flat_eval = counted
    load0 = _loadavg()
    c0, t0 = time.process_time(), time.perf_counter()
    gp = cnn2.cnn2_gp_observables(pb)
    results = cnn2.sweep_cnn2(pb, args.C, tol=args.tol, method=args.method)
    obs = [cnn2.cnn2_observables(pb, r.x) for r in results]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    solvers._flat_eval = flat0
    rows = [{"C": C, "converged": r.converged, "iterations": r.iterations,
             "residual": r.residual, "eq8_residual_at_sigma": cnn2.eos_residual(pb, C, r.x),
             "alpha_test_over_gp": o["alpha_test"] / gp["alpha_test"],
             "alpha_train_over_gp": o["alpha_train"] / gp["alpha_train"]}
            for C, r, o in zip(args.C, results, obs, strict=True)]
    np.savez(args.sweep_only, Sigma=np.stack([np.asarray(r.x) for r in results]),
             alpha_test=np.array([o["alpha_test"] for o in obs]),
             alpha_train=np.array([o["alpha_train"] for o in obs]))
    print(json.dumps({"fleos": os.path.dirname(fleos.__file__), "sweep_wall_s": wall,
                      "sweep_cpu_s": cpu, "map_evaluations": calls[0],
                      "one_evaluation_s": min(evals), "compile_s": compile_s,
                      "loadavg_start": load0, "loadavg_end": _loadavg(), "rows": rows}))


def compare(args: argparse.Namespace) -> None:
    """Interleaved before/after rounds of `sweep_only` in fresh processes."""
    import numpy as np

    here = os.path.dirname(os.path.abspath(__file__))
    srcs = {"before": os.path.abspath(args.compare_src),
            "after": os.path.join(os.path.dirname(here), "src")}
    base = [sys.executable, os.path.abspath(__file__), "--n", str(args.n), "--S", str(args.S),
            "--N", str(args.N), "--n-test", str(args.n_test), "--tol", str(args.tol),
            "--method", args.method, "--data-seed", str(args.data_seed),
            "--C", *[str(c) for c in args.C]]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for label in (("before", "after") if r % 2 == 0 else ("after", "before")):
                npz = os.path.join(tmp, f"{label}{r}.npz")
                env = dict(os.environ, PYTHONPATH=srcs[label])
                proc = subprocess.run([*base, "--sweep-only", npz], env=env,
                                      capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    sys.exit(f"bench_eos_cnn2: the {label} run failed:\n{proc.stderr[-2000:]}")
                run = json.loads(proc.stdout.strip().splitlines()[-1])
                run.update(label=label, round=r, npz=npz)
                print(f"round {r} {label}: sweep {run['sweep_wall_s']:.1f} s wall, "
                      f"{run['sweep_cpu_s']:.1f} s CPU, {run['map_evaluations']} evaluations "
                      f"of {run['one_evaluation_s']:.3f} s, load {run['loadavg_start']}",
                      file=sys.stderr, flush=True)
                runs.append(run)
        first = {lab: np.load(next(x["npz"] for x in runs if x["label"] == lab))
                 for lab in srcs}
        Sb, Sa = first["before"]["Sigma"], first["after"]["Sigma"]
        agreement = [{"C": C,
                      "max_abs_dSigma_over_max_abs_Sigma": float(
                          np.abs(Sa[k] - Sb[k]).max() / np.abs(Sb[k]).max()),
                      "alpha_test_rel": float(abs(first["after"]["alpha_test"][k]
                                                  - first["before"]["alpha_test"][k])
                                              / abs(first["before"]["alpha_test"][k]))}
                     for k, C in enumerate(args.C)]
    for run in runs:
        del run["npz"]
    summary = {lab: {"sweep_wall_s": [round(x["sweep_wall_s"], 1) for x in runs
                                      if x["label"] == lab],
                     "sweep_cpu_s": [round(x["sweep_cpu_s"], 1) for x in runs
                                     if x["label"] == lab],
                     "map_evaluations": [x["map_evaluations"] for x in runs
                                         if x["label"] == lab],
                     "one_evaluation_s": [round(x["one_evaluation_s"], 3) for x in runs
                                          if x["label"] == lab]}
               for lab in srcs}
    out = {"settings": {"n": args.n, "S": args.S, "N": args.N, "n_test": args.n_test,
                        "C": args.C, "tol": args.tol, "method": args.method,
                        "data_seed": args.data_seed, "rounds": args.rounds,
                        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                        "affinity": sorted(os.sched_getaffinity(0)),
                        "before_src": srcs["before"]},
           "machine": {"node": platform.node(), "cpus": os.cpu_count(),
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
           "summary": summary, "solution_agreement": agreement, "runs": runs}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    import fleos

    fleos.limit_blas_threads()  # as the CLI and the workflow (bench/RESULTS.md "BLAS threads")
    main()
