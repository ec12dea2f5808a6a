"""A gated series that fails R̂: do its chains sit at different levels, or is the window short?

R̂ compares the spread of the chains' means with what each chain's own fluctuations allow.
With few chains and a few hundred effective draws, an R̂ just above 1.01 can come from either
(a) a slow mode: each chain sits at its own level for longer than the window, so the chain
means differ by more than their own standard errors; or (b) chance: the chain means differ
as much as their own errors allow, and a longer window shrinks R̂ − 1 and raises the ESS.

For each named snapshot series in the sampling window, this prints each chain's mean, its
standard error from the chain's own integrated autocorrelation time (Sokal's window,
`fleos.core.diagnostics.integrated_autocorr_time`), τ_int in steps, and the χ² of the chain
means about their weighted mean with its p-value: a small p says (a), a p of order 0.1 or
above is what (b) gives. The χ² table's p is too small for chains this short (the own-τ SEs
come out low), so the p that is read is calibrated: the share of null replicas (AR(1) chains
of the same lengths and τ_int, no offsets) whose χ² reaches the observed one. The same
replicas say how often chance alone gives an R̂ as high as the observed, and replicas
`--factor` times as long how often a rerun with windows that much longer would pass all
three gates if the series has no slow mode, at the measured τ_int and at 1.5 times it (τ
read off a short window is noisy and comes out low on average). AR(1) is a model of the
autocorrelation (one exponential, matched to τ_int), not the measured one. Also R̂
(rank-normalised) and bulk ESS as the gates compute them.

    .venv/bin/python studies/chain_offsets/chain_offsets.py \\
        --results results/paper_cpu_fcn_n2000 --experiment fcn3 \\
        --series w_random_msq w_teacher_msq > studies/chain_offsets/fcn_n2000.md

(a bad argument exits before anything is printed, so the redirect never keeps half a table)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from fleos.analysis.aggregate import equilibration_record, load_chunks
from fleos.core.diagnostics import (
    EquilibriumGates,
    ar1_chains,
    ess_bulk,
    integrated_autocorr_time,
    rhat_rank,
)


def chain_offsets(x: np.ndarray, step: float) -> dict:
    """x: (chains, T) one series in the window, snapshots `step` steps apart. Returns the chain
    means, their standard errors from each chain's own τ_int, τ_int in steps, and the χ²
    (chains − 1 degrees of freedom) of the means about their inverse-variance weighted mean."""
    T = x.shape[1]
    tau = np.array([integrated_autocorr_time(row) for row in x])
    means = x.mean(axis=1)
    se = x.std(axis=1, ddof=1) * np.sqrt(tau / T)
    w = 1.0 / se**2
    chi2 = float((w * (means - (w * means).sum() / w.sum()) ** 2).sum())
    dof = len(means) - 1
    return {"means": means, "se": se, "tau_steps": tau * step, "chi2": chi2, "dof": dof,
            "p": float(stats.chi2.sf(chi2, dof))}


def _ar1_null(tau: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """One null data set: per chain a stationary unit-variance AR(1) series of `length`
    (`ar1_chains`) whose integrated autocorrelation time is that chain's τ (in snapshots)."""
    return ar1_chains(rng, len(tau), length, (tau - 1) / (tau + 1))


def _passes(y: np.ndarray, gates: EquilibriumGates) -> bool:
    """Whether a (chains, T) series passes every gate, computed as the aggregate does."""
    rhat, ess, _, drift_se = equilibration_record(y)
    return not gates.failed(rhat, ess, drift_se)


def null_calibration(x: np.ndarray, chi2: float, rhat: float, factor: int = 2,
                     tau_scales: tuple[float, ...] = (1.0, 1.5), replicas: int = 1000,
                     seed: int = 0) -> dict[str, Any]:
    """Against `replicas` null data sets (`_ar1_null` at x's own per-chain τ_int) as long as
    x: the share whose χ² of chain offsets reaches `chi2` (the calibrated p) and whose R̂
    reaches `rhat`. Against null sets `factor` times as long, at τ_int × each of `tau_scales`
    (τ read off a short window is noisy and biased low): the share that passes every gate
    (R̂, bulk ESS, drift: `EquilibriumGates` defaults), which is what a rerun with windows
    `factor` times as long would do if the series has no slow mode."""
    rng = np.random.default_rng(seed)
    gates = EquilibriumGates()
    tau = np.array([integrated_autocorr_time(row) for row in x])
    hits_chi2 = hits_rhat = 0
    passes = dict.fromkeys(tau_scales, 0)
    for _ in range(replicas):
        y = _ar1_null(tau, x.shape[1], rng)
        hits_chi2 += chain_offsets(y, 1.0)["chi2"] >= chi2
        hits_rhat += rhat_rank(y) >= rhat
        for k in tau_scales:
            passes[k] += _passes(_ar1_null(k * tau, factor * x.shape[1], rng), gates)
    return {"p_chi2": hits_chi2 / replicas, "p_rhat": hits_rhat / replicas,
            "pass_longer": {k: v / replicas for k, v in passes.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", required=True, type=Path, help="the run's results folder")
    p.add_argument("--experiment", required=True)
    p.add_argument("--series", nargs="+", required=True,
                   help="snapshot series names, e.g. w_random_msq (the gated `*_sq` series)")
    p.add_argument("--factor", type=int, default=2,
                   help="window length of the predicted rerun, in windows of this run")
    args = p.parse_args()
    if args.factor < 1:
        sys.exit(f"chain_offsets.py: --factor {args.factor}: must be a positive integer")
    files = sorted((args.results / "samples" / args.experiment).glob("n*/w*/chunk*.h5"))
    if not files:
        sys.exit(f"chain_offsets.py: --results {args.results}: no sample files under "
                 f"samples/{args.experiment}")
    if len({f.parent for f in files}) > 1:
        sys.exit(f"chain_offsets.py: --results {args.results}: sample files of more than one "
                 f"(n, width) under samples/{args.experiment}; this study reads one")
    s = load_chunks(files)
    mask = np.asarray(s["snapshots/sampling"], bool)
    if not (mask == mask[0]).all():
        sys.exit("chain_offsets.py: the chains' sampling windows differ; this study reads one")
    epochs = np.asarray(s["snapshots/epoch"])[mask[0]]
    step = float(np.median(np.diff(epochs)))
    n_chains = mask.shape[0]
    series = {}
    for key in args.series:
        arr = np.asarray(s[f"snapshots/{key}"], np.float64) if f"snapshots/{key}" in s else None
        if arr is None or arr.ndim != 2 or arr.shape[0] != n_chains:
            sys.exit(f"chain_offsets.py: --series {key}: not a scalar snapshot series of this "
                     f"run (one value per chain and snapshot, e.g. w_random_msq)")
        series[key] = arr[:, mask[0]]
    scales = (1.0, 1.5)
    print(f"`{args.results}` ({files[0].parent.parent.name}, {files[0].parent.name}): "
          f"{n_chains} chains, {mask[0].sum()} snapshots every {step:g} steps, window "
          f"{epochs[0]}–{epochs[-1]}; made by `studies/chain_offsets/chain_offsets.py`.\n")
    print("| series | R̂ | bulk ESS | chain means ± own SE | τ_int per chain (steps) "
          "| χ² (dof) | p, χ² table | p, calibrated | null: P(R̂ ≥ observed) | "
          + " | ".join(f"null, {args.factor}× the window, τ × {k:g}: P(pass all gates)"
                       for k in scales) + " |")
    print("|---|---|---|---|---|---|---|---|---|" + "---|" * len(scales))
    for key, x in series.items():
        r = chain_offsets(x, step)
        rhat = rhat_rank(x)
        null = null_calibration(x, r["chi2"], rhat, factor=args.factor, tau_scales=scales)
        means = "; ".join(f"{m:.5g} ± {e:.2g}" for m, e in zip(r["means"], r["se"], strict=True))
        taus = ", ".join(f"{t:.0f}" for t in r["tau_steps"])
        print(f"| {key.removesuffix('_msq')}_sq | {rhat:.4f} | {ess_bulk(x):.0f} | "
              f"{means} | {taus} | {r['chi2']:.1f} ({r['dof']}) | {r['p']:.2g} | "
              f"{null['p_chi2']:.2f} | {null['p_rhat']:.2f} | "
              + " | ".join(f"{null['pass_longer'][k]:.2f}" for k in scales) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
