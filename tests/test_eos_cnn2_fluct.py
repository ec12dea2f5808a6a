"""Tests of the kernel-fluctuation correction (fleos.theory.eos.cnn2_fluct) against exact
references: the full n × n algebra with the same draws, importance reweighting of another
Gaussian, and brute-force Monte Carlo of the finite-C predictor E[Q K⁻¹] y at a fixed Σ."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf
from test_eos_cnn2 import teacher_problem

import fleos  # noqa: F401  (enables float64)
from fleos.core.kernels import cnn2_output_kernel
from fleos.theory.eos.cnn2 import solve_cnn2
from fleos.theory.eos.cnn2_fluct import (
    _jackknife_resummed,
    fluct_row,
    fluct_rows,
    jensen_spectrum,
    kernel_fluctuation_correction,
)


@pytest.fixture(scope="module")
def setup():
    """S = 4, N = 3, n = 30 (40 test points) at a fixed Σ: Eq. 8's solution at C = 8, well away
    from the GP (feature learning), held fixed for every C below."""
    pr = teacher_problem(n=30, N=3, S=4, n_test=40, seed=0)
    Sig = np.asarray(solve_cnn2(pr, 8.0, tol=1e-12, max_iter=200).x)
    return pr, Sig


def _dense_reference(pr, Sig, w, C, center):
    """The expansion with full n × n matrices per draw: v = mean_k δq_k K̄⁻¹ δq_k ε̄ etc."""
    P, Pt, y, yt = map(np.asarray, (pr.P, pr.P_test, pr.y, pr.y_test))
    c, s2 = pr.sigma_a2 / pr.N, pr.sigma2
    Qb = np.asarray(cnn2_output_kernel(pr.P, pr.P, jnp.asarray(Sig), pr.sigma_a2))
    Qbt = np.asarray(cnn2_output_kernel(pr.P_test, pr.P, jnp.asarray(Sig), pr.sigma_a2))
    Ki = np.linalg.inv(Qb + s2 * np.eye(pr.n))
    eb = Ki @ y
    Ph = erf(np.einsum("mis,bs->bmi", P, w))
    Pht = erf(np.einsum("mis,bs->bmi", Pt, w))
    q = c * Ph @ Ph.transpose(0, 2, 1)
    qt = c * Pht @ Ph.transpose(0, 2, 1)
    if center == "exact":
        dq, dqt, bessel = q - Qb, qt - Qbt, 1.0
    else:
        K = len(w)
        dq, dqt, bessel = q - q.mean(0), qt - qt.mean(0), K / (K - 1.0)
    v = bessel * np.mean(dq @ Ki @ dq, 0) @ eb
    vt = bessel * np.mean(dqt @ Ki @ dq, 0) @ eb
    f = y - s2 * eb - s2 * Ki @ v / C
    ft = Qbt @ eb - vt / C + Qbt @ Ki @ v / C
    return f, ft, (y - f) @ y / (s2 * y @ y), (yt - ft) @ yt / (s2 * yt @ yt)


@pytest.mark.parametrize("center", ["exact", "sample"])
def test_low_rank_algebra_equals_dense_expansion(setup, center):
    """The O(n² K) low-rank evaluation equals the same expansion with full n × n matrices per
    draw, for the same draws, to rounding: with the exact mean Q̄ (default Gaussian draws) and
    with the sample-mean centre used for given draws (Bessel-corrected)."""
    pr, Sig = setup
    K, C = 300, 16.0
    if center == "exact":
        z = np.random.default_rng(5).standard_normal((K, pr.S))
        w = z @ np.linalg.cholesky(Sig).T
        res = kernel_fluctuation_correction(pr, C, Sig, n_draws=K, seed=5)
    else:
        w = np.random.default_rng(6).standard_normal((K, pr.S)) @ np.linalg.cholesky(Sig).T
        res = kernel_fluctuation_correction(pr, C, Sig, draws=w)
    f, ft, at, att = _dense_reference(pr, Sig, w, C, center)
    np.testing.assert_allclose(res["f_train"], f, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res["f_test"], ft, rtol=0, atol=1e-12)
    assert res["alpha_train"] == pytest.approx(at, abs=1e-12)
    assert res["alpha_test"] == pytest.approx(att, abs=1e-12)
    assert res["dalpha_train"] > 0  # Jensen: u·K̄⁻¹u ≥ 0 for every draw


def test_importance_weights_reproduce_the_gaussian_law(setup):
    """Draws from a wider Gaussian N(0, 1.5 Σ) reweighted by the density ratio to N(0, Σ) give
    the same Jensen coefficients as direct draws from N(0, Σ), within 4 combined SEs (the two
    estimates are independent; each SE is the module's own Monte Carlo SE)."""
    pr, Sig = setup
    direct = kernel_fluctuation_correction(pr, 1.0, Sig, n_draws=8192, seed=11)
    z = np.random.default_rng(12).standard_normal((8192, pr.S))
    w = np.sqrt(1.5) * z @ np.linalg.cholesky(Sig).T
    # w = √1.5 L z: log N(w; 0, Σ) − log N(w; 0, 1.5 Σ) = −½ 1.5|z|² + ½|z|² + const
    logw = -0.5 * 1.5 * np.sum(z * z, 1) + 0.5 * np.sum(z * z, 1)
    om = np.exp(logw - logw.max())
    rew = kernel_fluctuation_correction(pr, 1.0, Sig, draws=w, weights=om)
    assert rew["kish_ess"] < 0.95 * 8192  # the weights are not trivial
    for kind in ("train", "test"):
        a, b = direct[f"jensen_{kind}"], rew[f"jensen_{kind}"]
        se = np.hypot(direct[f"jensen_{kind}_se"], rew[f"jensen_{kind}_se"])
        assert abs(a - b) < 4 * se, (kind, a, b, se)
        assert abs(a) > 5 * direct[f"jensen_{kind}_se"]  # a non-trivial comparison


def _brute_force(pr, Sig, C, R, rng, chunk=500):
    """E[α(Q)] over R draws of C i.i.d. channels w_c ~ N(0, Σ), Q = (1/C) Σ_c q(w_c), with the
    first-order term in δQ = Q − Q_f(Σ) subtracted as a control variate: its mean is exactly 0
    because Q_f(Σ) is the exact mean of q under N(0, Σ). Returns means and SEs (train, test)."""
    P, Pt, y, yt = map(np.asarray, (pr.P, pr.P_test, pr.y, pr.y_test))
    n, N, S = pr.n, pr.N, pr.S
    c, s2 = pr.sigma_a2 / N, pr.sigma2
    Qb = np.asarray(cnn2_output_kernel(pr.P, pr.P, jnp.asarray(Sig), pr.sigma_a2))
    Qbt = np.asarray(cnn2_output_kernel(pr.P_test, pr.P, jnp.asarray(Sig), pr.sigma_a2))
    Ki = np.linalg.inv(Qb + s2 * np.eye(n))
    eb, L = Ki @ y, np.linalg.cholesky(Sig)
    r = Ki @ (Qbt.T @ yt)
    out = []
    for i in range(0, R, chunk):
        m = min(chunk, R - i)
        w = rng.standard_normal((m, int(C), S)) @ L.T
        Ph = erf(np.einsum("mis,rcs->rmci", P, w)).reshape(m, n, -1)
        Pht = erf(np.einsum("mis,rcs->rmci", Pt, w)).reshape(m, len(yt), -1)
        Q = (c / C) * Ph @ Ph.transpose(0, 2, 1)
        Qt = (c / C) * Pht @ Ph.transpose(0, 2, 1)
        e = np.linalg.solve(Q + s2 * np.eye(n), np.broadcast_to(y, (m, n))[..., None])[..., 0]
        a_tr = e @ y / (y @ y)
        a_te = (yt - np.einsum("rtm,rm->rt", Qt, e)) @ yt / (s2 * yt @ yt)
        dQ, dQt = Q - Qb, Qt - Qbt
        lin_tr = -np.einsum("m,rmn,n->r", eb, dQ, eb) / (y @ y)
        lin_te = -(np.einsum("t,rtm,m->r", yt, dQt, eb)
                   - np.einsum("m,rmn,n->r", r, dQ, eb)) / (s2 * yt @ yt)
        out.append(np.stack([a_tr - lin_tr, a_te - lin_te], 1))
    o = np.concatenate(out)
    return o.mean(0), o.std(0, ddof=1) / np.sqrt(len(o))


def _wls_intercept(x, y, se):
    """Weighted least squares y = β1 + β2 x with known SEs: β1 and its SE."""
    A = np.stack([np.ones_like(x), x], 1) / se[:, None]
    cov = np.linalg.inv(A.T @ A)
    beta = cov @ A.T @ (y / se)
    return beta[0], np.sqrt(cov[0, 0])


def test_correction_matches_brute_force_finite_c(setup):
    """Exact reference: E[Q K⁻¹] y by brute-force Monte Carlo over draws of C i.i.d. channels
    from N(0, Σ), C = 16, 32, 64, 128, at a fixed Σ. The gap of Eq. 8 to it is O(1/C), that of
    the corrected predictor O(1/C²):

    * at every C the corrected α is closer to the reference than Eq. 8's, by more than 3 SEs
      of the difference (reference SE and the correction's Monte Carlo SE in quadrature);
    * the residual falls faster than 1/C: a weighted fit C·(reference − corrected) = β1 + β2/C
      has β1 (the residual's 1/C part) within 3 SE of 0, with the SE from the fit at the
      reference's SEs plus the correction's own SE (which shifts every point by the same
      amount); the same fit of Eq. 8's gap has β1 more than 10 SE from 0, so the test would see
      a wrong coefficient.
    """
    pr, Sig = setup
    fl = kernel_fluctuation_correction(pr, 1.0, Sig, n_draws=2**15, seed=3)
    Cs = np.array([16.0, 32.0, 64.0, 128.0])
    rng = np.random.default_rng(2024)
    refs = [_brute_force(pr, Sig, C, 3000, rng) for C in Cs]
    for j, kind in enumerate(("train", "test")):
        eos, J, J_se = fl[f"alpha_{kind}_eos"], fl[f"jensen_{kind}"], fl[f"jensen_{kind}_se"]
        ref = np.array([m[j] for m, _ in refs])
        ref_se = np.array([s[j] for _, s in refs])
        gap_eos = ref - eos
        gap_corr = ref - (eos + J / Cs)
        # closer at every C
        diff_se = np.hypot(ref_se, J_se / Cs)  # |gap_eos| − |gap_corr| noise, conservatively
        assert np.all(np.abs(gap_eos) - np.abs(gap_corr) > 3 * diff_se), (kind, gap_eos,
                                                                            gap_corr)
        # no 1/C component left
        b1, b1_se = _wls_intercept(1.0 / Cs, Cs * gap_corr, Cs * ref_se)
        se_tot = np.hypot(b1_se, J_se)
        assert abs(b1) < 3 * se_tot, (kind, b1, se_tot)
        b1_eos, _ = _wls_intercept(1.0 / Cs, Cs * gap_eos, Cs * ref_se)
        assert abs(b1_eos) > 10 * se_tot, (kind, b1_eos, se_tot)


def test_resummed_fluctuations(setup):
    """The ε-resummed variant (a hypothesis, docs/derivations/cnn2.md): its train shift is
    Σ λ/(1 + λ)/(y·y) with λ the spectrum of `jensen_spectrum` for the same draws (two separate
    code paths: a K × K solve and an eigendecomposition), it is below the i.i.d. shift, and it
    becomes the i.i.d. correction as C → ∞ (λ → 0)."""
    pr, Sig = setup
    yy = float(pr.y @ pr.y)
    for C in (16.0, 128.0):
        iid = kernel_fluctuation_correction(pr, C, Sig, n_draws=1024, seed=4)
        rs = kernel_fluctuation_correction(pr, C, Sig, n_draws=1024, seed=4, resum=True)
        lam = jensen_spectrum(pr, C, Sig, n_draws=1024, seed=4)
        assert rs["dalpha_train"] == pytest.approx(np.sum(lam / (1 + lam)) / yy, rel=1e-10)
        assert iid["dalpha_train"] == pytest.approx(np.sum(lam) / yy, rel=1e-10)
        assert 0 < rs["dalpha_train"] < iid["dalpha_train"]
        assert rs["alpha_train_se"] > 0 and rs["alpha_test_se"] > 0
    # C → ∞: the coefficients C·Δα and the shifts of the predictions agree (λ ~ 1e-6 here)
    C = 1e6
    iid = kernel_fluctuation_correction(pr, C, Sig, n_draws=1024, seed=4)
    rs = kernel_fluctuation_correction(pr, C, Sig, n_draws=1024, seed=4, resum=True)
    assert rs["jensen_train"] == pytest.approx(iid["jensen_train"], rel=1e-5)
    assert rs["jensen_test"] == pytest.approx(iid["jensen_test"], rel=1e-4)
    f_eos = np.asarray(pr.y) - pr.sigma2 * np.linalg.solve(
        np.asarray(cnn2_output_kernel(pr.P, pr.P, jnp.asarray(Sig), pr.sigma_a2))
        + pr.sigma2 * np.eye(pr.n), np.asarray(pr.y))
    np.testing.assert_allclose(C * (rs["f_train"] - f_eos), C * (iid["f_train"] - f_eos),
                               rtol=1e-4, atol=1e-6 * np.abs(C * (iid["f_train"] - f_eos)).max())
    with pytest.raises(ValueError, match="resum needs the Gaussian draws"):
        kernel_fluctuation_correction(pr, 16.0, Sig, draws=np.zeros((4, pr.S)), resum=True)


def test_row_and_bad_input(setup):
    pr, Sig = setup
    row = fluct_row(pr, 16.0, Sig, n_draws=256, seed=0)
    res = kernel_fluctuation_correction(pr, 16.0, Sig, n_draws=256, seed=0)
    assert row["alpha_train_fluct"] == res["alpha_train"]
    assert row["alpha_test_fluct_mc_se"] == res["alpha_test_se"] > 0
    with pytest.raises(ValueError, match="C must be > 0"):
        kernel_fluctuation_correction(pr, 0.0, Sig)
    with pytest.raises(ValueError, match="Sigma has shape"):
        kernel_fluctuation_correction(pr, 16.0, np.eye(3))
    with pytest.raises(ValueError, match="weights given without draws"):
        kernel_fluctuation_correction(pr, 16.0, Sig, weights=np.ones(4))
    with pytest.raises(ValueError, match="weights must be"):
        kernel_fluctuation_correction(pr, 16.0, Sig, draws=np.zeros((4, pr.S)),
                                      weights=-np.ones(4))


def test_both_variants_from_one_pass(setup):
    """`fluct_rows` (what the workflow writes: both variants from one pass over the draws)
    gives the numbers of two separate `fluct_row` calls to rounding, and the jackknife's
    Cholesky inverse equals a dense inverse."""
    pr, Sig = setup
    both = fluct_rows(pr, 16.0, Sig, n_draws=300, seed=4)
    one = {**fluct_row(pr, 16.0, Sig, n_draws=300, seed=4),
           **fluct_row(pr, 16.0, Sig, n_draws=300, seed=4, resum=True, prefix="fluct_resummed")}
    assert set(both) == set(one)
    for key, value in one.items():
        if not key.endswith("seconds"):
            assert both[key] == pytest.approx(value, rel=1e-12), key
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 30))
    gram, cross, C = X @ X.T, rng.standard_normal((40, 40)), 3.0
    ref = []
    for drop in np.array_split(np.arange(40), 8):
        keep = np.setdiff1d(np.arange(40), drop)
        R = np.linalg.inv(np.eye(len(keep)) + gram[np.ix_(keep, keep)] / (C * len(keep)))
        ref.append((np.sum(R * gram[np.ix_(keep, keep)]), np.sum(R * cross[np.ix_(keep, keep)])))
    ref = np.asarray(ref) / 35
    se = np.sqrt(7 / 8 * np.sum((ref - ref.mean(0)) ** 2, axis=0))
    np.testing.assert_allclose(_jackknife_resummed(gram, cross, C), se, rtol=1e-10)
