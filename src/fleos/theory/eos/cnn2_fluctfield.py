"""The fluctuating-field closure of the 2-layer CNN (beyond the paper).

Eq. 8 and the moment-matched EoS (`fleos.theory.eos.cnn2_matched`) share the one-channel law

    p_A(w) ∝ exp(−S |w|² / (2σ_w²) + (1/2C) ⟨A, q(w)⟩),   q(w)_μν = (σ_a²/N) Σ_i φ_μi φ_νi,

and both take the field at the mean kernel, A = ε̄ε̄ᵀ − K̄⁻¹. The exact referee showed that the
law is right once the field is the one the finite-C posterior exerts, and that Eq. 8's field is
18-29 % off (docs/derivations/cnn2.md, "The field test"). This closure takes the field as the
average of the finite-C field over C channels drawn independently from p_A:

    A = E_{W ~ p_A^{⊗C}} [ ε(W) ε(W)ᵀ − K(W)⁻¹ ],   ε(W) = K(W)⁻¹ y,   K(W) = Q(W) + σ² I,
    Σ = Cov_{p_A}(w),   f̄ = E[Q(W) K(W)⁻¹ y]  (train and test),

with Q(W) = (σ_a²/(NC)) F Fᵀ the exact kernel of the C drawn channels
(`core.kernels.cnn2_finite_kernel`).
It keeps the kernel's channel-to-channel fluctuations in the field *and* in the predictor; the
O(1/C) correction of `cnn2_fluct` keeps them only in the predictor, Eq. 8 in neither.

Numerics (general S; docs/derivations/cnn2.md, "The fluctuating-field closure, for any S"):
- Each set of C channels is drawn exactly from p_A by rejection: C·R candidates w = L z from
  N(0, Σ_prop), L Lᵀ = Σ_prop (Eq. 8's Σ at the same C with its eigenvalues raised to at least
  the prior's, `proposal_covariance`, so that the weight ω ∝ exp(F_A(w) − S|w|²/(2σ_w²) +
  |z|²/2) is bounded), each accepted when its uniform is below ω/ω_max; the set takes its first
  C accepted. R doubles (new random numbers) until every set has C.
- Σ = Cov_{p_A} is the importance-weighted second moment of all candidates, with the
  proposal's exact second moment as a control variate (as in `cnn2_matched`).
- The normals and uniforms are fixed (common random numbers), so A ↦ A′ is one deterministic
  (piecewise constant) map; its fixed point is found by damped iteration A ← (1 − β)A + βA′
  from Eq. 8's field, until ‖A′ − A‖_F/‖A′‖_F < tol: first with an eighth of the sets, then
  with all of them and a proposal refreshed to the coarse stage's Cov_{p_A}. β = 1/2 halves
  once, to 1/4, the first time the step fails to shrink: at the paper's scale the map's
  Jacobian along y is ≈ −3, where β = 1/2 cycles with period 2 and β = 1/4 converged (the
  paper-scale study).
- With few sets of many channels (the paper's scale) the map's output jitters by a few per
  cent of ‖A‖ from one evaluation to the next (its accept/reject decisions move with A), so
  the step stalls at 0.01–0.04 above any useful tol while the observables settle within their
  Monte Carlo errors. The fine stage then ends after max_iter evaluations and returns the
  observables averaged over its last `window` evaluations, their SE the per-evaluation Monte
  Carlo SE and the iterates' spread in quadrature; it counts as converged (stationary over
  the window, not a fixed point: `averaged` > 0) only if no observable's halves differ by more
  than `drift_max` × the evaluation-to-evaluation jitter (`_window_average`), so that a
  trend across the window, a slow approach included, fails it.
- The two n²-per-channel products, the candidates' tilt A Φ and the finite-C kernel F Fᵀ, run
  in float32 (3× and 2× float64's speed at the paper's n = 1600); the Cholesky factor, K(W)⁻¹
  and the field are float64, as in `fleos.core.gp`: the field is a difference of two terms of
  similar size, averaged over draws. The float32 rounding moves log ω by ~1e-6 (its spread is
  0.3-0.8) and α by ~1e-8 there; the tests hold both to their forward rounding bounds.
- Why not one shared importance-weighted pool for all sets: its Monte Carlo error is common
  to every set, so no per-set spread contains it (measured: test α 5.4 of its SEs off the
  quadrature at S = 2, C = 128).

Monte Carlo errors: α's SE is the spread of the per-set α over √sets (the sets are independent
exact draws); top Σ's SE is the delta-method error of one weighted evaluation over the
candidates (`cnn2_matched.weighted_quadratic_form`); for an averaged solution, each is combined
in quadrature with the iterates' spread over the window (successive evaluations share their
random numbers, so the average is not √window more precise). None contains the error that
reaches the fixed point through A; a second seed measures it.

Cost per field evaluation, per set: n² C N + n³ flops for the finite-C kernel and its inverse,
C·R·n²N for the candidates' tilt (R = `oversample`), and the erf of their pre-activations
(docs/derivations/cnn2.md, "The fluctuating-field closure, for any S": at the paper's
n = 1600, C = 640 on the quiet 2-core machine, 0.33 ms per candidate's tilt and 0.35 s per
set's kernel and inverse; R = 8-512 at the paper's Fig. 3 points, so the tilt is most of the
time).

Exact references (tests/test_eos_cnn2_fluctfield.py): at S = 2 the drawn channels and the
weighted Σ against quadrature of the same law (`cnn2_matched.channel_covariance_on_grid`); the
batched field against a dense evaluation set by set; the exact referee
(`fleos.sampling.referee`) at C = 128.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from fleos.core.kernels import ACTIVATIONS
from fleos.core.kernels import cnn2_channel_features as features
from fleos.theory.eos.cnn2 import CNN2Problem, solve_cnn2
from fleos.theory.eos.cnn2_matched import field_of, weighted_quadratic_form

Array = jnp.ndarray

#: proposal candidates per channel drawn (rejection sampling), and the batch of candidates
#: whose tilt is computed at once
DEFAULT_OVERSAMPLE = 2
MAX_OVERSAMPLE = 64
POOL_BATCH = 256
#: sets of C channels per field evaluation, and the batch of sets whose n × n inverses are held
#: at once (memory: batch · n² floats)
DEFAULT_DRAWS = 1024
DRAW_BATCH = 8
#: the coarse stage of `solve_cnn2_fluctfield`: n_draws / COARSE_FRACTION sets, iterated to a
#: step below COARSE_TOL_FACTOR · tol
COARSE_FRACTION = 8
COARSE_TOL_FACTOR = 10.0
#: the damping β is halved at most this many times when the field step fails to shrink: once,
#: so that at the noise floor (where the step fails to shrink half the time) β stays at
#: damping/2 and the iteration does not creep
DAMPING_HALVINGS = 1


@dataclass(frozen=True)
class FluctFieldSolution:
    """The closure's fixed point at one C.

    A: the field (n × n); Sigma: Cov_{p_A} (S × S); alpha_*: means over the draws of the exact
    finite-C α, with *_se their Monte Carlo SE (per-draw spread / √draws); sigma_top and
    sigma_top_se: top eigenvalue of Σ and its one-evaluation delta-method SE; kish_ess: the
    candidates' Kish effective sample size at the last evaluated field; converged: every set
    complete, a finite step, and either step < tol within max_iter (a fixed point:
    `averaged` = 0) or, after max_iter evaluations, the last `averaged` = window of them on one
    map and stationary by the drift gate (observables averaged over them; module docstring);
    step: the last relative change ‖A′ − A‖_F/‖A′‖_F."""

    A: Array
    Sigma: Array
    alpha_train: float
    alpha_train_se: float
    alpha_test: float
    alpha_test_se: float
    sigma_top: float
    sigma_top_se: float
    kish_ess: float
    converged: bool
    iterations: int
    step: float
    seconds: float
    message: str
    averaged: int = 0


@partial(jax.jit, static_argnames=("activation",))
def _tilt_f32(P32: Array, w: Array, A32: Array, coef: Array, activation: str) -> Array:
    """F_A(w) = coef Σ_i φ_iᵀ A φ_i for a batch w (B, S), in float32: the product A Φ is the
    whole cost of the tilt (n²N per candidate, as much as a channel's share of the finite-C
    kernel), and float32 runs it at 3× float64's speed. Error: 1e-6 in log ω where the log
    weights spread by 0.3-0.8 at the paper's n = 1600, C = 640
    (tests/test_eos_cnn2_fluctfield.py holds it to the float64 tilt)."""
    n, N = P32.shape[0], P32.shape[1]
    phi = ACTIVATIONS[activation](jnp.einsum("mis,bs->mbi", P32, w.astype(jnp.float32)))
    flat = phi.reshape(n, -1)                                     # (n, B·N)
    quad = jnp.sum(flat * (A32 @ flat), axis=0).reshape(-1, N).sum(1)
    return coef * quad.astype(jnp.float64)


def prior_over_proposal(problem: CNN2Problem, w: Array, z: Array) -> Array:
    """log of the prior density over the proposal's (unnormalized) at candidates w = L z:
    −S|w|²/(2σ_w²) + |z|²/2; a law's log weight is its tilt plus this."""
    return -problem.S / (2.0 * problem.sigma_w2) * jnp.sum(w * w, 1) + 0.5 * jnp.sum(z * z, 1)


def _candidate_log_weights(problem: CNN2Problem, C: float, A: Array, w: Array, z: Array) -> Array:
    """log ω_k (unnormalized) of the candidates w = L z under p_A: the tilt
    F_A(w) = (1/2C)⟨A, q(w)⟩ = (σ_a²/2NC) Σ_i φ_iᵀ A φ_i, the prior and the proposal's density."""
    S, N = problem.S, problem.N
    coef = jnp.asarray(problem.sigma_a2 / (2.0 * N * C))
    P32 = problem.P.astype(jnp.float32)
    A32 = (0.5 * (A + A.T)).astype(jnp.float32)
    tilt = jax.lax.map(lambda wb: _tilt_f32(P32, wb, A32, coef, problem.activation),
                       w.reshape(-1, POOL_BATCH, S)).reshape(-1)
    return tilt + prior_over_proposal(problem, w, z)


@partial(jax.jit, static_argnames=("activation", "with_test"))
def _field_of_draws(W: Array, P: Array, y: Array, P_test: Array, y_test: Array,
                    sigma2: Array, sigma_a2: Array, activation: str,
                    with_test: bool = True) -> tuple[Array, Array, Array]:
    """For sets of channels W (D, C, S): the mean of ε(W)ε(W)ᵀ − K(W)⁻¹ over the sets, and each
    set's train and test α of the exact finite-C predictor (test α NaN unless `with_test`: the
    test features are the larger part of the work when n_test > n, and the iteration needs
    only the field)."""
    n, N = P.shape[0], P.shape[1]
    C = W.shape[1]
    c = sigma_a2 / (N * C)
    eye = jnp.eye(n, dtype=P.dtype)

    P32, P_test32 = P.astype(jnp.float32), P_test.astype(jnp.float32)

    def one(Wd: Array) -> tuple[Array, Array, Array]:
        # the features and their product F Fᵀ in float32 (2× float64's speed; the kernel's
        # entries are sums of N·C terms of size ≤ 1), Cholesky and inverse in float64: at the
        # paper's n = 1600, C = 640 this moves α by 1e-8 and the field by 1e-6 relative
        W32 = Wd.astype(jnp.float32)
        F = features(P32, W32, activation)
        FFt = (F @ F.T).astype(P.dtype)
        chol = jnp.linalg.cholesky(c * FFt + sigma2 * eye)
        K_inv = jax.scipy.linalg.cho_solve((chol, True), eye)
        v = K_inv @ y
        a_train = (v @ y) / (y @ y)                       # (y − f̄)·y/(σ² y·y), f̄ = y − σ² v
        if with_test:
            F_test = features(P_test32, W32, activation)
            f_test = c * (F_test.astype(P.dtype) @ (F.T.astype(P.dtype) @ v))
            a_test = (y_test - f_test) @ y_test / (sigma2 * (y_test @ y_test))
        else:
            a_test = jnp.full((), jnp.nan, P.dtype)
        return jnp.outer(v, v) - K_inv, a_train, a_test

    def batch(total: Array, Wb: Array) -> tuple[Array, tuple[Array, Array]]:
        A_b, a_tr, a_te = jax.vmap(one)(Wb)
        return total + A_b.sum(0), (a_tr, a_te)

    D = W.shape[0]
    total, (a_tr, a_te) = jax.lax.scan(batch, jnp.zeros((n, n), P.dtype),
                                       W.reshape(D // DRAW_BATCH, DRAW_BATCH, C, -1))
    return total / D, a_tr.reshape(-1), a_te.reshape(-1)


def _check(problem: CNN2Problem, C: float, n_draws: int, oversample: int, where: str) -> None:
    if not C > 0:
        raise ValueError(f"{where}: C must be > 0, got {C}")
    if int(C) != C:
        raise ValueError(f"{where}: C must be a whole number of channels, got {C}")
    if n_draws < DRAW_BATCH or n_draws % DRAW_BATCH:
        raise ValueError(f"{where}: n_draws must be a positive multiple of {DRAW_BATCH}, "
                         f"got {n_draws}")
    if not oversample >= 1:
        raise ValueError(f"{where}: oversample must be >= 1, got {oversample}")
    if problem.P_test is None:
        raise ValueError(f"{where}: the problem needs test patches (P_test, y_test)")


def proposal_covariance(problem: CNN2Problem, Sigma: Array) -> Array:
    """Σ with every eigenvalue raised to at least the prior's σ_w²/S. The tilt F_A is bounded
    (φ = erf is), so p_A's tails are the prior's; with Σ_prop ≥ σ_w²/S the log weight is at
    most max F_A + const, so rejection from N(0, Σ_prop) has a finite bound."""
    lam, U = np.linalg.eigh(np.asarray(Sigma, np.float64))
    lam = np.maximum(lam, problem.sigma_w2 / problem.S)
    return jnp.asarray((U * lam) @ U.T)


class FluctFieldMap:
    """A ↦ A′ with its common random numbers fixed (module docstring).

    Each of the `n_draws` sets gets C·oversample proposal candidates of its own; a candidate is
    accepted when its uniform is below ω/ω_max (ω_max: the largest weight among all candidates
    of this evaluation) and the set takes its first C accepted candidates. `__call__(A)` returns
    the new field, all candidates' log weights, the per-set α's and the number of sets that had
    fewer than C accepted candidates (then the evaluation is not valid: raise `oversample`)."""

    def __init__(self, problem: CNN2Problem, C: float, Sigma_prop: Array, *,
                 n_draws: int = DEFAULT_DRAWS, oversample: int = DEFAULT_OVERSAMPLE,
                 seed: int = 0):
        _check(problem, C, n_draws, oversample, "FluctFieldMap")
        self.problem, self.C = problem, int(C)
        per_set = self.C * int(oversample)
        total = -(-n_draws * per_set // POOL_BATCH) * POOL_BATCH  # whole tilt batches
        rng = np.random.default_rng(seed)
        self.z = jnp.asarray(rng.standard_normal((total, problem.S)))
        self.uniforms = jnp.asarray(rng.random((n_draws, per_set)))
        self.Sigma_prop = proposal_covariance(problem, Sigma_prop)
        self.w = self.z @ jnp.linalg.cholesky(self.Sigma_prop).T

    def log_weights(self, A: Array) -> Array:
        """log ω of every candidate under p_A (unnormalized)."""
        return _candidate_log_weights(self.problem, self.C, jnp.asarray(A, jnp.float64), self.w,
                                 self.z)

    def draw_sets(self, A: Array) -> tuple[Array, Array, int]:
        """The sets of C channels W (draws, C, S) of p_A, all candidates' log ω, and the
        number of sets short of C accepted candidates (their tails are unaccepted ones)."""
        logw = self.log_weights(A)
        D, per_set = self.uniforms.shape
        log_ratio = (logw[: D * per_set] - jnp.max(logw)).reshape(D, per_set)
        accept = jnp.log(self.uniforms) < log_ratio
        short = int(jnp.sum(jnp.sum(accept, axis=1) < self.C))
        # the first C accepted candidates of each set (a stable sort puts them first)
        first = jnp.argsort(~accept, axis=1, stable=True)[:, : self.C]
        W = jnp.take_along_axis(self.w[: D * per_set].reshape(D, per_set, -1),
                                first[..., None], axis=1)
        return W, logw, short

    def __call__(self, A: Array, with_test: bool = True) -> tuple[Array, Array, Array, Array,
                                                                   int]:
        pr = self.problem
        W, logw, short = self.draw_sets(A)
        f64 = partial(jnp.asarray, dtype=jnp.float64)
        A_new, a_tr, a_te = _field_of_draws(
            W, pr.P, pr.y, pr.P_test, pr.y_test, f64(pr.sigma2), f64(pr.sigma_a2),
            pr.activation, with_test)
        return 0.5 * (A_new + A_new.T), logw, a_tr, a_te, short


def candidates_covariance(w: Array, logw: Array, Sigma_prop: Array) -> np.ndarray:
    """Cov_{p_A} from all candidates w ~ N(0, Σ_prop) by self-normalized importance weights,
    with the proposal's exact second moment as a control variate (as in `cnn2_matched`);
    p_A is even in w (φ odd), so its covariance is its second moment."""
    w, logw = np.asarray(w), np.asarray(logw)
    om = np.exp(logw - logw.max())
    om /= om.sum()
    Sigma = np.asarray(Sigma_prop) + w.T @ ((om - 1.0 / len(om))[:, None] * w)
    return 0.5 * (Sigma + Sigma.T)


def evaluation_observables(fmap: FluctFieldMap, logw: Array, a_tr: Array, a_te: Array
                           ) -> dict[str, float | np.ndarray]:
    """One evaluation's observables and their Monte Carlo SEs (module docstring): Σ =
    Cov_{p_A} of the candidates, its top eigenvalue with the delta-method SE, and the sets'
    mean train and test α with SE = spread/√sets."""
    Sigma = candidates_covariance(fmap.w, logw, fmap.Sigma_prop)
    top, top_se = weighted_quadratic_form(fmap.w, logw, fmap.Sigma_prop,
                                          np.linalg.eigh(Sigma)[1][:, -1])
    a_tr, a_te = np.asarray(a_tr), np.asarray(a_te)
    root = np.sqrt(len(a_tr))
    return {"Sigma": Sigma, "sigma_top": top, "sigma_top_se": top_se,
            "alpha_train": float(a_tr.mean()), "alpha_train_se": float(a_tr.std(ddof=1) / root),
            "alpha_test": float(a_te.mean()), "alpha_test_se": float(a_te.std(ddof=1) / root)}


def _iterate(problem: CNN2Problem, C: float, Sigma_prop: Array, A: Array, *, n_draws: int,
             oversample: int, seed: int, tol: float, max_iter: int, damping: float,
             window: int = 0,
             ) -> tuple[Array, FluctFieldMap, Array, float, int, int, int, list[dict]]:
    """Damped iteration A ← (1 − β)A + βA′ of one map from A until the step is below tol, β
    halved (at most DAMPING_HALVINGS times) whenever the step fails to shrink; the map is
    rebuilt with twice the candidates (new common random numbers) while some set is short of
    C accepted ones. The last `window` evaluations before max_iter record their observables
    (with test α); a rebuild clears the record, so that it holds one map's evaluations.
    Returns the field, the last map and its log weights (at the field before the last step),
    the last step, the number of short sets, evaluations, the final oversample and the
    recorded observables."""
    step, short, iterations, beta = float("inf"), 0, 0, damping
    while True:
        fmap = FluctFieldMap(problem, C, Sigma_prop, n_draws=n_draws, oversample=oversample,
                             seed=seed)
        trace: list[dict] = []
        step = float("inf")
        while iterations < max_iter:
            record = iterations >= max_iter - window
            iterations += 1
            previous = step
            A_new, logw, a_tr, a_te, short = fmap(A, with_test=record)
            step = float(jnp.linalg.norm(A_new - A) / jnp.linalg.norm(A_new))
            if short or not np.isfinite(step):
                break
            if record:
                trace.append(evaluation_observables(fmap, logw, a_tr, a_te))
            if step >= previous:
                beta = max(0.5 * beta, damping / 2**DAMPING_HALVINGS)
            A = (1.0 - beta) * A + beta * A_new
            if step < tol:
                break
        if not short or oversample >= MAX_OVERSAMPLE or iterations >= max_iter:
            return A, fmap, logw, step, short, iterations, oversample, trace
        oversample *= 2


def _window_average(trace: list[dict], drift_max: float) -> tuple[dict, list[str]]:
    """The observables averaged over the recorded evaluations, and those that drift.

    Each SE is the mean per-evaluation Monte Carlo SE and the iterates' SD in quadrature. An
    observable drifts if its halves' means differ by more than drift_max × its jitter, von
    Neumann's √(mean(Δv²)/2) over successive evaluations. The Monte Carlo error is not in the
    gate: the evaluations share their random numbers, so it is common to both halves and
    cancels in their difference. The jitter sees the evaluation-to-evaluation noise and not a
    smooth trend, so a trend across the window (a slow approach included) fails the gate;
    against the iterates' SD, which a trend inflates, a linear one never would (its drift is
    at most √3 of its SD). A window that has not moved at all (drift and jitter 0) passes."""
    out: dict = {"Sigma": np.mean([t["Sigma"] for t in trace], axis=0)}
    drifting = []
    half = len(trace) // 2
    for q in ("sigma_top", "alpha_train", "alpha_test"):
        vals = np.array([t[q] for t in trace])
        mc = float(np.mean([t[f"{q}_se"] for t in trace]))
        out[q], out[f"{q}_se"] = float(vals.mean()), float(np.hypot(mc, vals.std(ddof=1)))
        drift = vals[half:].mean() - vals[:half].mean()
        jitter = float(np.sqrt(np.mean(np.diff(vals) ** 2) / 2))
        if not abs(drift) <= drift_max * jitter:
            drifting.append(f"{q} {drift / jitter if jitter else np.inf:+.1f}")
    return out, drifting


def solve_cnn2_fluctfield(
    problem: CNN2Problem,
    C: float,
    Sigma_eq8: Array | None = None,
    *,
    n_draws: int = DEFAULT_DRAWS,
    coarse_draws: int | None = None,
    oversample: int = DEFAULT_OVERSAMPLE,
    seed: int = 0,
    tol: float = 2e-4,
    max_iter: int = 60,
    damping: float = 0.5,
    window: int = 8,
    drift_max: float = 3.0,
) -> FluctFieldSolution:
    """Solve the fluctuating-field closure at channel count C (module docstring).

    Sigma_eq8: Eq. 8's Σ at the same C (solved here if None): the first proposal (raised to the
    prior) and the start, A₀ = A(Σ_eq8).

    Two stages, because an evaluation costs as much as its sets and the first steps need no
    precision: a coarse map of `coarse_draws` sets (default n_draws/8, a multiple of 8; 0 or
    ≥ n_draws skips it) iterates from A₀ to a step below COARSE_TOL_FACTOR·tol; its Cov_{p_A}
    (raised to the prior) then becomes the proposal of the map of `n_draws` sets, which goes on
    from the coarse field to tol. The fixed point's proposal is then closer to p_A than Eq. 8's
    Σ: at the paper's n = 1600, C = 640 the acceptance rose from 0.11 to 0.22.

    tol: on the relative field step; 2e-4 is what the S = 2 study reached in 9-13 iterations at
    C = 32-128 (studies/field_test); the map is piecewise constant, so much smaller steps are
    below its resolution. max_iter: per stage. damping β = 1/2 at the start: a plain step
    overshoots at small C, as in Eq. 8's own solve (it halves while the step fails to shrink).
    window, drift_max: if the fine stage's step is still above tol after max_iter
    evaluations, the observables are averaged over its last `window` evaluations, and the
    solution counts as converged only if none drifts between the window's halves by more
    than drift_max × its evaluation-to-evaluation jitter (`_window_average`).
    """
    t0 = time.perf_counter()
    _check(problem, C, n_draws, oversample, "solve_cnn2_fluctfield")
    if not 2 <= window <= max_iter:
        raise ValueError(f"solve_cnn2_fluctfield: window must be in [2, max_iter = {max_iter}], "
                         f"got {window}")
    if not drift_max > 0:
        raise ValueError(f"solve_cnn2_fluctfield: drift_max must be > 0, got {drift_max}")
    if not 0 < damping <= 1:
        raise ValueError(f"solve_cnn2_fluctfield: damping must be in (0, 1], got {damping}")
    if coarse_draws is None:
        coarse_draws = max(DRAW_BATCH, n_draws // COARSE_FRACTION // DRAW_BATCH * DRAW_BATCH)
    if coarse_draws and coarse_draws < n_draws:
        _check(problem, C, coarse_draws, oversample, "solve_cnn2_fluctfield (coarse_draws)")
    if Sigma_eq8 is None:
        Sigma_eq8 = solve_cnn2(problem, C).x
    A, Sigma_prop = field_of(problem, Sigma_eq8), Sigma_eq8
    run = partial(_iterate, problem, C, seed=seed, max_iter=max_iter, damping=damping)
    stages = ""
    if 0 < coarse_draws < n_draws:
        A, fmap, logw, c_step, short, c_iter, oversample, _ = run(
            Sigma_prop, A, n_draws=coarse_draws, oversample=oversample,
            tol=COARSE_TOL_FACTOR * tol)
        if not short:
            Sigma_prop = candidates_covariance(fmap.w, logw, fmap.Sigma_prop)
        stages = (f"; coarse stage ({coarse_draws} sets): {c_iter} evaluations, step "
                  f"{c_step:.2e}")
    A, fmap, logw, step, short, iterations, oversample, trace = run(
        Sigma_prop, A, n_draws=n_draws, oversample=oversample, tol=tol, window=window)
    averaged, drifting = 0, []
    if short:
        failure = f"{short} sets had fewer than C accepted candidates: raise oversample"
    elif not np.isfinite(step):
        failure = "the field is not finite"
    elif step >= tol and len(trace) < window:
        failure = (f"only {len(trace)} of the window's {window} evaluations on one map (the "
                   f"candidates were rebuilt inside it)")
    else:
        failure = ""
    if not failure and step < tol:
        # a fixed point: the observables at the returned field, with test α
        _, logw, a_tr, a_te, short = fmap(A)
        obs = evaluation_observables(fmap, logw, a_tr, a_te)
        if short:
            failure = f"{short} sets at the returned field had fewer than C accepted candidates"
    if failure:
        obs = {"Sigma": candidates_covariance(fmap.w, logw, fmap.Sigma_prop)}
        obs.update({q: np.nan for q in ("alpha_train", "alpha_train_se", "alpha_test",
                                         "alpha_test_se", "sigma_top", "sigma_top_se")})
    elif step >= tol:
        obs, drifting = _window_average(trace, drift_max)
        averaged = len(trace)
    converged = not failure and (step < tol or not drifting)
    om = np.asarray(jax.nn.softmax(logw))
    kish = float(1.0 / np.sum(om**2))
    accepted = float(np.mean(np.exp(np.asarray(logw) - np.max(logw))))
    how = (f"averaged over the last {averaged} evaluations, "
           + (f"drifting (halves' difference in units of the jitter): {', '.join(drifting)}"
              if drifting else f"stationary: no drift beyond {drift_max:g} × the jitter")
           if averaged else "")
    msg = (f"{'converged' if converged else 'not converged'}: field step {step:.2e} after "
           f"{iterations} evaluations of {n_draws} sets (tol {tol:.0e}){stages}; "
           + (f"{how}; " if how else "") +
           f"acceptance {accepted:.2f}, candidates' Kish ESS {kish / len(om):.2f} of their "
           f"number, oversample {oversample}" + (f"; {failure}" if failure else ""))
    return FluctFieldSolution(
        A=A, Sigma=obs["Sigma"], alpha_train=obs["alpha_train"],
        alpha_train_se=obs["alpha_train_se"], alpha_test=obs["alpha_test"],
        alpha_test_se=obs["alpha_test_se"], sigma_top=obs["sigma_top"],
        sigma_top_se=obs["sigma_top_se"], kish_ess=kish, converged=converged,
        iterations=iterations, step=step, seconds=time.perf_counter() - t0, message=msg,
        averaged=averaged)
