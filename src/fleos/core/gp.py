"""Gaussian-process inference with a given output kernel (paper, first line of Eq. 5 / Eq. 8).

f̄ = Q_f (Q_f + σ² I)⁻¹ y on the training set, f̄_* = Q_{*f} (Q_f + σ² I)⁻¹ y on test points.
Computed through a Cholesky factor of K_f = Q_f + σ² I in float64 (σ² can be 10⁻³ of the top
eigenvalue of Q_f; float32 loses the small-eigenvalue directions that set the train residual).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import jax.scipy.linalg as jsl

Array = jnp.ndarray


class GPFit(NamedTuple):
    """A fitted GP: Cholesky factor of K_f = Q_f + σ² I and the weights K_f⁻¹ y."""

    chol: Array
    weights: Array
    sigma2: float


def gp_fit(Qf: Array, y: Array, sigma2: float) -> GPFit:
    """Factor K_f = Q_f + σ² I and solve for K_f⁻¹ y."""
    n = Qf.shape[0]
    chol = jnp.linalg.cholesky(Qf + sigma2 * jnp.eye(n, dtype=Qf.dtype))
    weights = jsl.cho_solve((chol, True), y)
    return GPFit(chol, weights, sigma2)


def gp_inverse(fit: GPFit) -> Array:
    """K_f⁻¹ from the fit's Cholesky factor (n × n; the field εεᵀ − K_f⁻¹ of Eq. 8 needs it)."""
    eye = jnp.eye(fit.chol.shape[0], dtype=fit.chol.dtype)
    return jsl.cho_solve((fit.chol, True), eye)


def gp_train_mean(fit: GPFit, y: Array) -> Array:
    """Posterior mean on the training inputs: f̄ = y − σ² K_f⁻¹ y (same as Q_f K_f⁻¹ y, stabler)."""
    return y - fit.sigma2 * fit.weights


def gp_predict(fit: GPFit, Q_test_train: Array) -> Array:
    """Posterior mean on test inputs: f̄_* = Q_{*f} K_f⁻¹ y."""
    return Q_test_train @ fit.weights


def discrepancy(fit: GPFit) -> Array:
    """ε = (y − f̄)/σ² = K_f⁻¹ y on the training set (the ε of Eq. 8)."""
    return fit.weights


def alpha(y: Array, f_mean: Array, sigma2: float) -> Array:
    """α = (y − f̄)·y / (σ² y·y): the discrepancy's overlap with the target (Eq. 9 and the
    definition in the 3-layer FCN section). Works for train or test sets."""
    return jnp.dot(y - f_mean, y) / (sigma2 * jnp.dot(y, y))


def normalized_mse(y: Array, f_mean: Array, sigma2: float) -> Array:
    """Σ_μ (f̄_μ − y_μ)² / (σ² Σ_μ y_μ²): the paper's train loss 'on the scale of σ²' (Fig. 2b),
    evaluated at the posterior mean so that experiment and theory use the same estimator."""
    return jnp.sum((f_mean - y) ** 2) / (sigma2 * jnp.dot(y, y))
