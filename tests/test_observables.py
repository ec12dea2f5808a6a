"""fleos.core.observables: Gaussian fits, QQ data, KS distance, projections on kernel eigenvectors.

Tolerances are statistical: for m i.i.d. N(μ, v) values the sample mean has SE √(v/m) and the
sample variance SE v√(2/(m−1)); we allow 5 SE (a false failure rate below 1e-6 per check).
Fixed seeds make the tests deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest

from fleos.core.observables import (
    gaussian_fit,
    overlap,
    project_on_eigenvectors,
    qq_points,
    top_eigh,
)


def test_gaussian_fit_recovers_moments_within_se():
    rng = np.random.default_rng(0)
    mu, var, m = 0.7, 2.5, 40_000
    x = rng.normal(mu, np.sqrt(var), m)
    fit = gaussian_fit(x)
    assert abs(fit.mean - mu) < 5 * np.sqrt(var / m)
    assert abs(fit.var - var) < 5 * var * np.sqrt(2 / (m - 1))
    # the reported i.i.d. SEs are the textbook ones
    assert fit.mean_se == pytest.approx(np.sqrt(fit.var / m))
    assert fit.var_se == pytest.approx(fit.var * np.sqrt(2 / (m - 1)))
    # Gaussian shape: KS distance of m values ~ 1/√m (5/√m bound), excess kurtosis SE √(24/m)
    assert fit.ks < 5 / np.sqrt(m)
    assert abs(fit.excess_kurtosis) < 5 * np.sqrt(24 / m)
    assert fit.groups == 0 and fit.count == m


def test_gaussian_fit_grouped_se_matches_iid_for_independent_groups():
    # 40 independent groups of 500 i.i.d. values: the across-group SE is itself a noisy
    # estimate of the i.i.d. SE with relative error ~ 1/√(2·39) ≈ 11 %; allow 50 %.
    rng = np.random.default_rng(1)
    k, per = 40, 500
    x = rng.normal(0.0, 1.0, (k, per))
    g = np.repeat(np.arange(k), per).reshape(k, per)
    fit = gaussian_fit(x, g)
    iid = gaussian_fit(x)
    assert fit.groups == k
    assert fit.mean_se == pytest.approx(iid.mean_se, rel=0.5)
    assert fit.var_se == pytest.approx(iid.var_se, rel=0.5)


def test_gaussian_fit_grouped_se_sees_correlation():
    # Values within a group share an offset (strongly correlated, like one Langevin chain):
    # the i.i.d. SE of the mean is far too small; the across-group SE captures the offsets.
    rng = np.random.default_rng(2)
    k, per = 30, 1000
    offsets = rng.normal(0.0, 1.0, k)
    x = offsets[:, None] + 0.1 * rng.normal(size=(k, per))
    g = np.repeat(np.arange(k), per).reshape(k, per)
    grouped, iid = gaussian_fit(x, g), gaussian_fit(x)
    assert grouped.mean_se > 10 * iid.mean_se
    # exact: SE of the mean of k group means ≈ std(offsets)/√k ≈ 1/√30 (±30 %)
    assert grouped.mean_se == pytest.approx(1 / np.sqrt(k), rel=0.3)


def test_gaussian_fit_kurtosis_se_iid_and_jackknife():
    from scipy import stats

    rng = np.random.default_rng(5)
    k, per = 8, 5000
    x = rng.normal(size=(k, per))
    g = np.repeat(np.arange(k), per).reshape(k, per)
    m = k * per
    iid, grouped = gaussian_fit(x), gaussian_fit(x, g)
    # the i.i.d. SE is the textbook G2 formula, ≈ √(24/m)
    assert iid.excess_kurtosis_se == pytest.approx(np.sqrt(24 / m), rel=1e-3)
    # the jackknife over groups is the explicit leave-one-group-out formula
    loo = np.array([stats.kurtosis(x[np.arange(k) != j].ravel(), bias=False) for j in range(k)])
    jack = np.sqrt((k - 1) / k * np.sum((loo - loo.mean()) ** 2))
    assert grouped.excess_kurtosis_se == pytest.approx(jack, rel=1e-12)
    # for independent groups it estimates the same SE: relative error of an SE from k = 8
    # groups ≈ 1/√(2·7) ≈ 27 %; allow a factor 2 either way
    assert 0.5 < grouped.excess_kurtosis_se / iid.excess_kurtosis_se < 2
    # one group with a heavy tail: the pooled kurtosis is large, and so is its jackknife SE
    # (it rests on that group), while the i.i.d. formula would still say √(24/m)
    y = x.copy()
    y[3] = rng.standard_t(3, per)
    heavy = gaussian_fit(y, g)
    assert heavy.excess_kurtosis > 1
    assert heavy.excess_kurtosis_se > heavy.excess_kurtosis / 3 > 10 * np.sqrt(24 / m) / 3


def test_gaussian_fit_flags_non_gaussian():
    rng = np.random.default_rng(3)
    m = 20_000
    fit = gaussian_fit(rng.uniform(-1, 1, m))
    # uniform: excess kurtosis −1.2, KS distance from the moment-matched normal ≈ 0.058
    assert fit.excess_kurtosis == pytest.approx(-1.2, abs=5 * np.sqrt(24 / m))
    assert fit.ks > 0.04


def test_gaussian_fit_errors():
    with pytest.raises(ValueError, match="at least 3"):
        gaussian_fit(np.array([1.0, 2.0]))
    # three values are the minimum: a fit, but no i.i.d. SE of the kurtosis (G2 needs four)
    three = gaussian_fit(np.array([1.0, 2.0, 4.0]))
    assert three.count == 3 and np.isnan(three.excess_kurtosis_se)
    with pytest.raises(ValueError, match="2 groups"):
        gaussian_fit(np.arange(10.0), np.zeros(10))
    with pytest.raises(ValueError, match="groups"):
        gaussian_fit(np.arange(10.0), np.zeros(9))


def test_qq_points_of_normal_sample_lie_on_diagonal():
    rng = np.random.default_rng(4)
    m = 50_000
    t, e = qq_points(rng.normal(3.0, 2.0, m), num=100)
    bulk = np.abs(t) < 2
    # SE of an empirical quantile: √(p(1−p)/m)/φ(z) ≤ 0.02 for |z| < 2 at this m
    assert np.max(np.abs(e[bulk] - t[bulk])) < 5 * 0.02
    assert np.all(np.diff(t) > 0) and np.all(np.diff(e) >= 0)


def test_top_eigh_and_projections():
    rng = np.random.default_rng(5)
    P = 12
    V, _ = np.linalg.qr(rng.normal(size=(P, P)))
    lam = np.linspace(12, 1, P)
    K = V @ np.diag(lam) @ V.T
    w, U = top_eigh(K, 3)
    np.testing.assert_allclose(w, lam[:3], rtol=1e-12)
    # pre-activations with known coordinates c in the eigenbasis: H = c Vᵀ
    c = rng.normal(size=(5, 7, P))
    H = c @ V.T
    proj = project_on_eigenvectors(H, K, (0, 9))
    for i in (0, 9):
        v = V[:, i] * np.sign(V[np.argmax(np.abs(V[:, i])), i])
        np.testing.assert_allclose(proj[i], c[..., i] * np.sign(v @ V[:, i]), atol=1e-10)
    with pytest.raises(ValueError, match="index"):
        project_on_eigenvectors(H, K, (P,))
    with pytest.raises(ValueError, match="points"):
        project_on_eigenvectors(H[..., :-1], K)


def test_overlap_normalizes_direction():
    W = np.array([[1.0, 2.0], [3.0, -1.0]])
    np.testing.assert_allclose(overlap(W, np.array([0.0, 5.0])), [2.0, -1.0])
