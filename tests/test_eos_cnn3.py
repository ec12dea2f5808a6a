"""Tests of the 3-layer CNN kernel predictions (Eq. 5 applied to Eq. 14; Fig. 5). Tiny sizes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fleos  # noqa: F401
from fleos.core.kernels import erf_g
from fleos.theory.eos import cnn3
from fleos.theory.eos.fcn import gp_neg_log_evidence, kl_gauss

GEOM = {"N": 2, "S1": 3, "S0": 4}


def _X(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, GEOM["N"] * GEOM["S1"] * GEOM["S0"]))


def _spd(m, seed, scale=0.3):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, m + 3))
    return jnp.asarray(A @ A.T / m * scale + 0.2 * np.eye(m))


def test_q2_matches_brute_force_definition():
    # Independent reference: build K1 over all (μ, j, i) with the patch formula of Eq. 14,
    # x_{(j,i)} = x[(i + j S1) S0 : (i + j S1 + 1) S0], and sum same-i pairs explicitly.
    N, S1, S0 = GEOM["N"], GEOM["S1"], GEOM["S0"]
    X = _X()
    n = len(X)
    Sigma = np.asarray(_spd(S0, 1))
    sv2 = 1.7
    Q2 = np.zeros((n * N, n * N))
    for mu in range(n):
        for j in range(N):
            for nu in range(n):
                for jp in range(N):
                    tot = 0.0
                    for i in range(S1):
                        a = X[mu, (i + j * S1) * S0:(i + j * S1 + 1) * S0]
                        b = X[nu, (i + jp * S1) * S0:(i + jp * S1 + 1) * S0]
                        tot += float(erf_g(a @ Sigma @ b, a @ Sigma @ a, b @ Sigma @ b))
                    Q2[mu * N + j, nu * N + jp] = sv2 / S1 * tot
    got = cnn3.q2_from_sigma(cnn3.cnn3_patches(X, N, S1, S0), jnp.asarray(Sigma), sv2)
    np.testing.assert_allclose(got, Q2, rtol=1e-12, atol=1e-14)


def test_kl_gradient_matches_autodiff():
    # ∂D_KL(K2‖Q2(Σ))/∂Σ (blockwise VJP) vs autodiff of the closed-form KL.
    X = _X()
    n, N = len(X), GEOM["N"]
    Sigma = _spd(GEOM["S0"], 2) / 4
    K2 = _spd(n * N, 3)
    P = cnn3.cnn3_patches(X, **GEOM)
    auto = jax.jit(jax.grad(lambda S: kl_gauss(K2, cnn3.q2_from_sigma(P, S, 2.0))))(Sigma)
    got = cnn3.kl_grad_sigma(X, Sigma, K2, sigma_v2=2.0, **GEOM)
    np.testing.assert_allclose(got, 0.5 * (auto + auto.T), rtol=1e-8, atol=1e-12)


def test_predict_q2_trace_term_matches_autodiff():
    # (1/C2) Tr{A ∂Q_f/∂K2} = −(2/C2) ∂(½yᵀK_f⁻¹y + ½ log det K_f)/∂K2 (Eq. 5, lines 2 and 5).
    X = _X()
    n, N = len(X), GEOM["N"]
    K2 = _spd(n * N, 4)
    y = jnp.asarray(np.random.default_rng(5).standard_normal(n))
    C2, s2, sa2 = 7.0, 0.1, 1.5
    g = jax.jit(jax.grad(lambda K: gp_neg_log_evidence(cnn3.qf_from_k2(K, N, sa2), y, s2)))(K2)
    expected = jnp.linalg.inv(jnp.linalg.inv(K2) - (2.0 / C2) * 0.5 * (g + g.T))
    got = cnn3.predict_q2(K2, y, s2, C2, N=N, sigma_a2=sa2)
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-12)


def test_predictions_reduce_to_gp_kernels():
    # Fed the GP kernels (K2 = Q2(Σ_GP)), the KL term vanishes so Σ_pred = Σ_GP at any C;
    # and Q2_pred → K2 = Q2_GP as C2 → ∞ (the feature-learning term is O(1/C2)).
    X = _X()
    y = jnp.asarray(np.random.default_rng(6).standard_normal(len(X)))
    Sig_gp, Q2_gp = cnn3.gp_kernels(X, sigma_w2=2.0, sigma_v2=2.0, **GEOM)
    Sp = cnn3.predict_sigma(X, Sig_gp, Q2_gp, 100.0, 100.0, sigma_w2=2.0, sigma_v2=2.0, **GEOM)
    np.testing.assert_allclose(Sp, Sig_gp, rtol=1e-9, atol=1e-12)
    Qp = cnn3.predict_q2(Q2_gp, y, 0.1, 1e12, N=GEOM["N"], sigma_a2=2.0)
    np.testing.assert_allclose(Qp, Q2_gp, rtol=1e-8, atol=1e-10)
    # At finite C2 the prediction moves away from K2 by O(1/C2): the deviation halves when C2
    # doubles (to first order).
    d1 = float(jnp.linalg.norm(cnn3.predict_q2(Q2_gp, y, 0.1, 1e4, N=2, sigma_a2=2.0) - Q2_gp))
    d2 = float(jnp.linalg.norm(cnn3.predict_q2(Q2_gp, y, 0.1, 2e4, N=2, sigma_a2=2.0) - Q2_gp))
    assert d1 > 0 and d1 / d2 == pytest.approx(2.0, rel=1e-3)


def test_cli_eos_cnn3_spectra(tmp_path):
    import argparse
    import json

    from fleos.cli import eos_cnn3
    from fleos.nets.datasets import Dataset, save_dataset

    X = _X()
    y = np.random.default_rng(7).standard_normal(len(X))
    save_dataset(Dataset(X, y, X[:2], y[:2]), tmp_path / "d.npz")
    Sig, Q2 = cnn3.gp_kernels(X, sigma_w2=2.0, sigma_v2=2.0, **GEOM)
    np.savez(tmp_path / "k.npz", Sigma=np.asarray(Sig), K2=np.asarray(Q2), Q2=np.asarray(Q2))
    parser = argparse.ArgumentParser()
    eos_cnn3.register(parser.add_subparsers())
    out = tmp_path / "o.json"
    args = parser.parse_args(
        ["cnn3", "--samples", str(tmp_path / "k.npz"), "--data", str(tmp_path / "d.npz"),
         "--N", "2", "--S1", "3", "--S0", "4", "--C1", "50", "--C2", "50", "--sigma2", "0.1",
         "--top-sigma", "4", "--top-q2", "5", "--out", str(out)])
    assert args.func(args) == 0
    doc = json.loads(out.read_text())
    np.testing.assert_allclose(doc["sigma_pred_eigs"], doc["sigma_gp_eigs"], rtol=1e-9)
    np.testing.assert_allclose(doc["sigma_pred_analytic_q2_eigs"], doc["sigma_gp_eigs"],
                               rtol=1e-9)
    assert len(doc["q2_pred_eigs"]) == 5 and doc["q2_emp_eigs"] == doc["q2_gp_eigs"]


def test_cli_reads_the_workflow_aggregate_file(tmp_path):
    # The CLI reads the workflow's aggregate npz (sigma_mean, K2_mean, Q2_mean) and prints
    # what the workflow's theory rule writes (both call fig5_spectra).
    import json

    from fleos.analysis.aggregate import load_aggregate
    from fleos.cli import main
    from fleos.cli.eos_cnn3 import read_kernels
    from fleos.nets.datasets import Dataset, save_dataset
    from fleos.theory.runs import theory_cnn3

    X = _X()
    y = np.random.default_rng(8).standard_normal(len(X))
    save_dataset(Dataset(X, y, X[:2], y[:2]), tmp_path / "d.npz")
    K2, Q2 = _spd(len(X) * 2, 9), _spd(len(X) * 2, 10)
    Sig = np.asarray(_spd(4, 11)) / 4
    np.savez(tmp_path / "w8.npz", sigma_mean=Sig, K2_mean=np.asarray(K2),
             Q2_mean=np.asarray(Q2), n=len(X), width=8)
    out = tmp_path / "cli.json"
    assert main(["eos", "cnn3", "--samples", str(tmp_path / "w8.npz"), "--data",
                 str(tmp_path / "d.npz"), "--N", "2", "--S1", "3", "--S0", "4", "--C1", "8",
                 "--C2", "8", "--sigma2", "0.1", "--sigma-w2", "1", "--sigma-v2", "1",
                 "--sigma-a2", "2", "--out", str(out)]) == 0
    exp = {"model": {"N": 2, "S1": 3, "S0": 4, "sigma_w2": 1.0, "sigma_v2": 1.0,
                     "sigma_a2": 2.0}, "sigma2": 0.1, "data": {}}
    wf = theory_cnn3(exp, 8, tmp_path / "d.npz", load_aggregate(tmp_path / "w8.npz"),
                     tmp_path / "wf.json")
    cli = json.loads(out.read_text())
    for key in ("sigma_pred_eigs", "sigma_pred_analytic_q2_eigs", "q2_pred_eigs",
                "sigma_gp_eigs", "q2_gp_eigs"):
        np.testing.assert_allclose(cli[key], wf[key], rtol=1e-12, err_msg=key)
    np.savez(tmp_path / "bad.npz", sigma_mean=Sig)
    with pytest.raises(ValueError, match="bad.npz lacks 'K2'"):
        read_kernels([str(tmp_path / "bad.npz")])


def test_kl_gradient_with_empirical_q2_equals_finite_differences():
    # With the empirical Q̂2 in the KL term, ∂D_KL/∂Σ is the gradient at Σ' = Σ of
    # F(Σ') = D_KL(K2 ‖ Q̂2 + Q2(Σ') − Q2(Σ)). Central differences along random symmetric
    # directions: the truncation error falls as h² (1.3e-4 relative at h = 1e-4 here, so
    # ≈ 1.3e-8 at h = 1e-6), the round-off is ≈ 1e-16/h = 1e-10: rtol 1e-7.
    X = _X()
    n, N = len(X), GEOM["N"]
    Sigma = _spd(GEOM["S0"], 12) / 4
    K2, Q2_emp = _spd(n * N, 13), _spd(n * N, 14)
    P = cnn3.cnn3_patches(X, **GEOM)
    Q2_at = cnn3.q2_from_sigma(P, Sigma, 2.0)

    def F(S):
        return float(kl_gauss(K2, Q2_emp + cnn3.q2_from_sigma(P, S, 2.0) - Q2_at))

    g = cnn3.kl_grad_sigma(X, Sigma, K2, sigma_v2=2.0, Q2=Q2_emp, **GEOM)
    rng = np.random.default_rng(15)
    h = 1e-6
    for _ in range(3):
        E = rng.standard_normal((GEOM["S0"],) * 2)
        E = jnp.asarray(E + E.T)
        fd = (F(Sigma + h * E) - F(Sigma - h * E)) / (2 * h)
        assert float(jnp.sum(g * E)) == pytest.approx(fd, rel=1e-7)
    # ... and it is not the analytic-Q2 gradient (the other Fig. 5 variant).
    g_an = cnn3.kl_grad_sigma(X, Sigma, K2, sigma_v2=2.0, **GEOM)
    assert float(jnp.linalg.norm(g - g_an)) > 0.1 * float(jnp.linalg.norm(g_an))


def test_fig5_prediction_with_empirical_q2_is_positive_definite_on_smoke_data():
    # tests/data/cnn3_smoke_kernels.npz: the seed-pooled Σ̂, K̂2, Q̂2 of the smoke run
    # (config/smoke.yaml, cnn3: n = 16, N = 2, S1 = 3, S0 = 4, C = 8, 2 seeds × 400 steps),
    # written from results/<smoke>/aggregate/cnn3/n16/w8.npz with the training data.
    from pathlib import Path

    z = np.load(Path(__file__).parent / "data" / "cnn3_smoke_kernels.npz")
    out = cnn3.fig5_spectra(z["X"], z["y"], z["sigma_mean"], z["K2_mean"], z["Q2_mean"], 8.0,
                            8.0, N=2, S1=3, S0=4, sigma2=0.05, sigma_w2=1.0, sigma_v2=1.0,
                            sigma_a2=2.0)
    assert out["sigma_pred_valid"] and min(out["sigma_pred_eigs"]) > 0
    # Σ_pred's inverse is the precision of Eq. 5; positive definite means the Gaussian of
    # the input weights exists. Its spectrum is also finite and ordered.
    assert np.all(np.isfinite(out["sigma_pred_eigs"]))
    assert out["sigma_pred_eigs"] == sorted(out["sigma_pred_eigs"], reverse=True)
    np.testing.assert_allclose(out["sigma_emp_eigs"],
                               np.linalg.eigvalsh(z["sigma_mean"])[::-1], rtol=1e-12)
