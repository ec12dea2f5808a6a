"""Is Eq. 8's Σ miss the Gaussian ansatz for the channel law? (studies/matched_eos_check/
README.md; docs/derivations/cnn2.md §5). Run by hand:

    .venv/bin/python studies/matched_eos_check/matched_eos_check.py \
        --data results/paper_cpu/data/cnn2/n1600.npz --C 640 320 \
        [--fixed-samples 32768] [--samples 4096] [--seeds 0 1]

For each C: Eq. 8's Σ (annealed from the GP), then
  * at fixed A (Eq. 8's own): one evaluation of the importance-sampled covariance of the
    channel law, `matched_map`, with `--fixed-samples` normals, and its delta-method SE along
    Eq. 8's top eigenvector: how far the law's covariance is from Eq. 8's Σ;
  * self-consistent: `solve_cnn2_matched` (its default tolerance) for each of `--seeds`, with
    evaluations, seconds, top Σ eigenvalue ± the SE of `matched_diagnostics`, test and train α:
    the seed-to-seed spread is the Monte Carlo error of the fixed point.
The model settings are the paper's Fig. 3 (S = 64, σ² = 0.1, σ_a² = σ_w² = 2) unless given.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fleos  # noqa: F401 - float64
from fleos.theory.eos.cnn2 import CNN2Problem, cnn2_observables, sweep_cnn2
from fleos.theory.eos.cnn2_matched import matched_diagnostics, matched_map, solve_cnn2_matched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="npz with X, y, X_test, y_test")
    ap.add_argument("--C", type=float, nargs="+", required=True)
    ap.add_argument("--S", type=int, default=64)
    ap.add_argument("--sigma2", type=float, default=0.1)
    ap.add_argument("--fixed-samples", type=int, default=32768)
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    if any(not c > 0 for c in args.C):
        ap.error(f"--C: every channel count must be > 0, got {args.C}")
    try:
        pr = CNN2Problem.from_npz(args.data, S=args.S, sigma2=args.sigma2)
    except ValueError as err:
        ap.error(f"--data: {err}")
    Cs = sorted(set(args.C) | {5000.0}, reverse=True)
    for C, res in zip(Cs, sweep_cnn2(pr, Cs, tol=1e-8, max_iter=200), strict=True):
        if C not in args.C:
            continue
        eq8 = cnn2_observables(pr, res.x)
        top = eq8["sigma_eigs"][0]
        print(f"C = {C:g}: Eq. 8 top Σ {top:.5f}, test α {eq8['alpha_test']:.4f}, train α "
              f"{eq8['alpha_train']:.4f} (converged {res.converged})", flush=True)
        u = np.linalg.eigh(np.asarray(res.x))[1][:, -1]
        t0 = time.perf_counter()
        once = np.asarray(matched_map(pr, C, res.x, n_samples=args.fixed_samples))
        d = matched_diagnostics(pr, C, res.x, n_samples=args.fixed_samples)
        v = float(u @ once @ u)
        print(f"  fixed A, {args.fixed_samples} samples ({time.perf_counter() - t0:.0f} s): "
              f"u·Cov_p·u {v:.5f} ± {d['top_se']:.5f} = Eq. 8 {100 * (v / top - 1):+.2f} ± "
              f"{100 * d['top_se'] / top:.2f} %, Kish ESS {d['kish_ess']:.0f}", flush=True)
        for seed in args.seeds:
            m = solve_cnn2_matched(pr, C, res.x, n_samples=args.samples, seed=seed)
            o = cnn2_observables(pr, m.x)
            dm = matched_diagnostics(pr, C, m.x, n_samples=args.samples, seed=seed)
            print(f"  self-consistent, seed {seed}: {m.iterations} evaluations, {m.seconds:.0f} s, "
                  f"residual {m.residual:.1e} (converged {m.converged}); top Σ "
                  f"{o['sigma_eigs'][0]:.5f} ± {dm['top_se']:.5f}, test α {o['alpha_test']:.4f}, "
                  f"train α {o['alpha_train']:.4f}, Kish ESS {dm['kish_ess']:.0f}", flush=True)


if __name__ == "__main__":
    main()
