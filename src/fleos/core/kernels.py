"""Infinite-width kernels: activation post-kernels G(K) and the layer recursions.

Composable, pure functions of arrays in the style of neural-tangents: each maps pre-kernel
entries (k_ab, k_aa, k_bb), i.e. the covariance of a centred Gaussian pair (u, v) with
Var u = k_aa, Var v = k_bb, Cov(u, v) = k_ab, to E[φ(u) φ(v)].

* erf (paper, below Eq. 5): G = (2/π) arcsin(2 k_ab / √((1 + 2 k_aa)(1 + 2 k_bb))).
* ReLU (Cho & Saul arc-cosine kernel of order 1):
  E[relu(u) relu(v)] = √(k_aa k_bb) (sin θ + (π − θ) cos θ) / (2π), cos θ = k_ab/√(k_aa k_bb).
  ReLU is not odd, so its post-activation has a mean √(k_aa / 2π); `relu_mean` returns it.
  The kernels here are *second moments* E[φφ], which is what the next layer's pre-kernel
  needs (weights are centred).

Shapes: everything broadcasts, so the same function serves a square Gram matrix
(`post_kernel(K)`) and a rectangular test × train block (`post_kernel_cross`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

Array = jnp.ndarray

_TWO_OVER_PI = 2.0 / jnp.pi


# Taylor coefficients of arcsin(t)/t − 1 in z = t² (t ≤ 1/2, z ≤ 1/4):
# c_k = C(2k,k)/(4^k (2k+1)).
# 25 terms leave a remainder below c_26 (1/4)^26 ≈ 1e-19 relative: exact in float64.
_ASIN_COEFFS = tuple(math.comb(2 * k, k) / (4**k * (2 * k + 1)) for k in range(1, 26))


@jax.custom_jvp
def fast_arcsin(x: Array) -> Array:
    """arcsin(x) on [−1, 1] to float64 rounding (max error ~2e-16), as one fused polynomial.

    XLA's CPU arcsin is a scalar libm call (~30 ns/element); the EoS evaluate it on N n²
    elements per iteration (5·10⁷ at the paper's size), where it dominated the cost. Uses
    arcsin(x) = π/2 − 2 arcsin(√((1 − x)/2)) for |x| > 1/2, so the series argument is ≤ 1/2.
    """
    ax = jnp.abs(x)
    big = ax > 0.5
    t = jnp.where(big, jnp.sqrt(jnp.maximum(0.5 * (1.0 - ax), 0.0)), ax)
    z = t * t
    p = jnp.asarray(_ASIN_COEFFS[-1], dtype=x.dtype)
    for ck in reversed(_ASIN_COEFFS[:-1]):
        p = p * z + ck
    r = t + t * z * p
    r = jnp.where(big, 0.5 * math.pi - 2.0 * r, r)
    return jnp.copysign(r, x)


@fast_arcsin.defjvp
def _fast_arcsin_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (x,), (dx,) = primals, tangents
    return fast_arcsin(x), dx * jax.lax.rsqrt(1.0 - x * x)


def erf_g(k_ab: Array, k_aa: Array, k_bb: Array) -> Array:
    """E[erf(u) erf(v)] for a centred Gaussian pair (paper, definition of G below Eq. 5)."""
    rho = 2.0 * k_ab / jnp.sqrt((1.0 + 2.0 * k_aa) * (1.0 + 2.0 * k_bb))
    return _TWO_OVER_PI * fast_arcsin(jnp.clip(rho, -1.0, 1.0))


def relu_g(k_ab: Array, k_aa: Array, k_bb: Array) -> Array:
    """E[relu(u) relu(v)] for a centred Gaussian pair: the order-1 arc-cosine kernel."""
    norm = jnp.sqrt(k_aa * k_bb)
    # Clip strictly inside [-1, 1]: arccos' derivative diverges at ±1 (the diagonal), and the
    # EoS need derivatives of G. The kernel value itself is continuous there.
    cos = jnp.clip(k_ab / jnp.where(norm > 0, norm, 1.0), -1.0 + 1e-12, 1.0 - 1e-12)
    theta = jnp.arccos(cos)
    return norm * (jnp.sin(theta) + (jnp.pi - theta) * cos) / (2.0 * jnp.pi)


def relu_mean(k_aa: Array) -> Array:
    """E[relu(u)] for u ~ N(0, k_aa): the mean that a non-odd activation adds as a slow variable."""
    return jnp.sqrt(k_aa / (2.0 * jnp.pi))


def linear_g(k_ab: Array, k_aa: Array, k_bb: Array) -> Array:
    """Identity activation: E[u v] = k_ab (the deep-linear case where the VGA is exact)."""
    del k_aa, k_bb
    return k_ab


@dataclass(frozen=True)
class Activation:
    """An activation φ and its kernel G(k_ab, k_aa, k_bb) = E[φ(u) φ(v)], defined together so
    that a network (fleos.nets.models) and its equations of state use the same φ. Calling it
    applies φ."""

    name: str
    fn: Callable[[Array], Array]
    kernel: Callable[[Array, Array, Array], Array]

    def __call__(self, h: Array) -> Array:
        return self.fn(h)


def _identity(h: Array) -> Array:
    return h


ACTIVATIONS: dict[str, Activation] = {
    "erf": Activation("erf", jax.lax.erf, erf_g),
    "relu": Activation("relu", jax.nn.relu, relu_g),
    "linear": Activation("linear", _identity, linear_g),
}


def activation_kernel(activation: str) -> Callable[[Array, Array, Array], Array]:
    """The G-function of an activation by name ('erf', 'relu' or 'linear')."""
    try:
        return ACTIVATIONS[activation].kernel
    except KeyError:
        raise ValueError(
            f"unknown activation {activation!r}; allowed: {sorted(ACTIVATIONS)}"
        ) from None


def post_kernel(K: Array, activation: str = "erf") -> Array:
    """G(K) for a square pre-kernel K (..., m, m): E[φ(h_a) φ(h_b)] with h ~ N(0, K)."""
    d = jnp.diagonal(K, axis1=-2, axis2=-1)
    return activation_kernel(activation)(K, d[..., :, None], d[..., None, :])


def post_kernel_cross(
    K_ab: Array, k_aa: Array, k_bb: Array, activation: str = "erf"
) -> Array:
    """G for a rectangular block: K_ab (..., m_a, m_b), diagonals k_aa (..., m_a) and
    k_bb (..., m_b)."""
    return activation_kernel(activation)(K_ab, k_aa[..., :, None], k_bb[..., None, :])


# ---------------------------------------------------------------------------------------------
# Layer recursions (the GP limit: K^(l) = Q^(l), paper text above Eq. 5)
# ---------------------------------------------------------------------------------------------


def input_pre_kernel(Xa: Array, Xb: Array, Sigma: Array) -> Array:
    """K^(1) = X_a Σ X_bᵀ (paper, below Eq. 5); Σ the input-weight covariance (d × d)."""
    return Xa @ Sigma @ Xb.T


def fcn_gp_kernels(
    X: Array, sigma2s: tuple[float, ...], activation: str = "erf"
) -> list[Array]:
    """NNGP recursion of the L-layer FCN of Eq. 1 on the rows of X (n × d).

    `sigma2s = (σ_1², …, σ_L²)`: layer l's weights have prior variance σ_l² / N_{l−1}
    (readout: σ_L² / N_{L−1}; for the mean-field scaling pass σ_L² already divided by N_{L−1}).
    Returns [K^(1), …, K^(L−1), Q_f]: K^(1) = σ_1² X Xᵀ / d, K^(l) = σ_l² G(K^(l−1)),
    Q_f = σ_L² G(K^(L−1)).
    """
    d = X.shape[-1]
    K = sigma2s[0] * (X @ X.T) / d
    out = [K]
    for s2 in sigma2s[1:]:
        K = s2 * post_kernel(K, activation)
        out.append(K)
    return out


def patches(X: Array, num_patches: int, patch_size: int) -> Array:
    """Cut rows of X (n × N·S) into N non-overlapping patches: (n, N, S), patch i = x[iS:(i+1)S].

    This is the patch convention of Eq. 7. Raises if the width does not factor as N·S.
    """
    if X.shape[-1] != num_patches * patch_size:
        raise ValueError(
            f"input width {X.shape[-1]} is not N·S = {num_patches}·{patch_size}"
        )
    return X.reshape(*X.shape[:-1], num_patches, patch_size)


def cnn2_output_kernel(
    Pa: Array, Pb: Array, Sigma: Array, sigma_a2: float, activation: str = "erf"
) -> Array:
    """Q_f of the 2-layer CNN (Eq. 8): (σ_a²/N) Σ_i G(X Σ Xᵀ)_{μi, νi}.

    Pa: (n_a, N, S) and Pb: (n_b, N, S) patches; Σ: (S, S) input-weight covariance.
    Only same-patch pairs (μi, νi) enter, because a_ic are independent across patches i.
    Works for train × train (Pa is Pb) and test × train blocks alike.
    """
    N = Pa.shape[-2]
    PaS = jnp.einsum("mis,st->mit", Pa, Sigma)
    k_ab = jnp.einsum("mit,nit->imn", PaS, Pb)  # (N, n_a, n_b)
    k_aa = jnp.einsum("mit,mit->im", PaS, Pa)  # (N, n_a)
    k_bb = jnp.einsum("nis,st,nit->in", Pb, Sigma, Pb)  # (N, n_b)
    G = activation_kernel(activation)(k_ab, k_aa[:, :, None], k_bb[:, None, :])
    return (sigma_a2 / N) * jnp.sum(G, axis=0)
