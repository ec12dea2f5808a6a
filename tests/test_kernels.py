"""Tests of fleos.core.kernels against Monte Carlo of Gaussian pairs and of random finite networks.

Tolerances: every Monte Carlo comparison allows Z_TOL = 5 standard errors of the MC mean,
the standard error computed from the same sample (sample std / sqrt(M)). With a few dozen
such comparisons in this file, 5 SE keeps the false-alarm rate below ~1e-5 per run while a
wrong kernel (a factor of 2, a missing sqrt, a wrong patch pairing) misses by tens of SE.
Seeds are fixed, so the test is deterministic anyway.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

import fleos  # noqa: F401  (enables float64 in JAX)
from fleos.core import kernels

Z_TOL = 5.0


def _gaussian_pairs(rng, k_ab, k_aa, k_bb, m):
    cov = np.array([[k_aa, k_ab], [k_ab, k_bb]])
    L = np.linalg.cholesky(cov)
    z = rng.standard_normal((m, 2)) @ L.T
    return z[:, 0], z[:, 1]


def _assert_mc(value, samples, label):
    mean = samples.mean()
    se = samples.std(ddof=1) / math.sqrt(samples.size)
    assert abs(float(value) - mean) <= Z_TOL * se + 1e-12, (
        f"{label}: kernel {float(value):.6g} vs MC {mean:.6g} ± {se:.2g} (SE)"
    )


# (k_ab, k_aa, k_bb): positive-definite covariances, incl. negative and near-singular corr.
PAIRS = [(0.3, 1.0, 0.5), (-0.7, 1.2, 0.9), (1.9, 2.0, 2.0), (0.0, 0.4, 3.0), (0.05, 0.1, 0.05)]
ACTS = {
    "erf": erf,
    "relu": lambda u: np.maximum(u, 0.0),
    "linear": lambda u: u,
}


@pytest.mark.parametrize("activation", sorted(ACTS))
def test_g_matches_monte_carlo_of_gaussian_pairs(activation):
    rng = np.random.default_rng(0)
    phi = ACTS[activation]
    g = kernels.activation_kernel(activation)
    for k_ab, k_aa, k_bb in PAIRS:
        u, v = _gaussian_pairs(rng, k_ab, k_aa, k_bb, 400_000)
        _assert_mc(g(k_ab, k_aa, k_bb), phi(u) * phi(v), f"{activation} at {k_ab, k_aa, k_bb}")


def test_g_exact_special_values():
    # erf: E[erf(u)^2] for u ~ N(0, k) is (2/π) arcsin(2k/(1+2k)); k = 1/2 gives arcsin(1/2).
    assert float(kernels.erf_g(0.5, 0.5, 0.5)) == pytest.approx((2 / np.pi) * (np.pi / 6), 1e-14)
    # relu: E[relu(u)^2] = k/2; independent pairs give E[relu(u)] E[relu(v)] = √(k_aa k_bb)/(2π).
    assert float(kernels.relu_g(1.3, 1.3, 1.3)) == pytest.approx(0.65, rel=1e-6)
    assert float(kernels.relu_g(0.0, 2.0, 0.5)) == pytest.approx(1.0 / (2 * np.pi), rel=1e-9)
    assert float(kernels.linear_g(0.7, 1.0, 2.0)) == 0.7


def test_relu_mean_matches_monte_carlo():
    rng = np.random.default_rng(1)
    for k in (0.1, 1.0, 4.0):
        u = math.sqrt(k) * rng.standard_normal(400_000)
        _assert_mc(kernels.relu_mean(k), np.maximum(u, 0.0), f"relu_mean({k})")


def test_unknown_activation_names_the_allowed_ones():
    with pytest.raises(ValueError, match="tanh.*allowed"):
        kernels.activation_kernel("tanh")


def test_post_kernel_and_cross_blocks_are_consistent():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((7, 4))
    K = A @ A.T / 4
    for act in ACTS:
        G = np.asarray(kernels.post_kernel(K, act))
        g = kernels.activation_kernel(act)
        d = np.diag(K)
        # Reference: G on explicitly enumerated (i, j) pairs, one flat vectorized call.
        ii, jj = np.divmod(np.arange(49), 7)
        ref = np.asarray(g(K[ii, jj], d[ii], d[jj])).reshape(7, 7)
        np.testing.assert_allclose(G, ref, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(G, G.T, rtol=1e-12, atol=1e-14)
        # A (test x train) block computed with post_kernel_cross equals the full-matrix block.
        cross = kernels.post_kernel_cross(K[:3, 3:], d[:3], d[3:], act)
        np.testing.assert_allclose(np.asarray(cross), G[:3, 3:], rtol=1e-12, atol=1e-14)


def _fcn_empirical_kernel(rng, X, sigma2s, width, n_nets, phi):
    """Per-network kernels E_a[f f^T] = (σ_L²/N) Σ_j φ(h_j) φ(h_j)ᵀ of random FCNs (Eq. 1),
    averaging the Gaussian readout analytically; returns (n_nets, n, n)."""
    out = []
    d = X.shape[1]
    for _ in range(n_nets):
        h = X @ (rng.standard_normal((d, width)) * math.sqrt(sigma2s[0] / d))
        for s2 in sigma2s[1:-1]:
            h = phi(h) @ (rng.standard_normal((width, width)) * math.sqrt(s2 / width))
        p = phi(h)
        out.append(sigma2s[-1] * p @ p.T / width)
    return np.stack(out)


def test_fcn_gp_kernels_pre_kernels_and_depth_two_exact():
    """L = 2: the readout kernel of a random 1-hidden-layer net is exactly σ_2² G(K^(1)) at
    any width (h^(1) is exactly Gaussian), so plain MC over networks must match within SE."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((4, 6))
    sigma2s = (1.5, 2.0)
    Ks = kernels.fcn_gp_kernels(X, sigma2s, "erf")
    assert len(Ks) == 2
    np.testing.assert_allclose(np.asarray(Ks[0]), 1.5 * X @ X.T / 6, rtol=1e-13)
    emp = _fcn_empirical_kernel(rng, X, sigma2s, width=8, n_nets=40_000, phi=erf)
    for a, b in itertools.combinations_with_replacement(range(4), 2):
        _assert_mc(Ks[1][a, b], emp[:, a, b], f"Q_f[{a},{b}]")


@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_fcn_gp_kernels_three_layers_wide_network(activation):
    """L = 3 at width N: h^(2) is Gaussian only given layer 1, whose kernel fluctuates with
    variance O(1/N); E[G(K̂)] - G(K) = ½ G''·Var(K̂) = O(1/N). For erf/relu with O(1) kernels
    |G''| ≲ 1 and Var(K̂^(2)_ab) ≤ σ_2⁴ E[φ_a² φ_b²]/N, so we allow, besides 5 SE, a bias of
    σ_3² σ_2⁴ max E[φ⁴]/N (a generous bound on the 1/N term)."""
    rng = np.random.default_rng(4)
    phi = ACTS[activation]
    X = rng.standard_normal((3, 5))
    sigma2s = (1.0, 1.5, 2.0)
    width = 400
    Ks = kernels.fcn_gp_kernels(X, sigma2s, activation)
    assert len(Ks) == 3
    emp = _fcn_empirical_kernel(rng, X, sigma2s, width=width, n_nets=400, phi=phi)
    # E[φ⁴] of the layer-1 post-activations, from a direct sample (bounds Var of K̂^(2)).
    h1 = X @ rng.standard_normal((5, 20_000)) / math.sqrt(5)
    phi4 = float(np.max(np.mean(phi(h1) ** 4, axis=1)))
    bias = sigma2s[2] * sigma2s[1] ** 2 * phi4 / width
    for a, b in itertools.combinations_with_replacement(range(3), 2):
        mean = emp[:, a, b].mean()
        se = emp[:, a, b].std(ddof=1) / math.sqrt(emp.shape[0])
        assert abs(float(Ks[2][a, b]) - mean) <= Z_TOL * se + bias, (a, b, mean, se, bias)


def test_patches_convention_and_errors():
    X = np.arange(2 * 12, dtype=float).reshape(2, 12)
    P = np.asarray(kernels.patches(X, 3, 4))
    assert P.shape == (2, 3, 4)
    for i in range(3):
        np.testing.assert_array_equal(P[:, i], X[:, 4 * i : 4 * (i + 1)])  # x[iS:(i+1)S]
    with pytest.raises(ValueError, match="13"):
        kernels.patches(np.zeros((2, 13)), 3, 4)
    with pytest.raises(ValueError):
        kernels.patches(np.zeros((2, 12)), 4, 4)


def _cnn2_loop(Xa, Xb, Sigma, N, S, sigma_a2):
    """Direct loop transcription of Eq. 8, second line: (σ_a²/N) Σ_i G(x_μi Σ x_νi)."""
    out = np.zeros((Xa.shape[0], Xb.shape[0]))
    for m in range(Xa.shape[0]):
        for n in range(Xb.shape[0]):
            acc = 0.0
            for i in range(N):
                u = Xa[m, i * S : (i + 1) * S]
                v = Xb[n, i * S : (i + 1) * S]
                kab, kaa, kbb = u @ Sigma @ v, u @ Sigma @ u, v @ Sigma @ v
                acc += (2 / np.pi) * math.asin(2 * kab / math.sqrt((1 + 2 * kaa) * (1 + 2 * kbb)))
            out[m, n] = sigma_a2 / N * acc
    return out


def _random_sigma(rng, S):
    A = rng.standard_normal((S, S))
    return A @ A.T / S + 0.1 * np.eye(S)


def test_cnn2_output_kernel_matches_direct_loop():
    rng = np.random.default_rng(5)
    N, S = 3, 4
    Xa, Xb = rng.standard_normal((5, N * S)), rng.standard_normal((2, N * S))
    Sigma = _random_sigma(rng, S) / S
    Pa, Pb = kernels.patches(Xa, N, S), kernels.patches(Xb, N, S)
    for block_rows in (2, 64):  # padded row blocks (5 = 2 + 2 + 1), and one block
        np.testing.assert_allclose(
            np.asarray(kernels.cnn2_output_kernel(Pa, Pb, Sigma, 1.7, block_rows=block_rows)),
            _cnn2_loop(Xa, Xb, Sigma, N, S, 1.7),
            rtol=1e-12,
        )
    # Train x train is symmetric and equals the loop too.
    Q = np.asarray(kernels.cnn2_output_kernel(Pa, Pa, Sigma, 1.7))
    np.testing.assert_allclose(Q, _cnn2_loop(Xa, Xa, Sigma, N, S, 1.7), rtol=1e-12)


def _cnn2_einsum(Pa, Pb, Sigma, sigma_a2, activation):
    """Q_f with all patches at once (einsum over (N, n_a, n_b)): an independent vectorised
    transcription of Eq. 8, second line, for autodiff references."""
    PaS = jnp.einsum("mis,st->mit", Pa, Sigma)
    k_ab = jnp.einsum("mit,nit->imn", PaS, Pb)
    k_aa = jnp.einsum("mit,mit->im", PaS, Pa)
    k_bb = jnp.einsum("nis,st,nit->in", Pb, Sigma, Pb)
    G = kernels.activation_kernel(activation)(k_ab, k_aa[:, :, None], k_bb[:, None, :])
    return sigma_a2 / Pa.shape[-2] * jnp.sum(G, axis=0)


@pytest.mark.parametrize("block_rows", [16, 64])  # 40 rows: padded blocks, and one block
@pytest.mark.parametrize("activation", ["erf", "linear", "relu"])
def test_cnn2_output_kernel_vjp_matches_autodiff(activation, block_rows):
    """The closed-form pullback ∇_Σ⟨A, Q_f(Σ)⟩ (symmetric part) against `jax.vjp` of the
    all-patch einsum form, at a random Σ and a random non-symmetric A (whose antisymmetric
    part must drop out), over padded and unpadded tiles. Both are exact in exact arithmetic;
    the tolerance is float64 rounding: sums of
    n² N ≈ 10⁴ terms of size ≤ max|A|, relative error ≲ 10⁴ · 1e-16 per entry of B, so 1e-12
    of max|B| (the same forward at 1e-13)."""
    rng = np.random.default_rng(11)
    n, N, S = 40, 3, 5
    P = jnp.asarray(rng.standard_normal((n, N, S)))
    Sigma = jnp.asarray(_random_sigma(rng, S) * (2.0 / S))
    A = jnp.asarray(rng.standard_normal((n, n)))
    Q_ref, pullback = jax.vjp(lambda s: _cnn2_einsum(P, P, s, 1.7, activation), Sigma)
    Q = kernels.cnn2_output_kernel(P, P, Sigma, 1.7, activation, block_rows)
    np.testing.assert_allclose(np.asarray(Q), np.asarray(Q_ref), rtol=0,
                               atol=1e-13 * float(jnp.max(jnp.abs(Q_ref))))
    (B_ref,) = pullback(A)
    B_ref = 0.5 * (B_ref + B_ref.T)  # the symmetric part, which the closed form returns
    B = kernels.cnn2_output_kernel_vjp(P, Sigma, A, 1.7, activation, block_rows)
    np.testing.assert_allclose(np.asarray(B), np.asarray(B_ref), rtol=0,
                               atol=1e-12 * float(jnp.max(jnp.abs(B_ref))))


def test_cnn2_output_kernel_matches_monte_carlo_of_random_cnns():
    """E[f(x) f(x')] over the prior of Eq. 7 (a_ic ~ N(0, σ_a²/(NC)), w_c ~ N(0, Σ)) equals
    Q_f exactly at any C (a is independent across patches and channels), so plain MC of
    whole random networks must match within 5 SE."""
    rng = np.random.default_rng(6)
    N, S, C, sigma_a2 = 3, 4, 2, 2.0
    X = rng.standard_normal((3, N * S))
    Sigma = _random_sigma(rng, S) * (2.0 / S)
    Lw = np.linalg.cholesky(Sigma)
    M = 100_000
    w = rng.standard_normal((M, C, S)) @ Lw.T  # (M, C, S)
    a = rng.standard_normal((M, N, C)) * math.sqrt(sigma_a2 / (N * C))
    P = X.reshape(3, N, S)
    pre = np.einsum("mcs,nis->mnic", w, P)  # (M, n, N, C)
    f = np.einsum("mic,mnic->mn", a, erf(pre))  # Eq. 7
    Q = np.asarray(kernels.cnn2_output_kernel(P, P, Sigma, sigma_a2))
    for m, n in itertools.combinations_with_replacement(range(3), 2):
        _assert_mc(Q[m, n], f[:, m] * f[:, n], f"Q_f[{m},{n}]")


def test_fast_arcsin_matches_numpy():
    """The polynomial arcsin used by erf_g agrees with numpy to float64 rounding."""
    fast_arcsin = kernels.fast_arcsin
    x = np.concatenate([np.linspace(-1, 1, 100001), [0.5, -0.5, 1 - 1e-15, 1e-300]])
    err = np.abs(np.asarray(fast_arcsin(jnp.asarray(x))) - np.arcsin(x))
    assert err.max() <= 4.5e-16  # two float64 ulps of pi/2
    xs = jnp.linspace(-0.99, 0.99, 1001)
    d = jax.vmap(jax.grad(fast_arcsin))(xs)
    np.testing.assert_allclose(np.asarray(d), 1 / np.sqrt(1 - np.asarray(xs) ** 2), rtol=1e-14)
