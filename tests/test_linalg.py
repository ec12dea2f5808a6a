"""fleos.core.linalg: the SPD inverse and its derivative."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import fleos  # noqa: F401  (float64)
from fleos.core.linalg import spd_inverse, sym


def _spd(n: int, seed: int) -> np.ndarray:
    A = np.random.default_rng(seed).standard_normal((n, n))
    return A @ A.T / n + 0.5 * np.eye(n)  # eigenvalues >= 0.5: condition number ~ 10


def test_spd_inverse_is_the_inverse_and_nan_off_the_domain():
    M = _spd(12, 0)
    # float64 with a condition number ~10: the residual is a few ulps
    np.testing.assert_allclose(np.asarray(spd_inverse(jnp.asarray(M))) @ M, np.eye(12),
                               atol=1e-12)
    assert np.isnan(np.asarray(spd_inverse(jnp.asarray(-M)))).all()


def test_spd_inverse_jvp_matches_central_differences():
    M, dM = _spd(8, 1), sym(jnp.asarray(np.random.default_rng(2).standard_normal((8, 8))))
    _, tangent = jax.jvp(spd_inverse, (jnp.asarray(M),), (dM,))
    h = 1e-5  # truncation O(h²) ≈ 1e-10, round-off ≈ 1e-16 / h = 1e-11 (relative)
    fd = (spd_inverse(M + h * dM) - spd_inverse(M - h * dM)) / (2 * h)
    np.testing.assert_allclose(np.asarray(tangent), np.asarray(fd), rtol=1e-7, atol=1e-9)
