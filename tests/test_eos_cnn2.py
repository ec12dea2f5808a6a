"""Tests of the 2-layer CNN equations of state (fleos.theory.eos.cnn2, Eq. 8)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fleos  # noqa: F401  (enables float64)
from fleos.core import gp
from fleos.core.kernels import cnn2_output_kernel
from fleos.theory import solvers
from fleos.theory.eos.cnn2 import (
    CNN2Problem,
    cnn2_gp_observables,
    cnn2_observables,
    eos_residual,
    gp_sigma,
    solve_cnn2,
    sweep_cnn2,
    trace_term,
    trace_term_reference,
)


def teacher_problem(n=60, N=3, S=4, n_test=40, seed=0, sigma2=0.1, activation="erf"):
    """A small instance of the paper's setting: Gaussian inputs, linear CNN teacher."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + n_test, N * S))
    a = rng.normal(size=N) / np.sqrt(N)
    w = rng.normal(size=S) / np.sqrt(S)
    y = (X.reshape(-1, N, S) @ w) @ a
    return CNN2Problem.from_arrays(X[:n], y[:n], N, S, X[n:], y[n:], sigma2=sigma2,
                                   sigma_a2=2.0, sigma_w2=2.0, activation=activation)


def random_spd(S, seed=1):
    M = np.random.default_rng(seed).normal(size=(S, S))
    return jnp.asarray(M @ M.T / (2 * S) + 0.2 * np.eye(S))


@pytest.mark.parametrize("activation", ["erf", "linear"])
def test_trace_term_equals_finite_difference_of_qf(activation):
    """Tr{A ∂Q_f/∂Σ_ss'} (the VJP) against central differences of Q_f in single entries."""
    pr = teacher_problem(n=30, activation=activation)
    Sig = random_spd(pr.S)
    B = np.asarray(trace_term(pr.P, pr.y, Sig, pr.sigma2, pr.sigma_a2, activation))
    B_ref = np.asarray(trace_term_reference(pr.P, pr.y, Sig, pr.sigma2, pr.sigma_a2,
                                            activation))
    np.testing.assert_allclose(B, B_ref, rtol=1e-11, atol=1e-11 * np.abs(B_ref).max())
    Qf = cnn2_output_kernel(pr.P, pr.P, Sig, pr.sigma_a2, activation)
    fit = gp.gp_fit(Qf, pr.y, pr.sigma2)
    eps = np.asarray(gp.discrepancy(fit))
    A = np.outer(eps, eps) - np.linalg.inv(np.asarray(Qf) + pr.sigma2 * np.eye(pr.n))
    h = 1e-5
    qf = jax.jit(lambda s: cnn2_output_kernel(pr.P, pr.P, s, pr.sigma_a2, activation))
    for s, t in [(0, 0), (1, 2), (3, 0), (2, 2)]:
        E = np.zeros((pr.S, pr.S))
        E[s, t] = h
        dQ = (qf(Sig + E) - qf(Sig - E)) / (2 * h)
        fd = float(np.sum(A * np.asarray(dQ)))
        # central differences: truncation O(h^2 Q''') ~ 1e-10, rounding ~ 1e-16 |Q| / h
        assert B[s, t] == pytest.approx(fd, rel=1e-6, abs=1e-6 * np.abs(B).max())


def test_gp_limit_reproduces_gp_inference():
    pr = teacher_problem()
    res = solve_cnn2(pr, 1e12)
    assert res.converged
    np.testing.assert_allclose(np.asarray(res.x), np.asarray(gp_sigma(pr)), rtol=1e-9, atol=0)
    obs, ref = cnn2_observables(pr, res.x), cnn2_gp_observables(pr)
    for key in ("alpha_train", "alpha_test", "train_mse_normalized", "test_mse"):
        assert obs[key] == pytest.approx(ref[key], abs=1e-10)
    # and the GP observables are plain GP inference with Q_f(σ_w²/S I) (fleos.core.gp)
    Qf = cnn2_output_kernel(pr.P, pr.P, gp_sigma(pr), pr.sigma_a2)
    fit = gp.gp_fit(Qf, pr.y, pr.sigma2)
    f_test = gp.gp_predict(fit, cnn2_output_kernel(pr.P_test, pr.P, gp_sigma(pr), pr.sigma_a2))
    assert ref["alpha_test"] == pytest.approx(float(gp.alpha(pr.y_test, f_test, pr.sigma2)),
                                              abs=1e-12)


@pytest.mark.parametrize(("method", "C"), [("anderson", 6.0), ("newton_krylov", 12.0)])
def test_solution_satisfies_eq8_independently(method, C):
    pr = teacher_problem()
    tol = 1e-9
    (res,) = sweep_cnn2(pr, [C], tol=tol, method=method)
    assert res.converged, res.message
    Sig = np.asarray(res.x)
    assert np.allclose(Sig, Sig.T) and np.linalg.eigvalsh(Sig).min() > 0
    # Recompute the Eq. 8 residual with the independent all-patch VJP of fleos.core.kernels.
    B = np.asarray(trace_term_reference(pr.P, pr.y, res.x, pr.sigma2, pr.sigma_a2))
    R = np.linalg.inv(Sig) - (pr.S / pr.sigma_w2) * np.eye(pr.S) + B / C
    rel = np.linalg.norm(R) / (pr.S / pr.sigma_w2 * np.sqrt(pr.S))
    # 1 % slack: the two code paths and the Λ -> Σ inversion differ by rounding (~1e-14).
    assert rel <= 1.01 * tol
    assert rel == pytest.approx(eos_residual(pr, C, res.x), rel=1e-3, abs=1e-13)
    # a non-trivial solution: far from the GP value σ_w²/S I
    Sig_gp = np.asarray(gp_sigma(pr))
    assert np.linalg.norm(Sig - Sig_gp) > 0.3 * np.linalg.norm(Sig_gp)


def test_solution_equals_the_autodiff_solution_to_rounding():
    """Eq. 8 solved with the product's map (closed-form pullback, tiled Q_f, potri K_f⁻¹)
    and with the same fixed point built on `trace_term_reference` (jax autodiff through the
    forward Q_f, K_f⁻¹ by `cho_solve`), both by Anderson to tol = 1e-13 from the GP point. The
    two maps differ only by float64 rounding (~1e-15 relative), and with a residual of 1e-13
    the two solutions differ by at most (1e-13 + 1e-15)/(1 − L), L < 0.9 the map's contraction
    here: rtol 1e-12 on Σ."""
    pr = teacher_problem(n=80)
    C, tol = 20.0, 1e-13
    (res,) = sweep_cnn2(pr, [C], tol=tol, max_iter=200)
    assert res.converged, res.message
    scale = pr.S / pr.sigma_w2 * np.sqrt(pr.S)

    def fp_ref(u):
        Lam = 0.5 * (u + u.T) * scale
        B = trace_term_reference(pr.P, pr.y, jnp.linalg.inv(Lam), pr.sigma2, pr.sigma_a2)
        return ((pr.S / pr.sigma_w2) * jnp.eye(pr.S) - B / C) / scale

    ref = solvers.anderson(fp_ref, jnp.linalg.inv(gp_sigma(pr)) / scale, tol=tol,
                           max_iter=200, m=6)
    assert ref.converged, ref.message
    Sig_ref = np.linalg.inv(np.asarray(ref.x) * scale)
    np.testing.assert_allclose(np.asarray(res.x), Sig_ref, rtol=0,
                               atol=1e-12 * np.abs(Sig_ref).max())
    # and the solution is far from the GP's, so the comparison is not between two starts
    assert np.abs(Sig_ref - np.asarray(gp_sigma(pr))).max() > 0.1 * np.abs(Sig_ref).max()


def test_nonconvergence_reported():
    pr = teacher_problem()
    res = solve_cnn2(pr, 4.0, max_iter=1)
    assert not res.converged and res.residual > 1e-8
    assert res.residual == pytest.approx(eos_residual(pr, 4.0, res.x), rel=1e-6)


def test_sweep_matches_direct_solves_and_reaches_small_c():
    pr = teacher_problem()
    Cs = [10.0, 50.0, 20.0]
    sweep = sweep_cnn2(pr, Cs, tol=1e-10)
    assert all(r.converged for r in sweep)
    for C, r in zip(Cs, sweep, strict=True):
        direct = solve_cnn2(pr, C, tol=1e-10)
        assert direct.converged
        np.testing.assert_allclose(np.asarray(r.x), np.asarray(direct.x), rtol=1e-7, atol=1e-9)
    # the departure from the GP solution grows as C decreases
    dist = [np.linalg.norm(np.asarray(r.x - gp_sigma(pr))) for r in sweep]
    assert dist[0] > dist[2] > dist[1] > 0
    # C = 3 (< S, far from the GP): a direct solve from the GP start fails, the annealed
    # sweep inserts intermediate C and converges.
    assert not solve_cnn2(pr, 3.0, max_iter=40).converged
    (r3,) = sweep_cnn2(pr, [3.0], tol=1e-10)
    assert r3.converged and "intermediate widths" in r3.message
    assert eos_residual(pr, 3.0, r3.x) <= 1.01e-10


def test_linear_cnn_eos_is_exact_large_c_limit():
    """Linear activation, S = 1: an exact, independent reference.

    For f = Σ_ic a_ic w_c x_i with S = 1, integrating out a (Gaussian given w) leaves a
    posterior that depends on w only through s = Σ_c w_c² / C:
        p(s) ∝ s^{C/2-1} e^{-C s / 2σ_w²} N(y; 0, s M + σ² I),  M = (σ_a²/N) X Xᵀ,
    (χ²_C prior of Σ_c w_c²), so E[s] is a 1-D integral, done here by quadrature on the
    eigenvalues of M. The EoS Σ is the saddle point of the same integral with C/2 - 1 → C/2;
    with the data term scaled as C (y ∝ √C, so the feature-learning strength is held fixed)
    the exact mean must approach the EoS as D(C) = E[s] - Σ_EoS = O(1/C): C·D(C) converges.
    """
    rng = np.random.default_rng(1)
    n, N, sig2, sa2, sw2 = 40, 2, 1.0, 1.0, 1.0
    X = rng.normal(size=(n, N))
    y0 = 2.5 * X @ np.array([1.0, -0.7])
    lam, U = np.linalg.eigh(sa2 / N * X @ X.T)

    def exact_mean(C, y):
        uy2 = (U.T @ y) ** 2
        u = np.linspace(np.log(1e-3), np.log(1e3), 200001)  # log s; Jacobian adds s
        s = np.exp(u)
        ev = s[:, None] * lam[None, :] + sig2
        lp = (C / 2) * u - C * s / (2 * sw2) - 0.5 * np.sum(uy2 / ev + np.log(ev), axis=1)
        w = np.exp(lp - lp.max())
        return float(np.sum(w * s) / np.sum(w))

    CD = []
    for kappa in (10.0, 40.0):
        C, y = 20.0 * kappa, np.sqrt(kappa) * y0
        pr = CNN2Problem.from_arrays(X, y, N, 1, sigma2=sig2, sigma_a2=sa2, sigma_w2=sw2,
                                     activation="linear")
        res = solve_cnn2(pr, C, tol=1e-13)
        assert res.converged
        s_eos = float(res.x[0, 0])
        assert s_eos > 1.5 * sw2  # strong feature learning: Σ 50 % above its GP value
        D = exact_mean(C, y) - s_eos
        assert abs(D) < 0.01 * (s_eos - sw2)  # EoS error << feature-learning effect
        CD.append(C * D)
    # O(1/C) law: C·D changes only at the next order, O(1/C) relative (here ~0.3 %)
    assert CD[1] == pytest.approx(CD[0], rel=0.03)


def test_problem_validation_and_npz(tmp_path):
    pr = teacher_problem()
    X = np.asarray(pr.P).reshape(pr.n, -1)
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=np.asarray(pr.y), X_test=np.asarray(pr.P_test).reshape(40, -1),
             y_test=np.asarray(pr.y_test))
    loaded = CNN2Problem.from_npz(path, S=4, sigma2=0.1)
    assert (loaded.n, loaded.N, loaded.S) == (60, 3, 4)
    np.testing.assert_array_equal(np.asarray(loaded.P), np.asarray(pr.P))
    np.savez(tmp_path / "bad.npz", X=X)
    with pytest.raises(ValueError, match="'y'"):
        CNN2Problem.from_npz(tmp_path / "bad.npz", S=4)
    with pytest.raises(ValueError, match="multiple of S=5"):
        CNN2Problem.from_npz(path, S=5)
    with pytest.raises(ValueError, match="relu"):
        CNN2Problem.from_arrays(X, pr.y, 3, 4, activation="relu")


def _run_cli(argv, capsys):
    import argparse

    from fleos.cli import eos_cnn2

    parser = argparse.ArgumentParser()
    eos_cnn2.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out


def test_cli_json_from_data_file(tmp_path, capsys):
    import json

    pr = teacher_problem()
    path = tmp_path / "d.npz"
    np.savez(path, X=np.asarray(pr.P).reshape(pr.n, -1), y=np.asarray(pr.y),
             X_test=np.asarray(pr.P_test).reshape(40, -1), y_test=np.asarray(pr.y_test))
    code, out = _run_cli(["cnn2", "--data", str(path), "--S", "4", "--C", "50", "20",
                          "--json"], capsys)
    doc = json.loads(out)  # exactly one JSON document
    assert code == 0 and set(doc) == {"gp", "solutions", "settings"}
    assert [s["C"] for s in doc["solutions"]] == [50.0, 20.0]
    for s in doc["solutions"]:
        assert s["converged"] and s["residual"] <= 1e-8
        assert s["sigma_eigs"] == sorted(s["sigma_eigs"], reverse=True)
    assert doc["gp"]["alpha_test"] == pytest.approx(cnn2_gp_observables(pr)["alpha_test"])
    assert doc["settings"]["N"] == 3
    # a requested C that does not converge -> exit code 1, JSON still printed
    code, out = _run_cli(["cnn2", "--data", str(path), "--S", "4", "--C", "20",
                          "--max-iter", "1"], capsys)
    assert code == 1 and json.loads(out)["solutions"][0]["converged"] is False
