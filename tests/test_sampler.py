"""Tests of fleos.sampling.sampler: ULA on an exactly solvable posterior, determinism, dtype, vmap.

Reference problem: Bayesian linear regression f = X θ with θ split into two leaves "a", "b"
with different prior variances (a per-layer weight decay, Eq. 15). The posterior is Gaussian
with precision A = XᵀX/σ² + diag(1/v) and mean A⁻¹Xᵀy/σ². ULA on a Gaussian has an exactly
known stationary law too: mean A⁻¹Xᵀy/σ² (unbiased) and covariance C solving the discrete
Lyapunov equation C = M C Mᵀ + 2η P, M = I − ηPA. We use C to *show* that the O(η) bias at our
η is well below the Monte Carlo error, and then test the ensemble against the posterior itself.
Monte Carlo errors come from the multi-chain ESS (fleos.core.diagnostics) of each statistic's trace.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from fleos.core.diagnostics import effective_sample_size
from fleos.sampling.sampler import (
    ChainState,
    Integrator,
    auto_chain_batch,
    auto_data_blocks,
    discretization_check,
    init_state,
    make_potential,
    mala_step,
    map_chains,
    run_ensemble,
    run_steps,
    stiffest_curvature,
    ula_step,
)

N_DATA, D_A, D_B = 30, 2, 2
SIGMA2 = 1.0
PRIOR = {"a": 1.0, "b": 0.3}
THIN = 10
Z_MAX = 4.5  # ~14 statistics per test; P(|N(0,1)| > 4.5) = 7e-6 each


def apply_fn(params, X):
    return X[:, :D_A] @ params["a"] + X[:, D_A:] @ params["b"]


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_DATA, D_A + D_B))
    y = X @ rng.standard_normal(D_A + D_B) + np.sqrt(SIGMA2) * rng.standard_normal(N_DATA)
    prec_prior = np.diag([1 / PRIOR["a"]] * D_A + [1 / PRIOR["b"]] * D_B)
    A = X.T @ X / SIGMA2 + prec_prior
    cov = np.linalg.inv(A)
    mean = cov @ X.T @ y / SIGMA2
    pot = make_potential(
        apply_fn, PRIOR, jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32), SIGMA2
    )
    return {"X": X, "y": y, "A": A, "mean": mean, "cov": cov, "pot": pot}


def prior_states(key, n_chains):
    ka, kb = jax.random.split(key)
    params = {
        "a": jnp.sqrt(PRIOR["a"]) * jax.random.normal(ka, (n_chains, D_A), jnp.float32),
        "b": jnp.sqrt(PRIOR["b"]) * jax.random.normal(kb, (n_chains, D_B), jnp.float32),
    }
    return ChainState(params, jnp.zeros((n_chains,), jnp.int32))


def flat(params):
    return jnp.concatenate([params["a"], params["b"]], axis=-1)


def record(acc, state, info):
    """Accumulator storing θ every THIN steps into a per-chain buffer (tests `accumulate`)."""
    # Slot (k-1)//THIN is overwritten at every step of its block, so it ends up holding θ after
    # step k = THIN·(slot+1); an unconditional in-place update avoids copying the buffer.
    k = state.step - acc["start"]
    buf = acc["buf"].at[(k - 1) // THIN].set(flat(state.params))
    return {"start": acc["start"], "buf": buf, "sse_sum": acc["sse_sum"] + info.sse}


def ula_stationary_cov(A, lr, pdiag):
    M = np.eye(len(A)) - lr * pdiag[:, None] * A
    return scipy.linalg.solve_discrete_lyapunov(M, 2 * lr * np.diag(pdiag))


def sample_traces(problem, lr, precond, n_chains, n_burn, n_rec, seed, integrator=None):
    integrator = integrator or Integrator("ula")
    states = prior_states(jax.random.PRNGKey(seed), n_chains)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), n_chains)
    states, _, _ = run_ensemble(problem["pot"], states, keys, lr, n_burn, precond=precond,
                                integrator=integrator)
    acc = {
        "start": states.step,
        "buf": jnp.zeros((n_chains, n_rec, D_A + D_B), jnp.float32),
        "sse_sum": jnp.zeros((n_chains,), jnp.float32),
    }
    states, acc, sse = run_ensemble(
        problem["pot"], states, keys, lr, n_rec * THIN, precond=precond, accumulate=record,
        acc=acc, integrator=integrator,
    )
    return np.asarray(acc["buf"], np.float64), acc, sse


def z_scores_vs_posterior(trace, mean, cov):
    """z of each posterior mean and covariance entry; s.e. = √(var/ESS) of its trace."""
    zs = []
    d = trace.shape[-1]
    for i in range(d):
        x = trace[:, :, i]
        se = np.sqrt(x.var() / effective_sample_size(x))
        zs.append((x.mean() - mean[i]) / se)
    cov_se = np.zeros((d, d))
    for i in range(d):
        for j in range(i, d):
            # Products about the *known* posterior mean: an unbiased estimator of C_ij.
            p = (trace[:, :, i] - mean[i]) * (trace[:, :, j] - mean[j])
            se = np.sqrt(p.var() / effective_sample_size(p))
            cov_se[i, j] = cov_se[j, i] = se
            zs.append((p.mean() - cov[i, j]) / se)
    return np.array(zs), cov_se


@pytest.mark.parametrize("precond", [None, {"a": 2.0, "b": 0.5}], ids=["plain", "precond"])
def test_ula_matches_exact_posterior(problem, precond) -> None:
    A = problem["A"]
    lam_max = np.linalg.eigvalsh(A).max()
    pdiag = np.ones(D_A + D_B) if precond is None else np.array(
        [precond["a"]] * D_A + [precond["b"]] * D_B
    )
    lr = 0.01 / (lam_max * pdiag.max())  # ηPλ_max = 0.01: ULA covariance bias ≈ 0.5 %
    # Slowest relaxation: τ_int ≈ 2/(η P λ_min) steps for θ; burn in 10 of them.
    lam_min = np.linalg.eigvalsh(np.sqrt(pdiag)[:, None] * A * np.sqrt(pdiag)[None, :]).min()
    tau = 2 / (lr * lam_min)
    n_chains, n_rec = 128, 2000
    trace, acc, sse = sample_traces(problem, lr, precond, n_chains, int(10 * tau), n_rec, 0)
    assert trace.shape == (n_chains, n_rec, D_A + D_B)
    z, cov_se = z_scores_vs_posterior(trace, problem["mean"], problem["cov"])
    assert np.all(np.abs(z) < Z_MAX), z
    # The discretisation bias at this η, from the exact ULA stationary law, is below 1/3 of
    # the Monte Carlo error of every covariance entry: so this test checks the posterior.
    bias = np.abs(ula_stationary_cov(A, lr, pdiag) - problem["cov"])
    assert np.all(bias < cov_se / 3), (bias, cov_se)
    # The accumulator saw every step: its sse sum equals the sum of the per-step trace.
    np.testing.assert_allclose(acc["sse_sum"], sse.sum(axis=1), rtol=1e-4)


def test_ula_bias_is_the_predicted_one(problem) -> None:
    # At a large step (ηλ_max = 1, stable since < 2), ULA's stationary covariance differs from
    # the posterior by O(1); the sampler must reproduce the exact ULA law, not the posterior.
    A = problem["A"]
    lr = 1.0 / np.linalg.eigvalsh(A).max()
    trace, _, _ = sample_traces(problem, lr, None, 128, 2000, 500, 7)
    ula_cov = ula_stationary_cov(A, lr, np.ones(D_A + D_B))
    z, _ = z_scores_vs_posterior(trace, problem["mean"], ula_cov)
    assert np.all(np.abs(z) < Z_MAX), z
    z_post, _ = z_scores_vs_posterior(trace, problem["mean"], problem["cov"])
    assert np.max(np.abs(z_post)) > 10  # and it visibly is not the posterior


def test_potential_values(problem) -> None:
    params = {"a": jnp.array([0.3, -0.2], jnp.float32), "b": jnp.array([1.0, 0.5], jnp.float32)}
    u, sse = problem["pot"](params)
    th = np.concatenate([params["a"], params["b"]]).astype(np.float64)
    r = problem["X"] @ th - problem["y"]
    sse_ref = r @ r
    u_ref = sse_ref / (2 * SIGMA2) + (0.09 + 0.04) / 2 / PRIOR["a"] + 1.25 / 2 / PRIOR["b"]
    assert sse.dtype == jnp.float32 and u.dtype == jnp.float32
    np.testing.assert_allclose([u, sse], [u_ref, sse_ref], rtol=1e-5)


def test_single_step_formula(problem) -> None:
    # θ' = θ − η P ∇U + √(2ηP) ξ with ξ from fold_in(key, step): rebuild it by hand.
    params = {"a": jnp.array([0.3, -0.2], jnp.float32), "b": jnp.array([1.0, 0.5], jnp.float32)}
    state = init_state(params, step=5)
    key = jax.random.PRNGKey(3)
    lr, P = 1e-3, {"a": 2.0, "b": 0.5}
    new, info = ula_step(problem["pot"], state, key, lr, P)
    g = jax.grad(lambda p: problem["pot"](p)[0])(params)
    ka, kb = jax.random.split(jax.random.fold_in(key, 5), 2)
    for leaf, k in (("a", ka), ("b", kb)):
        xi = jax.random.normal(k, params[leaf].shape, jnp.float32)
        ref = params[leaf] - lr * P[leaf] * g[leaf] + np.sqrt(2 * lr * P[leaf]) * xi
        np.testing.assert_allclose(new.params[leaf], ref, rtol=1e-6, atol=1e-7)
    assert int(new.step) == 6
    np.testing.assert_allclose(info.potential, problem["pot"](params)[0], rtol=1e-6)


def test_determinism_and_chunking(problem) -> None:
    state = init_state({"a": jnp.zeros(D_A, jnp.float32), "b": jnp.ones(D_B, jnp.float32)})
    key = jax.random.PRNGKey(42)
    run = jax.jit(run_steps, static_argnums=(0, 4))
    pot = problem["pot"]
    s_full, _, sse_full = run(pot, state, key, 1e-3, 200)
    s_again, _, sse_again = run(pot, state, key, 1e-3, 200)
    s_half, _, sse_1 = run(pot, state, key, 1e-3, 100)
    s_half, _, sse_2 = run(pot, s_half, key, 1e-3, 100)
    for leaf in ("a", "b"):
        np.testing.assert_array_equal(s_full.params[leaf], s_again.params[leaf])
        # Noise keyed by the global step: chunking cannot change the trajectory. Allow
        # float32 round-off only (XLA may fuse a different-length scan differently).
        np.testing.assert_allclose(s_full.params[leaf], s_half.params[leaf], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sse_full, np.concatenate([sse_1, sse_2]), rtol=1e-5)
    assert int(s_half.step) == int(s_full.step) == 200
    other, _, _ = run(pot, state, jax.random.PRNGKey(43), 1e-3, 200)
    assert not np.allclose(other.params["a"], s_full.params["a"])


def test_vmap_dtype_and_per_chain_lr(problem) -> None:
    n_chains = 3
    states = prior_states(jax.random.PRNGKey(0), n_chains)
    keys = jax.random.split(jax.random.PRNGKey(1), n_chains)
    lrs = np.array([1e-3, 2e-3, 4e-3])  # float64 on purpose: must not promote the chain
    out, acc, sse = run_ensemble(problem["pot"], states, keys, lrs, 50)
    assert acc is None
    assert sse.shape == (n_chains, 50) and sse.dtype == jnp.float32
    for leaf in out.params.values():
        assert leaf.dtype == jnp.float32 and leaf.shape[0] == n_chains
    assert out.step.dtype == jnp.int32 and np.all(np.asarray(out.step) == 50)
    # Chain c of the ensemble equals a single-chain run with its own key and lr.
    single, _, sse1 = jax.jit(run_steps, static_argnums=(0, 4))(
        problem["pot"], jax.tree.map(lambda x: x[1], states), keys[1], lrs[1], 50
    )
    np.testing.assert_allclose(out.params["a"][1], single.params["a"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sse[1], sse1, rtol=1e-5)


def test_data_blocks_give_the_same_value_and_gradient(problem) -> None:
    """U, sse and ∇U accumulated over k blocks of rows equal the one-block values (float64:
    only the order of the sums differs)."""
    X, y = jnp.asarray(problem["X"]), jnp.asarray(problem["y"])
    params = {"a": jnp.array([0.3, -1.2]), "b": jnp.array([0.7, 0.1])}
    ref = make_potential(apply_fn, PRIOR, X, y, SIGMA2).value_and_grad(params)
    (u_ref, sse_ref), g_ref = jax.value_and_grad(make_potential(apply_fn, PRIOR, X, y, SIGMA2),
                                                 has_aux=True)(params)
    assert float(ref[0]) == float(u_ref) and float(ref[1]) == float(sse_ref)
    for k in (2, 3, 5, 30):
        pot = make_potential(apply_fn, PRIOR, X, y, SIGMA2, data_blocks=k)
        u, sse, g = jax.jit(lambda p, pot=pot: pot.value_and_grad(p))(params)
        np.testing.assert_allclose([u, sse], [u_ref, sse_ref], rtol=1e-13)
        for leaf in ("a", "b"):
            np.testing.assert_allclose(g[leaf], g_ref[leaf], rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError, match="data_blocks must be a positive divisor of .* n=30"):
        make_potential(apply_fn, PRIOR, X, y, SIGMA2, data_blocks=4)


def test_chain_batches_give_the_same_chains(problem) -> None:
    """`chain_batch` groups (host calls of one compiled b-chain program) change the schedule
    of the work, not the chains: every layout equals the all-vmapped ensemble to float32
    round-off, and each group equals a job of just its b chains bit for bit."""
    n_chains = 4
    states = prior_states(jax.random.PRNGKey(0), n_chains)
    keys = jax.random.split(jax.random.PRNGKey(1), n_chains)
    ref, _, sse_ref = run_ensemble(problem["pot"], states, keys, 2e-3, 100,
                                   integrator=Integrator("baoab", 1.0))
    for b in (1, 2, 3):
        out, _, sse = run_ensemble(problem["pot"], states, keys, 2e-3, 100,
                                   integrator=Integrator("baoab", 1.0), chain_batch=b)
        np.testing.assert_allclose(out.params["a"], ref.params["a"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sse, sse_ref, rtol=1e-5)
    alone, _, sse_alone = run_ensemble(problem["pot"], jax.tree.map(lambda x: x[2:], states),
                                       keys[2:], 2e-3, 100, integrator=Integrator("baoab", 1.0))
    grouped, _, sse_grouped = run_ensemble(problem["pot"], states, keys, 2e-3, 100,
                                           integrator=Integrator("baoab", 1.0), chain_batch=2)
    np.testing.assert_array_equal(grouped.params["a"][2:], alone.params["a"])
    np.testing.assert_array_equal(sse_grouped[2:], sse_alone)
    # a group size that does not divide the chains is lowered to one that does (4 -> 3);
    # None leaves (ULA's empty integrator state) pass through
    sq, none = map_chains(lambda x, e: (x * x, e), (jnp.arange(6.0), None), 4)
    np.testing.assert_array_equal(sq, jnp.arange(6.0) ** 2)
    assert none is None


def test_auto_layout() -> None:
    # CPU: one chain at a time at every size; paper CNN2 (n=1600, N·C = 20·640
    # pre-activations per row): blocks of at most 1M floats that divide n
    assert auto_chain_batch(8, "cpu") == 1
    k = auto_data_blocks(1600, 20 * 640, "cpu")
    assert k == 25  # 64 rows, 0.82M floats; the next divisor down (20) gives 1.02M
    # laptop CNN2 (n=256, 8·128 per row): 262k floats per chain, one block
    assert auto_data_blocks(256, 8 * 128, "cpu") == 1
    # accelerators: everything at once
    assert auto_chain_batch(8, "gpu") == 8
    assert auto_data_blocks(1600, 20 * 640, "gpu", chains=8) == 1
    # a prime n cannot be blocked: one block per row at worst, never an invalid k
    assert auto_data_blocks(1601, 20 * 640, "cpu") == 1601


def test_stiffest_curvature(problem) -> None:
    params = {"a": jnp.zeros(D_A, jnp.float32), "b": jnp.zeros(D_B, jnp.float32)}
    lam = stiffest_curvature(problem["pot"], params, n_iter=200)
    # U is quadratic with Hessian A exactly; float32 HVPs: relative error ~1e-6.
    assert lam == pytest.approx(np.linalg.eigvalsh(problem["A"]).max(), rel=1e-4)
    P = {"a": 2.0, "b": 0.5}
    sp = np.sqrt([2.0] * D_A + [0.5] * D_B)
    lam_p = stiffest_curvature(problem["pot"], params, n_iter=200, precond=P)
    assert lam_p == pytest.approx(np.linalg.eigvalsh(sp[:, None] * problem["A"] * sp).max(),
                                  rel=1e-4)


def test_bad_inputs(problem) -> None:
    with pytest.raises(ValueError, match="sigma2"):
        make_potential(apply_fn, PRIOR, problem["X"], problem["y"], 0.0)
    state = init_state({"a": jnp.zeros(D_A), "b": jnp.zeros(D_B)})
    with pytest.raises(ValueError, match="precond"):
        ula_step(problem["pot"], state, jax.random.PRNGKey(0), 1e-3, {"a": 1.0})
    with pytest.raises(ValueError, match="n_steps"):
        run_steps(problem["pot"], state, jax.random.PRNGKey(0), 1e-3, 0)


def _make_observables(A, mean):
    # Projections of θ − θ̄ on the Hessian eigenvectors: the stiffest one carries the largest
    # O(η) bias; centring removes the (large, unbiased) mean from its variance.
    evecs = jnp.asarray(np.linalg.eigh(A)[1], jnp.float32)
    mean = jnp.asarray(mean, jnp.float32)

    def observables(params):
        th = flat(params)
        proj = (th - mean) @ evecs
        return {"theta": th, "theta_sq": th * th, "proj_sq": proj * proj}

    return observables


def test_discretization_check(problem) -> None:
    A = problem["A"]
    lam_max, lam_min = np.linalg.eigvalsh(A)[[-1, 0]]
    n_chains = 32
    states = prior_states(jax.random.PRNGKey(5), n_chains)
    keys = jax.random.split(jax.random.PRNGKey(6), n_chains)
    obs = _make_observables(A, problem["mean"])

    def check(lr):
        tau = 2 / (lr * lam_min)  # slowest τ_int in steps
        thin = max(1, int(tau / 4))
        return discretization_check(
            problem["pot"], states, keys, lr, obs, n_burn=int(10 * tau),
            n_samples=80, thin=thin,
        )

    # Small step (ηλ_max = 0.01): the bias of ⟨θ²⟩ is ≤ 0.5 %, far below the ~6 % error bars
    # of 32 chains × ~20 effective draws: no observable may move beyond its error bar.
    small = check(0.01 / lam_max)
    assert set(small.z) == {"theta", "theta_sq", "proj_sq"}
    assert small.z["theta"].shape == (D_A + D_B,)
    assert small.max_abs_z() < Z_MAX, small.z
    assert np.all(small.rhat["theta"] < 1.1)
    # Large step (ηλ_max = 1): the variance along the stiffest direction is 1/(λ(1 − ηλ/2)),
    # twice the posterior's at η and 4/3 of it at η/2: the check must flag it.
    large = check(1.0 / lam_max)
    print("discretization z (large step):", large.z)
    assert abs(large.z["proj_sq"][-1]) > 6, large.z


# --------------------------------------------------------------------------------------------
# The other integrators (docs/langevin.md §7)

P_TEST = {"a": 2.0, "b": 0.5}


@pytest.mark.parametrize(
    "integrator",
    [Integrator("lm"), Integrator("baoab", 1.0), Integrator("baoab", 20.0), Integrator("mala")],
    ids=["lm", "baoab-g1", "baoab-g20", "mala"],
)
def test_integrators_match_exact_posterior_at_a_large_step(problem, integrator) -> None:
    # At ηPλ_max = 0.5, ULA's stationary covariance misses the posterior by up to
    # 1/(1 − ηλ/2) − 1 = 33 % along the stiffest direction (test_ula_bias_is_the_predicted_one
    # shows ULA hitting its own, biased law). LM and BAOAB are exact on a Gaussian posterior at
    # any stable step, MALA is exact for any target: each must hit the posterior itself, within
    # Monte Carlo errors from the multi-chain ESS of every statistic.
    A = problem["A"]
    pdiag = np.array([P_TEST["a"]] * D_A + [P_TEST["b"]] * D_B)
    sp = np.sqrt(pdiag)
    lam = np.linalg.eigvalsh(sp[:, None] * A * sp[None, :])
    lr = 0.5 / lam.max()
    # Slowest relaxation: overdamped 1/(ηλ_min) steps; BAOAB at γ = 1 is faster, MALA slower
    # by its rejections. Burn in generously.
    n_burn = int(20 / (lr * lam.min()))
    trace, _, _ = sample_traces(problem, lr, P_TEST, 128, n_burn, 1000, 11, integrator)
    z, cov_se = z_scores_vs_posterior(trace, problem["mean"], problem["cov"])
    assert np.all(np.abs(z) < Z_MAX), z
    # ...and the test can tell: ULA's exact law at this step is > 5 SE off in some entry.
    ula_bias = np.abs(ula_stationary_cov(A, lr, pdiag) - problem["cov"])
    assert np.max(ula_bias / cov_se) > 5


def test_mala_step_formula_and_acceptance(problem) -> None:
    # One MALA step by hand: the ULA proposal with the same noise, accepted or rejected by the
    # Metropolis–Hastings ratio of the Langevin proposal (float64 reference).
    params = {"a": jnp.array([0.3, -0.2], jnp.float32), "b": jnp.array([1.0, 0.5], jnp.float32)}
    key, lr = jax.random.PRNGKey(3), 0.05
    state = init_state(params, step=5)
    pot = problem["pot"]
    new, info = jax.jit(mala_step, static_argnums=0)(pot, state, key, lr)
    g = jax.grad(lambda p: pot(p)[0])(params)
    ka, kb = jax.random.split(jax.random.fold_in(key, 5), 2)
    prop = {}
    for leaf, k in (("a", ka), ("b", kb)):
        xi = jax.random.normal(k, params[leaf].shape, jnp.float32)
        prop[leaf] = params[leaf] - lr * g[leaf] + np.sqrt(2 * lr) * xi
    gp = jax.grad(lambda p: pot(p)[0])(prop)

    def log_q(to, frm, gfrm):
        return -sum(float(np.sum((np.float64(to[k]) - frm[k] + lr * gfrm[k]) ** 2))
                    for k in to) / (4 * lr)

    log_r = (float(pot(params)[0]) - float(pot(prop)[0]) + log_q(params, prop, gp)
             - log_q(prop, params, g))
    p_acc = min(1.0, np.exp(log_r))
    u = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, 5), 1 << 29), (),
                           jnp.float32)
    expect = prop if float(u) < p_acc else params
    np.testing.assert_allclose(info.accept_prob, p_acc, rtol=1e-3)
    for leaf in ("a", "b"):
        np.testing.assert_allclose(new.params[leaf], expect[leaf], rtol=1e-6, atol=1e-7)
    # The cached U at the new point is the potential there.
    np.testing.assert_allclose(new.extra.U, pot(new.params)[0], rtol=1e-6)


@pytest.mark.parametrize("name", ["lm", "baoab", "mala"])
def test_integrator_chunking_is_exact(problem, name) -> None:
    # Resume = run on from the returned state: 2k steps equal k + k (the checkpoint holds the
    # state, including BAOAB's velocity and the cached gradient).
    integ = Integrator(name, 2.0)
    state = init_state({"a": jnp.zeros(D_A, jnp.float32), "b": jnp.ones(D_B, jnp.float32)})
    key = jax.random.PRNGKey(42)
    run = jax.jit(run_steps, static_argnums=(0, 4), static_argnames="integrator")
    pot = problem["pot"]
    s_full, _, sse_full = run(pot, state, key, 1e-2, 200, integrator=integ)
    s_half, _, sse_1 = run(pot, state, key, 1e-2, 100, integrator=integ)
    s_half, _, sse_2 = run(pot, s_half, key, 1e-2, 100, integrator=integ)
    for leaf in ("a", "b"):
        np.testing.assert_allclose(s_full.params[leaf], s_half.params[leaf], rtol=1e-6,
                                   atol=1e-6)
    np.testing.assert_allclose(sse_full, np.concatenate([sse_1, sse_2]), rtol=1e-5)


def test_unknown_integrator(problem) -> None:
    state = init_state({"a": jnp.zeros(D_A), "b": jnp.zeros(D_B)})
    with pytest.raises(ValueError, match="integrator must be one of"):
        run_steps(problem["pot"], state, jax.random.PRNGKey(0), 1e-3, 1,
                  integrator=Integrator("hmc"))


def _quartic(p):
    x = p["x"]
    u = jnp.sum(x**4 / 4 + x**2 / 2)
    return u, u


def _x2_bias(integrator, lr, n_chains=4000, time_burn=20.0, time_run=600.0):
    """Relative bias of ⟨x²⟩ under U = x⁴/4 + x²/2 and its standard error (independent chains:
    the SE is the spread of the per-chain time averages / √chains)."""
    from scipy.integrate import quad

    w = lambda x: np.exp(-(x**4 / 4 + x**2 / 2))  # noqa: E731
    exact = quad(lambda x: x * x * w(x), -10, 10)[0] / quad(w, -10, 10)[0]
    st = ChainState({"x": jnp.zeros((n_chains, 1), jnp.float64)},
                    jnp.zeros((n_chains,), jnp.int32))
    keys = jax.random.split(jax.random.PRNGKey(1), n_chains)
    st, _, _ = run_ensemble(_quartic, st, keys, lr, int(time_burn / lr), integrator=integrator)

    def acc_fn(a, s, _info):
        return a + s.params["x"][0] ** 2

    n = int(time_run / lr)
    _, acc, _ = run_ensemble(_quartic, st, keys, lr, n, integrator=integrator,
                             accumulate=acc_fn, acc=jnp.zeros(n_chains))
    per_chain = np.asarray(acc) / n
    return (per_chain.mean() - exact) / exact, per_chain.std(ddof=1) / np.sqrt(n_chains) / exact


@pytest.mark.slow
def test_bias_orders_ula_first_lm_second() -> None:
    # A non-Gaussian target (quartic), two step sizes. ULA's configurational bias is O(η): its
    # ratio between η and η/2 is ≈ 2 (measured 2.2 at η = 0.1: the O(η²) term adds to it).
    # LM's is O(η²): at the same η it is an order of magnitude below ULA's (measured 0.2 % vs
    # 6.6 % of ⟨x²⟩), which is what "one order higher" means at η ≈ 0.1. What this test does
    # NOT resolve is LM's own ratio (≈ 4 expected): its bias at η/2 (~0.05 %) is below the
    # Monte Carlo error of a unit-test budget.
    b1, s1 = _x2_bias(Integrator("ula"), 0.1)
    b2, s2 = _x2_bias(Integrator("ula"), 0.05)
    assert b1 > 10 * s1 and b2 > 10 * s2, (b1, s1, b2, s2)
    ratio = b1 / b2
    ratio_se = ratio * np.hypot(s1 / b1, s2 / b2)
    assert abs(ratio - 2.0) < 0.5 + 3 * ratio_se, (ratio, ratio_se)
    lm1, lm_s1 = _x2_bias(Integrator("lm"), 0.1)
    assert abs(lm1) + 3 * lm_s1 < b1 / 8, (lm1, lm_s1, b1)
