"""Tests of the feature-learning scale χ (Eq. 6, Fig. 2c) in fleos.theory.fls (tiny sizes, fast)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fleos  # noqa: F401
from fleos.core import gp as gpmod
from fleos.core.kernels import fcn_gp_kernels
from fleos.theory import fls
from fleos.theory.eos import fcn


def test_chi_scales_as_inverse_width_and_is_one_at_the_crossover():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 10))
    y = np.tanh(X @ rng.standard_normal(10) / 3)
    w1 = fls.fcn_chi_times_width(X, y, 2.0, 2.0, 0.01)
    ks = fcn_gp_kernels(jnp.asarray(X), (2.0, 2.0, 2.0))
    eps = gpmod.discrepancy(gpmod.gp_fit(ks[-1], jnp.asarray(y), 0.01))
    for w in (1.0, 7.0, 300.0):
        assert fls.chi(eps, ks[-2], w, 2.0) == pytest.approx(w1 / w, rel=1e-12)
    assert fls.chi(eps, ks[-2], w1, 2.0) == pytest.approx(1.0, rel=1e-12)


def test_chi_is_the_size_of_the_eq6_kernel_shift():
    # Linear penultimate layer (Eq. 6 exact): one map step from the GP point gives
    # K⁻¹ = Q⁻¹ − (σ_L²/N)(εεᵀ − K_f⁻¹), so εᵀQ(Q⁻¹ − K⁻¹)Qε/(εᵀQε) = χ − (σ_L²/N) εᵀQK_f⁻¹Qε/εᵀQε.
    rng = np.random.default_rng(1)
    n, d, N, s2 = 20, 30, 500.0, 0.05
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) / np.sqrt(d)
    pb = fcn.FCNProblem(X, y, sigma_w2=1.5, sigma_a2=2.0, sigma2=s2, depth=3,
                        scaling="standard", activation="linear")
    x = fcn.gp_x(pb)
    T = jax.jit(fcn.fixed_point_map(pb, N))(x)
    Q = x["K"][0]
    ks = fcn_gp_kernels(jnp.asarray(X), (1.5, 1.5, 2.0), "linear")
    Kf_inv = jnp.linalg.inv(ks[-1] + s2 * jnp.eye(n))
    eps = Kf_inv @ y
    shift = eps @ Q @ (jnp.linalg.inv(Q) - jnp.linalg.inv(T["K"][0])) @ Q @ eps / (eps @ Q @ eps)
    expected = fls.chi(eps, Q, N, 2.0) - (2.0 / N) * (eps @ Q @ Kf_inv @ Q @ eps) / (eps @ Q @ eps)
    assert float(shift) == pytest.approx(float(expected), rel=1e-7)


def test_cnn2_chi_matrix_matches_finite_differences():
    rng = np.random.default_rng(2)
    S, N, n = 4, 3, 20
    X = rng.standard_normal((n, S * N))
    y = X[:, :S] @ rng.standard_normal(S)
    M, Qf = fls.cnn2_chi_matrix(X, y, S, N, 2.0, 2.0, 0.1)
    eps = gpmod.discrepancy(gpmod.gp_fit(Qf, jnp.asarray(y), 0.1))
    from fleos.core.kernels import cnn2_output_kernel, patches

    P = patches(jnp.asarray(X), N, S)

    def f(Sig):
        return eps @ cnn2_output_kernel(P, P, Sig, 2.0) @ eps

    Sig0 = (2.0 / S) * jnp.eye(S)
    D = jnp.asarray(rng.standard_normal((S, S)))
    D = D + D.T
    h = 1e-5
    fd = (f(Sig0 + h * D) - f(Sig0 - h * D)) / (2 * h)
    # central differences: O(h²) ≈ 1e-10 relative error
    assert float(jnp.sum(M * D)) == pytest.approx(float(fd), rel=1e-7)
    c1 = fls.cnn2_chi_times_width(X, y, S, N, 2.0, 2.0, 0.1)
    assert c1 == pytest.approx(float(jnp.linalg.eigvalsh(Sig0 @ M)[-1]), rel=1e-10)


def test_mean_field_fcn_learns_features_at_larger_width_than_standard():
    # Fig. 2c: χ = 1 is reached at much larger N in MF scaling than in standard scaling.
    kw = {"d": 16, "sigma2": 0.01}
    std = fls.width_at_chi_one("fcn_standard", 64, **kw)
    mf = fls.width_at_chi_one("fcn_mf", 64, **kw)
    assert mf > 3 * std > 0


def test_fls_curve_reports_spread_over_seeds():
    out = fls.fls_curve("cnn2", [16, 32], data_seeds=(1, 2), S=4, N=3)
    assert out["n"] == [16, 32]
    per = np.array(out["per_seed"])
    assert per.shape == (2, 2) and np.all(per > 0)
    np.testing.assert_allclose(out["width_mean"], per.mean(axis=1))
    assert all(lo <= m <= hi for lo, m, hi in
               zip(out["width_min"], out["width_mean"], out["width_max"], strict=True))
    with pytest.raises(ValueError, match="unknown FLS option"):
        fls.width_at_chi_one("cnn2", 16, depth=3)
    with pytest.raises(ValueError, match="unknown FLS arch"):
        fls.width_at_chi_one("resnet", 16)


def test_cli_fls(tmp_path):
    import argparse
    import json

    from fleos.cli import fls as cli_fls

    parser = argparse.ArgumentParser()
    cli_fls.register(parser.add_subparsers())
    out = tmp_path / "fls.json"
    args = parser.parse_args(["fls", "--arch", "cnn2", "--n", "8", "12", "--seeds", "1",
                              "--S", "2", "--N", "2", "--out", str(out)])
    assert args.func(args) == 0
    (curve,) = json.loads(out.read_text())["curves"]
    assert curve["arch"] == "cnn2" and curve["n"] == [8, 12] and len(curve["width_mean"]) == 2


def _np_erf_g(K: np.ndarray) -> np.ndarray:
    """E[erf(u) erf(v)] written out by hand: (2/π) arcsin(2k_ab/√((1+2k_aa)(1+2k_bb)))."""
    d = np.diag(K)
    return 2 / np.pi * np.arcsin(2 * K / np.sqrt(np.outer(1 + 2 * d, 1 + 2 * d)))


@pytest.mark.parametrize("arch", ["fcn_standard", "fcn_mf"])
def test_both_fls_normalizations_match_a_hand_computation_fcn(arch):
    # n = 5 points in d = 3, depth 3, erf: K1 = σ_w² XXᵀ/d, K2 = σ_w² G(K1), Q_f = σ_L² G(K2).
    # Ours: N·χ = σ_L² εᵀ K2 ε with ε = (Q_f + σ²I)⁻¹ y = (y − f̄)/σ².
    # Eq. 6 as printed: N·χ = ε_pᵀ K2 ε_p with ε_p = (y − f̄)/σ = σ ε (σ_L² absorbed).
    from fleos.nets.data import make_dataset

    kw = {"d": 3, "sigma2": 0.05}
    cfg = {**fls.DEFAULTS[arch], **kw}
    ds = make_dataset("fcn", {"d": 3, "depth": 3, "sigma_w2": cfg["sigma_w2"],
                              "sigma_a2": fls.DEFAULTS["fcn_standard"]["sigma_a2"],
                              "activation": "erf"}, 5, 0, 0, 1)
    X, y = np.asarray(ds.X), np.asarray(ds.y)
    K2 = cfg["sigma_w2"] * _np_erf_g(cfg["sigma_w2"] * X @ X.T / 3)
    Qf = cfg["sigma_a2"] * _np_erf_g(K2)
    eps = np.linalg.solve(Qf + cfg["sigma2"] * np.eye(5), y)
    ours = cfg["sigma_a2"] * eps @ K2 @ eps
    eps_p = (y - Qf @ np.linalg.solve(Qf + cfg["sigma2"] * np.eye(5), y)) / np.sqrt(
        cfg["sigma2"])
    printed = eps_p @ K2 @ eps_p
    # float64 linear algebra on a 5 × 5 problem: agreement to ~1e-12 relative.
    assert fls.width_at_chi_one(arch, 5, **kw) == pytest.approx(ours, rel=1e-9)
    assert fls.width_at_chi_one(arch, 5, convention="eq6_printed", **kw) == pytest.approx(
        printed, rel=1e-9)


def test_both_fls_normalizations_match_a_hand_computation_cnn():
    # Linear activation, n = 4, N = 2 patches of S = 3: Q_f = (σ_a²/N) Σ_i P_i Σ P_iᵀ, so
    # M = ∂(εᵀ Q_f ε)/∂Σ = (σ_a²/N) Σ_i P_iᵀ ε εᵀ P_i, and C·χ = λ_max(Σ_GP M) (Σ_GP ∝ I).
    # Printed: ε → σ ε and σ_a² absorbed, i.e. × σ²/σ_a².
    from fleos.nets.data import make_dataset

    kw = {"S": 3, "N": 2, "sigma2": 0.1, "activation": "linear"}
    cfg = {**fls.DEFAULTS["cnn2"], **kw}
    ds = make_dataset("cnn2", {"S": 3, "N": 2, "sigma_w2": cfg["sigma_w2"],
                               "sigma_a2": cfg["sigma_a2"]}, 4, 0, 0, 1)
    X, y = np.asarray(ds.X), np.asarray(ds.y)
    P = [X[:, i * 3:(i + 1) * 3] for i in range(2)]
    sig = cfg["sigma_w2"] / 3
    Qf = cfg["sigma_a2"] / 2 * sum(p @ p.T * sig for p in P)
    eps = np.linalg.solve(Qf + 0.1 * np.eye(4), y)
    M = cfg["sigma_a2"] / 2 * sum(p.T @ np.outer(eps, eps) @ p for p in P)
    ours = np.linalg.eigvalsh(sig * M)[-1]
    assert fls.width_at_chi_one("cnn2", 4, **kw) == pytest.approx(ours, rel=1e-9)
    assert fls.width_at_chi_one("cnn2", 4, convention="eq6_printed", **kw) == pytest.approx(
        ours * 0.1 / cfg["sigma_a2"], rel=1e-9)
    with pytest.raises(ValueError, match="convention"):
        fls.width_at_chi_one("cnn2", 4, convention="paper", **kw)
