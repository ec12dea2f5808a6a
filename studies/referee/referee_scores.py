"""Score the 2-layer CNN theories against the exact referee (docs/derivations/cnn2.md, "The
sign of the field"). Run by hand:

    .venv/bin/python studies/referee/referee_scores.py --out studies/referee/referee_scores.csv \
        [--C 1 8 16 32 64 128 256] [--steps 2000] [--burn-in 500] [--chains 8]

Reference size: S = 2, N = 3, n = 40 Gaussian inputs with the cnn2 linear teacher of
`fleos.nets.data.make_dataset` (teacher seed 0, data seed 1), σ² = 0.1, σ_a² = σ_w² = 2,
erf. For every C: the referee (`fleos.sampling.referee.cnn2_exact_posterior`, exact HMC with
the readout integrated out), and, scored against it on top Σ eigenvalue, train α and test α:

* eq8: Eq. 8 (`sweep_cnn2`, field A = εεᵀ − K_f⁻¹);
* eq8_plus: the same equation with A = εεᵀ + K_f⁻¹ (`field_sign=+1`, the sign of the authors'
  FCN notebook);
* matched: the moment-matched EoS (`solve_cnn2_matched`); its top-Σ z combines the referee's SE
  with the delta-method Monte Carlo SE of `matched_diagnostics`;
* gp: the C → ∞ limit.

Columns per theory T and observable o: o_T, z_o_T = (referee − T)/SE (referee's SE, combined
with T's Monte Carlo SE where T has one) and pct_o_T = 100 (referee/T − 1). The referee's
columns: o_ref, o_ref_se, its worst R̂ and least bulk ESS over the tracked scalars, acceptance,
step size, leapfrog count and seconds. After the table: (referee − Eq. 8)·C per observable and
the slope of log |referee − Eq. 8| against log C over C ≥ --fit-from.
"""

from __future__ import annotations

import csv
import math
import sys
import time

import numpy as np

import fleos
from fleos.cli.args import Parser, out_file, positive_float, positive_int
from fleos.nets.data import make_dataset
from fleos.sampling.referee import cnn2_exact_posterior
from fleos.theory.eos.cnn2 import CNN2Problem, cnn2_observables, gp_sigma, sweep_cnn2
from fleos.theory.eos.cnn2_matched import matched_diagnostics, solve_cnn2_matched

OBS = ("top", "alpha_train", "alpha_test")
THEORIES = ("eq8", "eq8_plus", "matched", "gp")


def _theory_obs(pr: CNN2Problem, Sigma) -> dict[str, float]:
    o = cnn2_observables(pr, Sigma)
    return {"top": float(o["sigma_eigs"][0]), "alpha_train": o["alpha_train"],
            "alpha_test": o["alpha_test"]}


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="referee_scores.py", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=out_file, required=True, help="CSV file to write")
    ap.add_argument("--C", type=positive_int, nargs="+", default=[1, 8, 16, 32, 64, 128, 256])
    ap.add_argument("--n", type=positive_int, default=40)
    ap.add_argument("--n-test", type=positive_int, default=200)
    ap.add_argument("--sigma2", type=positive_float, default=0.1)
    ap.add_argument("--chains", type=positive_int, default=8)
    ap.add_argument("--steps", type=positive_int, default=2000)
    ap.add_argument("--burn-in", type=positive_int, default=500)
    ap.add_argument("--seed", type=positive_int, default=1)
    ap.add_argument("--matched-samples", type=positive_int, default=4096)
    ap.add_argument("--fit-from", type=positive_int, default=16)
    args = ap.parse_args(argv)
    if args.chains < 2:
        ap.error(f"--chains: at least 2 chains are needed for R̂, got {args.chains}")
    if args.steps < 8 or args.burn_in < 2:
        ap.error("--steps must be >= 8 and --burn-in >= 2")
    if args.matched_samples % 128:
        ap.error(f"--matched-samples: must be a multiple of 128, got {args.matched_samples}")
    fleos.limit_blas_threads()
    t_all = time.perf_counter()
    model = {"S": 2, "N": 3, "activation": "erf", "sigma_w2": 2.0, "sigma_a2": 2.0}
    ds = make_dataset("cnn2", model, args.n, args.n_test, teacher_seed=0, data_seed=1)
    pr = CNN2Problem.from_arrays(ds.X, ds.y, 3, 2, ds.X_test, ds.y_test, sigma2=args.sigma2,
                                 sigma_a2=2.0, sigma_w2=2.0)
    Cs = sorted(set(args.C), reverse=True)
    # Eq. 8 with either sign, annealed from the GP downward through every C
    eos = {sign: dict(zip(Cs, sweep_cnn2(pr, [float(c) for c in Cs], tol=1e-12, max_iter=400,
                                          field_sign=sign), strict=True))
           for sign in (-1.0, 1.0)}
    gp = _theory_obs(pr, gp_sigma(pr))
    rows = []
    for C in sorted(Cs):
        t0 = time.perf_counter()
        r = cnn2_exact_posterior(ds.X, ds.y, N=3, S=2, C=C, sigma2=args.sigma2, sigma_a2=2.0,
                                 sigma_w2=2.0, X_test=ds.X_test, y_test=ds.y_test,
                                 chains=args.chains, steps=args.steps, burn_in=args.burn_in,
                                 seed=args.seed)
        ref = {"top": r.sigma_top, "alpha_train": r.alpha_train, "alpha_test": r.alpha_test}
        ref_se = {"top": r.sigma_top_se, "alpha_train": r.alpha_train_se,
                  "alpha_test": r.alpha_test_se}
        row: dict[str, object] = {"C": C}
        for o in OBS:
            row[f"{o}_ref"], row[f"{o}_ref_se"] = ref[o], ref_se[o]
        row.update(ref_rhat_max=r.max_rhat, ref_ess_min=r.min_ess, ref_acceptance=r.acceptance,
                   ref_step_size=r.step_size, ref_leapfrog=r.n_leapfrog,
                   ref_seconds=round(r.seconds, 1))
        theory: dict[str, dict[str, float]] = {"gp": gp}
        theory_se: dict[str, dict[str, float]] = {}
        for name, sign in (("eq8", -1.0), ("eq8_plus", 1.0)):
            row[f"{name}_converged"] = bool(eos[sign][C].converged)
            theory[name] = _theory_obs(pr, eos[sign][C].x)
        m = solve_cnn2_matched(pr, float(C), eos[-1.0][C].x, n_samples=args.matched_samples)
        d = matched_diagnostics(pr, float(C), m.x, n_samples=args.matched_samples)
        row["matched_converged"] = bool(m.converged)
        row["matched_kish_ess"] = round(d["kish_ess"], 1)
        theory["matched"] = _theory_obs(pr, m.x)
        theory_se["matched"] = {"top": d["top_se"]}
        for name in THEORIES:
            for o in OBS:
                val = theory[name][o]
                se = math.hypot(ref_se[o], theory_se.get(name, {}).get(o, 0.0))
                row[f"{o}_{name}"] = val
                row[f"z_{o}_{name}"] = (ref[o] - val) / se
                row[f"pct_{o}_{name}"] = 100.0 * (ref[o] / val - 1.0)
        rows.append(row)
        print(f"C = {C}: referee {time.perf_counter() - t0:.0f} s, R̂ ≤ {r.max_rhat:.3f}, "
              f"ESS ≥ {r.min_ess:.0f}, acceptance {r.acceptance:.2f}", file=sys.stderr,
              flush=True)

    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    head = f"{'C':>4} {'obs':>11} {'referee':>16} " + " ".join(
        f"{t:>21}" for t in THEORIES)
    print(head)
    print(" " * 33 + " ".join(f"{'value  z  %':>21}" for _ in THEORIES))
    for row in rows:
        for o in OBS:
            cells = " ".join(f"{row[f'{o}_{t}']:8.4f} {row[f'z_{o}_{t}']:6.1f} "
                             f"{row[f'pct_{o}_{t}']:+5.1f}" for t in THEORIES)
            print(f"{row['C']:>4} {o:>11} {row[f'{o}_ref']:8.4f}±{row[f'{o}_ref_se']:.4f} {cells}")
    print("\n(referee − Eq. 8)·C ± SE·C")
    for row in rows:
        C = int(row["C"])  # type: ignore[call-overload]
        print(f"{C:>4} " + "  ".join(
            f"{o} {(row[f'{o}_ref'] - row[f'{o}_eq8']) * C:+.4f} ± {row[f'{o}_ref_se'] * C:.4f}"
            for o in OBS))
    fit = [row for row in rows if int(row["C"]) >= args.fit_from]  # type: ignore[call-overload]
    if len(fit) >= 2:
        lc = np.log([float(row["C"]) for row in fit])  # type: ignore[arg-type]
        for o in OBS:
            g = np.abs([row[f"{o}_ref"] - row[f"{o}_eq8"] for row in fit])  # type: ignore[operator]
            slope = np.polyfit(lc, np.log(g), 1)[0]
            print(f"log|referee − Eq. 8| vs log C, C ≥ {args.fit_from}: {o} slope {slope:+.2f}")
    print(f"wall time {time.perf_counter() - t_all:.0f} s; table written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
