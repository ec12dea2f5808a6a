"""Tests of fleos.core.gp: GP inference (Eq. 5 line 1 / Eq. 8 line 1), α and the normalized MSE.

All comparisons here are exact linear algebra in float64, so tolerances are round-off level
(relative 1e-10 for well-conditioned matrices with condition number < 1e4).
"""

from __future__ import annotations

import numpy as np
import pytest

import fleos  # noqa: F401  (enables float64 in JAX)
from fleos.core import gp


def _psd(rng, n, rank=None):
    A = rng.standard_normal((n, rank or n))
    return A @ A.T / A.shape[1]


def test_train_mean_equals_textbook_formula():
    rng = np.random.default_rng(0)
    Q, y, s2 = _psd(rng, 8), rng.standard_normal(8), 0.3
    fit = gp.gp_fit(Q, y, s2)
    ref = Q @ np.linalg.solve(Q + s2 * np.eye(8), y)  # f̄ = Q_f (Q_f + σ² I)⁻¹ y
    np.testing.assert_allclose(np.asarray(gp.gp_train_mean(fit, y)), ref, rtol=1e-10)
    # ε = (y − f̄)/σ² = K_f⁻¹ y (the ε of Eq. 8).
    np.testing.assert_allclose(
        np.asarray(gp.discrepancy(fit)), (y - ref) / s2, rtol=1e-10, atol=1e-12
    )


def test_predict_matches_formula_and_reduces_to_train_mean_on_train_points():
    rng = np.random.default_rng(1)
    # Joint kernel on 6 train + 3 test points, so Q_{*f} is a genuine kernel block.
    Qall = _psd(rng, 9)
    Q, Qtt = Qall[:6, :6], Qall[6:, :6]
    y, s2 = rng.standard_normal(6), 0.05
    fit = gp.gp_fit(Q, y, s2)
    ref = Qtt @ np.linalg.solve(Q + s2 * np.eye(6), y)
    np.testing.assert_allclose(np.asarray(gp.gp_predict(fit, Qtt)), ref, rtol=1e-10)
    np.testing.assert_allclose(
        np.asarray(gp.gp_predict(fit, Q)), np.asarray(gp.gp_train_mean(fit, y)), rtol=1e-9
    )


def test_alpha_and_normalized_mse_hand_cases():
    y = np.array([1.0, 2.0])
    f = np.array([0.5, 1.0])
    # (y − f)·y = 0.5 + 2 = 2.5; σ² y·y = 0.5 · 5 = 2.5.
    assert float(gp.alpha(y, f, 0.5)) == pytest.approx(1.0, rel=1e-15)
    # Σ(f − y)² = 0.25 + 1 = 1.25; / (0.5 · 5) = 0.5.
    assert float(gp.normalized_mse(y, f, 0.5)) == pytest.approx(0.5, rel=1e-15)
    # A perfect fit has α = 0 and zero MSE; predicting 0 gives α = 1/σ², MSE = 1/σ².
    assert float(gp.alpha(y, y, 0.5)) == 0.0
    assert float(gp.normalized_mse(y, 0 * y, 0.5)) == pytest.approx(2.0)


def test_alpha_limits_on_the_training_set():
    """On the training set α = yᵀ K_f⁻¹ y / yᵀy (since y − f̄ = σ² K_f⁻¹ y). Hence
    * Q_f → 0 (no prior signal): α → 1/σ²;
    * y an eigenvector of Q_f with eigenvalue λ: α = 1/(λ + σ²) exactly, → 0 as λ → ∞;
    * in general 1/(λ_max + σ²) ≤ α ≤ 1/(λ_min + σ²) (Rayleigh quotient of K_f⁻¹)."""
    rng = np.random.default_rng(2)
    n, s2 = 10, 0.2
    y = rng.standard_normal(n)

    def train_alpha(Q):
        fit = gp.gp_fit(Q, y, s2)
        return float(gp.alpha(y, gp.gp_train_mean(fit, y), s2))

    assert train_alpha(np.zeros((n, n))) == pytest.approx(1 / s2, rel=1e-12)

    # Q = λ ŷŷᵀ + (orthogonal part): y is an eigenvector with eigenvalue λ.
    yhat = y / np.linalg.norm(y)
    B = _psd(rng, n)
    P = np.eye(n) - np.outer(yhat, yhat)
    for lam in (0.0, 0.7, 50.0, 1e6):
        Q = lam * np.outer(yhat, yhat) + P @ B @ P
        assert train_alpha(Q) == pytest.approx(1 / (lam + s2), rel=1e-9)

    Q = _psd(rng, n)
    ev = np.linalg.eigvalsh(Q)
    a = train_alpha(Q)
    assert 1 / (ev[-1] + s2) <= a <= 1 / (ev[0] + s2)


def test_gp_fit_rejects_non_positive_definite_kernels_loudly():
    # Q + σ² I indefinite: the Cholesky factor is NaN; callers must see it, not a number.
    Q = -np.eye(3)
    fit = gp.gp_fit(Q, np.ones(3), 0.5)
    assert not np.all(np.isfinite(np.asarray(fit.weights)))
