"""Linear algebra of symmetric positive-definite matrices shared by the equations of state
(Eqs. 5, 8, 13): inverses of kernels and of their precisions, in float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

Array = jax.Array


@jax.custom_jvp
def spd_inverse(M: Array) -> Array:
    """Inverse of a symmetric positive-definite matrix through its Cholesky factor.

    NaN if M is not positive definite (the caller's solvers treat that as leaving the domain).
    The custom JVP, d(M⁻¹) = −M⁻¹ dM M⁻¹, costs two matrix products per tangent instead of
    re-running triangular solves, which dominate the cost on CPU.
    """
    L = jnp.linalg.cholesky(M)
    Linv = jsl.solve_triangular(L, jnp.eye(M.shape[-1], dtype=M.dtype), lower=True)
    return Linv.T @ Linv


@spd_inverse.defjvp
def _spd_inverse_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (M,), (dM,) = primals, tangents
    Mi = spd_inverse(M)
    return Mi, -Mi @ dM @ Mi


def sym(M: Array) -> Array:
    """The symmetric part of M: removes the round-off asymmetry of products of symmetric
    matrices before a Cholesky factorization or an eigendecomposition."""
    return 0.5 * (M + M.T)
