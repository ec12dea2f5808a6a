"""Tests of the generic solvers (fleos.theory.solvers): known roots, reported non-convergence,
domain safeguards, and the annealing continuation with step insertion."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

import fleos  # noqa: F401  (enables float64)
from fleos.theory.solvers import SolveResult, anderson, anneal, newton_krylov

RNG = np.random.default_rng(0)
A5 = jnp.asarray(RNG.normal(size=(5, 5)) * 0.3 + 3.0 * np.eye(5))
X_STAR = jnp.asarray(RNG.normal(size=5))


def cubic_residual(x):
    """Nonlinear system with the known root x* (A5 is well conditioned, the cubic is monotone
    around it)."""
    d = x - X_STAR
    return A5 @ d + 0.5 * d**3


def test_newton_krylov_known_root():
    res = newton_krylov(cubic_residual, jnp.zeros(5), tol=1e-12, max_iter=30)
    assert res.converged and res.message == "converged"
    assert np.max(np.abs(res.x - X_STAR)) < 1e-11
    # residual is the norm recomputed at the returned point
    assert res.residual == pytest.approx(float(jnp.linalg.norm(cubic_residual(res.x))), abs=1e-15)
    assert res.residual <= 1e-12
    # Newton converges quadratically: a handful of steps from x = 0
    assert res.iterations <= 8
    assert len(res.history) == res.iterations + 1


def test_newton_krylov_pytree_and_domain_backtracking():
    # log(x) - 1 = 0 (root e) from x0 = 10: the full Newton step lands at x < 0 where log is
    # NaN; the line search must shrink it instead of failing.
    def residual(p):
        return {"u": jnp.log(p["u"]) - 1.0, "v": p["v"] ** 2 - 4.0}

    res = newton_krylov(residual, {"u": jnp.array([10.0]), "v": jnp.array([3.0])}, tol=1e-12)
    assert res.converged
    assert float(res.x["u"][0]) == pytest.approx(math.e, rel=1e-12)
    assert float(res.x["v"][0]) == pytest.approx(2.0, rel=1e-12)


def test_anderson_known_fixed_points():
    # Dottie number: the unique real fixed point of cos.
    res = anderson(jnp.cos, jnp.zeros(3), tol=1e-13, m=4)
    assert res.converged
    np.testing.assert_allclose(np.asarray(res.x), 0.7390851332151607, rtol=0, atol=1e-12)
    assert res.residual == pytest.approx(
        float(jnp.linalg.norm(jnp.cos(res.x) - res.x)), abs=1e-16
    )
    # Linear contraction with a slow mode (rate 0.99): plain iteration needs ~3000 steps,
    # Anderson with m >= dimension solves it in about dimension + 2 steps.
    M = jnp.diag(jnp.array([0.99, 0.5, -0.3, 0.1]))
    b = jnp.array([1.0, 2.0, 3.0, 4.0])
    exact = np.linalg.solve(np.eye(4) - np.asarray(M), np.asarray(b))
    res = anderson(lambda x: M @ x + b, jnp.zeros(4), tol=1e-10, m=5, max_iter=50)
    assert res.converged and res.iterations <= 10
    np.testing.assert_allclose(np.asarray(res.x), exact, rtol=1e-9)


def test_anderson_recovers_from_domain_exit():
    # G(x) = sqrt(x) + 1 is NaN for x < 0; start where extrapolations can overshoot.
    res = anderson(lambda x: jnp.sqrt(x) + 1.0, jnp.array([0.01, 50.0]), tol=1e-12, m=3)
    golden = (3.0 + math.sqrt(5.0)) / 2.0  # x = sqrt(x) + 1
    assert res.converged
    np.testing.assert_allclose(np.asarray(res.x), golden, rtol=1e-11)


def test_nonconvergence_is_reported():
    res = newton_krylov(cubic_residual, jnp.zeros(5), tol=1e-12, max_iter=1)
    assert not res.converged and res.residual > 1e-12 and res.iterations == 1
    assert "max_iter" in res.message
    assert res.residual == pytest.approx(float(jnp.linalg.norm(cubic_residual(res.x))))
    res = anderson(jnp.cos, jnp.zeros(2), tol=1e-12, max_iter=1)
    assert not res.converged and res.residual > 1e-12
    assert res.residual == pytest.approx(float(jnp.linalg.norm(jnp.cos(res.x) - res.x)))


# ---------------------------------------------------------------------------------------------
# anneal
# ---------------------------------------------------------------------------------------------


def make_basin_solver(max_ratio: float, calls: list):
    """A mock solver whose 'basin of convergence' is a step ratio: from a start that is the
    solution at width w0 (x = w0), it converges at width w iff w0 / w <= max_ratio."""

    def solve_at(w, x_start):
        w0 = float(x_start)
        calls.append((w0, w))
        ok = w0 / w <= max_ratio
        return SolveResult(x=jnp.asarray(w if ok else w0), converged=ok, iterations=1,
                           residual=0.0 if ok else 1.0, seconds=0.0,
                           message="converged" if ok else "diverged")

    return solve_at


def test_anneal_inserts_steps_when_direct_jump_fails():
    calls: list = []
    res = anneal(make_basin_solver(2.0, calls), [100.0, 10.0], jnp.asarray(1000.0),
                 start_width=1000.0)
    assert [r.converged for r in res] == [True, True]
    assert [float(r.x) for r in res] == [100.0, 10.0]  # results only at requested widths
    # 1000 -> 100 (ratio 10) fails, so does 1000 -> 316.2 (3.16); 1000 -> 562.3 succeeds...
    assert calls[0] == (1000.0, 100.0) and not calls[0][0] / calls[0][1] <= 2
    tried = [w for _, w in calls]
    assert any(abs(w - math.sqrt(1000.0 * 100.0)) < 1e-9 for w in tried)  # geometric midpoint
    assert "intermediate widths" in res[0].message
    # the accepted steps chain from 1000 down to 10 and each respected the basin
    accepted = [(w0, w) for w0, w in calls if w0 / w <= 2.0]
    assert accepted[0][0] == 1000.0 and accepted[-1][1] == 10.0
    assert all(a[1] == b[0] for a, b in zip(accepted, accepted[1:], strict=False))


def test_anneal_order_and_gp_start():
    calls: list = []
    res = anneal(make_basin_solver(1e9, calls), [10.0, 40.0, 20.0], jnp.asarray(1e6))
    assert [float(r.x) for r in res] == [10.0, 40.0, 20.0]
    assert [w for _, w in calls] == [40.0, 20.0, 10.0]  # solved from large to small


def test_anneal_gives_up_below_min_ratio():
    calls: list = []
    res = anneal(make_basin_solver(1.0, calls), [50.0, 10.0], jnp.asarray(100.0),
                 start_width=100.0, min_ratio=1.05)
    assert [r.converged for r in res] == [False, False]
    assert "stalled" in res[0].message and "not attempted" in res[1].message
    # it halved the step geometrically until the ratio fell below min_ratio, no further
    ratios = [w0 / w for w0, w in calls]
    assert min(ratios) >= 1.05 and len(calls) < 10


def test_anneal_extrapolation_in_inverse_width():
    # x(w) = 3 + 5/w is linear in 1/w: the extrapolated start must be exact.
    starts = []

    def solve_at(w, x_start):
        starts.append((w, float(x_start)))
        return SolveResult(x=jnp.asarray(3.0 + 5.0 / w), converged=True, iterations=1,
                           residual=0.0, seconds=0.0, message="converged")

    anneal(solve_at, [100.0, 50.0, 10.0], jnp.asarray(3.0), extrapolate=True)
    assert starts[0] == (100.0, 3.0)  # first step: only the GP point is known
    for w, x0 in starts[1:]:
        assert x0 == pytest.approx(3.0 + 5.0 / w, rel=1e-12)


def test_anneal_from_gp_limit_terminates_when_nothing_converges():
    calls: list = []
    res = anneal(make_basin_solver(0.5, calls), [10.0], jnp.asarray(1e300), max_inserts=5)
    assert not res[0].converged and "gave up after 5" in res[0].message
    assert len(calls) == 6  # the target and 5 inserted widths 20, 40, ..., 320


def test_newton_krylov_arnoldi_gmres_terminates_early_and_matches():
    # The host-side early-terminating GMRES ("arnoldi") reaches the same root as jax's batched
    # GMRES, counts its JVPs, and on a 5-unknown problem needs at most 5 (+1 restart check)
    # Krylov vectors per Newton step, not the restart length.
    res = newton_krylov(cubic_residual, jnp.zeros(5), tol=1e-12, max_iter=30,
                        linear_solver="arnoldi", gmres_restart=30)
    assert res.converged
    assert np.max(np.abs(res.x - X_STAR)) < 1e-11
    assert res.residual == pytest.approx(float(jnp.linalg.norm(cubic_residual(res.x))), abs=1e-15)
    assert 0 < res.matvecs <= 6 * res.iterations
    with pytest.raises(ValueError, match="linear_solver"):
        newton_krylov(cubic_residual, jnp.zeros(5), linear_solver="lu")


def test_gmres_arnoldi_relative_tolerance_and_restarts():
    from fleos.theory.solvers import _gmres_arnoldi

    rng = np.random.default_rng(3)
    n = 60
    # Identity plus a rank-3 perturbation: GMRES is exact after 4 Krylov vectors.
    U = rng.standard_normal((n, 3))
    A = np.eye(n) + U @ U.T / n
    b = rng.standard_normal(n)
    x, nmv, rel = _gmres_arnoldi(lambda v: A @ v, b, 1e-12, 30, 1)
    assert nmv <= 4 and rel <= 1e-12
    np.testing.assert_allclose(A @ x, b, rtol=0, atol=1e-10)
    # A spread spectrum with a short restart: the loose tolerance is met early, the tight one
    # needs restarts, and the returned relative residual is the true one.
    B = np.diag(np.linspace(1.0, 50.0, n))
    x, nmv, rel = _gmres_arnoldi(lambda v: B @ v, b, 0.5, 5, 1)
    assert rel <= 0.5 and nmv <= 5
    x, nmv, rel = _gmres_arnoldi(lambda v: B @ v, b, 1e-8, 10, 50)
    assert rel <= 1e-8 and nmv > 10
    assert np.linalg.norm(b - B @ x) / np.linalg.norm(b) <= 1e-8


def _log_barrier_residual(u, c):
    # ∂F/∂u for F(u) = Σ (u − c log u), defined for u > 0 only (NaN outside): root u = c.
    return 1.0 - c / u + 0.0 * jnp.log(u)


def _log_barrier_merit(u, c):
    return jnp.sum(u - c * jnp.log(u))


def _exp_curve(u, d, t, c):
    # u(t) = u exp(t d / u): tangent to u + t d at t = 0 and positive for every t.
    return u * jnp.exp(t * d / u)


def test_newton_krylov_merit_accepts_a_rise_of_the_residual_norm():
    # From u0 = 10 c the Newton step is d = −90 c: the straight line leaves u > 0, and along
    # the positive curve the full step lands at u = 10 c e⁻⁹, where ||R|| is huge but F is
    # lower (F(10) = 7.70 > F(1.2e-3) = 6.72 for c = 1). With the merit the full step is taken
    # (the residual norm rises at step 1) and the root is still found; without it the solver
    # only accepts decreases of ||R||.
    c = jnp.array([1.0, 1.0, 1.0])
    u0 = 10.0 * c
    with_merit = newton_krylov(_log_barrier_residual, u0, args=(c,), tol=1e-12, max_iter=60,
                               merit=_log_barrier_merit, retract=_exp_curve,
                               linear_solver="arnoldi")
    assert with_merit.converged, with_merit.message
    np.testing.assert_allclose(with_merit.x, c, rtol=1e-10)
    assert with_merit.history[1] > 10 * with_merit.history[0]
    plain = newton_krylov(_log_barrier_residual, u0, args=(c,), tol=1e-12, max_iter=60,
                          retract=_exp_curve, linear_solver="arnoldi")
    assert plain.converged, plain.message
    np.testing.assert_allclose(plain.x, c, rtol=1e-10)
    assert all(np.diff(plain.history) < 0)


def test_anneal_reports_progress_per_solve() -> None:
    # The theory rules log one line per solve: anneal calls `progress` after every
    # solve, the intermediate widths it inserts included, and progress_printer formats it.
    from fleos.theory.solvers import SolveResult, anneal, progress_printer

    def solve_at(w, x):
        ok = x / w <= 3  # a solve fails when the warm start is more than 3x the width
        return SolveResult(x=w, converged=ok, iterations=2, residual=1e-9 if ok else 1.0,
                           seconds=0.0, message="ok" if ok else "failed", history=())

    seen: list[str] = []
    out = anneal(solve_at, [20.0, 4.0], 40.0, start_width=40.0, min_ratio=1.01,
                 progress=progress_printer(seen.append, "C"))
    assert [r.converged for r in out] == [True, True]
    assert seen[0] == "C=20 converged residual=1e-09 iterations=2 (0.0 s)"
    assert any("NOT converged (failed)" in line for line in seen)
    assert len(seen) >= 3  # 20, the failed jump to 4, the inserted width(s), 4
