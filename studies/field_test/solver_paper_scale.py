"""The product solver of the fluctuating-field closure (`solve_cnn2_fluctfield`, with its
averaging fallback and damping rule) at paper-scale Fig. 3 points, beside this folder's study
of the same points (fluctfield_paper_scale.csv: the map iterated by hand, β = 1/4). Run by
hand from the repository root:

    .venv/bin/python studies/field_test/solver_paper_scale.py [--points 800:640] \
        [--draws 32] [--max-iter 16] [--window 8] [--seed 0]

Per point: Eq. 8 at that C, then `solve_cnn2_fluctfield` from it (coarse stage of draws/8
sets, then `--draws` sets; at most `--max-iter` evaluations per stage; candidates start at 16
per channel, as in the study). Prints the solver's message and one row per observable: the
solver's value ± SE, the study's value ± SE (its Monte Carlo SE and iterate SD in quadrature),
their difference in combined SE, and the experiment of
studies/paper_scale_fig3/paper_scale_fig3.csv. Last, the closure's field along the targets,
yᵀAy/yᵀy of the solution's A, beside Eq. 8's (the field test at the paper's scale measured
the sampled network's: studies/field_test/field_test_paper_scale.csv, `field_y_eff`).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from fluctfield_paper_scale import EXPERIMENT, point, problem, read_rows

import fleos  # noqa: F401 - float64
from fleos.theory.eos.cnn2 import solve_cnn2
from fleos.theory.eos.cnn2_fluctfield import DRAW_BATCH, solve_cnn2_fluctfield
from fleos.theory.eos.cnn2_matched import field_of

STUDY = EXPERIMENT.parents[2] / "studies" / "field_test" / "fluctfield_paper_scale.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=point, nargs="+", default=[(800, 640)])
    ap.add_argument("--draws", type=int, default=32)
    ap.add_argument("--max-iter", type=int, default=16)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.draws < DRAW_BATCH or args.draws % DRAW_BATCH:
        ap.error(f"--draws must be a positive multiple of {DRAW_BATCH}, got {args.draws}")
    if not 2 <= args.window <= args.max_iter:
        ap.error(f"--window must be in [2, --max-iter], got {args.window}")
    if args.seed < 0:
        ap.error(f"--seed must be >= 0, got {args.seed}")
    study = {(int(r["n"]), int(r["C"])): r for r in read_rows(STUDY)}
    measured = {(int(r["n"]), int(float(r["C"]))): r for r in read_rows(EXPERIMENT)}
    for n, C in args.points:
        pr = problem(n)
        eq8 = solve_cnn2(pr, float(C), tol=1e-8, max_iter=200)
        if not eq8.converged:
            raise SystemExit(f"Eq. 8 did not converge at n = {n}, C = {C}: {eq8.message}")
        t0 = time.perf_counter()
        sol = solve_cnn2_fluctfield(pr, C, eq8.x, n_draws=args.draws, oversample=16,
                                    seed=args.seed * 1_000_003 + C, max_iter=args.max_iter,
                                    window=args.window)
        print(f"n = {n}, C = {C}: {sol.message}; {time.perf_counter() - t0:.0f} s")
        print("| quantity | solver ± SE | study ± SE | solver − study (SE) | experiment ± SE |")
        print("|---|---|---|---|---|")
        for q in ("sigma_top", "alpha_train", "alpha_test"):
            val, se = getattr(sol, q), getattr(sol, f"{q}_se")
            st = study.get((n, C))
            if st is None:
                st_s, diff = "—", "—"
            else:
                s_val = float(st[q])
                s_se = math.hypot(float(st[f"{q}_se"]), float(st[f"{q}_iterate_sd"]))
                st_s = f"{s_val:.5g} ± {s_se:.2g}"
                diff = f"{(val - s_val) / math.hypot(se, s_se):+.1f}"
            ex = measured.get((n, C))
            ex_s = (f"{float(ex[f'{q}_exp']):.5g} ± {float(ex[f'{q}_exp_se']):.2g}"
                    if ex is not None else "—")
            print(f"| {q} | {val:.5g} ± {se:.2g} | {st_s} | {diff} | {ex_s} |")
        print(f"(averaged: {sol.averaged} evaluations; converged: {sol.converged}; "
              f"finite: {bool(np.isfinite(sol.sigma_top))})", flush=True)
        y = np.asarray(pr.y)
        along_y = {name: float(y @ np.asarray(A) @ y / (y @ y))
                   for name, A in (("closure", sol.A), ("Eq. 8", field_of(pr, eq8.x)))}
        print(f"field along y, yᵀAy/yᵀy: closure {along_y['closure']:.1f}, "
              f"Eq. 8 {along_y['Eq. 8']:.1f}", flush=True)


if __name__ == "__main__":
    main()
