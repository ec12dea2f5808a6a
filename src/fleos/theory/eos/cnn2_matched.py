"""Eq. 8 without the Gaussian ansatz for Σ: the moment-matched mean-field EoS of the 2-layer CNN.

In the mean-field picture behind Eq. 8 every channel's input weights w feel the other channels
only through the kernel: given Q_f, the law of one channel is the tilted prior

    p(w) ∝ exp(−S |w|² / (2σ_w²) + F(w)),   F(w) = (1/2C) ⟨A, q(w)⟩,   A = εεᵀ − K_f⁻¹,
    q(w)_μν = (σ_a²/N) Σ_i φ(w·x_μi) φ(w·x_νi)

(derivation: docs/derivations/cnn2.md, "Beyond the Gaussian channel"). Eq. 8 replaces p by the
Gaussian that minimizes KL(N(0, Σ) ‖ p) (the free energy F(Σ) of `fleos.theory.eos.cnn2`; the
tilt here is a different F, of w), so its Σ is not the
covariance of p when F is not quadratic in w (erf). The paper names this neglect, "type (iv)"
corrections, and expects it to be small when Q_f has a dense dominant spectrum; for a single
teacher direction it is not (paper, Myrtle-5 section).

This module keeps Eq. 8's other lines (f̄ and Q_f from a Gaussian channel of covariance Σ) and
replaces its last line by moment matching, Σ = Cov_p(w), with A evaluated at Q_f(Σ):

    Σ = M(Σ) := E_{p_{A(Σ)}}[w wᵀ].

M is estimated by self-normalized importance sampling from the proposal N(0, Σ), with the
proposal's exact second moment as a control variate,

    M̂(Σ) = Σ + Σ_k (ω̄_k − 1/M) w_k w_kᵀ,   w_k = L z_k,  L Lᵀ = Σ,
    log ω_k = F(w_k) − S |w_k|² / (2σ_w²) + |z_k|² / 2,

with the same standard normals z_k at every evaluation (common random numbers), so that M̂ is
a smooth deterministic map and Anderson acceleration solves Σ = M̂(Σ) to a tight residual. The
Monte Carlo error of the answer comes from the z_k alone; `matched_diagnostics` estimates it
(delta method), and a second seed checks it.

Exact references (tests/test_eos_cnn2_matched.py): with a linear activation F is quadratic, p
is Gaussian and the fixed point is Eq. 8's Σ exactly (all weights equal); for erf at S = 2 the
covariance of p by quadrature on a grid; C → ∞ gives the GP.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fleos.core import gp
from fleos.core.kernels import ACTIVATIONS, cnn2_output_kernel
from fleos.theory.eos.cnn2 import (
    CNN2Problem,
    _tril_inverse,
    discrepancy_and_inverse,
    solve_cnn2,
)
from fleos.theory.solvers import SolveResult, anderson

Array = jnp.ndarray

#: samples of the proposal per evaluation of M̂, in batches of this many (memory: batch·n·N floats)
BATCH = 128
#: samples per evaluation by default (= the workflow's theory.matched_samples default): a top-Σ
#: Monte Carlo SE of 0.07-1.3 % at the paper's Fig. 3 settings (studies/perf_history.md "The
#: moment-matched EoS")
DEFAULT_SAMPLES = 4096


@partial(jax.jit, static_argnames=("activation",))
def channel_log_tilt(
    P: Array, w: Array, eps: Array, Kinv: Array, coef: float, activation: str = "erf"
) -> Array:
    """F(w) = coef · Σ_i [(ε·φ_i)² − φ_iᵀ K_f⁻¹ φ_i], φ_i = φ(P_i w), for a batch w (B, S);
    with coef = σ_a²/(2NC) this is (1/2C)⟨εεᵀ − K_f⁻¹, q(w)⟩. P: (n, N, S). Returns (B,)."""
    # φ from the registry that also gives Eq. 8 its kernel G, so tilt and Q_f describe one φ
    phi = ACTIVATIONS[activation](jnp.einsum("mis,bs->bmi", P, w))  # (B, n, N)
    along_eps = jnp.einsum("m,bmi->bi", eps, phi)
    Kphi = jnp.einsum("km,bmi->bki", Kinv, phi)
    return coef * jnp.sum(along_eps**2 - jnp.sum(phi * Kphi, axis=1), axis=1)


@partial(jax.jit, static_argnames=("activation",))
def channel_log_tilt_saturated(
    P: Array, w: Array, E: Array, Kinv: Array, c: float, activation: str = "erf"
) -> tuple[Array, Array]:
    """The exact tilt of one channel given a kernel K of the others, for a batch w (B, S):

        ½ tr[(I + M)⁻¹ T] − ½ log det(I + M),   M = c ΦᵀK⁻¹Φ,  T = c ΦᵀEΦ   (N × N),

    Φ = φ(P w) (n × N), c = σ_a²/(NC), E = εεᵀ with ε = K⁻¹y: by Woodbury, the change of
    log N(y; 0, K + cΦΦᵀ) when the channel is added. Its first order in c is
    `channel_log_tilt` at coef = c/2 (the one-channel law's (1/2C)⟨εεᵀ − K⁻¹, q⟩); where M is
    not small against I the exact tilt saturates (docs/derivations/cnn2.md, "The field test
    at the paper's scale"). The n² products run in the inputs' dtype (float32 for speed), the
    N × N algebra in float64. Returns the tilts (B,) and each candidate's top eigenvalue of M."""
    N = P.shape[1]
    phi = ACTIVATIONS[activation](jnp.einsum("mis,bs->bmi", P, w.astype(P.dtype)))
    M = c * jnp.einsum("bmi,bmj->bij", phi,
                       jnp.einsum("mk,bki->bmi", Kinv, phi)).astype(jnp.float64)
    T = c * jnp.einsum("bmi,bmj->bij", phi,
                       jnp.einsum("mk,bki->bmi", E, phi)).astype(jnp.float64)
    M, T = 0.5 * (M + jnp.swapaxes(M, 1, 2)), 0.5 * (T + jnp.swapaxes(T, 1, 2))
    chol = jnp.linalg.cholesky(jnp.eye(N, dtype=jnp.float64) + M)
    quad = jnp.trace(jax.scipy.linalg.cho_solve((chol, True), T), axis1=1, axis2=2)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
    return 0.5 * quad - 0.5 * logdet, jnp.linalg.eigvalsh(M)[:, -1]


#: row tiles of L⁻¹ in `_tilt_triangular`: 10 of 16 blocks multiplied. One core, n = 1600, 4096
#: samples: 1, 4, 8, 16 tiles take 2.46, 2.11, 2.26, 2.83 CPU-s for the tilt (smaller products
#: run below the matrix-product peak)
TILES = 4


@partial(jax.jit, static_argnames=("activation", "tiles"))
def _tilt_triangular(P: Array, w: Array, eps: Array, Linv: Array, coef: float,
                     activation: str = "erf", tiles: int = TILES) -> Array:
    """`channel_log_tilt` with K_f⁻¹ = L⁻ᵀL⁻¹ (K_f = L Lᵀ): φ_iᵀK_f⁻¹φ_i = |L⁻¹φ_i|², and the
    product L⁻¹Φ skips the zero tiles above L⁻¹'s diagonal, so it costs (T + 1)/(2T) of the
    full K_f⁻¹Φ with T row tiles (0.625 at T = 4). That product is ≈ 3/4 of an evaluation of
    M̂ at the paper's n = 1600 (bench/RESULTS.md, "The moment-matched EoS and the fluctuation
    correction, before and after")."""
    n = P.shape[0]
    tile = -(-n // tiles)
    phi = ACTIVATIONS[activation](jnp.einsum("mis,bs->mbi", P, w))  # (n, B, N)
    along_eps = jnp.einsum("m,mbi->bi", eps, phi)
    flat = phi.reshape(n, -1)
    quad = jnp.zeros(flat.shape[1], dtype=flat.dtype)
    for r0 in range(0, n, tile):
        r1 = min(r0 + tile, n)
        quad = quad + jnp.sum(jnp.square(Linv[r0:r1, :r1] @ flat[:r1]), axis=0)
    return coef * jnp.sum(along_eps**2 - quad.reshape(along_eps.shape), axis=1)


def _log_weights(Sigma: Array, z: Array, P: Array, y: Array, inv_C: Array, sigma2: Array,
                 sigma_a2: Array, sigma_w2: Array, activation: str) -> tuple[Array, Array]:
    """Proposal draws w = L z and their log importance weights (unnormalized)."""
    S, N = P.shape[-1], P.shape[1]
    # ε and the Cholesky factor of K_f as in `discrepancy_and_inverse`, but K_f⁻¹ only as L⁻¹
    fit = gp.gp_fit(cnn2_output_kernel(P, P, Sigma, sigma_a2, activation), y, sigma2)
    eps, Linv = gp.discrepancy(fit), _tril_inverse(fit.chol)
    w = z @ jnp.linalg.cholesky(Sigma).T
    coef = sigma_a2 / (2.0 * N) * inv_C
    # The tilt in float32 (K_f and L⁻¹ are formed in float64): 2.5x faster at the paper's
    # n = 1600, and within 5.4e-6 of float64 where F's spread over the samples is 1.3
    # (measured at the GP Σ, C = 640); the linear-network test holds the
    # resulting weights equal to 1e-6.
    f32 = partial(jnp.asarray, dtype=jnp.float32)
    P32, eps32, Linv32 = f32(P), f32(eps), f32(Linv)
    tilt = jax.lax.map(
        lambda wb: _tilt_triangular(P32, f32(wb), eps32, Linv32, coef, activation),
        w.reshape(-1, BATCH, S)).reshape(-1).astype(w.dtype)
    logw = tilt - S / (2.0 * sigma_w2) * jnp.sum(w * w, axis=1) + 0.5 * jnp.sum(z * z, axis=1)
    return w, logw


_log_weights_jit = jax.jit(_log_weights, static_argnames=("activation",))


@partial(jax.jit, static_argnames=("activation",))
def _matched_map_scaled(u: Array, z: Array, P: Array, y: Array, inv_C: Array, sigma2: Array,
                        sigma_a2: Array, sigma_w2: Array, activation: str) -> Array:
    """M̂(Σ) in the units of the GP covariance (u = Σ S/σ_w², the GP at u = I)."""
    S = P.shape[-1]
    unit = sigma_w2 / S
    Sigma = 0.5 * (u + u.T) * unit
    w, logw = _log_weights(Sigma, z, P, y, inv_C, sigma2, sigma_a2, sigma_w2, activation)
    dev = jax.nn.softmax(logw) - 1.0 / logw.shape[0]  # ω̄_k − 1/M: the control variate
    new = Sigma + w.T @ (dev[:, None] * w)
    return 0.5 * (new + new.T) / unit


def _base_normals(problem: CNN2Problem, n_samples: int, seed: int) -> Array:
    if n_samples < BATCH or n_samples % BATCH:
        raise ValueError(f"n_samples must be a positive multiple of {BATCH}, got {n_samples}")
    z = np.random.default_rng(seed).standard_normal((n_samples, problem.S))
    return jnp.asarray(z, dtype=jnp.float64)


def _args(problem: CNN2Problem, C: float, z: Array) -> tuple:
    f64 = partial(jnp.asarray, dtype=jnp.float64)
    return (z, problem.P, problem.y, f64(1.0 / C), f64(problem.sigma2), f64(problem.sigma_a2),
            f64(problem.sigma_w2))


def field_of(problem: CNN2Problem, Sigma: Array) -> Array:
    """Eq. 8's field A(Σ) = εεᵀ − K_f⁻¹ at the Gaussian channel of covariance Σ (n × n)."""
    eps, Kinv = discrepancy_and_inverse(problem.P, problem.y, jnp.asarray(Sigma, jnp.float64),
                                        problem.sigma2, problem.sigma_a2, problem.activation)
    return jnp.outer(eps, eps) - Kinv


@partial(jax.jit, static_argnames=("activation", "points"))
def _grid_moments(P: Array, A: Array, coef: Array, prior_prec: Array, half_width: Array, *,
                  points: int, activation: str) -> tuple[Array, Array, Array]:
    grid = jnp.linspace(-half_width, half_width, points)
    w = jnp.stack(jnp.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)

    def log_density(wb: Array) -> Array:
        phi = ACTIVATIONS[activation](jnp.einsum("mis,bs->bmi", P, wb))  # (B, n, N)
        tilt = coef * jnp.einsum("bmi,mk,bki->b", phi, A, phi)
        return tilt - 0.5 * prior_prec * jnp.sum(wb**2, axis=1)

    logp = jax.lax.map(log_density, w.reshape(points, points, 2)).reshape(-1)
    p = jnp.exp(logp - logp.max())
    p = p / p.sum()
    edge = jnp.max(jnp.where(jnp.max(jnp.abs(w), axis=1) >= half_width, p, 0.0)) / p.max()
    return w.T @ (p[:, None] * w), jnp.sum(p[:, None] * w, axis=0), edge


def channel_covariance_on_grid(problem: CNN2Problem, C: float, A: Array, *,
                               points: int = 801, half_width: float = 10.0) -> Array:
    """Cov_p(w) of the channel law p_A(w) ∝ exp(−S|w|²/(2σ_w²) + (1/2C)⟨A, q(w)⟩) (module
    docstring) at a GIVEN field A (n × n), by quadrature on a square grid of `points`² nodes
    over [−half_width, half_width]² in units of the prior's standard deviation: S = 2 only.

    Unlike `matched_map`, A need not be Eq. 8's A(Σ): the field test evaluates the closure at a
    field measured from exact posterior draws (studies/field_test). p is even in w (φ odd), so
    its covariance is its second moment. Raises if p has visible mass on the grid's edge (more
    than 1e-12 of its peak) or if its mean is not zero to quadrature accuracy."""
    if problem.S != 2:
        raise ValueError(f"channel_covariance_on_grid: S must be 2, got {problem.S}")
    A = jnp.asarray(A, dtype=jnp.float64)
    if A.shape != (problem.n, problem.n):
        raise ValueError(f"channel_covariance_on_grid: A must be ({problem.n}, {problem.n}), "
                         f"got {A.shape}")
    sd = float(np.sqrt(problem.sigma_w2 / problem.S))
    coef = problem.sigma_a2 / (2.0 * problem.N * C)
    second, mean, edge = _grid_moments(
        problem.P, 0.5 * (A + A.T), jnp.asarray(coef, jnp.float64),
        jnp.asarray(1.0 / sd**2, jnp.float64), jnp.asarray(half_width * sd, jnp.float64),
        points=int(points), activation=problem.activation)
    if float(edge) > 1e-12:
        raise ValueError(f"channel_covariance_on_grid: the channel law reaches the grid's edge "
                         f"(density {float(edge):.1e} of its peak); raise half_width")
    if float(jnp.max(jnp.abs(mean))) > 1e-8 * sd:
        raise ValueError(f"channel_covariance_on_grid: non-zero mean {np.asarray(mean)}")
    return 0.5 * (second + second.T)


def matched_map(problem: CNN2Problem, C: float, Sigma: Array, *, n_samples: int = DEFAULT_SAMPLES,
                seed: int = 0) -> Array:
    """One evaluation of M̂(Σ): the importance-sampled covariance of the channel law p at
    A = A(Σ) (module docstring)."""
    if not C > 0:
        raise ValueError(f"matched_map: C must be > 0, got {C}")
    z = _base_normals(problem, n_samples, seed)
    unit = problem.sigma_w2 / problem.S
    u = jnp.asarray(Sigma, dtype=jnp.float64) / unit
    return _matched_map_scaled(u, *_args(problem, C, z), activation=problem.activation) * unit


def solve_cnn2_matched(
    problem: CNN2Problem,
    C: float,
    Sigma0: Array | None = None,
    *,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    tol: float = 1e-4,
    max_iter: int = 200,
    m: int = 6,
    damping: float = 0.5,
) -> SolveResult:
    """Solve Σ = M̂(Σ) at channel count C (x of the result = Σ) by Anderson acceleration.

    Sigma0: start (default: Eq. 8's Σ at the same C, `solve_cnn2`). tol bounds
    ||M̂(Σ) − Σ||_F in units of the GP covariance σ_w²/S at the returned Σ. The default 1e-4 is
    far below the Monte Carlo error (the top eigenvalue's SE is 0.008-0.016 in these units at
    the paper's n = 1600, C = 640-320 with 4096 samples) and well above the float32 rounding
    floor of M̂ (~2e-6 at S = 64). Measured evaluations at n = 1600, S = 64: 40 and 49 with
    tol 1e-5, 30 and 37 with 1e-4 (C = 640, 320; the same top Σ eigenvalue to 5 digits); at
    S = 16: 5-11 with 1e-5, 4-9 with 1e-4 (studies/perf_history.md "The moment-matched EoS"). The
    Monte Carlo error of Σ (from the n_samples common normals of `seed`) is not in the residual:
    see `matched_diagnostics`.

    m, damping: Anderson's history and mixing β. β = 1/2 because, as for Eq. 8
    (`fleos.theory.eos.cnn2`), the plain step overshoots along Σ's top mode at small C.
    Evaluations at the paper's n = 800, C = 320 and 160, from Eq. 8's Σ: 30 and 38 with m = 6,
    β = 1; 25 and 31 with m = 6, β = 1/2; 22 and 25 with Eq. 8's m = 12, β = 1/2 (top Σ equal
    to 1.4e-6 relative in all, 0.004 of its Monte Carlo SE). m = 12 is not used: on the
    strongly non-Gaussian test problem (test_erf_fixed_point_is_a_fixed_point, C = 4) it
    stalls at a residual of 0.03, where m = 6 converges with either β (32 evaluations).
    """
    if not C > 0:
        raise ValueError(f"solve_cnn2_matched: C must be > 0, got {C}")
    t0 = time.perf_counter()
    if Sigma0 is None:
        Sigma0 = solve_cnn2(problem, C).x
    unit = problem.sigma_w2 / problem.S
    z = _base_normals(problem, n_samples, seed)
    args = _args(problem, C, z)

    def fp(u: Array, *a: Any) -> Array:
        return _matched_map_scaled(u, *a, activation=problem.activation)

    res = anderson(fp, jnp.asarray(Sigma0, dtype=jnp.float64) / unit, args=args, tol=tol,
                   max_iter=max_iter, m=m, damping=damping)
    x = 0.5 * (res.x + res.x.T) * unit
    return replace(res, x=x, seconds=time.perf_counter() - t0)


def matched_diagnostics(problem: CNN2Problem, C: float, Sigma: Array, *,
                        n_samples: int = DEFAULT_SAMPLES, seed: int = 0) -> dict[str, float]:
    """Importance-sampling health and Monte Carlo error of M̂ at Σ.

    Returns kish_ess (effective sample size of the weights, out of n_samples), logw_sd, and for
    the top eigenvector u of Σ: top (uᵀ M̂ u) and top_se, its delta-method standard error,
    sd_k[r_k (g_k − top) − (g_k − uᵀΣu)]/√M with g_k = (u·w_k)² and r_k = M ω̄_k (the
    self-normalized estimator minus its control variate, linearized). At a fixed point Σ* this
    is the error of one evaluation of M̂, not of Σ* itself, which the feedback through A(Σ)
    scales by (I − J)⁻¹; at the paper's n = 1600, C = 320 and 640 two seeds' fixed points
    differ by 0.3-0.4 of it (studies/perf_history.md "The moment-matched EoS"), so it is used as a
    conservative SE.
    """
    z = _base_normals(problem, n_samples, seed)
    Sigma = jnp.asarray(Sigma, dtype=jnp.float64)
    w, logw = _log_weights_jit(Sigma, *_args(problem, C, z), activation=problem.activation)
    u = np.linalg.eigh(np.asarray(Sigma))[1][:, -1]
    top, top_se = weighted_quadratic_form(w, logw, Sigma, u)
    om = np.exp(np.asarray(logw) - np.max(logw))
    om /= om.sum()
    return {"kish_ess": float(1.0 / np.sum(om**2)), "logw_sd": float(np.std(logw)),
            "top": top, "top_se": top_se}


def weighted_quadratic_form(w: Array, logw: Array, Sigma_prop: Array,
                            u: np.ndarray) -> tuple[float, float]:
    """uᵀ M̂ u and its delta-method SE for a pool w_k ~ N(0, Σ_prop) with log weights logw:
    M̂ = Σ_prop + Σ_k (ω̄_k − 1/M) w_k w_kᵀ (the proposal's exact second moment as a control
    variate); `weighted_moment` with g_k = (u·w_k)²."""
    w = np.asarray(w)
    return weighted_moment((w @ u) ** 2, logw, float(u @ np.asarray(Sigma_prop) @ u))


def weighted_moment(g: np.ndarray, logw: Array, prop: float) -> tuple[float, float]:
    """E_p[g] ≈ prop + Σ_k (ω̄_k − 1/M) g_k for a pool with log weights logw whose proposal
    mean of g is `prop` exactly (the control variate), and its delta-method SE
    sd_k[M ω̄_k (g_k − value) − (g_k − prop)]/√M."""
    g, logw = np.asarray(g, np.float64), np.asarray(logw)
    om = np.exp(logw - logw.max())
    om /= om.sum()
    M = len(om)
    value = prop + float(np.sum((om - 1.0 / M) * g))
    lin = M * om * (g - value) - (g - prop)
    return value, float(np.std(lin) / np.sqrt(M))
