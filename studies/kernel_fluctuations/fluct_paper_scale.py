"""Cost and size of the kernel-fluctuation correction (fleos.theory.eos.cnn2_fluct) at Fig. 3's
paper scale, against the measured points of studies/paper_scale_fig3/paper_scale_fig3.csv.

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        .venv/bin/python studies/kernel_fluctuations/fluct_paper_scale.py \
        [--n 1600] [--C 320] [--draws 2048]

Data as in config/paper_cpu.yaml (S = 64, N = 20, erf, σ_w² = σ_a² = 2, σ² = 0.1, n_test = 1000,
teacher_seed 0, data_seed 1). Per n: Eq. 8 solved over the requested C by `sweep_cnn2`
(timed), then the correction at each C from Eq. 8's Σ (timed), printed beside the experiment:
"exp − theory in SE" with the SE the experiment's and the theory's Monte Carlo SE in quadrature.
Rows add C·Δα (the Jensen coefficient), and, as a hypothesis only, the ε-resummed correction
(`resum=True`, docs/derivations/cnn2.md, "Kernel fluctuations at O(1/C)") with its jackknife
SE; train rows add ½ Σ λ, the mean second-order data action that i.i.d. channels ignore
(`jensen_spectrum`).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import fleos  # noqa: F401 - float64
from fleos.nets.data import make_dataset
from fleos.theory.eos.cnn2 import CNN2Problem, sweep_cnn2
from fleos.theory.eos.cnn2_fluct import jensen_spectrum, kernel_fluctuation_correction

MODEL = {"S": 64, "N": 20, "activation": "erf", "sigma_w2": 2.0, "sigma_a2": 2.0}
TABLE = (Path(__file__).resolve().parents[2] / "studies" / "paper_scale_fig3"
         / "paper_scale_fig3.csv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1600])
    ap.add_argument("--C", type=float, nargs="+", default=[320.0])
    ap.add_argument("--draws", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if any(c <= 0 for c in args.C) or any(n <= 0 for n in args.n) or args.draws < 2:
        ap.error("--n and --C must be positive and --draws at least 2")
    measured = {}
    if TABLE.is_file():
        with TABLE.open() as fh:
            measured = {(int(r["n"]), float(r["C"])): r for r in csv.DictReader(fh)}
    print("| n | C | α | experiment | Eq. 8 | (exp − Eq. 8)/SE | Eq. 8 + fluct. (MC SE) "
          "| (exp − corr.)/SE | corr. s | C·Δα | ½Σλ | Eq. 8 + ε-resummed (SE) "
          "| (exp − resummed)/SE |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.n:
        ds = make_dataset("cnn2", MODEL, n=n, n_test=1000, teacher_seed=0, data_seed=1)
        pr = CNN2Problem.from_arrays(ds.X, ds.y, MODEL["N"], MODEL["S"], ds.X_test, ds.y_test,
                                     sigma2=0.1, sigma_a2=2.0, sigma_w2=2.0)
        Cs = sorted(args.C, reverse=True)
        t0 = time.perf_counter()
        sols = sweep_cnn2(pr, Cs, tol=1e-8, max_iter=200)
        print(f"<!-- n = {n}: Eq. 8 sweep over C = {Cs}: {time.perf_counter() - t0:.1f} s -->")
        for C, sol in zip(Cs, sols, strict=True):
            fl = kernel_fluctuation_correction(pr, C, sol.x, n_draws=args.draws, seed=args.seed)
            lam = jensen_spectrum(pr, C, sol.x, n_draws=args.draws, seed=args.seed)
            rs = kernel_fluctuation_correction(pr, C, sol.x, n_draws=args.draws,
                                               seed=args.seed, resum=True)
            row = measured.get((n, C))
            for kind in ("train", "test"):
                eos, corr = fl[f"alpha_{kind}_eos"], fl[f"alpha_{kind}"]
                mc = fl[f"alpha_{kind}_se"]
                if row is not None:
                    ex, se = float(row[f"alpha_{kind}_exp"]), float(row[f"alpha_{kind}_exp_se"])
                    exp_s = f"{ex:.4f} ± {se:.4f}"
                    d0 = f"{(ex - eos) / se:+.1f}"
                    d1 = f"{(ex - corr) / math.hypot(se, mc):+.1f}"
                    r_v, r_se = rs[f"alpha_{kind}"], rs[f"alpha_{kind}_se"]
                    d2 = f"{(ex - r_v) / math.hypot(se, r_se):+.1f}"
                else:
                    exp_s = d0 = d1 = d2 = "—"
                act = f"{0.5 * lam.sum():.2f}" if kind == "train" else "—"
                extra = (f"{C * fl[f'dalpha_{kind}']:.2f} | {act} | {rs[f'alpha_{kind}']:.4f} "
                         f"({rs[f'alpha_{kind}_se']:.4f}) | {d2}")
                print(f"| {n} | {C:g} | {kind} | {exp_s} | {eos:.4f} | {d0} | {corr:.4f} "
                      f"({mc:.4f}) | {d1} | {fl['seconds']:.1f} | {extra} |")


if __name__ == "__main__":
    main()
