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
from fractions import Fraction
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

Array = jnp.ndarray

_TWO_OVER_PI = 2.0 / jnp.pi


def _compose_affine(coeffs: list[Fraction], a: Fraction, b: Fraction) -> list[Fraction]:
    """Monomial coefficients of p(a + b x) from those of p (exact)."""
    out: list[Fraction] = [Fraction(0)]
    for c in reversed(coeffs):
        shifted = [Fraction(0)] + [b * x for x in out]
        for i, x in enumerate(out):
            shifted[i] += a * x
        shifted[0] += c
        out = shifted
    return out[: len(coeffs)]


def _asin_poly_coeffs(degree: int = 13, taylor_terms: int = 40) -> tuple[float, ...]:
    """Coefficients p_k (k = 0 … degree) of p(z) ≈ (arcsin(t)/t − 1)/z, z = t² ∈ [0, 1/4].

    Chebyshev economization of the Taylor series c_k = C(2k,k)/(4^k (2k+1)), in exact rational
    arithmetic: the series (40 terms, remainder < 4⁻⁴⁰) is written in s = 8z − 1 ∈ [−1, 1]
    and each power s^m above `degree` is replaced by s^m − 2^(1−m) T_m(s), which changes p by
    at most 2^(1−m)|coefficient| on the interval. The dropped part is below 1e-18 for degree
    13 (the Chebyshev coefficients fall ≈ 15× per degree: p's singularity at z = 1 is far from
    [0, 1/4]), against 4⁻²⁶ ≈ 2e-16 for the 25-term Taylor polynomial: the same float64
    accuracy with 13 multiply-adds per element instead of 24.
    """
    taylor = [Fraction(math.comb(2 * k, k), 4**k * (2 * k + 1))
              for k in range(1, taylor_terms + 1)]
    q = _compose_affine(taylor, Fraction(1, 8), Fraction(1, 8))  # p((1 + s)/8)
    cheb = [[1], [0, 1]]
    for _ in range(2, taylor_terms):
        nxt = [0] + [2 * x for x in cheb[-1]]
        for i, x in enumerate(cheb[-2]):
            nxt[i] -= x
        cheb.append(nxt)
    for m in range(taylor_terms - 1, degree, -1):
        c = q[m] / cheb[m][m]
        for i, t in enumerate(cheb[m]):
            q[i] -= c * t
    p = _compose_affine(q[: degree + 1], Fraction(-1), Fraction(8))  # q(8z − 1)
    return tuple(float(x) for x in p)


_ASIN_COEFFS = _asin_poly_coeffs()


@jax.custom_jvp
def fast_arcsin(x: Array) -> Array:
    """arcsin(x) on [−1, 1] to float64 rounding (max error ~2e-16), as one fused polynomial.

    XLA's CPU arcsin is a scalar libm call (~30 ns/element); the EoS evaluate it on N n²
    elements per iteration (5·10⁷ at the paper's size), where it dominated the cost. Uses
    arcsin(x) = π/2 − 2 arcsin(√((1 − x)/2)) for |x| > 1/2, so the polynomial's argument is
    t ≤ 1/2 (z = t² ≤ 1/4, `_asin_poly_coeffs`).
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
    # Two rsqrt of the diagonals, not one sqrt and a division per pair: with k_aa (n_a, 1) and
    # k_bb (1, n_b) the per-pair work is two products (Q_f ≈ 15 % faster at the paper's size).
    rho = 2.0 * k_ab * jax.lax.rsqrt(1.0 + 2.0 * k_aa) * jax.lax.rsqrt(1.0 + 2.0 * k_bb)
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


#: Rows per block in the 2-layer CNN kernels below. Q_f is built from block_rows × block_rows
#: tiles (train × train: only the tiles on and above the diagonal, Q_f being symmetric), each
#: summing all N patches while its N × block_rows² slabs stay in the core's cache, instead of
#: N passes of element-wise work over n × n arrays in memory (bench/RESULTS.md,
#: "The Eq. 8 sweep, before and after").
CNN2_BLOCK_ROWS = 256


def _cnn2_patch_pre_kernel(Pa: Array, Pb: Array, Sigma: Array) -> tuple[Array, Array, Array]:
    """k_ab = P_a Σ P_bᵀ (n_a × n_b) and the diagonals k_aa (n_a), k_bb (n_b) for one patch
    position (Eq. 7: the pre-activation covariance of w·x_μi and w·x_νi, w ~ N(0, Σ))."""
    Za = Pa @ Sigma
    return Za @ Pb.T, jnp.sum(Za * Pa, axis=-1), jnp.sum((Pb @ Sigma) * Pb, axis=-1)


def _row_blocks(X: Array, block_rows: int) -> tuple[Array, int]:
    """X (n, …) split into ⌈n / block_rows⌉ blocks of equal size bs ≤ block_rows, zero-padded:
    (n_blocks, bs, …), and bs. Zero rows have k = 0, hence G = 0."""
    n = X.shape[0]
    n_blocks = -(-n // max(1, block_rows))
    bs = -(-n // n_blocks)  # equal blocks, fewer than n_blocks rows of padding
    pad = [(0, n_blocks * bs - n)] + [(0, 0)] * (X.ndim - 1)
    return jnp.pad(X, pad).reshape(n_blocks, bs, *X.shape[1:]), bs


def _patch_blocks(P: Array, Sigma: Array, block_rows: int) -> tuple[Array, Array, Array, int]:
    """Blocks of patches (n_blocks, N, bs, S), the same times Σ, and their k_μμ
    (n_blocks, N, bs)."""
    blocks, bs = _row_blocks(P, block_rows)
    blocks = jnp.swapaxes(blocks, 1, 2)
    Z = blocks @ Sigma
    return blocks, Z, jnp.sum(Z * blocks, axis=-1), bs


def _upper_tiles(n_blocks: int) -> tuple[Array, Array]:
    b, c = np.triu_indices(n_blocks)
    return jnp.asarray(b, dtype=jnp.int32), jnp.asarray(c, dtype=jnp.int32)


def cnn2_channel_features(P: Array, W: Array, activation: str = "erf") -> Array:
    """φ(w_c·x_μi) of C given channels W (C, S) on patches P (n, N, S), flattened to (n, N·C):
    the finite-C kernel of those channels is (σ_a²/(N C)) F Fᵀ (`cnn2_finite_kernel`)."""
    H = jnp.einsum("mis,cs->mic", P, W)
    return ACTIVATIONS[activation](H).reshape(P.shape[0], -1)


def cnn2_finite_kernel(Pa: Array, Pb: Array, W: Array, sigma_a2: Array,
                       activation: str = "erf") -> Array:
    """Q(W) = (σ_a²/(N C)) Σ_c Σ_i φ(w_c·x_ai) φ(w_c·x_bi) between patch sets Pa (n_a, N, S) and
    Pb (n_b, N, S): the readout's kernel at fixed input weights W (C, S), whose channel average
    `cnn2_output_kernel` is at w ~ N(0, Σ)."""
    N, C = Pa.shape[1], W.shape[0]
    features = partial(cnn2_channel_features, W=W, activation=activation)
    # (c·F)Gᵀ, not c·(FGᵀ): the exact referee's HMC chains follow this rounding, and its C = 1
    # test's R̂ bound fails with the other order (R̂ 1.088 against < 1.05)
    return (sigma_a2 / (N * C)) * features(Pa) @ features(Pb).T


def cnn2_output_kernel(
    Pa: Array, Pb: Array, Sigma: Array, sigma_a2: float, activation: str = "erf",
    block_rows: int = CNN2_BLOCK_ROWS,
) -> Array:
    """Q_f of the 2-layer CNN (Eq. 8): (σ_a²/N) Σ_i G(X Σ Xᵀ)_{μi, νi}.

    Pa: (n_a, N, S) and Pb: (n_b, N, S) patches; Σ: (S, S) input-weight covariance.
    Only same-patch pairs (μi, νi) enter, because a_ic are independent across patches i.
    Works for train × train and test × train blocks alike. Computed in tiles of
    `block_rows` rows and columns, each summing the N patches (`CNN2_BLOCK_ROWS`); when Pb is
    Pa (the same array object), only the tiles on and above the diagonal are computed and
    mirrored (half the work; values equal up to rounding).
    """
    activation_kernel(activation)  # a bad name fails here, in the caller's words
    if Pb is Pa:
        return _cnn2_output_kernel_sym(Pa, Sigma, sigma_a2, activation, block_rows)
    return _cnn2_output_kernel_cross(Pa, Pb, Sigma, sigma_a2, activation, block_rows)


@partial(jax.jit, static_argnames=("activation", "block_rows"))
def _cnn2_output_kernel_sym(
    P: Array, Sigma: Array, sigma_a2: float, activation: str, block_rows: int
) -> Array:
    g = activation_kernel(activation)
    n, N, _ = P.shape
    blocks, Z, kd, bs = _patch_blocks(P, Sigma, block_rows)
    n_blocks = blocks.shape[0]
    bi, ci = _upper_tiles(n_blocks)

    def tile(bc: tuple[Array, Array]) -> Array:
        b, c = bc

        def body(i: int, T: Array) -> Array:
            k = Z[b, i] @ blocks[c, i].T
            return T + g(k, kd[b, i][:, None], kd[c, i][None, :])

        return jax.lax.fori_loop(0, N, body, jnp.zeros((bs, bs), dtype=Z.dtype))

    T = (sigma_a2 / N) * jax.lax.map(tile, (bi, ci))
    Q = jnp.zeros((n_blocks, n_blocks, bs, bs), dtype=T.dtype)
    Q = Q.at[ci, bi].set(jnp.swapaxes(T, 1, 2)).at[bi, ci].set(T)
    return jnp.swapaxes(Q, 1, 2).reshape(n_blocks * bs, n_blocks * bs)[:n, :n]


@partial(jax.jit, static_argnames=("activation", "block_rows"))
def _cnn2_output_kernel_cross(
    Pa: Array, Pb: Array, Sigma: Array, sigma_a2: float, activation: str, block_rows: int
) -> Array:
    g = activation_kernel(activation)
    n_a, N, _ = Pa.shape
    n_b = Pb.shape[0]
    a_blocks, Za, kda, bs = _patch_blocks(Pa, Sigma, block_rows)
    b_blocks, _, kdb, _ = _patch_blocks(Pb, Sigma, block_rows)

    def row(b: Array) -> Array:
        def tile(c: Array) -> Array:
            def body(i: int, T: Array) -> Array:
                k = Za[b, i] @ b_blocks[c, i].T
                return T + g(k, kda[b, i][:, None], kdb[c, i][None, :])

            return jax.lax.fori_loop(0, N, body, jnp.zeros((bs, b_blocks.shape[2]), Za.dtype))

        return jax.lax.map(tile, jnp.arange(b_blocks.shape[0]))  # (n_b_blocks, bs, bs_b)

    T = (sigma_a2 / N) * jax.lax.map(row, jnp.arange(a_blocks.shape[0]))
    return jnp.swapaxes(T, 1, 2).reshape(T.shape[0] * T.shape[2], -1)[:n_a, :n_b]


@partial(jax.jit, static_argnames=("activation", "block_rows"))
def cnn2_output_kernel_vjp(
    P: Array, Sigma: Array, A: Array, sigma_a2: float, activation: str = "erf",
    block_rows: int = CNN2_BLOCK_ROWS,
) -> Array:
    """∇_Σ ⟨A, Q_f(Σ)⟩, symmetric part, for the train × train Q_f of `cnn2_output_kernel`
    (Pa = Pb = P): the trace term of Eq. 8, Tr{A ∂Q_f/∂Σ}, for a fixed field A (n × n), S × S.

    Q_f is symmetric, so A enters through A_s = (A + Aᵀ)/2; the antisymmetric part of A adds
    only an antisymmetric matrix to the plain (unsymmetrized) gradient, which Eq. 8, symmetric
    in Σ, drops. For symmetric A (the EoS field) this is the plain gradient.

    Closed form per patch i, with k = P_i Σ P_iᵀ, d_μ = (1 + 2k_μμ)^(−1/2), ρ = 2 k ∘ d dᵀ and
    G = (2/π) arcsin ρ (erf): W = A_s ∘ (2/π)(1 − ρ²)^(−1/2) (arcsin' = 1/√(1 − u²));
    ∂⟨A_s, G⟩/∂k_μν = 2 W_μν d_μ d_ν through the cross term, and the normalisation d adds
    −2 d_μ² Σ_ν W_μν ρ_μν to ∂/∂k_μμ; with k = P_i Σ P_iᵀ,
    ∇_Σ = P_iᵀ (2 W ∘ d dᵀ) P_i − P_iᵀ diag(2 d² ∘ (W ∘ ρ) 1) P_i.
    No arcsin is evaluated, the element-wise work is one pass over the tiles on and above the
    diagonal (half of n²; `CNN2_BLOCK_ROWS`), against the forward, its derivative and the
    pullback of every intermediate over all n² pairs in `jax.vjp` (same numbers to float64
    rounding: tests/test_kernels.py). linear: Σ_i P_iᵀ A_s P_i. Other activations use
    `jax.vjp` of G, patch by patch.
    """
    N = P.shape[-2]
    A = 0.5 * (A + A.T)
    if activation != "erf":
        g = activation_kernel(activation)
        PT = jnp.swapaxes(P, 0, 1)  # (N, n, S)

        def patch_body(i: int, B: Array) -> Array:
            Pi = PT[i]
            if activation == "linear":
                return B + Pi.T @ (A @ Pi)

            def patch_g(s: Array) -> Array:
                k, k_aa, k_bb = _cnn2_patch_pre_kernel(Pi, Pi, s)
                return g(k, k_aa[:, None], k_bb[None, :])

            _, pullback = jax.vjp(patch_g, Sigma)
            return B + pullback(A)[0]

        return (sigma_a2 / N) * jax.lax.fori_loop(0, N, patch_body, jnp.zeros_like(Sigma))

    blocks, Z, kd, bs = _patch_blocks(P, Sigma, block_rows)
    n_blocks = blocks.shape[0]
    d = jax.lax.rsqrt(1.0 + 2.0 * kd)  # (n_blocks, N, bs); padded rows: d = 1, A = 0
    pad = n_blocks * bs - A.shape[0]
    A4 = jnp.pad(A, ((0, pad), (0, pad))).reshape(n_blocks, bs, n_blocks, bs)
    A4 = jnp.swapaxes(A4, 1, 2)  # A4[b, c]: rows of block b, columns of block c

    def step(carry: tuple[Array, Array], bc: tuple[Array, Array]
             ) -> tuple[tuple[Array, Array], None]:
        # B: Σ over tiles of P_bᵀ (2W ∘ d dᵀ)_bc P_c (S × S); r: (W ∘ ρ) 1, (n_blocks, N, bs)
        b, c = bc
        off = (b != c).astype(Z.dtype)  # a tile above the diagonal also stands for its mirror
        A_bc = A4[b, c]

        def body(i: int, carry: tuple[Array, Array]) -> tuple[Array, Array]:
            B, r = carry
            dd = d[b, i][:, None] * d[c, i][None, :]
            rho = jnp.clip(2.0 * (Z[b, i] @ blocks[c, i].T) * dd, -1.0, 1.0)
            W = A_bc * (_TWO_OVER_PI * jax.lax.rsqrt(1.0 - rho * rho))
            Wr = W * rho
            X = blocks[b, i].T @ ((2.0 * W * dd) @ blocks[c, i])
            r = r.at[b, i].add(jnp.sum(Wr, axis=1)).at[c, i].add(off * jnp.sum(Wr, axis=0))
            return B + X + off * X.T, r

        return jax.lax.fori_loop(0, N, body, carry), None

    bi, ci = _upper_tiles(n_blocks)
    (B, r), _ = jax.lax.scan(step, (jnp.zeros_like(Sigma), jnp.zeros_like(d)), (bi, ci))
    B = B - jnp.einsum("bims,bim,bimt->st", blocks, 2.0 * d * d * r, blocks)
    return (sigma_a2 / N) * B
