"""The field test: is the mean-field closure right and Eq. 8's field wrong, or the reverse?
(docs/derivations/cnn2.md, "The field test"). Run by hand from the repository root:

    .venv/bin/python studies/field_test/field_test.py --out studies/field_test/field_test.csv \
        [--C 8 16 32 64] [--chains 16] [--steps 1000] [--burn-in 400]

On the exact referee's size (S = 2, N = 3, n = 40, σ² = 0.1, σ_a² = σ_w² = 2, erf; the data of
studies/referee) and for every C:

* the referee (`cnn2_exact_posterior`) samples the exact posterior and measures Σ_ref =
  E[(1/C) Σ_c w_c w_cᵀ] and the field A_eff = E[εεᵀ − K⁻¹] at each draw's finite-C kernel;
* the closure at the measured field: Σ_field = Cov_p(w) of the one-channel law
  p(w) ∝ exp(−S|w|²/2σ_w² + (1/2C)⟨A_eff, q(w)⟩), by quadrature (`channel_covariance_on_grid`);
* the closure at Eq. 8's field: Σ_A(eq8) = Cov_p at A(Σ_eq8) (the moment-matched map at Eq. 8's
  solution), and Eq. 8's own Σ_eq8 (the Gaussian closure at its own field).

If Σ_field reproduces Σ_ref, the one-channel closure is right and what Eq. 8 gets wrong is the
field; if not, the closure (channels independent in a mean field) is wrong at that C. Errors: a
jackknife over the referee's chains (leave one chain out) of Σ_ref − Σ_field, which carries the
field's sampling error and its correlation with Σ_ref. Columns per C: top eigenvalues (along
the referee Σ's top eigenvector v: vᵀ X v), their differences, jackknife SEs and z-scores, the
relative size of A_eff − A(Σ_eq8), and the referee's R̂, ESS and seconds.
"""

from __future__ import annotations

import csv
import sys
import time

import numpy as np

import fleos  # noqa: F401  (float64)
from fleos.cli.args import Parser, out_file, positive_int
from fleos.nets.data import make_dataset
from fleos.sampling.referee import cnn2_exact_posterior
from fleos.theory.eos.cnn2 import CNN2Problem, sweep_cnn2
from fleos.theory.eos.cnn2_matched import channel_covariance_on_grid, field_of

MODEL = {"S": 2, "N": 3, "activation": "erf", "sigma_w2": 2.0, "sigma_a2": 2.0}
SIGMA2 = 0.1
#: grid nodes per axis of the quadrature: 401 and 801 give the same covariance to 8 digits here
GRID = 401


def jackknife_se(replicates: np.ndarray) -> float:
    """SE of a statistic from its k leave-one-out replicates."""
    k = len(replicates)
    return float(np.sqrt((k - 1) / k * np.sum((replicates - replicates.mean()) ** 2)))


def main(argv: list[str] | None = None) -> int:
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--C", type=positive_int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--chains", type=positive_int, default=16)
    ap.add_argument("--steps", type=positive_int, default=1000)
    ap.add_argument("--burn-in", type=positive_int, default=400)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=out_file, required=True)
    args = ap.parse_args(argv)
    ds = make_dataset("cnn2", MODEL, 40, 200, teacher_seed=0, data_seed=1)
    pr = CNN2Problem.from_arrays(ds.X, ds.y, 3, 2, sigma2=SIGMA2, sigma_a2=2.0, sigma_w2=2.0)
    Cs = sorted(args.C, reverse=True)
    ladder = sorted({*Cs, 4096, 1024}, reverse=True)
    eq8 = dict(zip(ladder, sweep_cnn2(pr, [float(c) for c in ladder], tol=1e-12, max_iter=300),
                   strict=True))
    rows = []
    for C in Cs:
        t0 = time.perf_counter()
        ref = cnn2_exact_posterior(ds.X, ds.y, N=3, S=2, C=C, sigma2=SIGMA2, sigma_a2=2.0,
                                   sigma_w2=2.0, chains=args.chains, steps=args.steps,
                                   burn_in=args.burn_in, seed=args.seed + C)
        v = np.linalg.eigh(ref.sigma)[1][:, -1]

        def top(M: np.ndarray, v: np.ndarray = v) -> float:
            return float(v @ np.asarray(M) @ v)

        A_chain, S_chain = ref.field_chain_means, ref.sigma_chain_means
        k = len(A_chain)
        sig_field = np.asarray(channel_covariance_on_grid(pr, C, A_chain.mean(0), points=GRID))
        # leave-one-chain-out replicates of (Σ_ref, Σ_field) → jackknife SE of each and of
        # their difference
        jk_ref, jk_field = [], []
        for i in range(k):
            keep = np.arange(k) != i
            jk_ref.append(top(S_chain[keep].mean(0)))
            jk_field.append(top(channel_covariance_on_grid(pr, C, A_chain[keep].mean(0),
                                                           points=GRID)))
        jk_ref, jk_field = np.array(jk_ref), np.array(jk_field)

        sig_eq8 = np.asarray(eq8[C].x)
        A_eq8 = np.asarray(field_of(pr, sig_eq8))
        sig_at_eq8_field = np.asarray(channel_covariance_on_grid(pr, C, A_eq8, points=GRID))
        A_eff = A_chain.mean(0)
        row = {
            "C": C, "top_ref": top(ref.sigma), "top_ref_se": ref.sigma_top_se,
            "top_ref_jk_se": jackknife_se(jk_ref),
            "top_field": top(sig_field), "top_field_jk_se": jackknife_se(jk_field),
            "diff_ref_field": top(ref.sigma) - top(sig_field),
            "diff_jk_se": jackknife_se(jk_ref - jk_field),
            "top_at_eq8_field": top(sig_at_eq8_field), "top_eq8": top(sig_eq8),
            "field_rel_diff": float(np.linalg.norm(A_eff - A_eq8) / np.linalg.norm(A_eq8)),
            "field_rel_se": jackknife_se(np.array(
                [np.linalg.norm(A_chain[np.arange(k) != i].mean(0) - A_eq8)
                 for i in range(k)])) / float(np.linalg.norm(A_eq8)),
            "ref_rhat_max": ref.max_rhat, "ref_ess_min": ref.min_ess,
            "ref_seconds": ref.seconds,
        }
        row["z_ref_field"] = row["diff_ref_field"] / row["diff_jk_se"]
        se_ref = row["top_ref_se"]
        row["z_ref_eq8"] = (row["top_ref"] - row["top_eq8"]) / se_ref
        row["z_ref_at_eq8_field"] = (row["top_ref"] - row["top_at_eq8_field"]) / se_ref
        rows.append(row)
        print(f"C={C:4d} ref {row['top_ref']:.6f} ± {se_ref:.1e} (jk {row['top_ref_jk_se']:.1e})"
              f" | closure@A_eff {row['top_field']:.6f} z {row['z_ref_field']:+.1f}"
              f" | closure@A(eq8) {row['top_at_eq8_field']:.6f} z {row['z_ref_at_eq8_field']:+.1f}"
              f" | eq8 {row['top_eq8']:.6f} z {row['z_ref_eq8']:+.1f}"
              f" | |A_eff−A8|/|A8| {row['field_rel_diff']:.3f} ± {row['field_rel_se']:.3f}"
              f" | R̂ {ref.max_rhat:.3f} ESS {ref.min_ess:.0f} {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
    with open(args.out, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
