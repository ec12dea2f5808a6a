"""Tests of the exact referee (fleos.sampling.referee): HMC on the input weights of the 2-layer
CNN with the readout integrated out, against exact integrals of the same posterior.

* erf, C = 1, S = 2: a 2-D grid integral of the posterior (E[w wᵀ], α_train, α_test);
* linear φ, S = 1, C = 8: the posterior depends on W only through s = Σ_c w_c²/C, whose prior
  is σ_w² χ²_C / C, so every posterior mean is a 1-D integral (exercises the 1/C of Q(W));
* the sign of the field in Eq. 8, at C = 64 (docs/derivations/cnn2.md, "The sign of the field").

Tolerances are |referee − exact| < 4 SE, the SE from the multi-chain ESS (`mcse_mean`): with 6
comparisons per test a correct sampler fails with probability ≈ 4·10⁻⁴.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import fleos  # noqa: F401  (enables float64)
from fleos.core.kernels import cnn2_output_kernel, patches
from fleos.nets.data import make_dataset
from fleos.sampling.referee import Data, cnn2_exact_posterior, kernel, log_density
from fleos.theory.eos.cnn2 import CNN2Problem, cnn2_observables, sweep_cnn2, trace_term

# The reference size (docs/derivations/cnn2.md, "The sign of the field"): S = 2, N = 3, n = 40,
# the cnn2 linear teacher of fleos.nets.data, σ² = 0.1, σ_a² = σ_w² = 2.
MODEL = {"S": 2, "N": 3, "activation": "erf", "sigma_w2": 2.0, "sigma_a2": 2.0}
SIGMA2 = 0.1


def reference_data(n_test: int = 200):
    return make_dataset("cnn2", MODEL, 40, n_test, teacher_seed=0, data_seed=1)


def _z(est: float, exact: float, se: float) -> float:
    return (est - exact) / se


def test_kernel_is_the_channel_average():
    """Q(W) = (1/C) Σ_c q(w_c) with q(w) = (σ_a²/N) Σ_i φ(w·x_i) φ(w·x_i)ᵀ, so C copies of one
    channel give that channel's q, and a mean over channels of single-channel kernels is Q."""
    ds = reference_data(5)
    P = patches(jnp.asarray(ds.X), 3, 2)
    W = jax.random.normal(jax.random.key(3), (5, 2), dtype=jnp.float64)
    singles = [kernel(P, P, W[c:c + 1], 2.0) for c in range(5)]
    np.testing.assert_allclose(np.asarray(kernel(P, P, W, 2.0)),
                               np.asarray(sum(singles) / 5), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(np.asarray(kernel(P, P, jnp.tile(W[:1], (7, 1)), 2.0)),
                               np.asarray(singles[0]), rtol=1e-13, atol=1e-13)


def _grid_posterior(ds, points: int):
    """Posterior weights of u = w/√(σ_w²/S) on a points × points grid for C = 1: a coarse
    grid on ±6 prior SDs locates the mass, then the fine grid covers its bounding box (the
    posterior at σ² = 0.1 is two narrow modes ±u*, |u*| ≈ 0.47, SD ≈ 0.08, so a uniform
    400 × 400 grid on ±6 SDs would put only ~3 points across a mode). On the fitted box, 160,
    240 and 400 points per axis give the same E[u uᵀ] to 8 digits."""
    f64 = jnp.float64
    data = Data(patches(jnp.asarray(ds.X, f64), 3, 2), jnp.asarray(ds.y, f64),
                jnp.asarray(SIGMA2, f64), jnp.asarray(2.0, f64), jnp.asarray(2.0, f64))
    logp = jax.jit(jax.vmap(lambda u: log_density(u[None, :], data)))

    def grid(lo, hi, m):
        axes = [np.linspace(lo[k], hi[k], m) for k in range(2)]
        U = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
        lp = np.concatenate([np.asarray(logp(jnp.asarray(b))) for b in np.array_split(U, 16)])
        return U, lp, [a[1] - a[0] for a in axes]

    U, lp, h = grid([-6, -6], [6, 6], 241)
    keep = U[lp > lp.max() - 40]  # relative density e⁻⁴⁰: negligible mass outside
    lo, hi = keep.min(0) - 3 * np.array(h), keep.max(0) + 3 * np.array(h)
    U, lp, _ = grid(lo, hi, points)
    p = np.exp(lp - lp.max())
    p2 = p.reshape(points, points)
    edge = (p2[0].sum() + p2[-1].sum() + p2[:, 0].sum() + p2[:, -1].sum()) / p.sum()
    assert edge < 1e-12, edge  # the box holds the whole posterior
    return U, p / p.sum(), data


def test_referee_matches_grid_integral_at_c1():
    """C = 1: HMC's E[w wᵀ], top Σ eigenvalue, α_train, α_test and the field E[εεᵀ − K⁻¹]
    against the grid integral of the same posterior, each within 4 of the referee's SEs (5 for
    the field's two projections); and the exact Σ is far from the
    prior (the comparison can tell a sampler of the prior from one of the posterior).

    The referee must pass the gates first. Its trajectory depends on the CPU's float rounding:
    with 100 samples per chain one machine gave bulk ESS 264 on top Σ, with 400 samples 534
    (seed 1; 2037 with seed 2). 600 per chain, for a margin above 400 that other CPUs' rounding
    is not measured to keep."""
    ds = reference_data(100)
    U, p, data = _grid_posterior(ds, 200)
    sd = np.sqrt(2.0 / 2)
    W = U * sd
    sigma = (W * p[:, None]).T @ W
    P_test = patches(jnp.asarray(ds.X_test), 3, 2)

    @jax.jit
    def fbar(w):
        Q = kernel(data.P, data.P, w[None, :], data.sigma_a2)
        K_inv = jnp.linalg.inv(Q + SIGMA2 * jnp.eye(40))
        v = K_inv @ data.y
        return (data.y - SIGMA2 * v, kernel(P_test, data.P, w[None, :], data.sigma_a2) @ v,
                jnp.outer(v, v) - K_inv)

    f_tr = np.zeros(40)
    f_te = np.zeros(len(ds.y_test))
    field = np.zeros((40, 40))
    for b in np.array_split(np.arange(len(p)), 32):
        tr, te, A = jax.vmap(fbar)(jnp.asarray(W[b]))
        f_tr += p[b] @ np.asarray(tr)
        f_te += p[b] @ np.asarray(te)
        field += np.einsum("b,bmk->mk", p[b], np.asarray(A))
    y, yt = ds.y, ds.y_test
    a_train = (y - f_tr) @ y / (SIGMA2 * y @ y)
    a_test = (yt - f_te) @ yt / (SIGMA2 * yt @ yt)

    r = cnn2_exact_posterior(ds.X, ds.y, N=3, S=2, C=1, sigma2=SIGMA2, sigma_a2=2.0,
                             sigma_w2=2.0, X_test=ds.X_test, y_test=ds.y_test, chains=8,
                             steps=800, burn_in=200, seed=1, trajectory=0.3)
    assert r.max_rhat < 1.05 and r.min_ess > 400, (r.rhat, r.ess_bulk)
    top = np.linalg.eigvalsh(sigma)[-1]
    assert abs(top - 1.0) > 50 * r.sigma_top_se  # prior top eigenvalue σ_w²/S = 1
    for i, j in ((0, 0), (0, 1), (1, 1)):
        assert abs(_z(r.sigma[i, j], sigma[i, j], r.sigma_se[i, j])) < 4, (i, j, r.sigma, sigma)
    assert abs(_z(r.sigma_top, top, r.sigma_top_se)) < 4, (r.sigma_top, top)
    assert abs(_z(r.alpha_train, a_train, r.alpha_train_se)) < 4, (r.alpha_train, a_train)
    assert abs(_z(r.alpha_test, a_test, r.alpha_test_se)) < 4, (r.alpha_test, a_test)
    # The field E[εεᵀ − K⁻¹] (the field test's input) along y and its trace: SE from the spread
    # of the 8 independent chains' means (7 dof, hence 5 SE).
    for name, proj in (("yAy", lambda A: y @ A @ y / (y @ y)), ("trace", np.trace)):
        per_chain = np.array([proj(A) for A in r.field_chain_means])
        se = per_chain.std(ddof=1) / np.sqrt(len(per_chain))
        assert abs(proj(r.field_mean) - proj(field)) < 5 * se, (name, proj(r.field_mean),
                                                                 proj(field), se)
    np.testing.assert_allclose(r.sigma_chain_means.mean(0), 0.5 * (r.sigma + r.sigma.T),
                               rtol=1e-12)


def test_referee_matches_quadrature_linear_c8():
    """Linear φ, S = 1, C = 8: Q(W) = σ_a² s M with s = Σ_c w_c²/C and M = (1/N) Σ_i x_i x_iᵀ,
    so p(s | D) ∝ s^{C/2 − 1} e^{−Cs/2σ_w²} N(y; 0, σ_a² s M + σ² I) (a 1-D integral). E[s],
    α_train and α_test of HMC within 4 SE; E[s] is far from the prior mean σ_w² (a Q(W)
    without the 1/C would put it near σ_w²/C instead)."""
    rng = np.random.default_rng(5)
    N, C, s2, sa2, sw2 = 3, 8, 0.1, 2.0, 2.0
    X, Xt = rng.normal(size=(40, N)), rng.normal(size=(60, N))
    a = rng.normal(size=N) / np.sqrt(N)
    y, yt = 0.4 * X @ a, 0.4 * Xt @ a
    M, Mt = X @ X.T / N, Xt @ X.T / N
    lam, V = np.linalg.eigh(M)
    yv = V.T @ y
    # log s on a fine grid; the integrand is smooth and decays fast at both ends
    t = np.linspace(np.log(1e-4), np.log(60.0), 20001)
    s = np.exp(t)
    k = sa2 * s[:, None] * lam[None, :] + s2  # eigenvalues of K(s)
    logp = (C / 2) * t - C * s / (2 * sw2) - 0.5 * np.sum(yv**2 / k + np.log(k), axis=1)
    p = np.exp(logp - logp.max())
    p /= p.sum()
    s_mean = p @ s
    quad = p @ (yv**2 / k).sum(1)  # E[yᵀ K⁻¹ y]
    a_train = quad / (y @ y)
    # test: f̄_* = σ_a² s M_* K(s)⁻¹ y
    f_te = sum(p[m] * sa2 * s[m] * Mt @ (V @ (yv / k[m])) for m in range(0, len(s)))
    a_test = (yt - f_te) @ yt / (s2 * yt @ yt)

    r = cnn2_exact_posterior(X, y, N=N, S=1, C=C, sigma2=s2, sigma_a2=sa2, sigma_w2=sw2,
                             X_test=Xt, y_test=yt, chains=8, steps=400, burn_in=200, seed=2,
                             activation="linear")
    # s = |u|²σ_w²/C is a radial coordinate, which isotropic HMC moves slowly: ESS ≈ 6 %
    assert r.max_rhat < 1.05 and r.min_ess > 150, (r.rhat, r.ess_bulk)
    assert abs(s_mean - sw2) > 10 * r.sigma_top_se
    assert abs(_z(r.sigma_top, s_mean, r.sigma_top_se)) < 4, (r.sigma_top, s_mean)
    assert abs(_z(r.alpha_train, a_train, r.alpha_train_se)) < 4, (r.alpha_train, a_train)
    assert abs(_z(r.alpha_test, a_test, r.alpha_test_se)) < 4, (r.alpha_test, a_test)


def test_field_sign_difference_is_the_log_det_gradient():
    """trace_term is affine in the sign s of K_f⁻¹ in the field A = εεᵀ + s K_f⁻¹, and
    (B(+1) − B(−1))/2 = Tr{K_f⁻¹ ∂Q_f/∂Σ} = ∂ log det K_f/∂Σ, here by autodiff of the
    reference kernel."""
    ds = reference_data(5)
    pr = CNN2Problem.from_arrays(ds.X, ds.y, 3, 2, sigma2=SIGMA2)
    Sig = jnp.array([[0.8, 0.2], [0.2, 0.5]])

    def logdet(S_):
        Q = cnn2_output_kernel(pr.P, pr.P, S_, pr.sigma_a2, "erf")
        return jnp.linalg.slogdet(Q + SIGMA2 * jnp.eye(pr.n))[1]

    g = jax.grad(logdet)(Sig)
    g = 0.5 * (g + g.T)
    plus = trace_term(pr.P, pr.y, Sig, SIGMA2, pr.sigma_a2, "erf", 1.0)
    minus = trace_term(pr.P, pr.y, Sig, SIGMA2, pr.sigma_a2, "erf")
    np.testing.assert_allclose(np.asarray(0.5 * (plus - minus)), np.asarray(g), rtol=1e-10)


def test_exact_posterior_picks_the_minus_sign_at_c64():
    """C = 64: the referee's top Σ eigenvalue is closer to Eq. 8 (A = εεᵀ − K_f⁻¹) than to the
    same equation with A = εεᵀ + K_f⁻¹ by more than 3 SE (the EoS is deterministic, so the SE
    is the referee's alone). Measured: Eq. 8 − referee ≈ 0.01, plus sign − referee ≈ 0.12."""
    ds = reference_data(5)
    pr = CNN2Problem.from_arrays(ds.X, ds.y, 3, 2, sigma2=SIGMA2)
    tops = {}
    for sign in (-1.0, 1.0):
        res = sweep_cnn2(pr, [256.0, 64.0], tol=1e-12, max_iter=300, field_sign=sign)[-1]
        assert res.converged
        tops[sign] = float(cnn2_observables(pr, res.x)["sigma_eigs"][0])
    r = cnn2_exact_posterior(ds.X, ds.y, N=3, S=2, C=64, sigma2=SIGMA2, sigma_a2=2.0,
                             sigma_w2=2.0, chains=8, steps=300, burn_in=200, seed=3)
    assert r.max_rhat < 1.05, r.rhat
    gap_minus, gap_plus = abs(r.sigma_top - tops[-1.0]), abs(r.sigma_top - tops[1.0])
    assert gap_plus - gap_minus > 3 * r.sigma_top_se, (r.sigma_top, tops, r.sigma_top_se)
