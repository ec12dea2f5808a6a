"""The fluctuating-field closure of the 2-layer CNN, scored against the exact referee
(docs/derivations/cnn2.md, "The field test"). Run by hand from the repository root:

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
      .venv/bin/python studies/field_test/fluctuating_field.py \
        --referee studies/referee/referee_scores.csv \
        --out studies/field_test/fluctuating_field.csv [--C 8 16 32 64 128] [--draws 4000]

The closure: each channel follows the one-channel law p_A(w) ∝ exp(−S|w|²/2σ_w² + (1/2C)⟨A, q(w)⟩)
(the one Eq. 8 and the moment-matched EoS share), and the field is the average of the finite-C
field over C independent channels of that law,

    A = E_{W ~ p_A^{⊗C}} [ ε(W) ε(W)ᵀ − K(W)⁻¹ ],   ε(W) = K(W)⁻¹ y,   K(W) = Q(W) + σ² I,

with the predictor f̄ = E[Q(W) K(W)⁻¹ y] (train and test) and Σ = Cov_{p_A}(w). Eq. 8 instead
takes the field at the mean kernel of a Gaussian channel.

Numerics (S = 2 only, the referee's size): p_A on a 301 × 301 grid over ±8 prior SDs; `--draws`
sets of C channels drawn from it by inverse CDF with fixed uniforms and a uniform jitter within
the grid cell (common random numbers, so the map A ↦ A′ is a fixed function); the fixed point by
damped iteration A ← (A + A′)/2 from Eq. 8's field, until ‖A′ − A‖/‖A′‖ < 2e-4. Monte Carlo SEs of
the final α's: the spread of the per-draw f̄ projections over the draws (independent draws);
top Σ's SE: none from the draws (Σ is a quadrature at the final A) — its Monte Carlo error enters
only through A, which a second `--seed` checks. Scores: z = (referee − closure)/SE, SE the
referee's and the closure's combined in quadrature, beside Eq. 8's z from the referee table.
"""

from __future__ import annotations

import csv
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import fleos  # noqa: F401  (float64)
from fleos.cli.args import Parser, out_file, positive_int
from fleos.core.kernels import ACTIVATIONS
from fleos.core.kernels import cnn2_channel_features as features
from fleos.nets.data import make_dataset
from fleos.theory.eos.cnn2 import CNN2Problem, sweep_cnn2
from fleos.theory.eos.cnn2_matched import field_of

MODEL = {"S": 2, "N": 3, "activation": "erf", "sigma_w2": 2.0, "sigma_a2": 2.0}
SIGMA2, SIGMA_A2 = 0.1, 2.0
GRID_POINTS, GRID_HALF_WIDTH = 301, 8.0   # prior SD units (σ_w²/S = 1 here)


def main(argv: list[str] | None = None) -> int:
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--referee", required=True, help="studies/referee/referee_scores.csv")
    ap.add_argument("--C", type=positive_int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--draws", type=positive_int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=out_file, required=True)
    args = ap.parse_args(argv)
    if not os.path.isfile(args.referee):
        ap.error(f"--referee {args.referee}: no such file")
    with open(args.referee, newline="") as fh:
        ref = {int(r["C"]): r for r in csv.DictReader(fh)}
    missing = [c for c in args.C if c not in ref]
    if missing:
        ap.error(f"--C {missing}: not in --referee {args.referee}")
    ds = make_dataset("cnn2", MODEL, 40, 200, teacher_seed=0, data_seed=1)
    pr = CNN2Problem.from_arrays(ds.X, ds.y, 3, 2, ds.X_test, ds.y_test, sigma2=SIGMA2,
                                 sigma_a2=SIGMA_A2, sigma_w2=2.0)
    P, y, yt, n, N = pr.P, pr.y, pr.y_test, pr.n, pr.N
    g = jnp.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, GRID_POINTS)
    cell = float(g[1] - g[0])
    grid = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    phi = ACTIVATIONS["erf"](jnp.einsum("mis,bs->bmi", P, grid))   # (grid, n, N)

    @jax.jit
    def law(A, C):
        logp = (SIGMA_A2 / (2 * N * C)) * jnp.einsum("bmi,mk,bki->b", phi, A, phi)
        logp = logp - 0.5 * jnp.sum(grid**2, 1)
        p = jnp.exp(logp - logp.max())
        return p / p.sum()

    def draw_field(A, C, U, J):
        p = law(A, C)
        idx = jnp.clip(jnp.searchsorted(jnp.cumsum(p), U), 0, p.size - 1)
        W = grid[idx] + cell * (J - 0.5)

        def one(Wm):
            F, Ft = features(P, Wm), features(pr.P_test, Wm)
            K = (SIGMA_A2 / (N * C)) * F @ F.T + SIGMA2 * jnp.eye(n)
            L = jnp.linalg.cholesky(K)
            K_inv = jax.scipy.linalg.cho_solve((L, True), jnp.eye(n))
            v = K_inv @ y
            f_te = ((SIGMA_A2 / (N * C)) * Ft @ F.T) @ v
            return jnp.outer(v, v) - K_inv, y - SIGMA2 * v, f_te

        A_draws, f_tr, f_te = jax.lax.map(one, W, batch_size=250)
        return A_draws.mean(0), f_tr, f_te, (grid.T * p) @ grid

    ladder = [4096.0, 1024.0, 256.0, 128.0, 64.0, 32.0, 16.0, 8.0]
    rows = []
    for C in sorted(args.C, reverse=True):
        t0 = time.perf_counter()
        rng = np.random.default_rng(args.seed)
        U = jnp.asarray(rng.random((args.draws, C)))
        J = jnp.asarray(rng.random((args.draws, C, 2)))
        eq8 = sweep_cnn2(pr, sorted({*[c for c in ladder if c > C], float(C)}, reverse=True),
                         tol=1e-12, max_iter=300)[-1]
        A = field_of(pr, eq8.x)
        for iterations in range(1, 101):  # noqa: B007  (the count is reported)
            A_new, f_tr, f_te, sigma = draw_field(A, C, U, J)
            step = float(jnp.linalg.norm(A_new - A) / jnp.linalg.norm(A_new))
            A = 0.5 * (A + A_new)
            if step < 2e-4:
                break
        a_tr_draw = np.asarray((y - f_tr) @ y / (SIGMA2 * (y @ y)))
        a_te_draw = np.asarray((yt - f_te) @ yt / (SIGMA2 * (yt @ yt)))
        top = float(np.linalg.eigvalsh(np.asarray(sigma))[-1])
        r = ref[C]
        row = {"C": C, "iterations": iterations, "last_step": step, "draws": args.draws,
               "seed": args.seed, "seconds": time.perf_counter() - t0}
        for key, val, se in (("top", top, 0.0),
                             ("alpha_train", a_tr_draw.mean(),
                              a_tr_draw.std(ddof=1) / np.sqrt(len(a_tr_draw))),
                             ("alpha_test", a_te_draw.mean(),
                              a_te_draw.std(ddof=1) / np.sqrt(len(a_te_draw)))):
            ref_v, ref_se = float(r[f"{key}_ref"]), float(r[f"{key}_ref_se"])
            row[f"{key}_ff"] = float(val)
            row[f"{key}_ff_se"] = float(se)
            row[f"{key}_ref"] = ref_v
            row[f"z_{key}_ff"] = (ref_v - val) / np.hypot(ref_se, se)
            row[f"pct_{key}_ff"] = 100 * (ref_v / val - 1)
            row[f"z_{key}_eq8"] = float(r[f"z_{key}_eq8"])
        rows.append(row)
        print(f"C={C:4d} {iterations} iterations {row['seconds']:.0f} s"
              f" | top z {row['z_top_ff']:+.1f}"
              f" (Eq. 8 {row['z_top_eq8']:+.1f}) | train α z {row['z_alpha_train_ff']:+.1f}"
              f" (Eq. 8 {row['z_alpha_train_eq8']:+.1f}) | test α z {row['z_alpha_test_ff']:+.1f}"
              f" (Eq. 8 {row['z_alpha_test_eq8']:+.1f})", file=sys.stderr, flush=True)
    with open(args.out, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
