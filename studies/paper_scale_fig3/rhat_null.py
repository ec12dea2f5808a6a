"""How often do STATIONARY chains of the Fig. 3 gates run fail the R̂ gate by chance?

The gates run keeps 104 snapshots per chain in its sampling window, 8 chains per point: the
length of its snapshot series (w_teacher_sq, w_random_sq; the loss series is longer, ≈ 516
records per chain). Its points' worst series have bulk ESS 764–907
(docs/results/paper_cpu_gates/fig3.csv). This draws 8 chains of an AR(1) process (lag-one
correlation ρ, stationary from the first draw) of that length, ρ chosen to bracket that ESS
(ρ = 0.025 gives ≈ the failing point's 819), and reports the distribution of the
rank-normalised split R̂ (`fleos.core.diagnostics.rhat_rank`, the gates' own) over
replicates: its mean, its SD, the chance of R̂ > 1.01 (the gate), and of R̂ at least a given
observed value. Then the same for
chains twice as long, the rerun that decides a failed point.

    .venv/bin/python studies/paper_scale_fig3/rhat_null.py --observed 1.0136 \\
        > studies/paper_scale_fig3/rhat_null.md
"""

from __future__ import annotations

import argparse

import numpy as np

from fleos.core.diagnostics import ar1_chains, ess_bulk, rhat_rank


def _fraction(hits: np.ndarray) -> str:
    """k/m with the fraction ± its binomial SE, or, with no hit, the 95 % upper bound 3/m."""
    k, m = int(hits.sum()), hits.size
    if k == 0:
        return f"0/{m} (≤ {300 / m:.2g} %, 95 %)"
    p = k / m
    return f"{k}/{m} = {100 * p:.2f} ± {100 * np.sqrt(p * (1 - p) / m):.2f} %"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--observed", type=float, required=True, help="the R̂ to compare with")
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--draws", type=int, default=104)
    ap.add_argument("--replicates", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (args.chains >= 2 and args.draws >= 8 and args.replicates >= 100):
        raise SystemExit("rhat_null.py: need --chains >= 2, --draws >= 8, --replicates >= 100")
    rng = np.random.default_rng(args.seed)
    print(f"Stationary AR(1) chains, {args.replicates} replicates per row, seed {args.seed}; "
          f"observed R̂ {args.observed}.\n")
    print("| chains × draws | ρ | bulk ESS (mean) | R̂ mean | R̂ SD | P(R̂ > 1.01) "
          f"| P(R̂ ≥ {args.observed}) |")
    print("|---|---|---|---|---|---|---|")
    for draws in (args.draws, 2 * args.draws):
        for rho in (0.0, 0.025, 0.1):
            rhats, e = [], []
            for i in range(args.replicates):
                x = ar1_chains(rng, args.chains, draws, rho)
                rhats.append(rhat_rank(x))
                if i < 200:  # ESS is only reported, 200 replicates fix it to ±1 %
                    e.append(ess_bulk(x))
            r = np.asarray(rhats)
            print(f"| {args.chains} × {draws} | {rho} | {np.mean(e):.0f} | {r.mean():.4f} | "
                  f"{r.std(ddof=1):.4f} | {_fraction(r > 1.01)} | "
                  f"{_fraction(r >= args.observed)} |")


if __name__ == "__main__":
    main()
