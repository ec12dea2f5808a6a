"""Tests of fleos.core.diagnostics on AR(1) series with known autocorrelation time.

AR(1): x_t = φ x_{t-1} + √(1-φ²) e_t (unit stationary variance), ρ(t) = φ^t and
τ = 1 + 2 Σ φ^t = (1+φ)/(1-φ).
Tolerances come from Sokal's large-sample variance of the windowed estimator,
Var(τ̂)/τ² ≈ 2(2M+1)/N with window M ≈ 5τ and N the total number of draws; we allow 4 of those
standard errors (plus the exactly known truncation bias 2φ^{M+1}/(1-φ), negligible at M = 5τ).
"""

from __future__ import annotations

import numpy as np
import pytest

from fleos.core.diagnostics import (
    ar1_chains,
    autocorrelation,
    effective_sample_size,
    ess_bulk,
    ess_mean,
    half_drift,
    integrated_autocorr_time,
    mcse_mean,
    rhat_rank,
    split_rhat,
)


def ar1(phi: float, n: int, chains: int, seed: int) -> np.ndarray:
    """Stationary from the first draw: no burn-in needed."""
    return ar1_chains(np.random.default_rng(seed), chains, n, phi)


def sokal_rel_se(tau: float, n_total: int) -> float:
    return float(np.sqrt(2 * (2 * 5 * tau + 1) / n_total))


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("method", ["sokal", "geyer"])
def test_iat_ar1_single_chain(phi: float, method: str) -> None:
    n = 100_000
    x = ar1(phi, n, 1, seed=int(10 * phi))[0]
    tau = (1 + phi) / (1 - phi)
    est = integrated_autocorr_time(x, method=method)
    assert abs(est / tau - 1) < 4 * sokal_rel_se(tau, n) + 0.01


def test_ar1_chains_per_chain_rho_gives_each_chain_its_tau_and_unit_variance() -> None:
    # the null chains of the R̂ calibrations: one ρ per chain, equal (unit) variances
    rho, n = np.array([0.0, 0.5, 0.8]), 50_000
    x = ar1_chains(np.random.default_rng(3), 3, n, rho)
    for row, r in zip(x, rho, strict=True):
        tau = (1 + r) / (1 - r)
        assert abs(integrated_autocorr_time(row) / tau - 1) < 4 * sokal_rel_se(tau, n) + 0.01
        # the sample variance has relative SE √(2(1 + ρ²)/((1 − ρ²) n)) ≤ √(2τ/n); 4 such SE
        assert abs(row.var() - 1) < 4 * np.sqrt(2 * tau / n)


@pytest.mark.parametrize("method", ["sokal", "geyer"])
def test_iat_and_ess_multichain(method: str) -> None:
    phi, chains, n = 0.8, 8, 20_000
    x = ar1(phi, n, chains, seed=3)
    tau = (1 + phi) / (1 - phi)
    est = integrated_autocorr_time(x, method=method)
    assert abs(est / tau - 1) < 4 * sokal_rel_se(tau, chains * n)
    ess = effective_sample_size(x, method=method)
    assert ess == pytest.approx(chains * n / est)
    assert abs(ess / (chains * n / tau) - 1) < 4 * sokal_rel_se(tau, chains * n)


def test_ess_predicts_error_of_the_mean() -> None:
    # The point of ESS: Var(sample mean) = σ²/ESS. Check it over 200 replicas of a 1-D AR(1):
    # the empirical variance of the means has relative s.e. √(2/199) ≈ 0.10; allow 4 of them.
    phi, n, reps = 0.9, 4000, 200
    x = ar1(phi, n, reps, seed=5)
    emp_var = x.mean(axis=1).var(ddof=1)
    pred = np.mean([x[i].var(ddof=1) / effective_sample_size(x[i]) for i in range(reps)])
    assert abs(emp_var / pred - 1) < 4 * np.sqrt(2 / (reps - 1))


def test_autocorrelation_ar1() -> None:
    phi, n = 0.7, 200_000
    rho = autocorrelation(ar1(phi, n, 1, seed=7)[0])
    # Bartlett: s.e. of ρ̂(t) ≈ √(τ/N) for small t; allow 5 of them.
    tol = 5 * np.sqrt((1 + phi) / (1 - phi) / n)
    np.testing.assert_allclose(rho[:6], phi ** np.arange(6), atol=tol)
    assert rho[0] == 1.0


def test_split_rhat() -> None:
    x = ar1(0.5, 4000, 4, seed=11)
    # Mixed chains of 4 × 4000 draws: R̂ − 1 is O(1/ESS) ≈ 1e-3; 1.01 is the usual threshold.
    assert abs(split_rhat(x) - 1) < 0.01
    shifted = x + np.arange(4)[:, None]  # chains in different places: not mixed
    assert split_rhat(shifted) > 1.5
    drift = x + np.linspace(0, 3, x.shape[1])  # each chain still drifting: halves disagree
    assert split_rhat(drift) > 1.2


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="method"):
        integrated_autocorr_time(np.zeros(10), method="bogus")
    with pytest.raises(ValueError, match="shape"):
        effective_sample_size(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        split_rhat(np.array([[0.0, 1.0, np.nan, 2.0, 3.0]]))
    assert integrated_autocorr_time(np.ones(50)) == 1.0  # constant: τ defined as 1


# ---- rank-normalized R̂, bulk/mean ESS and the half drift (Vehtari et al. 2021) --------------


def _cases() -> list[tuple[str, np.ndarray]]:
    """White noise, AR(1) chains (short and long, odd lengths), chains in different places,
    drifting chains, heavy tails, and a single chain."""
    rng = np.random.default_rng(2021)
    return [
        ("white", rng.standard_normal((4, 500))),
        ("ar1_0.9", ar1(0.9, 1001, 6, seed=1)),
        ("ar1_0.99_short", ar1(0.99, 61, 3, seed=2)),
        ("ar1_antithetic", ar1(-0.6, 300, 4, seed=3)),
        ("offset_chains", ar1(0.5, 400, 5, seed=4) + np.arange(5)[:, None]),
        ("drift", ar1(0.7, 800, 4, seed=5) + np.linspace(0, 2, 800)),
        ("cauchy", rng.standard_cauchy((8, 257))),
        ("one_chain", ar1(0.8, 2000, 1, seed=6)),
    ]


@pytest.mark.parametrize(("name", "x"), _cases(), ids=[c[0] for c in _cases()])
def test_rank_rhat_and_ess_equal_arviz(name: str, x: np.ndarray) -> None:
    # Same estimators, same conventions: equal to float64 round-off (sums over ≤ 10⁴ terms).
    from arviz_stats.base import array_stats

    assert ess_bulk(x) == pytest.approx(array_stats.ess(x, method="bulk"), rel=1e-10)
    assert ess_mean(x) == pytest.approx(array_stats.ess(x, method="mean"), rel=1e-10)
    if x.shape[0] > 1:  # ArviZ declines R̂ for one chain (NaN); ours compares its halves
        assert rhat_rank(x) == pytest.approx(array_stats.rhat(x, method="rank"), rel=1e-12)


def test_ess_mean_predicts_error_of_the_mean() -> None:
    # MCSE = sd/√ess_mean must match the spread of the means of 300 independent 4-chain runs
    # of AR(1) φ = 0.9 (τ = 19): the empirical variance has relative s.e. √(2/299) ≈ 0.08;
    # allow 4 of them.
    reps = 300
    x = ar1(0.9, 1000, 4 * reps, seed=8).reshape(reps, 4, 1000)
    emp_var = x.mean(axis=(1, 2)).var(ddof=1)
    pred = np.mean([mcse_mean(x[i]) ** 2 for i in range(reps)])
    assert abs(emp_var / pred - 1) < 4 * np.sqrt(2 / (reps - 1))


def test_rhat_rank_flags_scale_and_location() -> None:
    x = ar1(0.5, 2000, 4, seed=9)
    assert rhat_rank(x) < 1.01
    assert rhat_rank(x + np.arange(4)[:, None]) > 1.5  # location: the bulk R̂
    scaled = x * np.array([1.0, 1.0, 1.0, 4.0])[:, None]  # same mean, one chain 4× wider
    assert rhat_rank(scaled) > 1.05  # scale: only the folded (tail) R̂ sees it


def test_half_drift() -> None:
    # Stationary: z ~ N(0, 1) up to the SE's own error (the ESS of 200-draw halves is
    # estimated; z's spread measures ≈ 1.05); |z| > 3 should then hit ≈ 0.4 % of 200 replicas
    # (Poisson mean ≈ 1); allow 5 (P(≥ 6) ≈ 0.06 %).
    reps = 200
    x = ar1(0.8, 400, 4 * reps, seed=10).reshape(reps, 4, 400)
    zs = np.array([half_drift(x[i])[1] for i in range(reps)])
    assert np.sum(np.abs(zs) > 3) <= 5
    assert abs(zs.mean()) < 4 * 1.1 / np.sqrt(reps)  # mean 0 within 4 SE
    # A relaxing chain: 4 × 4000 draws approaching equilibrium as e^(−t/500). The offset's
    # half means differ by (500/2000)(1 − e⁻⁴)² ≈ 0.24; the SE of each half is inflated by the
    # trend inside it (split ESS), ≈ 0.06 here, so the drift is ≈ −4 SE: past the flag at 3.
    t = np.arange(4000)
    diff, z = half_drift(ar1(0.8, 4000, 4, seed=10) + np.exp(-t / 500))
    assert diff == pytest.approx(-0.24, abs=4 * 0.06)
    assert z < -3
    with pytest.raises(ValueError, match="8 draws"):
        half_drift(np.zeros((2, 7)))
