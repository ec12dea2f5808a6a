"""Tests of the FCN equations of state (Eq. 5, Eq. 13) in fleos.theory.eos.fcn.

All sizes are tiny (n ≤ 40) so the file runs in well under a minute on 2 cores. Tolerances:
finite differences are central (error O(h²) ≈ 1e-9 relative at h = 1e-5 in float64); solver
tolerances are relative residual norms; the exact linear-network reference has its own
derivation-based tolerance (see that test).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fleos  # noqa: F401
from fleos.core import gp as gpmod
from fleos.core.kernels import fcn_gp_kernels, post_kernel
from fleos.theory.eos import fcn


def _data(n=32, d=8, n_test=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Xt = rng.standard_normal((n_test, d))
    w = rng.standard_normal(d) / np.sqrt(d)
    # A non-linear single-neuron teacher (as in the paper's student-teacher FCN setting).
    y = np.tanh(2 * X @ w)
    yt = np.tanh(2 * Xt @ w)
    return X, y, Xt, yt


def _problem(depth=3, scaling="mean_field", n=32, d=8, sigma2=0.01, **kw):
    X, y, Xt, yt = _data(n, d)
    return fcn.FCNProblem(X, y, Xt, yt, sigma_w2=2.0, sigma_a2=2.0, sigma2=sigma2,
                          depth=depth, scaling=scaling, **kw)


def _spd(n, seed):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n + 2))
    return jnp.asarray(M @ M.T / n + 0.3 * np.eye(n))


def test_trace_term_matches_finite_differences():
    # Tr{A ∂Q/∂K_μν} via one VJP vs central differences of <A, σ² G(K)>, entries independent.
    n = 6
    K, A = _spd(n, 1), _spd(n, 2) - 0.5 * _spd(n, 3)
    s = 1.7
    got = fcn.trace_term(A, K, s, "erf")

    @jax.jit
    def f(Kp):
        return jnp.sum(A * s * post_kernel(Kp, "erf"))

    h = 1e-5
    for mu, nu in [(0, 0), (1, 3), (3, 1), (5, 5), (2, 4)]:
        E = jnp.zeros((n, n)).at[mu, nu].set(h)
        fd = (f(K + E) - f(K - E)) / (2 * h)
        np.testing.assert_allclose(got[mu, nu], fd, rtol=1e-7, atol=1e-10)


def test_kl_derivative_sign_and_factor():
    # ∂D_KL(K‖Q(Σ))/∂Σ by autodiff of the closed-form KL equals −½ X^T Tr[Q⁻¹(K−Q)Q⁻¹ ∂Q/∂K1] X:
    # the Methods expression Tr[Q⁻¹(K−Q)Q⁻¹ ∂Q/∂K] is −2 × the derivative (docs/derivations).
    rng = np.random.default_rng(4)
    n, d, s2 = 7, 3, 2.0
    X = jnp.asarray(rng.standard_normal((n, d)))
    Sigma = _spd(d, 5) / d
    K = _spd(n, 6)

    def Q_of(S):
        return s2 * post_kernel(X @ S @ X.T, "erf")

    auto = jax.jit(jax.grad(lambda S: fcn.kl_gauss(K, Q_of(S))))(Sigma)
    Q = Q_of(Sigma)
    Qi = jnp.linalg.inv(Q)
    paper = X.T @ fcn.trace_term(Qi @ (K - Q) @ Qi, X @ Sigma @ X.T, s2, "erf") @ X
    np.testing.assert_allclose(auto, -0.5 * paper, rtol=1e-8, atol=1e-12)
    ours = X.T @ fcn.trace_term(fcn.kl_grad_wrt_q(K, Qi), X @ Sigma @ X.T, s2, "erf") @ X
    np.testing.assert_allclose(auto, ours, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_fixed_point_is_stationarity_of_free_energy(depth):
    # ∂F/∂Σ = (N1/2)(T_Σ⁻¹ − Σ⁻¹) and ∂F/∂K^(l) = (N_l/2)(T_K⁻¹ − K⁻¹) at an arbitrary point:
    # checks every line of Eq. 5 (and Eq. 13 for depth 4) against autodiff of the free energy.
    pb = _problem(depth=depth, n=10, d=4)
    widths = (200.0, 150.0, 100.0)[: depth - 1]
    x = fcn.gp_x(pb)
    # Move away from the GP point (a symmetric positive perturbation).
    x = {"Sigma": x["Sigma"] * 1.3 + 0.01 * _spd(4, 7),
         "K": [K * 0.99 + 0.002 * _spd(10, 8 + i) for i, K in enumerate(x["K"])]}
    gS, gK = jax.jit(jax.grad(
        lambda S, Ks: fcn.free_energy(pb, {"Sigma": S, "K": Ks}, widths), argnums=(0, 1)
    ))(x["Sigma"], x["K"])
    Tx = jax.jit(fcn.fixed_point_map(pb, widths))(x)
    inv = jnp.linalg.inv
    gS = 0.5 * (gS + gS.T)
    np.testing.assert_allclose(gS, 0.5 * widths[0] * (inv(Tx["Sigma"]) - inv(x["Sigma"])),
                               rtol=1e-7, atol=1e-9)
    for m in range(depth - 2):
        g = 0.5 * (gK[m] + gK[m].T)
        np.testing.assert_allclose(
            g, 0.5 * widths[m + 1] * (inv(Tx["K"][m]) - inv(x["K"][m])), rtol=1e-7, atol=1e-9
        )


@pytest.mark.parametrize("depth", [3, 4])
def test_gp_limit_matches_nngp_inference(depth):
    # Width → ∞ (standard scaling): Σ = σ_w²/d I, K^(l) = Q^(l), and the observables equal GP
    # inference with the NNGP kernel of fleos.core.kernels.fcn_gp_kernels (train and test).
    pb = _problem(depth=depth, scaling="standard")
    res = fcn.solve_fcn(pb, 1e12, tol=1e-10)
    assert res.converged
    gpx = fcn.gp_x(pb)
    np.testing.assert_allclose(res.x["Sigma"], gpx["Sigma"], atol=1e-12)
    Xall = jnp.concatenate([pb.X, pb.X_test])
    ks = fcn_gp_kernels(Xall, (2.0,) * (depth - 1) + (2.0,), "erf")
    n = pb.n
    for K, Kref in zip(res.x["K"], ks[1:-1], strict=True):
        np.testing.assert_allclose(K, Kref[:n, :n], rtol=1e-9, atol=1e-12)
    Qf, Qf_st = fcn.output_kernels(pb, res.x, 1e12)
    np.testing.assert_allclose(Qf, ks[-1][:n, :n], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(Qf_st, ks[-1][n:, :n], rtol=1e-9, atol=1e-12)
    fit = gpmod.gp_fit(ks[-1][:n, :n], pb.y, pb.sigma2)
    f_te = gpmod.gp_predict(fit, ks[-1][n:, :n])
    obs = fcn.fcn_observables(pb, res.x, 1e12)
    np.testing.assert_allclose(obs["alpha_test"], gpmod.alpha(pb.y_test, f_te, pb.sigma2),
                               rtol=1e-8)
    np.testing.assert_allclose(obs["train_mse_over_gp"], 1.0, rtol=1e-8)
    np.testing.assert_allclose(obs["sigma_top_over_gp"], 1.0, rtol=1e-8)


@pytest.fixture(scope="module")
def mf_sweep():
    # One sweep (GP -> N = 64 -> N = 8) shared by several tests (the expensive part).
    pb = _problem(depth=3, scaling="mean_field", n=24, d=6)
    widths = [64.0, 8.0]
    return pb, widths, fcn.sweep_fcn(pb, widths, tol=1e-10)


def test_solution_residual_vanishes_and_features_are_learned(mf_sweep):
    pb, widths, results = mf_sweep
    assert all(r.converged for r in results), [r.message for r in results]
    tops = []
    for r, w in zip(results, widths, strict=True):
        # Recompute every line of Eq. 5 at the returned point (T(x) − x, paper form),
        # independently of the solver's bookkeeping (it iterates on the precision form).
        assert max(fcn.residual_blocks(pb, r.x, w).values()) < 1e-8
        tops.append(fcn.fcn_observables(pb, r.x, w))
    # Feature learning grows as the width shrinks: top Σ eigenvalue up, train error down.
    assert tops[1]["sigma_top_over_gp"] > tops[0]["sigma_top_over_gp"] > 1.0
    assert tops[1]["sigma_top_over_gp"] > 1.05
    assert tops[1]["train_mse_over_gp"] < 0.98


def test_newton_reaches_small_widths_straight_from_the_gp_point(mf_sweep):
    pb, widths, results = mf_sweep
    # At N = 8 the inverted map T of Eq. 5 is undefined at the GP point (its K^(2) right-hand
    # side is indefinite: χ > 1 there), so the paper had to anneal. The precision form with the
    # free-energy line search starts from the GP point; it must land on the annealed solution
    # (the same root: agreement to the solver tolerance times the conditioning, O(1-10)).
    T_gp = fcn.fixed_point_map(pb, 8.0)(fcn.gp_x(pb))
    assert not bool(jnp.all(jnp.isfinite(T_gp["K"][0])))
    direct = fcn.solve_fcn(pb, 8.0, tol=1e-10)
    assert direct.converged, direct.message
    np.testing.assert_allclose(direct.x["Sigma"], results[1].x["Sigma"], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(direct.x["K"][0], results[1].x["K"][0], rtol=1e-7, atol=1e-9)


def test_anderson_agrees_with_newton():
    # At a large mean-field width the plain map x <- T(x) is a contraction from the GP point
    # and Anderson (an independent method, no derivatives) must find Newton's root; features
    # are already learned there (top Σ eigenvalue 1.2x its GP value). At small MF widths the
    # map is unstable and Anderson stalls (MISSION §6). Both residuals are relative to the GP
    # block norms (||K_GP||_F ≈ 5 here); solution error = residual x norm x the conditioning
    # of I − ∂T/∂x (O(1-10)), so tol 1e-9 bounds entrywise differences by ~5e-8.
    pb = _problem(depth=3, scaling="mean_field", n=24, d=6)
    res_n = fcn.solve_fcn(pb, 1024.0, tol=1e-10)
    res_a = fcn.solve_fcn(pb, 1024.0, tol=1e-9, method="anderson", max_iter=300)
    assert res_n.converged and res_a.converged, res_a.message
    assert fcn.fcn_observables(pb, res_n.x, 1024.0)["sigma_top_over_gp"] > 1.1
    np.testing.assert_allclose(res_a.x["Sigma"], res_n.x["Sigma"], rtol=1e-6, atol=5e-8)
    np.testing.assert_allclose(res_a.x["K"][0], res_n.x["K"][0], rtol=1e-6, atol=5e-8)


def test_nonconvergence_is_reported(mf_sweep):
    pb, _, results = mf_sweep
    bad = fcn.solve_fcn(pb, 32.0, results[0].x, max_iter=1, tol=1e-14)
    assert not bad.converged and bad.iterations == 1
    assert "max_iter" in bad.message and bad.residual > 1e-14
    # A start outside the domain (an indefinite K^(2)): reported, not a silent NaN solution.
    x_bad = {"Sigma": results[0].x["Sigma"], "K": [-results[0].x["K"][0]]}
    far = fcn.solve_fcn(pb, 32.0, x_bad)
    assert not far.converged and "positive-definite" in far.message


def test_mean_field_vs_standard_scaling(mf_sweep):
    pb_mf, widths, results = mf_sweep
    std = _problem(scaling="standard")
    assert std.readout_var(64) == 2.0
    assert pb_mf.readout_var(64) == pytest.approx(2.0 / 64)
    # MF at width N is the standard-scaling EoS with σ_a² → σ_a²/N (readout prior σ_a²/N²);
    # solving that standard problem independently must give the same solution.
    X, y, Xt, yt = (pb_mf.X, pb_mf.y, pb_mf.X_test, pb_mf.y_test)
    equiv = fcn.FCNProblem(X, y, Xt, yt, sigma_w2=2.0, sigma_a2=2.0 / 64, sigma2=pb_mf.sigma2,
                           depth=3, scaling="standard")
    (r_eq,) = fcn.sweep_fcn(equiv, [64.0], tol=1e-10)
    np.testing.assert_allclose(r_eq.x["Sigma"], results[0].x["Sigma"], rtol=1e-7, atol=1e-10)
    # In MF scaling the GP itself depends on the width (Q_f ∝ 1/N); in standard it does not.
    o64 = fcn.fcn_observables(pb_mf, results[0].x, 64.0)
    o8 = fcn.fcn_observables(pb_mf, results[1].x, 8.0)
    assert o8["train_mse_gp"] < 0.9 * o64["train_mse_gp"]


def test_linear_two_layer_network_against_exact_posterior():
    """Deep-linear check (VGA exact): 2-layer linear FCN, d = 1, mean-field readout.

    f(x) = Σ_j a_j w_j x with w_j ~ N(0, σ_w²), a_j ~ N(0, σ_a²/N²). Given W, f is Gaussian
    with kernel (σ_a²/N) s x xᵀ, s = (1/N) Σ_j w_j², and N s/σ_w² ~ χ²_N. So the exact
    posterior of s is one-dimensional: p(s|D) ∝ s^{N/2−1} e^{−N s/(2σ_w²)} 𝒩(y; 0, K_f(s)),
    integrated here by quadrature. The EoS (Eq. 5 for L = 2) is its saddle point with
    exponent N/2 instead of N/2 − 1; saddle and posterior mean differ by O(1/N) relatively
    (for a Gamma law of shape N/2, mean − mode = 2/N of the mean), so we require agreement
    within 5/N, while the feature-learning effect itself (s/s_GP − 1) is ≈ 40 times larger.
    """
    rng = np.random.default_rng(11)
    n, N, s2, sa2, sw2 = 200, 2000.0, 0.1, 1.0, 1.0
    x = rng.standard_normal(n)
    y = 1.0 * x + 0.1 * rng.standard_normal(n)
    pb = fcn.FCNProblem(x[:, None], y, sigma_w2=sw2, sigma_a2=sa2, sigma2=s2, depth=2,
                        scaling="mean_field", activation="linear")
    res = fcn.solve_fcn(pb, N, tol=1e-12)
    assert res.converged
    s_eos = float(res.x["Sigma"][0, 0])

    c = sa2 / N
    xx, xy, yy = x @ x, x @ y, y @ y
    s = np.linspace(1e-3, 20.0, 400001) * sw2

    def logpost(s):
        lam = s2 + c * s * xx
        quad = (yy - c * s * xy**2 / lam) / s2
        return (N / 2 - 1) * np.log(s) - N * s / (2 * sw2) - 0.5 * np.log(lam) - 0.5 * quad

    lp = logpost(s)
    w = np.exp(lp - lp.max())
    s_mean = np.sum(w * s) / np.sum(w)
    assert s_eos / sw2 - 1 > 40 * 5 / N  # a strong effect, well above the tolerance
    assert abs(s_eos / s_mean - 1) < 5 / N
    # Posterior-mean predictor: exact E_s[c s x (x·y)/(σ² + c s x·x)] vs the EoS's f̄.
    f_exact = x * np.sum(w * c * s * xy / (s2 + c * s * xx)) / np.sum(w)
    obs = fcn.fcn_observables(pb, res.x, N)
    alpha_exact = float(gpmod.alpha(jnp.asarray(y), jnp.asarray(f_exact), s2))
    assert obs["alpha_train"] == pytest.approx(alpha_exact, rel=5 / N)


def test_bad_inputs_raise_clear_errors():
    X, y, Xt, yt = _data()
    with pytest.raises(ValueError, match="scaling"):
        fcn.FCNProblem(X, y, scaling="mf")
    with pytest.raises(ValueError, match="depth"):
        fcn.FCNProblem(X, y, depth=1)
    with pytest.raises(ValueError, match="y must have shape"):
        fcn.FCNProblem(X, y[:-1])
    with pytest.raises(ValueError, match="method"):
        fcn.solve_fcn(fcn.FCNProblem(X, y), 10.0, method="bisection")


def test_cli_eos_fcn_writes_one_json_document(tmp_path):
    import argparse
    import json

    from fleos.cli import eos_fcn

    parser = argparse.ArgumentParser()
    eos_fcn.register(parser.add_subparsers())
    out = tmp_path / "fcn.json"
    args = parser.parse_args(["fcn", "--n", "16", "--d", "4", "--n-test", "8", "--widths",
                              "1e9", "300", "--scaling", "standard", "--json",
                              "--out", str(out)])
    assert args.func(args) == 0
    doc = json.loads(out.read_text())
    assert [s["width"] for s in doc["solutions"]] == [1e9, 300]
    assert all(s["converged"] for s in doc["solutions"])
    # Eq. 5 as printed holds at every returned point (the solver iterates on another form;
    # default tol 1e-8 on it, times the conditioning O(1-10)).
    assert all(s["residual_paper_form"] < 1e-6 for s in doc["solutions"])
    # At N = 1e9 the EoS is the GP (ratios 1 to 1e-6); the GP rows are width-independent here.
    assert doc["solutions"][0]["train_mse_over_gp"] == pytest.approx(1.0, abs=1e-6)
    assert doc["gp"][0]["train_mse"] == pytest.approx(doc["gp"][1]["train_mse"])
    assert len(doc["solutions"][1]["sigma_eigs"]) == 4


def test_step_curve_stays_positive_definite_and_is_tangent_to_the_step():
    # u(t) = u + t du + ½ t² du u⁻¹ du = ½u + ½(u + t du) u⁻¹ (u + t du) ⪰ ½u for every t,
    # and u'(0) = du (so Newton's local convergence is kept).
    u = {"Sigma": _spd(5, 1), "K": [_spd(7, 2)]}
    rng = np.random.default_rng(3)
    def big_symmetric(m):
        A = rng.standard_normal((m, m))
        return jnp.asarray(10 * (A + A.T))

    du = {"Sigma": big_symmetric(5), "K": [big_symmetric(7)]}
    for t in (-1e3, -1.0, 0.3, 1e3):
        ut = fcn._retract_spd(u, du, jnp.asarray(t))
        for a, b in ((ut["Sigma"], u["Sigma"]), (ut["K"][0], u["K"][0])):
            # u(t) − ½u is positive semi-definite: eigenvalues ≥ −(rounding of |u(t)|).
            assert np.linalg.eigvalsh(np.asarray(a - 0.5 * b)).min() > -1e-9 * np.abs(a).max()
    h = 1e-6
    fd = (fcn._retract_spd(u, du, jnp.asarray(h))["K"][0]
          - fcn._retract_spd(u, du, jnp.asarray(-h))["K"][0]) / (2 * h)
    np.testing.assert_allclose(fd, du["K"][0], rtol=1e-6, atol=1e-6)


def test_every_entry_point_has_the_same_fcn_scaling_default():
    """A config's model block without `scaling` (as the sampler's model and the workflow's
    theory read it), `fleos eos fcn` without --scaling and a bare `FCNProblem` all build the
    same network: the one default of fleos.nets.models."""
    import argparse
    from types import SimpleNamespace

    from fleos.cli import eos_fcn
    from fleos.nets.models import DEFAULT_SCALING, FCN, SCALINGS, build_model, validate_model_cfg
    from fleos.theory.runs import fcn_problem

    assert DEFAULT_SCALING in SCALINGS
    model = {"d": 8, "sigma_w2": 2.0, "sigma_a2": 2.0}
    X, y, Xt, yt = _data()
    parser = argparse.ArgumentParser()
    eos_fcn.register(parser.add_subparsers())
    got = {
        "config (sampler)": validate_model_cfg("fcn", model)["scaling"],
        "build_model": build_model("fcn", model, 4).scaling,
        "FCN": FCN(d=8, width=4).scaling,
        "config (theory)": fcn_problem(SimpleNamespace(X=X, y=y, X_test=Xt, y_test=yt), model,
                                       0.01, 0.0).scaling,
        "fleos eos fcn": parser.parse_args(["fcn", "--widths", "4"]).scaling,
        "FCNProblem": fcn.FCNProblem(X, y).scaling,
    }
    assert got == dict.fromkeys(got, DEFAULT_SCALING)


@pytest.mark.parametrize("blocks", [{"Sigma": float("nan"), "K2": 4.6e-14},
                                    {"Sigma": 4.6e-14, "K2": float("nan")}])
def test_a_nan_block_makes_the_paper_form_residual_nan_and_the_solve_unconverged(
        mf_sweep, monkeypatch, blocks):
    # Python's max() returns 4.6e-14 for one of these two orders and NaN for the other; the
    # residual must be NaN for both, and the record must not call the point a solution.
    pb, widths, results = mf_sweep
    monkeypatch.setattr(fcn, "residual_blocks", lambda *a, **k: dict(blocks))
    assert np.isnan(fcn.paper_form_residual(pb, results[0].x, widths[0]))
    rec = fcn.result_summary(pb, widths[0], results[0])
    assert rec["residual_paper_form"] is None and rec["converged"] is False
    assert "NaN" in rec["message"]


def test_plus_sign_field_is_stationarity_of_the_flipped_log_det_and_solves_its_own_equation():
    """The diagnostic field A = εεᵀ + K_f⁻¹ (`field_sign=+1`, the authors' FCN notebook) is
    −2 ∂/∂Q_f of ½yᵀK_f⁻¹y − ½ log det K_f. Check its fixed-point map against autodiff of that
    free energy at an arbitrary point (as for Eq. 5 above), then solve it: its own paper-form
    residual vanishes while Eq. 5's does not, and the two solutions differ (more Σ growth
    with the plus sign: its log-det term rewards a larger K_f)."""
    pb = _problem(depth=3, n=10, d=4)
    widths = (60.0, 60.0)
    data, p = fcn._data(pb), fcn._params(pb, widths, field_sign=1.0)
    x = fcn.gp_x(pb)
    x = {"Sigma": x["Sigma"] * 1.3 + 0.01 * _spd(4, 7),
         "K": [x["K"][0] * 0.99 + 0.002 * _spd(10, 8)]}
    gS = jax.grad(lambda S: fcn._free_energy_core({"Sigma": S, "K": x["K"]}, data, p, "erf"))(
        x["Sigma"])
    Tx = fcn._fixed_point_core(x, data, p, "erf")
    inv = jnp.linalg.inv
    np.testing.assert_allclose(0.5 * (gS + gS.T),
                               0.5 * widths[0] * (inv(Tx["Sigma"]) - inv(x["Sigma"])),
                               rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="field_sign"):
        fcn._params(pb, widths, field_sign=0.5)
    pb = _problem(depth=3, scaling="mean_field", n=24, d=6)
    plus = fcn.sweep_fcn(pb, [64.0, 16.0], tol=1e-10, field_sign=1.0)[-1]
    minus = fcn.sweep_fcn(pb, [64.0, 16.0], tol=1e-10)[-1]
    assert plus.converged and minus.converged
    assert max(fcn.residual_blocks(pb, plus.x, 16.0, field_sign=1.0).values()) < 1e-8
    assert max(fcn.residual_blocks(pb, plus.x, 16.0).values()) > 1e-4
    top = {s: fcn.fcn_observables(pb, r.x, 16.0)["sigma_top_over_gp"]
           for s, r in ((1, plus), (-1, minus))}
    assert top[1] > top[-1] > 1.0, top
