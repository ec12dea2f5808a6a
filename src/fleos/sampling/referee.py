"""An exact referee for the 2-layer CNN (Eq. 7): Metropolis-adjusted HMC on the input weights
with the readout integrated out.

Given the input weights W = (w_1 … w_C), f on the training set is Gaussian with covariance
Q(W), so the marginal posterior of W is known in closed form (docs/derivations/cnn2.md §1):

    log p(W | D) = Σ_c log N(w_c; 0, σ_w²/S I) − ½ yᵀ K(W)⁻¹ y − ½ log det K(W) + const,
    K(W) = Q(W) + σ² I,   Q(W)_μν = (σ_a²/(N C)) Σ_c Σ_i φ(w_c·x_μi) φ(w_c·x_νi).

Given W the predictor is exactly f̄(W) = Q(W) K(W)⁻¹ y = y − σ² K(W)⁻¹ y on the training set and
Q_*(W) K(W)⁻¹ y on test points, so the posterior mean predictor E_W[f̄(W)] is estimated
Rao-Blackwellized (the readout's noise never enters). Every estimate is a plain average over
an exact MCMC chain; nothing is assumed about C, so the result scores any theory (Eq. 8, the
moment-matched EoS, the GP, corrections beyond them) without sampler or closure doubts.

Sampler: HMC (leapfrog, Metropolis-adjusted) in float64 in the whitened coordinates
u = W / √(σ_w²/S) (the prior becomes N(0, I): preconditioning by the prior variance), all
chains vmapped in one jit'd `lax.scan`. The step size is tuned during burn-in only, by dual
averaging of the chains' mean acceptance toward `target_accept` (Hoffman & Gelman 2014, §3.2),
and the number of leapfrog steps is set after the first half of burn-in so that one trajectory
spans ≈ π/2 in u (a quarter period of the prior's oscillator); both are frozen before the first
recorded draw, so the recorded chain is a time-homogeneous Metropolis chain with the exact
posterior as its invariant law. Each step's length is jittered uniformly by ±10 % (an
independent draw, so detailed balance holds) to break the periodicity of near-Gaussian
trajectories. The randomness of chain k at step t comes from ``fold_in(key_k, t)``.

Errors: every mean is reported with its Monte Carlo SE, sd/√ESS with the multi-chain ESS of
Vehtari et al. (2021) (`fleos.core.diagnostics.mcse_mean`); the rank-normalized R̂ and bulk ESS of
each tracked scalar are reported beside it. The exact check is a grid integral at C = 1
(tests/test_referee.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from fleos.core import diagnostics
from fleos.core.kernels import ACTIVATIONS, patches
from fleos.core.kernels import cnn2_channel_features as features
from fleos.core.kernels import cnn2_finite_kernel as kernel

Array = jnp.ndarray

#: the scalars tracked per draw, each with its SE, R̂ and bulk ESS
TRACKED = ("alpha_train", "alpha_test", "sigma_top", "log_density")


class Data(NamedTuple):
    """The arrays the log density needs (float64): P (n, N, S) train patches, y (n,), and the
    scalars σ², σ_a², σ_w² as 0-d arrays (so one compiled program serves every value)."""

    P: Array
    y: Array
    sigma2: Array
    sigma_a2: Array
    sigma_w2: Array


class HMCState(NamedTuple):
    """One chain: u (C, S) whitened input weights, its log density and gradient."""

    position: Array
    logdensity: Array
    grad: Array


class AdaptState(NamedTuple):
    """Dual averaging of log step size (Hoffman & Gelman 2014, Algorithm 5)."""

    log_step: Array
    log_step_avg: Array
    h_bar: Array
    count: Array
    mu: Array


# ---------------------------------------------------------------------------------------------
# The posterior
# ---------------------------------------------------------------------------------------------


def log_density(u: Array, data: Data, activation: str = "erf") -> Array:
    """log p(W | D) up to a constant at W = u·√(σ_w²/S), as a density of the whitened u (the
    Jacobian of u ↦ W is constant): −½|u|² − ½ yᵀ K⁻¹ y − ½ log det K."""
    S = data.P.shape[-1]
    W = u * jnp.sqrt(data.sigma_w2 / S)
    K = kernel(data.P, data.P, W, data.sigma_a2, activation)
    K = K + data.sigma2 * jnp.eye(K.shape[0], dtype=K.dtype)
    L = jnp.linalg.cholesky(K)
    a = jsl.solve_triangular(L, data.y, lower=True)
    return -0.5 * jnp.sum(u**2) - 0.5 * jnp.dot(a, a) - jnp.sum(jnp.log(jnp.diag(L)))


# ---------------------------------------------------------------------------------------------
# HMC (pure functions on NamedTuple states, one chain; vmapped by the driver)
# ---------------------------------------------------------------------------------------------


def hmc_init(position: Array, data: Data, activation: str = "erf") -> HMCState:
    """The state of one chain at `position` (C, S)."""
    logp, grad = jax.value_and_grad(log_density)(position, data, activation)
    return HMCState(position, logp, grad)


def hmc_step(key: Array, state: HMCState, data: Data, step_size: Array, n_leapfrog: Array,
             activation: str = "erf") -> tuple[HMCState, Array]:
    """One Metropolis-adjusted HMC transition (identity mass matrix in u, leapfrog, step size
    jittered uniformly in [0.9, 1.1]·step_size). Returns (new state, acceptance probability)."""
    k_mom, k_jit, k_acc = jax.random.split(key, 3)
    grad_fn = jax.value_and_grad(log_density)
    eps = step_size * jax.random.uniform(k_jit, (), minval=0.9, maxval=1.1,
                                         dtype=state.position.dtype)
    p0 = jax.random.normal(k_mom, state.position.shape, dtype=state.position.dtype)

    def leap(_: Any, carry: tuple) -> tuple:
        q, p, _, g = carry
        p = p + 0.5 * eps * g
        q = q + eps * p
        logp, g = grad_fn(q, data, activation)
        p = p + 0.5 * eps * g
        return q, p, logp, g

    q, p, logp, g = jax.lax.fori_loop(
        0, n_leapfrog, leap, (state.position, p0, state.logdensity, state.grad))
    log_ratio = logp - 0.5 * jnp.sum(p**2) - state.logdensity + 0.5 * jnp.sum(p0**2)
    log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
    accept_prob = jnp.minimum(1.0, jnp.exp(log_ratio))
    accept = jax.random.uniform(k_acc, (), dtype=q.dtype) < accept_prob
    new = HMCState(q, logp, g)
    return jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, state), accept_prob


def adapt_init(step_size: float) -> AdaptState:
    """Dual averaging from `step_size`, shrinking toward log(10·step_size)."""
    ls = jnp.log(jnp.asarray(step_size, dtype=jnp.float64))
    z = jnp.zeros((), dtype=jnp.float64)
    return AdaptState(ls, ls, z, z, ls + math.log(10.0))


def adapt_update(st: AdaptState, accept: Array, target: float) -> AdaptState:
    """One dual-averaging update (γ = 0.05, t0 = 10, κ = 0.75, Hoffman & Gelman's values)."""
    t = st.count + 1.0
    h_bar = (1.0 - 1.0 / (t + 10.0)) * st.h_bar + (target - accept) / (t + 10.0)
    log_step = st.mu - jnp.sqrt(t) / 0.05 * h_bar
    w = t**-0.75
    return AdaptState(log_step, w * log_step + (1.0 - w) * st.log_step_avg, h_bar, t, st.mu)


def adapt_restart(st: AdaptState) -> AdaptState:
    """Restart the averaging from the current averaged step (after the trajectory length
    changed, the acceptance at a given step size changes a little)."""
    return adapt_init(float(jnp.exp(st.log_step_avg)))


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("steps", "target", "activation"))
def _burn_in(keys: Array, states: HMCState, adapt: AdaptState, data: Data, n_leapfrog: Array,
             t0: Array, *, steps: int, target: float, activation: str
             ) -> tuple[HMCState, AdaptState, Array]:
    """`steps` transitions of all chains at the adapting step size; returns the chains, the
    adaptation state and the mean acceptance per step."""
    step = jax.vmap(hmc_step, in_axes=(0, 0, None, None, None, None))

    def body(carry: tuple, t: Array) -> tuple:
        st, ad = carry
        ks = jax.vmap(lambda k: jax.random.fold_in(k, t))(keys)
        st, acc = step(ks, st, data, jnp.exp(ad.log_step), n_leapfrog, activation)
        ad = adapt_update(ad, jnp.mean(acc), target)
        return (st, ad), jnp.mean(acc)

    (states, adapt), acc = jax.lax.scan(body, (states, adapt), t0 + jnp.arange(steps))
    return states, adapt, acc


def _draw_observables(u: Array, data: Data, P_test: Array, y_test: Array,
                      activation: str) -> tuple[Array, ...]:
    """Per draw: (1/C) Σ_c w_c w_cᵀ, α_train(W), α_test(W), f̄(W) train and test, Q(W), and
    the field A(W) = εεᵀ − K⁻¹ with ε = K⁻¹y, K = Q(W) + σ²I (the finite-C field of Eq. 8)."""
    S = data.P.shape[-1]
    W = u * jnp.sqrt(data.sigma_w2 / S)
    Q = kernel(data.P, data.P, W, data.sigma_a2, activation)
    K = Q + data.sigma2 * jnp.eye(Q.shape[0], dtype=Q.dtype)
    L = jnp.linalg.cholesky(K)
    v = jsl.cho_solve((L, True), data.y)  # K⁻¹ y
    K_inv = jsl.cho_solve((L, True), jnp.eye(K.shape[0], dtype=K.dtype))
    f_train = data.y - data.sigma2 * v
    a_train = jnp.dot(v, data.y) / jnp.dot(data.y, data.y)
    f_test = kernel(P_test, data.P, W, data.sigma_a2, activation) @ v
    a_test = jnp.dot(y_test - f_test, y_test) / (data.sigma2 * jnp.dot(y_test, y_test))
    return W.T @ W / W.shape[0], a_train, a_test, f_train, f_test, Q, jnp.outer(v, v) - K_inv


@partial(jax.jit, static_argnames=("steps", "activation"))
def _sample(keys: Array, states: HMCState, data: Data, step_size: Array, n_leapfrog: Array,
            t0: Array, P_test: Array, y_test: Array, *, steps: int, activation: str
            ) -> tuple[HMCState, tuple[Array, ...], tuple[Array, ...]]:
    """`steps` recorded transitions at a frozen step size. Returns the chains, the per-draw
    records (Σ_t (steps, chains, S, S), α_train, α_test, log density, acceptance: (steps,
    chains)) and the chain-summed f̄ train, f̄ test and Q, and the per-chain sums of the field
    A(W) (chains, n, n)."""
    step = jax.vmap(hmc_step, in_axes=(0, 0, None, None, None, None))
    obs = jax.vmap(_draw_observables, in_axes=(0, None, None, None, None))

    def body(carry: tuple, t: Array) -> tuple:
        st, sums = carry
        ks = jax.vmap(lambda k: jax.random.fold_in(k, t))(keys)
        st, acc = step(ks, st, data, step_size, n_leapfrog, activation)
        sig, a_tr, a_te, f_tr, f_te, Q, A = obs(st.position, data, P_test, y_test, activation)
        sums = (sums[0] + f_tr.sum(0), sums[1] + f_te.sum(0), sums[2] + Q.sum(0), sums[3] + A)
        return (st, sums), (sig, a_tr, a_te, st.logdensity, acc)

    n, n_test = data.P.shape[0], P_test.shape[0]
    z = jnp.zeros
    sums0 = (z(n), z(n_test), z((n, n)), z((keys.shape[0], n, n)))
    (states, sums), rec = jax.lax.scan(body, (states, sums0), t0 + jnp.arange(steps))
    return states, rec, sums


@dataclass(frozen=True)
class RefereeResult:
    """Posterior means of the finite 2-layer CNN (Eq. 7), each with its Monte Carlo SE.

    alpha_train, alpha_test: α = (y − E f̄)·y/(σ² y·y) (`fleos.core.gp.alpha`) on the train and
    test sets (test: NaN without a test set); sigma: E[(1/C) Σ_c w_c w_cᵀ] (S × S) and
    sigma_se (entrywise); sigma_top: its top eigenvalue, with the SE of vᵀ Σ_t v along its top
    eigenvector v (delta method); Q_mean: E[Q(W)] (n × n); f_train, f_test: E[f̄(W)];
    field_chain_means: per chain, the mean over its draws of the finite-C field
    A(W) = εεᵀ − K⁻¹ (chains × n × n; `field_mean` is their mean); sigma_chain_means: per chain,
    the mean of (1/C) Σ_c w_c w_cᵀ (chains × S × S); both for jackknife errors over chains;
    rhat, ess_bulk, se: per tracked scalar (`TRACKED`); acceptance: mean acceptance probability
    of the recorded steps; step_size, n_leapfrog: the frozen HMC settings; chains, draws:
    recorded draws per chain; seconds: wall time.
    """

    C: int
    alpha_train: float
    alpha_train_se: float
    alpha_test: float
    alpha_test_se: float
    sigma: np.ndarray
    sigma_se: np.ndarray
    sigma_top: float
    sigma_top_se: float
    Q_mean: np.ndarray
    f_train: np.ndarray
    f_test: np.ndarray
    rhat: dict[str, float]
    ess_bulk: dict[str, float]
    acceptance: float
    step_size: float
    n_leapfrog: int
    chains: int
    draws: int
    seconds: float
    se: dict[str, float] = field(default_factory=dict)
    field_chain_means: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    sigma_chain_means: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))

    @property
    def field_mean(self) -> np.ndarray:
        """E[A(W)], A = εεᵀ − K⁻¹ at the finite-C kernel of each draw (n × n)."""
        return self.field_chain_means.mean(axis=0)

    @property
    def max_rhat(self) -> float:
        return max(self.rhat.values())

    @property
    def min_ess(self) -> float:
        return min(self.ess_bulk.values())


def _positive_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"cnn2_exact_posterior: {name} must be an integer >= {minimum}, "
                         f"got {value!r}")
    return int(value)


def cnn2_exact_posterior(
    X: Any,
    y: Any,
    *,
    N: int,
    S: int,
    C: int,
    sigma2: float,
    sigma_a2: float,
    sigma_w2: float,
    X_test: Any = None,
    y_test: Any = None,
    chains: int = 8,
    steps: int = 2000,
    burn_in: int = 500,
    seed: int = 0,
    step_size: float | None = None,
    target_accept: float = 0.8,
    trajectory: float = 0.5 * math.pi,
    activation: str = "erf",
) -> RefereeResult:
    """Sample the exact posterior of the input weights of the 2-layer CNN (Eq. 7) with the
    readout integrated out, and return posterior means with Monte Carlo SEs (module docstring).

    X: (n, N·S) inputs, y: (n,) targets (X_test, y_test: optional test set); N patches of size
    S; C channels; sigma2 the likelihood noise σ²; sigma_a2, sigma_w2 the prior variances
    (a ~ N(0, σ_a²/(NC)), w ~ N(0, σ_w²/S I)). chains: independent chains (vmapped), started
    from prior draws; steps: recorded HMC transitions per chain after `burn_in` adapting ones.
    step_size: initial leapfrog step in whitened units (default 0.25), tuned during burn-in to
    `target_accept`; the leapfrog count is set after half the burn-in so that a trajectory
    spans `trajectory` (whitened units). Deterministic given `seed`.
    """
    C = _positive_int(C, "C", 1)
    N = _positive_int(N, "N", 1)
    S = _positive_int(S, "S", 1)
    chains = _positive_int(chains, "chains", 2)
    steps = _positive_int(steps, "steps", 8)
    burn_in = _positive_int(burn_in, "burn_in", 2)
    seed = _positive_int(seed, "seed", 0)
    for name, val in (("sigma2", sigma2), ("sigma_a2", sigma_a2), ("sigma_w2", sigma_w2)):
        if not float(val) > 0:
            raise ValueError(f"cnn2_exact_posterior: {name} must be > 0, got {val!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"cnn2_exact_posterior: activation {activation!r} unknown; allowed: "
                         f"{sorted(ACTIVATIONS)}")
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"cnn2_exact_posterior: target_accept must be in (0, 1), got "
                         f"{target_accept!r}")
    if (X_test is None) != (y_test is None):
        raise ValueError("cnn2_exact_posterior: X_test and y_test must be given together")
    f64 = partial(jnp.asarray, dtype=jnp.float64)
    X, y = f64(X), f64(y).reshape(-1)
    if X.ndim != 2 or X.shape[1] != N * S:
        raise ValueError(f"cnn2_exact_posterior: X must be (n, N·S) = (n, {N * S}), got "
                         f"{X.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"cnn2_exact_posterior: y has {y.shape[0]} entries for {X.shape[0]} "
                         f"rows of X")
    has_test = X_test is not None
    if has_test:
        X_test, y_test = f64(X_test), f64(y_test).reshape(-1)
        if X_test.ndim != 2 or X_test.shape[1] != N * S or y_test.shape[0] != X_test.shape[0]:
            raise ValueError(f"cnn2_exact_posterior: X_test must be (n_test, {N * S}) with "
                             f"y_test of n_test entries, got {X_test.shape} and "
                             f"{y_test.shape}")
    else:  # one dummy row keeps a single compiled program; its α is reported as NaN
        X_test, y_test = jnp.ones((1, N * S)), jnp.ones(1)
    t_start = time.perf_counter()
    data = Data(patches(X, N, S), y, f64(sigma2), f64(sigma_a2), f64(sigma_w2))
    P_test = patches(X_test, N, S)

    key = jax.random.key(seed)
    u0 = jax.random.normal(jax.random.fold_in(key, 0), (chains, C, S), dtype=jnp.float64)
    keys = jax.random.split(jax.random.fold_in(key, 1), chains)
    states = jax.vmap(hmc_init, in_axes=(0, None, None))(u0, data, activation)
    adapt = adapt_init(0.25 if step_size is None else float(step_size))

    # Burn-in: half with a short trajectory to find the step size, then the leapfrog count
    # for `trajectory`, then the rest to re-tune the step size at that count.
    first = burn_in // 2
    n_leap = 4
    states, adapt, _ = _burn_in(keys, states, adapt, data, jnp.asarray(n_leap),
                                jnp.asarray(0), steps=first, target=target_accept,
                                activation=activation)
    n_leap = max(1, min(64, math.ceil(trajectory / float(jnp.exp(adapt.log_step_avg)))))
    states, adapt, _ = _burn_in(keys, states, adapt_restart(adapt), data, jnp.asarray(n_leap),
                                jnp.asarray(first), steps=burn_in - first,
                                target=target_accept, activation=activation)
    eps = jnp.exp(adapt.log_step_avg)
    states, rec, sums = _sample(keys, states, data, eps, jnp.asarray(n_leap),
                                jnp.asarray(burn_in), P_test, y_test, steps=steps,
                                activation=activation)
    sig_t, a_tr, a_te, logp, acc = (np.asarray(r) for r in rec)
    # (steps, chains, ...) → (chains, steps, ...)
    sig_t = np.moveaxis(sig_t, 0, 1)
    a_tr, a_te, logp = a_tr.T, a_te.T, logp.T
    n_draws = steps * chains

    sigma = sig_t.mean(axis=(0, 1))
    sigma = 0.5 * (sigma + sigma.T)
    sigma_se = np.array([[diagnostics.mcse_mean(sig_t[:, :, i, j]) for j in range(S)]
                         for i in range(S)])
    evals, vecs = np.linalg.eigh(sigma)
    v = vecs[:, -1]
    top_t = np.einsum("s,ctsr,r->ct", v, sig_t, v)
    series = {"alpha_train": a_tr, "alpha_test": a_te, "sigma_top": top_t, "log_density": logp}
    if not has_test:
        series.pop("alpha_test")
    se = {k: diagnostics.mcse_mean(x) for k, x in series.items()}
    rhat = {k: diagnostics.rhat_rank(x) for k, x in series.items()}
    ess = {k: diagnostics.ess_bulk(x) for k, x in series.items()}
    nan = float("nan")
    return RefereeResult(
        C=C,
        alpha_train=float(a_tr.mean()), alpha_train_se=se["alpha_train"],
        alpha_test=float(a_te.mean()) if has_test else nan,
        alpha_test_se=se.get("alpha_test", nan),
        sigma=sigma, sigma_se=sigma_se, sigma_top=float(evals[-1]),
        sigma_top_se=se["sigma_top"],
        Q_mean=np.asarray(sums[2]) / n_draws, f_train=np.asarray(sums[0]) / n_draws,
        f_test=np.asarray(sums[1]) / n_draws if has_test else np.zeros(0),
        rhat=rhat, ess_bulk=ess, acceptance=float(acc.mean()), step_size=float(eps),
        n_leapfrog=int(n_leap), chains=chains, draws=steps, seconds=time.perf_counter() - t_start,
        se=se, field_chain_means=np.asarray(sums[3]) / steps,
        sigma_chain_means=sig_t.mean(axis=1),
    )


__all__ = [
    "TRACKED",
    "AdaptState",
    "Data",
    "HMCState",
    "RefereeResult",
    "adapt_init",
    "adapt_update",
    "cnn2_exact_posterior",
    "features",
    "hmc_init",
    "hmc_step",
    "kernel",
    "log_density",
]
