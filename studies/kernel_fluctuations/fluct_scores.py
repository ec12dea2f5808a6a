"""Score Eq. 8, Eq. 8 + the kernel-fluctuation correction and the moment-matched EoS (± the
correction) against the exact posterior of the finite 2-layer CNN at a tiny size.

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        .venv/bin/python studies/kernel_fluctuations/fluct_scores.py \
        [--C 8 16 32 64 128 256] [--steps 2000]
        [--referee-csv studies/referee/referee_scores.csv]

Problem: S = 2, N = 3, n = 40 (n_test = 200), erf, σ_w² = σ_a² = 2, σ² = 0.1, data from
`fleos.nets.data.make_dataset` (teacher_seed 0, data_seed 1). Referee:
`fleos.sampling.referee.cnn2_exact_posterior` (HMC on the input weights, readout integrated
out); with --referee-csv, the referee's α and SEs are read from the table that
studies/referee/referee_scores.py wrote for the same problem instead of sampled again. Each theory
column is "referee − theory in SE", the SE the referee's and the theory's Monte Carlo SE in
quadrature (Eq. 8 has none; the matched EoS's own Σ error is not propagated). The ε-resummed
column is a hypothesis (docs/derivations/cnn2.md, "Kernel fluctuations at O(1/C)").
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

import fleos  # noqa: F401 - float64
from fleos.nets.data import make_dataset
from fleos.sampling.referee import cnn2_exact_posterior
from fleos.theory.eos.cnn2 import CNN2Problem, cnn2_observables, sweep_cnn2
from fleos.theory.eos.cnn2_fluct import kernel_fluctuation_correction, matched_law_draws
from fleos.theory.eos.cnn2_matched import solve_cnn2_matched

MODEL = {"S": 2, "N": 3, "activation": "erf", "sigma_w2": 2.0, "sigma_a2": 2.0}
SIGMA2 = 0.1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--C", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--burn-in", type=int, default=500)
    ap.add_argument("--draws", type=int, default=8192)
    ap.add_argument("--no-matched", action="store_true")
    ap.add_argument("--referee-csv", type=Path, default=None)
    args = ap.parse_args()
    if any(c < 1 for c in args.C) or args.n < 2 or args.n_test < 1 or args.draws < 2:
        ap.error("--C must be >= 1, --n >= 2, --n-test >= 1, --draws >= 2")
    stored = {}
    if args.referee_csv is not None:
        if not args.referee_csv.is_file():
            ap.error(f"--referee-csv: {args.referee_csv} does not exist")
        with args.referee_csv.open() as fh:
            stored = {int(r["C"]): r for r in csv.DictReader(fh)}
        missing = sorted(set(args.C) - set(stored))
        if missing:
            ap.error(f"--referee-csv: no rows for C = {missing}")
    ds = make_dataset("cnn2", MODEL, n=args.n, n_test=args.n_test, teacher_seed=0, data_seed=1)
    pr = CNN2Problem.from_arrays(ds.X, ds.y, MODEL["N"], MODEL["S"], ds.X_test, ds.y_test,
                                 sigma2=SIGMA2, sigma_a2=2.0, sigma_w2=2.0)
    Cs = sorted(args.C, reverse=True)
    sols = sweep_cnn2(pr, [float(c) for c in Cs], tol=1e-10, max_iter=200)
    cols = ["Eq. 8", "Eq. 8 + fluct.", "Eq. 8 + ε-resummed (hyp.)"]
    if not args.no_matched:
        cols += ["matched", "matched + fluct."]
    print(f"| C | α | referee | {' | '.join(cols)} |")
    print("|---|---|---|" + "---|" * len(cols))
    for C, sol in zip(Cs, sols, strict=True):
        if C in stored:
            ref = {k: float(stored[C][f"{k}_ref"]) for k in ("alpha_train", "alpha_test", "top")}
            ref.update({f"{k}_se": float(stored[C][f"{k}_ref_se"])
                        for k in ("alpha_train", "alpha_test", "top")})
            note = f"referee from {args.referee_csv}"
        else:
            r = cnn2_exact_posterior(ds.X, ds.y, N=MODEL["N"], S=MODEL["S"], C=C,
                                     sigma2=SIGMA2, sigma_a2=2.0, sigma_w2=2.0,
                                     X_test=ds.X_test, y_test=ds.y_test, chains=args.chains,
                                     steps=args.steps, burn_in=args.burn_in, seed=0)
            ref = {"alpha_train": r.alpha_train, "alpha_train_se": r.alpha_train_se,
                   "alpha_test": r.alpha_test, "alpha_test_se": r.alpha_test_se,
                   "top": r.sigma_top, "top_se": r.sigma_top_se}
            note = f"referee R̂ max {r.max_rhat:.3f}, ESS min {r.min_ess:.0f}, {r.seconds:.0f} s"
        fl = kernel_fluctuation_correction(pr, C, sol.x, n_draws=args.draws, seed=1)
        rs = kernel_fluctuation_correction(pr, C, sol.x, n_draws=args.draws, seed=1, resum=True)
        th = {kind: [(fl[f"alpha_{kind}_eos"], 0.0),
                     (fl[f"alpha_{kind}"], fl[f"alpha_{kind}_se"]),
                     (rs[f"alpha_{kind}"], rs[f"alpha_{kind}_se"])] for kind in ("train", "test")}
        if not args.no_matched:
            m = solve_cnn2_matched(pr, C, sol.x, n_samples=args.draws, seed=2)
            obs = cnn2_observables(pr, m.x)
            w, om = matched_law_draws(pr, C, m.x, n_samples=args.draws, seed=3)
            mf = kernel_fluctuation_correction(pr, C, m.x, draws=w, weights=om)
            # the matched EoS's own Monte Carlo error (its Σ) is not propagated: SE = the
            # correction's only
            th["train"] += [(obs["alpha_train"], 0.0), (mf["alpha_train"], mf["alpha_train_se"])]
            th["test"] += [(obs["alpha_test"], 0.0), (mf["alpha_test"], mf["alpha_test_se"])]
        for kind in ("train", "test"):
            r, rse = ref[f"alpha_{kind}"], ref[f"alpha_{kind}_se"]
            cells = [f"{v:.4f} ({(r - v) / math.hypot(rse, s):+.1f})" if v == v else "—"
                     for v, s in th[kind]]
            print(f"| {C} | {kind} | {r:.4f} ± {rse:.4f} | {' | '.join(cells)} |")
        print(f"<!-- C = {C}: {note}; C·Δα_train i.i.d. {C * fl['dalpha_train']:.3f}, "
              f"resummed {C * rs['dalpha_train']:.3f}; σ_top referee "
              f"{ref['top']:.4f} ± {ref['top_se']:.4f}, Eq. 8 "
              f"{float(np.linalg.eigvalsh(np.asarray(sol.x))[-1]):.4f} -->", flush=True)


if __name__ == "__main__":
    main()
