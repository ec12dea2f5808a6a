"""Tests of fleos.theory.eos.cnn2_analytic: the analytic solution (Eq. 9) of the 2-layer CNN EoS.

References used: (i) Eq. 9 itself (residual at the returned root), (ii) the paper's two
printed numbers (633.2 and l* = (2/S)[1 − 633.2/C]⁻¹), (iii) Monte Carlo of the continuum
kernel, (iv) exact numerical GP inference with fleos.core.kernels + fleos.core.gp on Gaussian data
from a linear teacher, (v) the numerical solution of Eq. 8 (fleos.theory.eos.cnn2). Each tolerance
is stated where it is used, with where it comes from.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2 as chi2_dist

import fleos  # noqa: F401  (enables float64 in JAX)
from fleos.core import gp, kernels
from fleos.theory.eos import cnn2_analytic as an

# Leading O(1/S) corrections the analytic solution neglects, as relative errors of the
# linear-mode eigenvalue (derivation, "What is neglected"): the ρ³ term of the arcsin series
# leaks 3ρ₀²/S into the linear modes, and the concentration of |w|² costs the Jensen gap
# 4σ_w²/(S(1 + 2σ_w²)²). Their sum bounds the finite-S bias of α in the tests below.


def _finite_s_bias(S: int, sigma_w2: float) -> float:
    rho0 = 2 * sigma_w2 / (1 + 2 * sigma_w2)
    return (3 * rho0**2 + 4 * sigma_w2 / (1 + 2 * sigma_w2) ** 2) / S


def _teacher_data(rng, n, N, S):
    """Gaussian inputs and the paper's linear teacher y = Σ_i a*_i (w*·x_i)."""
    a = rng.standard_normal(N) / math.sqrt(N)
    w = rng.standard_normal(S) / math.sqrt(S)
    X = rng.standard_normal((n, N * S))
    y = np.einsum("nis,s,i->n", X.reshape(n, N, S), w, a)
    return X, y, a, w


# ---------------------------------------------------------------------------------------------
# λ∞ and the paper's printed numbers
# ---------------------------------------------------------------------------------------------


def test_lambda_inf_is_the_linear_mode_eigenvalue_of_the_continuum_kernel():
    """Rayleigh quotient of Q_f (Eq. 8, Σ = σ_w²/S I) on the unit-variance linear function
    u·x_1, by MC over independent pairs (x, x') with the linear part of the kernel as control
    variate. Exact value at finite S (Stein's lemma, derivation eq. (L2)):
    λ_S = (σ_a²/N)(4/π) E[(u·w)²/(1 + 2|w|²)], w ~ N(0, σ_w²/S I), a 1-D χ² quadrature.
    MC must match λ_S within 5 SE; λ_S must lie below λ∞ (Jensen) by at most twice the leading
    gap 4σ_w²/(S(1 + 2σ_w²)²) (the factor 2 covers the higher orders in 1/S)."""
    rng = np.random.default_rng(0)
    S, N, sa2, sw2 = 64, 2, 2.0, 2.0
    lam = an.cnn2_lambda_inf(S, N, sa2, sw2)
    u = np.zeros(S)
    u[0] = 1.0
    M = 100_000
    x = rng.standard_normal((M, N, S))
    xp = rng.standard_normal((M, N, S))
    s = sw2 / S
    kab = s * np.einsum("mis,mis->mi", x, xp)
    kaa = s * np.einsum("mis,mis->mi", x, x)
    kbb = s * np.einsum("mis,mis->mi", xp, xp)
    Q = sa2 / N * np.asarray(kernels.erf_g(kab, kaa, kbb)).sum(axis=1)
    Q_lin = lam * np.einsum("mis,mis->m", x, xp)  # E[(u·x)(u·x') Q_lin] = λ∞ exactly
    samples = (x[:, 0] @ u) * (xp[:, 0] @ u) * (Q - Q_lin)
    est = lam + samples.mean()
    se = samples.std(ddof=1) / math.sqrt(M)
    lam_S = (sa2 / N) * (4 / math.pi) / S * chi2_dist(S).expect(
        lambda t: s * t / (1 + 2 * s * t)
    )
    assert abs(est - lam_S) <= 5 * se, (est, lam_S, se)
    gap = 1 - lam_S / lam
    assert 0 < gap <= 2 * 4 * sw2 / (S * (1 + 2 * sw2) ** 2), gap


def test_lambda_inf_reproduces_the_papers_633():
    """The paper: α_GP = 0.558 at n = 1600 (S = 64, N = 20, σ_a² = σ_w² = 2) gives
    χ2 = 633.2/C. Our λ∞ with α_GP in its rounding interval [0.5575, 0.5585] must bracket
    633.2 (we get 634.3 at 0.558 itself, 0.17 % off: within the rounding of 0.558)."""
    lam = an.cnn2_lambda_inf(64, 20, 2.0, 2.0)
    assert lam == pytest.approx((4 / math.pi) * 4 / (20 * 64 * 5), rel=1e-14)
    lo, hi = (a**2 * 1600**2 * lam for a in (0.5575, 0.5585))
    assert lo <= 633.2 <= hi, (lo, hi)


def test_l_star_has_the_papers_first_order_form():
    """With χ2 = 633.2/C the paper writes l* = (2/S)[1 − 633.2/C]⁻¹ (σ_w² = 2)."""
    for C in (1000.0, 2000.0, 4000.0):
        r = an.solve_eq9(1600, 64, 20, C, 0.1, 2.0, 2.0)
        assert r.converged
        assert r.l_star == pytest.approx((2 / 64) / (1 - r.chi2), rel=1e-13)
        assert r.chi2 == pytest.approx(r.alpha**2 * 1600**2 * r.lambda_inf / C, rel=1e-10)


def test_input_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="sigma2"):
        an.solve_eq9(100, 8, 2, 10.0, 0.0)
    with pytest.raises(ValueError, match="q_train"):
        an.solve_eq9(100, 8, 2, 10.0, 0.1, q_train="second_order")
    with pytest.raises(ValueError, match="teacher_norm_a2"):
        an.solve_eq9(100, 8, 2, 10.0, 0.1, teacher_norms=(0.0, 1.0))
    with pytest.raises(ValueError, match="S = 4"):
        an.analytic_sigma(4, np.ones(3), 1.0)


# ---------------------------------------------------------------------------------------------
# The root of Eq. 9
# ---------------------------------------------------------------------------------------------

CASES = [
    # n, S, N, C, σ², σ_a², σ_w², q_train, teacher_norms
    (1600, 64, 20, 640.0, 0.1, 2.0, 2.0, 1.0, None),
    (1600, 64, 20, 320.0, 0.1, 2.0, 2.0, "first_order", None),
    (800, 64, 20, 160.0, 0.1, 2.0, 2.0, "renormalized", (1.3, 0.7)),
    (500, 16, 8, 50.0, 0.05, 1.0, 1.0, 1.0, (0.5, 2.0)),
    (3000, 32, 4, 1e4, 0.01, 1.5, 0.5, "renormalized", None),
    (1600, 64, 20, 640.0, 0.1, 2.0, 2.0, 1.05, None),
]


@pytest.mark.parametrize("case", CASES)
def test_eq9_residual_vanishes_at_the_returned_alpha(case):
    n, S, N, C, s2, sa2, sw2, q, tn = case
    r = an.solve_eq9(n, S, N, C, s2, sa2, sw2, q_train=q, teacher_norms=tn)
    assert r.converged and 0 < r.chi2 < 1 and r.l_star > 0
    # Independent evaluation of Eq. 9 with the q_train the solver reports (1e-10: the root
    # finder works to machine precision on an O(1) function).
    res = an.eq9_residual(r.alpha, n, S, N, C, s2, sa2, sw2, r.q_train, tn)
    assert abs(res) <= 1e-10
    if q == 1.0:
        assert r.q_train == 1.0 and r.kappa == s2


def test_gp_limit_is_the_equivalent_kernel_value_and_is_continuous():
    n, S, N, s2 = 1600, 64, 20, 0.1
    lam = an.cnn2_lambda_inf(S, N, 2.0, 2.0)
    g = an.solve_eq9(n, S, N, math.inf, s2, 2.0, 2.0)
    assert g.converged and g.chi2 == 0.0 and g.l_star == 2.0 / S
    # Eq. 9 at l* = σ_w²/S, q = 1: σ²α = (σ²/n)/(λ∞ + σ²/n), i.e. α = 1/(nλ∞ + σ²).
    assert g.alpha == pytest.approx(1 / (n * lam + s2), rel=1e-14)
    # Approach from finite C is continuous (χ2 = O(1/C)), and feature learning lowers α
    # and raises l* monotonically as C decreases.
    far = an.solve_eq9(n, S, N, 1e12, s2, 2.0, 2.0)
    assert far.alpha == pytest.approx(g.alpha, rel=1e-8)
    alphas, ls = [], []
    for C in (1e5, 3000.0, 1000.0, 300.0, 100.0, 30.0):
        r = an.solve_eq9(n, S, N, C, s2, 2.0, 2.0)
        alphas.append(r.alpha)
        ls.append(r.l_star)
    assert all(np.diff(alphas) < 0) and all(np.diff(ls) > 0)
    for q in ("first_order", "renormalized"):
        gq = an.solve_eq9(n, S, N, math.inf, s2, 2.0, 2.0, q_train=q)
        assert gq.alpha == pytest.approx(1 / (n * lam + gq.kappa), rel=1e-12)
        assert gq.kappa > s2


def test_physical_branch_is_chosen_and_is_the_only_root_on_it():
    """Eq. 9 in α also has a root with χ2 > 1 + nλ∞/σ² (there l* < 0 and σ²α > 1: Σ is not a
    covariance). The solver must return the root with 0 < χ2 < 1, and it is unique there."""
    n, S, N, C, s2 = 1600, 64, 20, 400.0, 0.1
    lam = an.cnn2_lambda_inf(S, N, 2.0, 2.0)
    r = an.solve_eq9(n, S, N, C, s2, 2.0, 2.0)
    assert 0 < r.chi2 < 1

    def raw(alpha):  # Eq. 9 without the branch guard, q = 1
        chi = alpha**2 * n**2 * lam / C
        lam_star = lam / (1 - chi)
        return s2 * alpha - 1 + lam_star / (lam_star + s2 / n)

    a_max = math.sqrt(C / (n**2 * lam))  # χ2 = 1
    grid = np.linspace(1e-9, a_max * (1 - 1e-9), 20001)
    signs = np.sign([raw(a) for a in grid])
    assert np.count_nonzero(np.diff(signs)) == 1  # one root on the physical branch
    far = np.linspace(a_max * 1.0001, 100.0, 20001)
    far_signs = np.sign([raw(a) for a in far])
    flips = np.flatnonzero(np.diff(far_signs) > 0)  # the unphysical root (−→+ crossing)
    assert flips.size >= 1
    a_bad = far[flips[-1]]
    assert a_bad**2 * n**2 * lam / C > 1 + n * lam / s2 and s2 * a_bad > 1
    # A q < 1 so small that Eq. 9 has no root on the branch is reported, not papered over.
    bad = an.solve_eq9(n, S, N, 1.0, s2, 2.0, 2.0, q_train=0.2)
    assert not bad.converged and math.isnan(bad.alpha)
    # So is a q > 1 large enough to make the GP's own train α negative (F(0) < 0).
    bad = an.solve_eq9(n, S, N, C, s2, 2.0, 2.0, q_train=1.2)
    assert not bad.converged and math.isnan(bad.alpha)


def test_analytic_sigma_is_rank_one_along_the_teacher():
    rng = np.random.default_rng(1)
    S, sw2, l_star = 16, 2.0, 0.5
    w = rng.standard_normal(S)
    Sig = an.analytic_sigma(S, w, l_star, sw2)
    u = w / np.linalg.norm(w)
    np.testing.assert_allclose(Sig, Sig.T, atol=0)
    np.testing.assert_allclose(Sig @ u, l_star * u, rtol=1e-13)
    ev = np.linalg.eigvalsh(Sig)
    np.testing.assert_allclose(ev[:-1], sw2 / S, rtol=1e-13)
    assert ev[-1] == pytest.approx(l_star, rel=1e-13)
    Sig2 = an.analytic_sigma(S, w, l_star, sw2, l_perp=0.1)
    np.testing.assert_allclose(np.linalg.eigvalsh(Sig2)[:-1], 0.1, rtol=1e-12)


def test_target_leakage_matches_its_large_S_expansion():
    """ν (exact χ² quadrature) → 2σ_w⁴/(S(1 + 2σ_w²)²) with an O(1/S²) remainder."""
    for sw2 in (1.0, 2.0):
        errs = [
            abs(an.cnn2_target_leakage(S, sw2) * S * (1 + 2 * sw2) ** 2 / (2 * sw2**2) - 1)
            for S in (64, 256, 1024)
        ]
        assert errs[0] < 0.05 and errs[1] < errs[0] / 3 and errs[2] < errs[1] / 3


# ---------------------------------------------------------------------------------------------
# Against exact numerical GP inference (C = ∞)
# ---------------------------------------------------------------------------------------------


def test_gp_limit_agrees_with_numerical_gp_inference_at_large_n():
    """C = ∞: Eq. 9 (with its 1/n and finite-S corrections) vs exact GP inference with
    kernels.cnn2_output_kernel (Σ = σ_w²/S I) on 4 independent teacher/data draws.
    Tolerances: 3 standard errors of the 4-draw mean (draw-to-draw scatter, estimated from
    the draws) + the finite-S bias bound `_finite_s_bias` times α. The EK value (q_train = 1,
    Eq. 9 as printed) must agree within the same error plus its own 1/n error, estimated as
    its distance to the renormalized value."""
    S, N, n, s2, sa2, sw2 = 64, 2, 1000, 0.1, 1.0, 1.0
    Sigma = sw2 / S * np.eye(S)
    tr, te = [], []
    for seed in range(4):
        rng = np.random.default_rng(10 + seed)
        X, y, a, w = _teacher_data(rng, n, N, S)
        Xt, yt, _, _ = _teacher_data(np.random.default_rng(100 + seed), 400, N, S)
        yt = np.einsum("nis,s,i->n", Xt.reshape(-1, N, S), w, a)  # same teacher
        P, Pt = kernels.patches(X, N, S), kernels.patches(Xt, N, S)
        fit = gp.gp_fit(kernels.cnn2_output_kernel(P, P, Sigma, sa2), y, s2)
        tr.append(float(gp.alpha(y, gp.gp_train_mean(fit, y), s2)))
        f_t = gp.gp_predict(fit, kernels.cnn2_output_kernel(Pt, P, Sigma, sa2))
        te.append(float(gp.alpha(yt, f_t, s2)))
    tr, te = np.array(tr), np.array(te)
    se_tr, se_te = tr.std(ddof=1) / 2, te.std(ddof=1) / 2
    bias = _finite_s_bias(S, sw2)

    best = an.solve_eq9(n, S, N, math.inf, s2, sa2, sw2, "renormalized", finite_s=True)
    assert abs(best.alpha - tr.mean()) <= 3 * se_tr + bias * best.alpha, (best, tr)
    assert abs(best.alpha_test - te.mean()) <= 3 * se_te + bias * best.alpha_test, (best, te)

    ek = an.solve_eq9(n, S, N, math.inf, s2, sa2, sw2)  # Eq. 9 as printed: q_train = 1
    one_over_n = abs(ek.alpha - best.alpha)
    assert abs(ek.alpha - tr.mean()) <= 3 * se_tr + bias * ek.alpha + one_over_n
    # ... and that 1/n error is genuinely small here (nλ∞ ≫ κ): a few percent.
    assert one_over_n / ek.alpha < 0.15


# ---------------------------------------------------------------------------------------------
# Against the numerical solution of Eq. 8 (engineer C1's solver)
# ---------------------------------------------------------------------------------------------


def test_agrees_with_numeric_eos_at_moderate_C():
    """Numeric Eq. 8 (fleos.theory.eos.cnn2) vs the analytic solution at χ2 ≈ 0.3, S = 32.
    Compared: α_train(C)/α_train(∞) (the paper's Fig. 3 inset quantity), l* = ŵΣŵ, and the
    test α of GP inference with the analytic Σ (the paper's dashed line) against the numeric
    one. Tolerance: the neglected O(1/S) terms (`_finite_s_bias`, 7 % at S = 32, σ_w² = 2),
    amplified by 1/(1 − χ2) through l* = (σ_w²/S)/(1 − χ2)."""
    cnn2 = pytest.importorskip("fleos.theory.eos.cnn2")
    S, N, n, C, s2, sa2, sw2 = 32, 4, 300, 300.0, 0.1, 2.0, 2.0
    rng = np.random.default_rng(0)
    X, y, a, w = _teacher_data(rng, n, N, S)
    Xt = rng.standard_normal((500, N * S))
    yt = np.einsum("nis,s,i->n", Xt.reshape(-1, N, S), w, a)
    prob = cnn2.CNN2Problem.from_arrays(
        X, y, N, S, Xt, yt, sigma2=s2, sigma_a2=sa2, sigma_w2=sw2
    )
    res = cnn2.solve_cnn2(prob, C)
    assert res.converged
    Sig = np.asarray(res.x)
    num, num_gp = cnn2.cnn2_observables(prob, Sig), cnn2.cnn2_gp_observables(prob)

    kw = dict(q_train="renormalized", teacher_norms=(a @ a, w @ w), finite_s=True)
    r = an.solve_eq9(n, S, N, C, s2, sa2, sw2, kinv_term=True, **kw)
    r_gp = an.solve_eq9(n, S, N, math.inf, s2, sa2, sw2, **kw)
    tol = _finite_s_bias(S, sw2) / (1 - r.chi2)

    u = w / np.linalg.norm(w)
    assert r.l_star == pytest.approx(u @ Sig @ u, rel=tol)
    ratio_num = num["alpha_train"] / num_gp["alpha_train"]
    assert r.alpha / r_gp.alpha == pytest.approx(ratio_num, rel=tol)
    # Analytic Σ, numerical GP inference on the test set (how the paper drew Fig. 3's dashes).
    an_obs = cnn2.cnn2_observables(prob, an.analytic_sigma(S, w, r.l_star, sw2, r.l_perp))
    assert an_obs["alpha_test"] == pytest.approx(num["alpha_test"], rel=tol)
    # Structure: the numeric Σ is rank-one-plus-isotropic along w*, and the K_f⁻¹ term
    # (kinv_term) predicts the shift of the inert eigenvalues better than σ_w²/S does.
    ev, vec = np.linalg.eigh(Sig)
    assert abs(vec[:, -1] @ u) > 0.99
    median = np.median(ev)
    assert abs(r.l_perp - median) < abs(sw2 / S - median)


def test_renormalized_ridge_definitions():
    """κ of 'first_order' is one iteration of (K) from σ²; 'renormalized' solves (K):
    κ = σ² + r + κ Σ_lin λ_k/(nλ_k + κ) with N modes at λ* and N(S−1) at λ⊥ (= λ∞ at C = ∞)."""
    n, S, N, s2, sa2, sw2 = 1600, 64, 20, 0.1, 2.0, 2.0
    lam = an.cnn2_lambda_inf(S, N, sa2, sw2)
    r = an.cnn2_nonlinear_trace(sa2, sw2)
    rho0 = 0.8
    assert r == pytest.approx(sa2 * (2 / math.pi) * (math.asin(rho0) - rho0), rel=1e-14)
    # The non-linear trace plus the linear one (N S λ∞) is the full trace E Q_f(x, x).
    assert r + N * S * lam == pytest.approx(sa2 * (2 / math.pi) * math.asin(rho0), rel=1e-14)
    f1 = an.solve_eq9(n, S, N, math.inf, s2, sa2, sw2, q_train="first_order")
    assert f1.kappa == pytest.approx(s2 + r + s2 * N * S * lam / (n * lam + s2), rel=1e-14)
    rn = an.solve_eq9(n, S, N, math.inf, s2, sa2, sw2, q_train="renormalized")
    k = rn.kappa
    assert k == pytest.approx(s2 + r + k * N * S * lam / (n * lam + k), rel=1e-12)
    # q_train reproduces α in Eq. 9's form.
    for res in (f1, rn):
        assert abs(an.eq9_residual(res.alpha, n, S, N, math.inf, s2, sa2, sw2, res.q_train)) < 1e-12


def test_printed_and_corrected_eq9_are_different_columns():
    """`analytic_observables` with PRINTED_OPTIONS and unit teacher norms is Eq. 9 exactly as
    printed: its train α zeroes `eq9_residual` with q_train = 1 and |a*|² = |w*|² = 1 even
    though the actual teacher has other norms; the corrected form gives another number."""
    cnn2 = pytest.importorskip("fleos.theory.eos.cnn2")
    S, N, n, C, s2, sa2, sw2 = 8, 3, 60, 40.0, 0.1, 2.0, 2.0
    rng = np.random.default_rng(1)
    X, y, a, w = _teacher_data(rng, n, N, S)
    prob = cnn2.CNN2Problem.from_arrays(X, y, N, S, X[:10], y[:10], sigma2=s2, sigma_a2=sa2,
                                        sigma_w2=sw2)
    teacher = {"teacher_w": w, "teacher_param_a": a}
    pr = an.analytic_observables(prob, C, teacher, unit_teacher_norms=True,
                                 **an.PRINTED_OPTIONS)
    assert pr["converged"] and pr["options"]["teacher_norms"] is None
    # Residual of the printed equation, relative to its O(1) terms: solver tolerance 1e-10.
    assert abs(an.eq9_residual(pr["alpha_train"], n, S, N, C, s2, sa2, sw2)) < 1e-10
    co = an.analytic_observables(prob, C, teacher)
    assert co["options"]["teacher_norms"] == pytest.approx((a @ a, w @ w))
    assert abs(co["alpha_train"] - pr["alpha_train"]) > 1e-3 * pr["alpha_train"]
