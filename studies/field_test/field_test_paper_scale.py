"""The field test at the paper's scale: the one-channel law at the field the sampled network
exerts, against the Σ the same chains measure (docs/derivations/cnn2.md, "The field test").
Run by hand from the repository root, after the sampling of config/paper_cpu_field.yaml:

    .venv/bin/python studies/field_test/field_test_paper_scale.py \
        --run results/paper_cpu_field --out studies/field_test/field_test_paper_scale.csv \
        [--widths 160 320] [--n 800] [--candidates 32768] [--seed 0]

Per point (n, C), from the run's sample chunks (8 chains, kernel `field`):
* Σ_meas, the chains' mean of (1/C) Σ_c w_c w_cᵀ, and A_eff = ⟨εεᵀ − K_f⁻¹⟩, the mean over
  the Rao-Blackwellization steps of the field at each sampled set of hidden weights (ε and K_f
  at that finite-C kernel; `fleos.sampling.recording`);
* the closure at the measured field: Σ_field = Cov_p of p(w) ∝ exp(−S|w|²/2σ_w² +
  (1/2C)⟨A_eff, q(w)⟩), by self-normalized importance sampling from N(0, Σ_prop), Σ_prop =
  Σ_meas with its eigenvalues raised to the prior's (`cnn2_fluctfield.proposal_covariance`,
  which bounds the weights), the proposal's exact second moment as a control variate;
* the same law at Eq. 8's field A(Σ_eq8) (the mean kernel of Eq. 8's Gaussian channel), with
  the same candidates, and Eq. 8's own Σ_eq8.

If Σ_field reproduces Σ_meas, the one-channel closure is right at this C and the field is what
Eq. 8 gets wrong; if not, the closure is (the test the exact referee ran at S = 2, here at the
paper's S = 64, N = 20, n = 800). Compared along Σ_meas's top eigenvector u (the teacher
mode) and over the rest of the spectrum (the bulk: (tr Σ − uᵀΣu)/(S − 1)).

The one-channel law's tilt (1/2C)⟨A, q(w)⟩ is the first order in q/C of the exact
conditional of one channel given the others (readout integrated out; Woodbury with
B = (σ_a²/NC)^½ Φ(w), n × N):

    log p(w | rest) = −S|w|²/2σ_w² + ½ tr[(I + BᵀGB)⁻¹ Bᵀ E B] − ½ log det(I + BᵀGB),

with G = K₋⁻¹ and E = ε₋ε₋ᵀ of the *other* channels' kernel K₋. The study also evaluates
this *saturated* law in mean field with the full kernel's averages, G = ⟨K_f⁻¹⟩ and
E = ⟨εεᵀ⟩ = A_eff + ⟨K_f⁻¹⟩ (kernels `field` and `Kinv`), at the measured field and at Eq. 8's
(ε and K_f⁻¹ of its Gaussian channel). It is not the exact conditional: the full kernel
contains the channel itself, and that cavity correction is of the same order in BᵀGB as the
saturation (its second-order term has the opposite sign).

Errors: a jackknife over the chains (leave one chain out of both Σ_meas and A_eff, the
candidates fixed) of each difference, which carries the field's sampling error and its
correlation with Σ_meas, combined in quadrature with the candidates' Monte Carlo SE
(delta method, `cnn2_matched.weighted_moment`).
The chains' equilibrium gates (R̂, bulk ESS, drift of the loss and the Σ series) are read from
the run's aggregate and written beside each row.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
from field_test import jackknife_se

import fleos  # noqa: F401 - float64
from fleos.analysis.aggregate import equilibration_summary, load_aggregate
from fleos.cli.args import Parser, out_file, positive_int
from fleos.figures.common import SERIES_SIGMA
from fleos.figures.render import write_table
from fleos.nets.datasets import load_dataset
from fleos.theory.eos.cnn2 import CNN2Problem, discrepancy_and_inverse, solve_cnn2
from fleos.theory.eos.cnn2_fluctfield import (
    POOL_BATCH,
    _candidate_log_weights,
    candidates_covariance,
    prior_over_proposal,
    proposal_covariance,
)
from fleos.theory.eos.cnn2_matched import (
    channel_log_tilt_saturated,
    weighted_moment,
)

FIELDS = ("n", "C", "chains", "rb_per_chain", "candidates", "kish_ess", "kish_ess_sat",
          *(f"{part}_{col}" for part in ("top", "bulk")
            for col in ("meas", "meas_se", "eq8",
                        *(f"{c}" for law in ("field", "sat")
                          for c in (law, f"{law}_mc_se", f"meas_minus_{law}",
                                    f"meas_minus_{law}_se", f"eq8{law}",
                                    f"eq8{law}_mc_se")))),
          "saturation_top_eig",
          "field_rel_diff", "field_rel_diff_se", "field_y_eff", "field_y_eff_se", "field_y_eq8",
          "rhat", "ess", "drift_se", "failed_gates", "seconds")


def read_chains(run: Path, n: int, C: int) -> dict[str, np.ndarray]:
    """Per-chain means of Σ̂ and the field over every chunk of one point, with the counts and
    the run's sampling config."""
    files = sorted((run / "samples" / "cnn2" / f"n{n}" / f"w{C}").glob("chunk*.h5"))
    if not files:
        raise SystemExit(f"--run: no sample chunks under {run}/samples/cnn2/n{n}/w{C}")
    parts: dict[str, list] = {"sigma": [], "field": [], "Kinv": [], "rb_count": []}
    config = None
    for path in files:
        with h5py.File(path, "r") as f:
            if "field" not in f or "Kinv" not in f:
                raise SystemExit(f"{path}: no 'field' or 'Kinv' (the run must record the "
                                 f"kernels field and Kinv)")
            if not f.attrs.get("complete", False):
                raise SystemExit(f"{path}: the chunk is not complete")
            parts["sigma"].append(f["sigma/mean"][...])
            parts["field"].append(f["field/mean"][...])
            parts["Kinv"].append(f["Kinv/mean"][...])
            parts["rb_count"].append(f["rb_count"][...])
            config = json.loads(f.attrs["config"])
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["config"] = config
    return out


def problem_of(run: Path, n: int, config: dict) -> CNN2Problem:
    ds = load_dataset(run / "data" / "cnn2" / f"n{n}.npz")
    m = config["model"]
    return CNN2Problem.from_arrays(ds.X, ds.y, m["N"], m["S"], ds.X_test, ds.y_test,
                                   sigma2=config["sigma2"], sigma_a2=m["sigma_a2"],
                                   sigma_w2=m["sigma_w2"], activation=m["activation"])


def top_and_bulk(Sigma: np.ndarray, u: np.ndarray) -> tuple[float, float]:
    top = float(u @ Sigma @ u)
    return top, (float(np.trace(Sigma)) - top) / (Sigma.shape[0] - 1)


class Candidates:
    """Proposal draws w = L z ~ N(0, Σ_prop), fixed for every field they are weighted under."""

    def __init__(self, pr: CNN2Problem, Sigma: np.ndarray, count: int, seed: int):
        self.pr = pr
        self.Sigma_prop = proposal_covariance(pr, jnp.asarray(Sigma))
        z = np.random.default_rng(seed).standard_normal((count, pr.S))
        self.z = jnp.asarray(z)
        self.w = self.z @ jnp.linalg.cholesky(self.Sigma_prop).T

    def covariance(self, C: int, A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cov_{p_A} and the candidates' log weights under p_A."""
        logw = _candidate_log_weights(self.pr, float(C), jnp.asarray(A), self.w, self.z)
        return candidates_covariance(self.w, logw, self.Sigma_prop), np.asarray(logw)

    def moment_se(self, logw: np.ndarray, u: np.ndarray) -> tuple[float, float]:
        """Delta-method Monte Carlo SEs of `top_and_bulk` of the weighted covariance."""
        w = np.asarray(self.w)
        along = (w @ u) ** 2
        bulk_g = (np.sum(w**2, axis=1) - along) / (w.shape[1] - 1)
        top_prop, bulk_prop = top_and_bulk(np.asarray(self.Sigma_prop), u)
        return (weighted_moment(along, logw, top_prop)[1],
                weighted_moment(bulk_g, logw, bulk_prop)[1])

    def saturated_covariance(self, C: int, G: np.ndarray, E: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray, float]:
        """Cov of the saturated law (module docstring) at G = ⟨K⁻¹⟩, E = ⟨εεᵀ⟩, the
        candidates' log weights, and the median over candidates of BᵀGB's top eigenvalue."""
        pr = self.pr
        c = pr.sigma_a2 / (pr.N * C)
        P32 = pr.P.astype(jnp.float32)
        G32 = jnp.asarray(0.5 * (G + G.T), jnp.float32)
        E32 = jnp.asarray(0.5 * (E + E.T), jnp.float32)
        tilt, top = jax.lax.map(
            lambda wb: channel_log_tilt_saturated(P32, wb, E32, G32, c, pr.activation),
            self.w.reshape(-1, POOL_BATCH // 4, pr.S))
        logw = tilt.reshape(-1) + prior_over_proposal(pr, self.w, self.z)
        return (candidates_covariance(self.w, logw, self.Sigma_prop), np.asarray(logw),
                float(np.median(np.asarray(top))))


def _kish(logw: np.ndarray) -> float:
    om = np.exp(logw - logw.max())
    return float(om.sum() ** 2 / np.sum(om**2))


def field_point(run: Path, n: int, C: int, candidates: int, seed: int) -> dict:
    """One row: the measured Σ against the linear ("field") and saturated ("sat") one-channel
    laws at the measured field and at Eq. 8's, and Eq. 8 itself (module docstring)."""
    t0 = time.perf_counter()
    ch = read_chains(run, n, C)
    pr = problem_of(run, n, ch["config"])
    k = len(ch["sigma"])
    if k < 3:
        raise SystemExit(f"n = {n}, C = {C}: the jackknife needs >= 3 chains, got {k}")

    def laws(pool: Candidates, A: np.ndarray, K_inv: np.ndarray) -> dict[str, tuple]:
        """Cov and log weights of the linear and the saturated law at A = E − K⁻¹ (and, for
        the saturated one, the median top eigenvalue of BᵀK⁻¹B)."""
        return {"field": pool.covariance(C, A),
                "sat": pool.saturated_covariance(C, K_inv, A + K_inv)}

    eq8 = solve_cnn2(pr, float(C), tol=1e-8, max_iter=200)
    if not eq8.converged:
        raise SystemExit(f"Eq. 8 did not converge at n = {n}, C = {C}: {eq8.message}")
    Sigma_eq8 = np.asarray(eq8.x)
    Sigma_meas = ch["sigma"].mean(0)
    u = np.linalg.eigh(Sigma_meas)[1][:, -1]
    pool = Candidates(pr, Sigma_meas, candidates, seed)
    at_meas = laws(pool, ch["field"].mean(0), ch["Kinv"].mean(0))
    y = np.asarray(pr.y)
    eps_eq8, K_inv_eq8 = (np.asarray(a) for a in discrepancy_and_inverse(
        pr.P, pr.y, jnp.asarray(Sigma_eq8), pr.sigma2, pr.sigma_a2, pr.activation))
    A_eq8 = np.outer(eps_eq8, eps_eq8) - K_inv_eq8

    def field_stats(A: np.ndarray) -> tuple[float, float]:
        """‖A − A_eq8‖_F/‖A_eq8‖_F and yᵀAy/yᵀy."""
        return (float(np.linalg.norm(A - A_eq8) / np.linalg.norm(A_eq8)),
                float(y @ A @ y / (y @ y)))

    # leave one chain out of Σ_meas and the field together, the candidates fixed
    reps, field_reps = [], []
    for j in range(k):
        keep = np.arange(k) != j
        meas_j = top_and_bulk(ch["sigma"][keep].mean(0), u)
        laws_j = laws(pool, ch["field"][keep].mean(0), ch["Kinv"][keep].mean(0))
        law_j = {law: top_and_bulk(laws_j[law][0], u) for law in ("field", "sat")}
        field_reps.append(field_stats(ch["field"][keep].mean(0)))
        reps.append([*meas_j, *(meas_j[i] - law_j[law][i] for law in ("field", "sat")
                                for i in (0, 1))])
    se = dict(zip(("meas", "field", "sat"), np.asarray(
        [jackknife_se(r) for r in np.asarray(reps).T]).reshape(3, 2), strict=True))

    at_eq8 = laws(pool, A_eq8, K_inv_eq8)

    row: dict = {"n": n, "C": C, "chains": k, "rb_per_chain": int(np.min(ch["rb_count"])),
                 "candidates": candidates}
    meas = top_and_bulk(Sigma_meas, u)
    for i, part in enumerate(("top", "bulk")):
        row[f"{part}_meas"], row[f"{part}_meas_se"] = meas[i], se["meas"][i]
        row[f"{part}_eq8"] = top_and_bulk(Sigma_eq8, u)[i]
        for law in ("field", "sat"):
            Sigma, logw = at_meas[law][:2]
            value = top_and_bulk(Sigma, u)[i]
            mc = pool.moment_se(logw, u)[i]
            row[f"{part}_{law}"], row[f"{part}_{law}_mc_se"] = value, mc
            row[f"{part}_meas_minus_{law}"] = meas[i] - value
            row[f"{part}_meas_minus_{law}_se"] = float(np.hypot(se[law][i], mc))
            row[f"{part}_eq8{law}"] = top_and_bulk(at_eq8[law][0], u)[i]
            row[f"{part}_eq8{law}_mc_se"] = pool.moment_se(at_eq8[law][1], u)[i]
    row["kish_ess"] = _kish(at_meas["field"][1])
    row["kish_ess_sat"] = _kish(at_meas["sat"][1])
    row["saturation_top_eig"] = at_meas["sat"][2]
    # the norm of a noisy A_eff − A_eq8 is biased upward by its noise; the jackknife SE shows
    # how much it moves with the chains
    row["field_rel_diff"], row["field_y_eff"] = field_stats(ch["field"].mean(0))
    row["field_rel_diff_se"], row["field_y_eff_se"] = (
        jackknife_se(np.asarray(field_reps)[:, i]) for i in (0, 1))
    row["field_y_eq8"] = float(y @ A_eq8 @ y / (y @ y))
    agg_path = run / "aggregate" / "cnn2" / f"n{n}" / f"w{C}.npz"
    eq = (equilibration_summary(load_aggregate(agg_path), ("loss", *SERIES_SIGMA))
          if agg_path.is_file() else {"rhat": np.nan, "ess": np.nan, "drift_se": np.nan,
                                      "failed_gates": "no aggregate"})
    row.update({key: eq[key] for key in ("rhat", "ess", "drift_se", "failed_gates")})
    row["seconds"] = time.perf_counter() - t0
    return row


def main(argv: list[str] | None = None) -> int:
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--n", type=positive_int, default=800)
    ap.add_argument("--widths", type=positive_int, nargs="+", default=[160, 320])
    ap.add_argument("--candidates", type=positive_int, default=32768)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=out_file, required=True)
    args = ap.parse_args(argv)
    if args.candidates % POOL_BATCH:
        ap.error(f"--candidates must be a multiple of {POOL_BATCH}, got {args.candidates}")
    if not args.run.is_dir():
        ap.error(f"--run: no such folder {args.run}")
    rows = []
    for C in args.widths:
        row = field_point(args.run, args.n, C, args.candidates, args.seed)
        rows.append(row)
        print(f"n = {args.n}, C = {C}: top Σ measured {row['top_meas']:.5f} ± "
              f"{row['top_meas_se']:.5f}, at the measured field {row['top_field']:.5f} "
              f"(diff {row['top_meas_minus_field']:+.5f} ± {row['top_meas_minus_field_se']:.5f}),"
              f" saturated law {row['top_sat']:.5f} (diff {row['top_meas_minus_sat']:+.5f} ± "
              f"{row['top_meas_minus_sat_se']:.5f}), at Eq. 8's field {row['top_eq8field']:.5f}"
              f" (saturated {row['top_eq8sat']:.5f}), Eq. 8 {row['top_eq8']:.5f}; "
              f"{row['seconds']:.0f} s", flush=True)
        write_table(args.out, FIELDS, rows)        # atomic, after every point
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
