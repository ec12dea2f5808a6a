"""Tests of the moment-matched 2-layer CNN EoS (fleos.theory.eos.cnn2_matched) against exact
references: the linear network (Gaussian channel law, Eq. 8 exact), a 2-D quadrature of the
erf channel law, and the GP limit."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from test_eos_cnn2 import teacher_problem

import fleos  # noqa: F401  (enables float64)
from fleos.core.kernels import ACTIVATIONS, cnn2_output_kernel
from fleos.theory.eos.cnn2 import (
    discrepancy_and_inverse,
    gp_sigma,
    solve_cnn2,
    sweep_cnn2,
)
from fleos.theory.eos.cnn2_matched import (
    _tilt_triangular,
    channel_covariance_on_grid,
    channel_log_tilt,
    channel_log_tilt_saturated,
    field_of,
    matched_diagnostics,
    matched_map,
    solve_cnn2_matched,
)


def test_linear_network_fixed_point_is_eq8():
    """Linear φ: F(w) is quadratic, the channel law is the Gaussian of Eq. 8's last line, so at
    Eq. 8's solution every importance weight is equal and M̂(Σ) = Σ up to rounding."""
    pr = teacher_problem(activation="linear")
    C = 3.0  # strong feature learning: Σ far from the GP
    Sig = solve_cnn2(pr, C, tol=1e-12, max_iter=200).x
    assert float(jnp.max(jnp.abs(Sig - gp_sigma(pr)))) > 0.05 * float(gp_sigma(pr)[0, 0])
    # the tilt is evaluated in float32, so the log-weights are equal to ~1e-6, not to 1e-16
    scale = float(jnp.max(jnp.abs(Sig)))
    new = matched_map(pr, C, Sig, n_samples=1024)
    np.testing.assert_allclose(np.asarray(new), np.asarray(Sig), rtol=0, atol=1e-6 * scale)
    diag = matched_diagnostics(pr, C, Sig, n_samples=1024)
    assert diag["kish_ess"] == pytest.approx(1024, rel=1e-6)
    res = solve_cnn2_matched(pr, C, n_samples=1024)
    assert res.converged
    np.testing.assert_allclose(np.asarray(res.x), np.asarray(Sig), rtol=0, atol=1e-6 * scale)


def test_erf_channel_covariance_matches_quadrature():
    """erf at S = 2: one evaluation of M̂ at Eq. 8's Σ against the exact covariance of the
    channel law by quadrature (`channel_covariance_on_grid` at the field A(Σ)), along Σ's top
    eigenvector, within 4 of its delta-method SEs; and the exact covariance differs from
    Eq. 8's Σ by many SEs (the test can tell). The quadrature itself: halving the grid spacing
    changes it by < 1e-9 relative, and a grid too narrow for the law is refused."""
    pr = teacher_problem(n=40, N=3, S=2, n_test=10, seed=3)
    C = 2.0  # z-scores (estimate − quadrature)/SE over 12 seeds of the normals here: mean −0.2,
    # sd 0.8, so the SE is calibrated (checked by hand with seeds 100-111, 2026-12-01)
    eq8 = sweep_cnn2(pr, [30.0, 10.0, 5.0, 3.0, C], tol=1e-12, max_iter=300)[-1]
    assert eq8.converged
    Sig = np.asarray(eq8.x)
    A = field_of(pr, Sig)
    exact = np.asarray(channel_covariance_on_grid(pr, C, A))
    finer = np.asarray(channel_covariance_on_grid(pr, C, A, points=1601))
    np.testing.assert_allclose(finer, exact, rtol=1e-9)
    with pytest.raises(ValueError, match="half_width"):
        channel_covariance_on_grid(pr, C, A, half_width=1.0)
    u = np.linalg.eigh(Sig)[1][:, -1]
    n_samples = 1 << 14
    est = np.asarray(matched_map(pr, C, Sig, n_samples=n_samples, seed=7))
    diag = matched_diagnostics(pr, C, Sig, n_samples=n_samples, seed=7)
    assert diag["top"] == pytest.approx(u @ est @ u, rel=1e-10)
    se = diag["top_se"]
    assert abs(u @ exact @ u - u @ Sig @ u) > 10 * se  # non-Gaussian enough to be visible
    assert abs(u @ est @ u - u @ exact @ u) < 4 * se


def test_tilt_averages_to_eq8s_kernel_term():
    """The tilt's φ and Eq. 8's kernel G describe the same channel: under w ~ N(0, Σ) the
    mean of F(w) is (1/2C)⟨A, Q_f(Σ)⟩ with Q_f from `cnn2_output_kernel` (the arcsin formula), to
    4 standard errors of the Monte Carlo mean (float64 tilt)."""
    pr = teacher_problem(n=30, N=3, S=4, n_test=5, seed=1)
    C = 5.0
    Sig = np.asarray(solve_cnn2(pr, C, tol=1e-10, max_iter=300).x)
    eps, Kinv = discrepancy_and_inverse(pr.P, pr.y, jnp.asarray(Sig), pr.sigma2,
                                        pr.sigma_a2, pr.activation)
    Q = cnn2_output_kernel(pr.P, pr.P, jnp.asarray(Sig), pr.sigma_a2, pr.activation)
    exact = float(jnp.sum((jnp.outer(eps, eps) - Kinv) * Q)) / (2 * C)
    w = np.random.default_rng(5).multivariate_normal(np.zeros(pr.S), Sig, size=40000)
    F = np.asarray(channel_log_tilt(pr.P, jnp.asarray(w), eps, Kinv, pr.sigma_a2 / (2 * pr.N * C)))
    se = F.std(ddof=1) / np.sqrt(len(F))
    assert abs(F.mean() - exact) < 4 * se
    assert abs(exact) > 20 * se  # a non-trivial field, resolved by the test


@pytest.mark.parametrize("tiles", [1, 4, 7])
def test_triangular_tilt_equals_the_dense_one(tiles):
    """The tilt M̂ uses, |L⁻¹φ_i|² over L⁻¹'s lower tiles only, equals `channel_log_tilt` with
    the dense K_f⁻¹ = L⁻ᵀL⁻¹ to float64 rounding, also when the tiles do not divide n (n = 30:
    tiles of 8 and 5 rows)."""
    pr = teacher_problem(n=30, N=3, S=4, n_test=5, seed=1)
    C = 5.0
    Sig = jnp.asarray(solve_cnn2(pr, C, tol=1e-10, max_iter=300).x)
    eps, Kinv = discrepancy_and_inverse(pr.P, pr.y, Sig, pr.sigma2, pr.sigma_a2, pr.activation)
    Q = cnn2_output_kernel(pr.P, pr.P, Sig, pr.sigma_a2, pr.activation)
    Linv = jnp.linalg.inv(jnp.linalg.cholesky(Q + pr.sigma2 * jnp.eye(pr.n)))
    w = jnp.asarray(np.random.default_rng(2).multivariate_normal(np.zeros(pr.S), Sig, size=64))
    coef = pr.sigma_a2 / (2 * pr.N * C)
    dense = np.asarray(channel_log_tilt(pr.P, w, eps, Kinv, coef))
    tri = np.asarray(_tilt_triangular(pr.P, w, eps, Linv, coef, tiles=tiles))
    np.testing.assert_allclose(tri, dense, rtol=1e-11, atol=1e-12 * np.abs(dense).max())


def test_erf_fixed_point_is_a_fixed_point():
    """The solver's answer for erf satisfies its equation: M̂(Σ*) = Σ* to the solver's
    tolerance (in units of the GP covariance), and moves Σ away from Eq. 8's."""
    pr = teacher_problem()
    C = 4.0
    eq8 = solve_cnn2(pr, C, tol=1e-10, max_iter=300)
    res = solve_cnn2_matched(pr, C, eq8.x, n_samples=2048)
    assert res.converged and res.residual <= 1e-4
    unit = pr.sigma_w2 / pr.S
    again = matched_map(pr, C, res.x, n_samples=2048)
    assert float(jnp.linalg.norm(again - res.x)) / unit <= 1e-4
    assert float(jnp.linalg.norm(res.x - eq8.x)) / unit > 100 * 1e-4


def test_large_C_gives_the_gp():
    """C → ∞: the tilt vanishes and the channel law is the prior N(0, σ_w²/S I)."""
    pr = teacher_problem()
    res = solve_cnn2_matched(pr, 1e9, n_samples=512)
    assert res.converged
    np.testing.assert_allclose(np.asarray(res.x), np.asarray(gp_sigma(pr)), atol=1e-8)


def test_bad_input_names_the_argument():
    pr = teacher_problem()
    with pytest.raises(ValueError, match="n_samples"):
        matched_map(pr, 10.0, gp_sigma(pr), n_samples=100)
    with pytest.raises(ValueError, match="C must be > 0"):
        solve_cnn2_matched(pr, 0.0, n_samples=128)


def test_saturated_tilt_is_the_exact_change_of_the_marginal_likelihood() -> None:
    """`channel_log_tilt_saturated` against the definition it abbreviates: the change of
    log N(y; 0, K) when one channel's c ΦΦᵀ is added to a kernel K, by dense log-determinants
    and solves (float64 rounding, 1e-9); and for C → ∞ (c → 0) its first order, the linear
    tilt `channel_log_tilt` at coef = c/2: their gap relative to the tilt is of order c."""
    rng = np.random.default_rng(0)
    n, N, S = 30, 4, 5
    P = jnp.asarray(rng.normal(size=(n, N, S)) / np.sqrt(S))
    y = rng.normal(size=n)
    F = rng.normal(size=(n, 2 * n))
    K = F @ F.T / (2 * n) + 0.1 * np.eye(n)
    Kinv = np.linalg.inv(K)
    eps = Kinv @ y
    w = jnp.asarray(rng.normal(size=(6, S)))
    for c in (0.5, 1e-3):
        tilt, top = channel_log_tilt_saturated(P, w, jnp.asarray(np.outer(eps, eps)),
                                               jnp.asarray(Kinv), c)
        for b in range(6):
            Phi = np.asarray(ACTIVATIONS["erf"](P @ w[b]))
            K_new = K + c * Phi @ Phi.T
            exact = (0.5 * (y @ eps - y @ np.linalg.solve(K_new, y))
                     - 0.5 * (np.linalg.slogdet(K_new)[1] - np.linalg.slogdet(K)[1]))
            np.testing.assert_allclose(float(tilt[b]), exact, rtol=1e-9, atol=1e-12)
            M = c * Phi.T @ Kinv @ Phi
            np.testing.assert_allclose(float(top[b]), np.linalg.eigvalsh(M)[-1], rtol=1e-9)

    def relative_gap(c: float) -> float:
        tilt = channel_log_tilt_saturated(P, w, jnp.asarray(np.outer(eps, eps)),
                                          jnp.asarray(Kinv), c)[0]
        linear = channel_log_tilt(P, w, jnp.asarray(eps), jnp.asarray(Kinv), c / 2)
        return float(np.max(np.abs(tilt - linear)) / np.max(np.abs(linear)))

    # the float32 products the paper-scale study uses: relative error ~1e-6 (float32 rounding of
    # n² sums of O(1) terms), far below the tilt's spread over channels
    t64 = channel_log_tilt_saturated(P, w, jnp.asarray(np.outer(eps, eps)), jnp.asarray(Kinv),
                                     0.5)[0]
    t32 = channel_log_tilt_saturated(P.astype(jnp.float32), w,
                                     jnp.asarray(np.outer(eps, eps), jnp.float32),
                                     jnp.asarray(Kinv, jnp.float32), 0.5)[0]
    np.testing.assert_allclose(np.asarray(t32), np.asarray(t64), rtol=1e-4, atol=1e-5)

    # first order: the gap relative to the tilt falls 10× when c does
    assert relative_gap(1e-6) < 1e-4
    assert 0.08 < relative_gap(1e-6) / relative_gap(1e-5) < 0.12
