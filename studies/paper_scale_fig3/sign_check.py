"""The sign of K_f⁻¹ in Eq. 8's field at the paper's scale: Eq. 8 solved with the minus sign
(fleos, the paper's print, the sampled action's derivation) and with the plus sign (the
authors' FCN notebook), against a sampled Fig. 3 table (docs/derivations/cnn2.md, "The sign of
the field"). Run by hand from the repository root (≈ 1 min per point):

    .venv/bin/python studies/paper_scale_fig3/sign_check.py \
        --table studies/paper_scale_fig3/paper_scale_fig3_gates.csv \
        > studies/paper_scale_fig3/sign_check.md

Data as in config/paper_cpu_gates.yaml (S = 64, N = 20, erf, σ_w² = σ_a² = 2, σ² = 0.1,
n_test = 1000, teacher_seed 0, data_seed 1). Prints, per sampled (n, C), experiment − theory in
the experiment's SE for top Σ, train α and test α under either sign, and (top Σ − GP)·C, whose
C → ∞ limit is the leading 1/C coefficient that the two signs predict differently.

Then the test that separates them: the derivation puts the exact posterior's O(1/C) term in
Eq. 8 with the minus sign (first order in the channel tilt), so the experiment should be that
sign's Eq. 8 plus O(1/C²). Per n, over the rows with C ≥ `--fit-min-C`, each sign's residual
experiment − Eq. 8 in top Σ is fitted by b/C² (weighted by the experiment's SE) and the χ² of
the fit printed: a sign whose residual is not of that form fails it.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

import fleos  # noqa: F401 - float64
from fleos.nets.data import make_dataset
from fleos.theory.eos.cnn2 import CNN2Problem, cnn2_observables, solve_cnn2

MODEL = {"S": 64, "N": 20, "activation": "erf", "sigma_w2": 2.0, "sigma_a2": 2.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, required=True, help="a fig3 table (CSV)")
    ap.add_argument("--fit-min-C", type=int, default=320,
                    help="smallest C in the b/C² fit of the residuals")
    args = ap.parse_args()
    if not args.table.is_file():
        raise SystemExit(f"--table: {args.table} does not exist")
    with args.table.open() as f:
        rows = list(csv.DictReader(f))
    gp = MODEL["sigma_w2"] / MODEL["S"]
    print("| n | C | gates | (top Σ − GP)·C: experiment | Eq. 8 (−) | Eq. 8 (+) | "
          "top Σ: exp − (−), exp − (+) in SE | train α | test α |")
    print("|---|---|---|---|---|---|---|---|---|")
    problems: dict[int, CNN2Problem] = {}
    residuals: dict[tuple[int, float], list[tuple[int, float, float]]] = {}
    for r in rows:
        n, C = int(r["n"]), int(r["C"])
        if n not in problems:
            ds = make_dataset("cnn2", MODEL, n=n, n_test=1000, teacher_seed=0, data_seed=1)
            problems[n] = CNN2Problem.from_arrays(ds.X, ds.y, MODEL["N"], MODEL["S"],
                                                  ds.X_test, ds.y_test, sigma2=0.1,
                                                  sigma_a2=2.0, sigma_w2=2.0)
        pr = problems[n]
        theory = {}
        for sign in (-1.0, 1.0):
            res = solve_cnn2(pr, float(C), field_sign=sign, max_iter=300)
            if not res.converged:
                raise SystemExit(f"n = {n}, C = {C}, sign {sign:+}: {res.message}")
            obs = cnn2_observables(pr, res.x)
            theory[sign] = {"sigma_top": float(np.linalg.eigvalsh(np.asarray(res.x))[-1]),
                            "alpha_train": obs["alpha_train"], "alpha_test": obs["alpha_test"]}
        cells = []
        for q in ("sigma_top", "alpha_train", "alpha_test"):
            e, se = float(r[f"{q}_exp"]), float(r[f"{q}_exp_se"])
            cells.append(", ".join(f"{(e - theory[s][q]) / se:+.1f}".replace("-", "−")
                                   for s in (-1.0, 1.0)))
        e, se = float(r["sigma_top_exp"]), float(r["sigma_top_exp_se"])
        for sign in (-1.0, 1.0):
            residuals.setdefault((n, sign), []).append((C, e - theory[sign]["sigma_top"], se))
        gates = r.get("failed_gates") or "pass"
        print(f"| {n} | {C} | {gates} | {(e - gp) * C:.3f} ± {se * C:.3f} | "
              f"{(theory[-1.0]['sigma_top'] - gp) * C:.3f} | "
              f"{(theory[1.0]['sigma_top'] - gp) * C:.3f} | {' | '.join(cells)} |", flush=True)
    print(f"\nTop Σ residual (experiment − Eq. 8) fitted by b/C² over C ≥ {args.fit_min_C}:\n")
    print("| n | sign | b ± SE | χ² | dof | residual·C² per C |")
    print("|---|---|---|---|---|---|")
    for (n, sign), pts in sorted(residuals.items()):
        pts = [p for p in pts if p[0] >= args.fit_min_C]
        if len(pts) < 2:
            continue
        C, res, se = (np.array(v, np.float64) for v in zip(*pts, strict=True))
        x, w = C**-2.0, se**-2.0
        b = float(np.sum(w * x * res) / np.sum(w * x * x))
        chi2 = float(np.sum(w * (res - b * x) ** 2))
        per_C = ", ".join(f"{c:.0f}: {v:.0f}".replace("-", "−")
                          for c, v in zip(C, res * C**2, strict=True))
        print(f"| {n} | {'−' if sign < 0 else '+'} | {b:.1f} ± {np.sum(w * x * x) ** -0.5:.1f} | "
              f"{chi2:.1f} | {len(C) - 1} | {per_C} |")


if __name__ == "__main__":
    main()
