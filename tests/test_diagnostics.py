"""Tests of fleos.diagnostics on AR(1) series with known autocorrelation time.

AR(1): x_t = φ x_{t-1} + √(1-φ²) e_t (unit stationary variance), ρ(t) = φ^t and
τ = 1 + 2 Σ φ^t = (1+φ)/(1-φ).
Tolerances come from Sokal's large-sample variance of the windowed estimator,
Var(τ̂)/τ² ≈ 2(2M+1)/N with window M ≈ 5τ and N the total number of draws; we allow 4 of those
standard errors (plus the exactly known truncation bias 2φ^{M+1}/(1-φ), negligible at M = 5τ).
"""

from __future__ import annotations

import numpy as np
import pytest

from fleos.diagnostics import (
    autocorrelation,
    effective_sample_size,
    integrated_autocorr_time,
    split_rhat,
)


def ar1(phi: float, n: int, chains: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((chains, n))
    x = np.empty((chains, n))
    x[:, 0] = e[:, 0]  # start in the stationary law: no burn-in needed
    s = np.sqrt(1 - phi**2)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + s * e[:, t]
    return x


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
