"""The O(1/C) kernel-fluctuation correction to the 2-layer CNN predictor of Eq. 8.

Given the input weights W = (w_1 … w_C), with the readout integrated out, the predictor is exact:

    f̄(W) = Q(W) K(W)⁻¹ y,   K = Q + σ² I,   Q(W) = (1/C) Σ_c q(w_c),
    q(w) = c Φ_w Φ_wᵀ,   (Φ_w)_μi = φ(w·x_μi),   c = σ_a²/N.

Eq. 8 replaces Q by its mean Q̄ = Q_f(Σ) over the channel law w ~ N(0, Σ). The posterior mean is
E[Q K⁻¹] y, and Q fluctuates: with channels i.i.d. from the law, δQ = Q − Q̄ is a mean of C
independent δq = q(w) − Q̄. Expanding K⁻¹ = K̄⁻¹ − K̄⁻¹δQK̄⁻¹ + K̄⁻¹δQK̄⁻¹δQK̄⁻¹ − … and using
E[δQ M δQ] = E_p[δq M δq]/C (derivation and what it leaves out: docs/derivations/cnn2.md,
"Kernel fluctuations at O(1/C)"):

    y − f̄   = σ² [ε̄ + K̄⁻¹ v / C] + O(1/C²),                  v = E_p[δq K̄⁻¹ δq] ε̄,
    f̄_*     = Q̄_* ε̄ − v_*/C + Q̄_* K̄⁻¹ v / C + O(1/C²),    v_* = E_p[δq_* K̄⁻¹ δq] ε̄,

with ε̄ = K̄⁻¹ y (Eq. 8's ε) and δq_* the (test, train) block. In α (= (y − f̄)·y/(σ² y·y)):

    Δα_train = E_p[u K̄⁻¹ u] / (C y·y) ≥ 0,    u = δq ε̄                       (Jensen's term),
    Δα_test  = −E_p[−y_*ᵀ δq_* K̄⁻¹ u + rᵀ δq K̄⁻¹ u] / (C σ² y_*·y_*),  r = K̄⁻¹ Q̄_*ᵀ y_*.

Both are averages over K independent channel draws of per-draw scalars, so their Monte Carlo SE
is the per-draw spread over √K. The low rank of q is used throughout: per draw only Φ_w (n × N),
u = c Φ_w(Φ_wᵀ ε̄) − Q̄ ε̄ and g = K̄⁻¹ u (one matrix product for a batch of draws) are formed, so
the cost is O(n² K + (n + n_*) N S K) and no n × n × K array exists.

K̄⁻¹ is in float64, as in `fleos.core.gp`: ε̄ must be the one Eq. 8 was solved with, and the
correction is a difference of K̄⁻¹ applied twice to vectors whose per-draw spread is large
against their mean, so rounding is kept far below the Monte Carlo SE without a bound per
problem. (The condition number of K̄ is small at the paper's size, 19 at the GP Σ with
n = 1600, so float32 might do; not measured.)
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.linalg.lapack

from fleos.core import gp
from fleos.core.kernels import ACTIVATIONS
from fleos.core.kernels import cnn2_output_kernel as output_kernel
from fleos.theory.eos.cnn2 import CNN2Problem

Array = jnp.ndarray

#: channel draws per evaluation by default
DEFAULT_DRAWS = 2048
#: draws per batch (memory: batch · (n + n_test) · N floats)
BATCH = 128


def _phi(P: Array, w: Array, activation: str) -> Array:
    """Φ_w for a batch of channels: (B, n, N), (Φ_w)_μi = φ(w·x_μi)."""
    return ACTIVATIONS[activation](jnp.einsum("mis,bs->bmi", P, w))


@partial(jax.jit, static_argnames=("activation",))
def _center_batch(P: Array, Pt: Array, w: Array, om: Array, a: Array, r: Array, yt: Array,
                  c: Array, activation: str) -> tuple[Array, Array, Array]:
    """Σ_b ω_b q(w_b) a, Σ_b ω_b q(w_b) r and Σ_b ω_b q_*(w_b)ᵀ y_* for one batch: the weighted
    sample mean of q applied to the three vectors the correction needs."""
    Ph, Pht = _phi(P, w, activation), _phi(Pt, w, activation)
    qa = c * jnp.einsum("b,bmi,bi->m", om, Ph, jnp.einsum("bmi,m->bi", Ph, a))
    qr = c * jnp.einsum("b,bmi,bi->m", om, Ph, jnp.einsum("bmi,m->bi", Ph, r))
    qty = c * jnp.einsum("b,bmi,bi->m", om, Ph, jnp.einsum("bmi,m->bi", Pht, yt))
    return qa, qr, qty


@partial(jax.jit, static_argnames=("activation",))
def _u_batch(P: Array, w: Array, a: Array, qa: Array, c: float, activation: str) -> Array:
    """u = δq ε̄ = c Φ_w (Φ_wᵀ ε̄) − (centre) ε̄ for a batch of channels: (B, n)."""
    Ph = _phi(P, w, activation)
    return c * jnp.einsum("bmi,bi->bm", Ph, jnp.einsum("bmi,m->bi", Ph, a)) - qa[None, :]


def _accumulate(Ph: Array, Pht: Array, om: Array, U: Array, G: Array, r: Array, yt: Array,
                cr: Array, cty: Array, c: Array) -> tuple[Array, Array, Array, Array, Array]:
    """One batch of draws with Φ (Ph), Φ_* (Pht), u_b (rows of U) and g_b (rows of G; K̄⁻¹ u_b,
    or its resummed mix): per-draw t = u·g and h = −y_*ᵀδq_*g + rᵀδq g, and the ω-weighted sums
    of c Φ Φᵀ g (train), c Φ_* Φᵀ g (test) and g. cr, cty: the centre kernel applied to r and
    (transposed) to y_*."""
    t = jnp.sum(U * G, axis=1)
    s = jnp.einsum("bmi,bm->bi", Ph, G)  # Φᵀ g
    h = (-(c * jnp.sum(jnp.einsum("bmi,m->bi", Pht, yt) * s, axis=1) - G @ cty)
         + (c * jnp.sum(jnp.einsum("bmi,m->bi", Ph, r) * s, axis=1) - G @ cr))
    v = c * jnp.einsum("b,bmi,bi->m", om, Ph, s)
    vt = c * jnp.einsum("b,bmi,bi->m", om, Pht, s)
    return t, h, v, vt, om @ G


@partial(jax.jit, static_argnames=("activation",))
def _accumulate_batch(P: Array, Pt: Array, w: Array, om: Array, U: Array, G: Array, r: Array,
                      yt: Array, cr: Array, cty: Array, c: Array, activation: str
                      ) -> tuple[Array, Array, Array, Array, Array]:
    """`_accumulate` for given u_b and g_b, Φ and Φ_* recomputed from the draws w."""
    return _accumulate(_phi(P, w, activation), _phi(Pt, w, activation), om, U, G, r, yt, cr,
                       cty, c)


@partial(jax.jit, static_argnames=("activation", "keep"))
def _first_pass_batch(P: Array, Pt: Array, w: Array, om: Array, Kinv: Array, a: Array,
                      ca: Array, r: Array, yt: Array, cr: Array, cty: Array, c: Array,
                      activation: str, keep: bool) -> tuple[Array, ...]:
    """Everything of one batch that needs Φ and Φ_* once: u_b, g_b = K̄⁻¹u_b, the i.i.d.
    sums of `_accumulate` with them, and (keep) u_b and ℓ_b (`_ell_batch`) for the resummed
    variant."""
    Ph, Pht = _phi(P, w, activation), _phi(Pt, w, activation)
    U = c * jnp.einsum("bmi,bi->bm", Ph, jnp.einsum("bmi,m->bi", Ph, a)) - ca[None, :]
    G = U @ Kinv
    sums = _accumulate(Ph, Pht, om, U, G, r, yt, cr, cty, c)
    if not keep:
        return sums
    L = (-(c * jnp.einsum("bmi,bi->bm", Ph, jnp.einsum("bmi,m->bi", Pht, yt)) - cty[None])
         + (c * jnp.einsum("bmi,bi->bm", Ph, jnp.einsum("bmi,m->bi", Ph, r)) - cr[None]))
    return (*sums, U, G, L)


def _weighted_se(x: np.ndarray, om: np.ndarray) -> tuple[float, float]:
    """Σ ω x and its SE sqrt(Σ ω² (x − m)² / (1 − Σ ω²)): for ω = 1/K the sample SD (ddof 1)
    over √K; for self-normalized importance weights the delta-method SE."""
    m = float(om @ x)
    s2 = float(np.sum(om**2))
    return m, float(np.sqrt(np.sum(om**2 * (x - m) ** 2) / (1.0 - s2)))


def kernel_fluctuation_correction(
    problem: CNN2Problem,
    C: float,
    Sigma: Any,
    *,
    n_draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    draws: Any = None,
    weights: Any = None,
    resum: bool = False,
) -> dict[str, Any]:
    """Eq. 8's predictor at Σ plus its O(1/C) kernel-fluctuation correction (module docstring).

    Channel law: w ~ N(0, Σ) (Eq. 8's), n_draws independent draws from `seed`, centred at the
    exact mean Q̄ = Q_f(Σ). Or `draws` (K, S) of another channel law (e.g. the moment-matched
    one, `matched_law_draws`) with optional self-normalized `weights` (K,): then δq is centred
    at the weighted sample mean of q and the covariance is Bessel-corrected by 1/(1 − Σ ω²);
    the base predictor stays the Gaussian-kernel one at Σ (as in `cnn2_matched`).

    resum (Gaussian draws only; a hypothesis, docs/derivations/cnn2.md "Kernel fluctuations
    at O(1/C)"): weight the kernel fluctuations by the ε-part of the second-order data action,
    exp(−½ ε̄ᵀδQ K̄⁻¹δQ ε̄), which i.i.d. channels ignore. In the K-draw representation
    δQ = Σ_k θ_k δq_k, θ ~ N(0, I/(CK)), this replaces every g_k = K̄⁻¹u_k by the k-th row of
    (I + Γ/(CK))⁻¹ G, Γ_kl = u_kᵀK̄⁻¹u_l (O(K³ + n K²)); the SEs are then delete-a-group
    jackknife SEs over 8 groups of draws.

    Returns alpha_train / alpha_test (corrected), their Monte Carlo SEs alpha_train_se /
    alpha_test_se, the uncorrected alpha_train_eos / alpha_test_eos, the shifts
    dalpha_train / dalpha_test, f_train / f_test (corrected predictions, numpy), the per-draw
    Jensen coefficients C·Δα (jensen_train / jensen_test, independent of C), n_draws, kish_ess,
    seconds. Test entries are None without a test set.
    """
    t0 = time.perf_counter()
    Sigma, w_all, om_all = _draws_and_weights(problem, C, Sigma, n_draws, seed, draws, weights,
                                              resum)
    return _corrections(problem, C, Sigma, w_all, om_all, draws is None, (resum,), t0)[0]


def _draws_and_weights(problem: CNN2Problem, C: float, Sigma: Any, n_draws: int, seed: int,
                       draws: Any, weights: Any, resum: bool
                       ) -> tuple[Array, np.ndarray, np.ndarray]:
    """The checked arguments of `kernel_fluctuation_correction`: Σ, the draws (K, S) and their
    normalized weights (K,)."""
    if not C > 0:
        raise ValueError(f"kernel_fluctuation_correction: C must be > 0, got {C}")
    Sigma = jnp.asarray(Sigma, dtype=jnp.float64)
    if Sigma.shape != (problem.S, problem.S):
        raise ValueError(f"kernel_fluctuation_correction: Sigma has shape {Sigma.shape}, "
                         f"expected ({problem.S}, {problem.S})")
    if resum and draws is not None:
        raise ValueError("kernel_fluctuation_correction: resum needs the Gaussian draws "
                         "(no draws/weights)")
    if draws is None:
        if weights is not None:
            raise ValueError("kernel_fluctuation_correction: weights given without draws")
        if n_draws < 2:
            raise ValueError(f"kernel_fluctuation_correction: n_draws must be >= 2, got {n_draws}")
        z = np.random.default_rng(seed).standard_normal((n_draws, problem.S))
        w_all = z @ np.linalg.cholesky(np.asarray(Sigma)).T
    else:
        w_all = np.asarray(draws, dtype=np.float64)
        if w_all.ndim != 2 or w_all.shape[1] != problem.S or w_all.shape[0] < 2:
            raise ValueError(f"kernel_fluctuation_correction: draws must be (K >= 2, "
                             f"{problem.S}), got {w_all.shape}")
    K = w_all.shape[0]
    if weights is None:
        om_all = np.full(K, 1.0 / K)
    else:
        om_all = np.asarray(weights, dtype=np.float64).reshape(-1)
        if om_all.shape != (K,) or not np.all(om_all >= 0) or not om_all.sum() > 0:
            raise ValueError(f"kernel_fluctuation_correction: weights must be {K} non-negative "
                             "numbers, not all zero")
        om_all = om_all / om_all.sum()
    return Sigma, w_all, om_all



def _corrections(problem: CNN2Problem, C: float, Sigma: Array, w_all: np.ndarray,
                 om_all: np.ndarray, exact_center: bool, resums: tuple[bool, ...],
                 t0: float) -> list[dict[str, Any]]:
    """`kernel_fluctuation_correction` for one set of draws and each variant in `resums`
    (False: i.i.d., True: resummed), sharing every Φ: one pass over the draws gives the i.i.d.
    sums and, when a resummed variant is asked for, the u_b, g_b and ℓ_b it needs; a second
    pass applies its mixed g. Each result's seconds: from t0 to its own end."""
    K = w_all.shape[0]
    P, y, sig2 = problem.P, problem.y, problem.sigma2
    c = jnp.asarray(problem.sigma_a2 / problem.N, dtype=jnp.float64)
    act = problem.activation
    Qbar = output_kernel(P, P, Sigma, problem.sigma_a2, act)
    fit = gp.gp_fit(Qbar, y, sig2)
    a = gp.discrepancy(fit)  # ε̄ = K̄⁻¹ y
    Kinv = jax.scipy.linalg.cho_solve((fit.chol, True), jnp.eye(problem.n, dtype=jnp.float64))
    has_test = problem.P_test is not None and problem.y_test is not None
    if has_test:
        Pt, yt = problem.P_test, problem.y_test
        Qt = output_kernel(Pt, P, Sigma, problem.sigma_a2, act)
        r = Kinv @ (Qt.T @ yt)
    else:  # a one-point stand-in keeps one compiled program; its outputs are not used
        Pt, yt = P[:1], jnp.zeros(1, dtype=jnp.float64)
        Qt = jnp.zeros((1, problem.n), dtype=jnp.float64)
        r = jnp.zeros(problem.n, dtype=jnp.float64)

    pad = (-K) % BATCH  # zero-weight padding draws: contribute nothing to the weighted sums
    w_pad = jnp.asarray(np.concatenate([w_all, np.zeros((pad, problem.S))]))
    om_pad = jnp.asarray(np.concatenate([om_all, np.zeros(pad)]))
    batches = [(w_pad[i:i + BATCH], om_pad[i:i + BATCH]) for i in range(0, K + pad, BATCH)]
    if exact_center:
        ca, cr, cty = Qbar @ a, Qbar @ r, Qt.T @ yt
    else:
        parts = [_center_batch(P, Pt, wb, ob, a, r, yt, c, act) for wb, ob in batches]
        ca, cr, cty = (sum(p[j] for p in parts) for j in range(3))
    keep = any(resums)
    first = [_first_pass_batch(P, Pt, wb, ob, Kinv, a, ca, r, yt, cr, cty, c, act, keep)
             for wb, ob in batches]

    def cat(j: int) -> Array:
        return jnp.concatenate([f[j] for f in first])

    def total(j: int) -> Array:
        return sum(f[j] for f in first)

    out = []
    for resum in resums:
        if not resum:
            sums = (np.asarray(cat(0))[:K], np.asarray(cat(1))[:K], total(2), total(3), total(4))
            out.append(_summary(problem, C, fit, Kinv, Qbar, Qt, has_test, om_all,
                                exact_center, sums, None, t0))
            continue
        U, G, L = cat(5)[:K], cat(6)[:K], cat(7)[:K]
        gram, cross = np.asarray(U @ G.T), np.asarray(L @ G.T)
        # I + Γ/(CK) is symmetric positive definite (Γ a Gram matrix): Cholesky, not LU
        G_res = scipy.linalg.cho_solve(scipy.linalg.cho_factor(np.eye(K) + gram / (C * K)),
                                       np.asarray(G))
        G_res = jnp.asarray(np.concatenate([G_res, np.zeros((pad, problem.n))]))
        U_pad = jnp.concatenate([U, jnp.zeros((pad, problem.n))])
        t_l, h_l = [], []
        v = vt = gbar = 0.0
        for i, (wb, ob) in enumerate(batches):
            blk = slice(i * BATCH, (i + 1) * BATCH)
            t, h, vb, vtb, gb = _accumulate_batch(P, Pt, wb, ob, U_pad[blk], G_res[blk], r, yt,
                                                  cr, cty, c, act)
            t_l.append(t)
            h_l.append(h)
            v, vt, gbar = v + vb, vt + vtb, gbar + gb
        sums = (np.asarray(jnp.concatenate(t_l))[:K], np.asarray(jnp.concatenate(h_l))[:K],
                v, vt, gbar)
        out.append(_summary(problem, C, fit, Kinv, Qbar, Qt, has_test, om_all, exact_center,
                            sums, _jackknife_resummed(gram, cross, C), t0))
    return out


def _summary(problem: CNN2Problem, C: float, fit: Any, Kinv: Array, Qbar: Array, Qt: Array,
             has_test: bool, om_all: np.ndarray, exact_center: bool, sums: tuple,
             jack_se: tuple[float, float] | None, t0: float) -> dict[str, Any]:
    """The result dict of `kernel_fluctuation_correction` from the per-draw t, h and the sums
    v, v_*, Σ ω g of one variant (jack_se: the resummed variant's jackknife SEs)."""
    y, sig2 = problem.y, problem.sigma2
    t_all, h_all, v, vt, gbar = sums
    bessel = 1.0
    if exact_center:  # δq's centre Q̄ enters v, v_* through Σ ω g; the sample mean's cancels
        v, vt = v - Qbar @ gbar, vt - Qt @ gbar
    else:
        bessel = 1.0 / (1.0 - float(np.sum(om_all**2)))
        v, vt = v * bessel, vt * bessel

    f_eos = gp.gp_train_mean(fit, y)
    f_train = f_eos - sig2 * (Kinv @ v) / C
    jt, jt_se = _weighted_se(t_all, om_all)
    jh, jh_se = _weighted_se(h_all, om_all)
    if jack_se is not None:
        jt_se, jh_se = jack_se
    yy = float(y @ y)
    out: dict[str, Any] = {
        "alpha_train_eos": float(gp.alpha(y, f_eos, sig2)),
        "jensen_train": bessel * jt / yy, "jensen_train_se": bessel * jt_se / yy,
        "f_train": np.asarray(f_train),
        "alpha_test_eos": None, "jensen_test": None, "jensen_test_se": None, "f_test": None,
        "n_draws": len(om_all), "kish_ess": float(1.0 / np.sum(om_all**2)),
    }
    out["dalpha_train"] = out["jensen_train"] / C
    out["alpha_train"] = out["alpha_train_eos"] + out["dalpha_train"]
    out["alpha_train_se"] = out["jensen_train_se"] / C
    out["alpha_test"] = out["alpha_test_se"] = out["dalpha_test"] = None
    if has_test:
        yt = problem.y_test
        f_eos_t = gp.gp_predict(fit, Qt)
        out["f_test"] = np.asarray(f_eos_t + (Qt @ (Kinv @ v) - vt) / C)
        norm = -1.0 / (sig2 * float(yt @ yt))
        out["alpha_test_eos"] = float(gp.alpha(yt, f_eos_t, sig2))
        out["jensen_test"] = bessel * jh * norm
        out["jensen_test_se"] = bessel * jh_se * abs(norm)
        out["dalpha_test"] = out["jensen_test"] / C
        out["alpha_test"] = out["alpha_test_eos"] + out["dalpha_test"]
        out["alpha_test_se"] = out["jensen_test_se"] / C
    out["seconds"] = time.perf_counter() - t0
    return out


def _jackknife_resummed(gram: np.ndarray, cross: np.ndarray, C: float,
                        groups: int = 8) -> tuple[float, float]:
    """Delete-a-group jackknife SEs of the resummed means of t (from Γ = U K̄⁻¹ Uᵀ) and h (from
    Λ = L K̄⁻¹ Uᵀ): with R = (I + Γ/(CK))⁻¹ on the kept draws, t̄ = Tr(R Γ)/K, h̄ = Tr(R Λᵀ)/K."""
    K = gram.shape[0]
    est = []
    for drop in np.array_split(np.arange(K), groups):
        keep = np.setdiff1d(np.arange(K), drop)
        k = len(keep)
        # (I + Γ/(Ck))⁻¹ from its Cholesky factor (LAPACK potrf + potri: half the work of LU)
        R, info = scipy.linalg.lapack.dpotri(
            scipy.linalg.cholesky(np.eye(k) + gram[np.ix_(keep, keep)] / (C * k), lower=True),
            lower=True)
        if info:
            raise np.linalg.LinAlgError(f"_jackknife_resummed: dpotri failed ({info})")
        R = np.tril(R) + np.tril(R, -1).T
        est.append((np.sum(R * gram[np.ix_(keep, keep)]) / k,
                    np.sum(R * cross[np.ix_(keep, keep)]) / k))
    est = np.asarray(est)
    se = np.sqrt((groups - 1) / groups * np.sum((est - est.mean(0)) ** 2, axis=0))
    return float(se[0]), float(se[1])


def matched_law_draws(problem: CNN2Problem, C: float, Sigma: Any, *, n_samples: int = 4096,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draws of the moment-matched channel law p_{A(Σ)} (`fleos.theory.eos.cnn2_matched`) as
    proposal draws w ~ N(0, Σ) with their self-normalized importance weights: the `draws` and
    `weights` arguments of `kernel_fluctuation_correction`."""
    from fleos.theory.eos.cnn2_matched import _args, _base_normals, _log_weights_jit

    z = _base_normals(problem, n_samples, seed)
    w, logw = _log_weights_jit(jnp.asarray(Sigma, dtype=jnp.float64), *_args(problem, C, z),
                               activation=problem.activation)
    logw = np.asarray(logw)
    om = np.exp(logw - logw.max())
    return np.asarray(w), om / om.sum()


def fluct_row(problem: CNN2Problem, C: float, Sigma: Any, *, n_draws: int = DEFAULT_DRAWS,
              seed: int = 0, resum: bool = False, prefix: str = "fluct") -> dict[str, Any]:
    """One Fig. 3 theory row's columns for Eq. 8's Σ at C plus the fluctuation correction
    (`resum`: the ε-resummed hypothesis; use another prefix for it, e.g. "fluct_resummed"):
    alpha_train_<prefix>, alpha_test_<prefix>, their Monte Carlo SEs (…_mc_se),
    <prefix>_draws and <prefix>_seconds. Σ is Eq. 8's solution at the same C."""
    res = kernel_fluctuation_correction(problem, C, Sigma, n_draws=n_draws, seed=seed,
                                        resum=resum)
    return {
        f"alpha_train_{prefix}": res["alpha_train"],
        f"alpha_train_{prefix}_mc_se": res["alpha_train_se"],
        f"alpha_test_{prefix}": res["alpha_test"],
        f"alpha_test_{prefix}_mc_se": res["alpha_test_se"],
        f"{prefix}_draws": res["n_draws"], f"{prefix}_seconds": res["seconds"],
    }


def fluct_rows(problem: CNN2Problem, C: float, Sigma: Any, *, n_draws: int = DEFAULT_DRAWS,
               seed: int = 0) -> dict[str, Any]:
    """`fluct_row` twice, i.i.d. ("fluct") and resummed ("fluct_resummed"), from the same draws
    and one pass of Φ over them (the same numbers as the two calls; what the workflow's theory
    rule writes). fluct_seconds is the i.i.d. part's time, fluct_resummed_seconds the whole."""
    t0 = time.perf_counter()
    Sigma, w_all, om_all = _draws_and_weights(problem, C, Sigma, n_draws, seed, None, None, True)
    out: dict[str, Any] = {}
    for prefix, res in zip(("fluct", "fluct_resummed"),
                           _corrections(problem, C, Sigma, w_all, om_all, True, (False, True),
                                        t0), strict=True):
        out.update({
            f"alpha_train_{prefix}": res["alpha_train"],
            f"alpha_train_{prefix}_mc_se": res["alpha_train_se"],
            f"alpha_test_{prefix}": res["alpha_test"],
            f"alpha_test_{prefix}_mc_se": res["alpha_test_se"],
            f"{prefix}_draws": res["n_draws"], f"{prefix}_seconds": res["seconds"],
        })
    return out


def jensen_spectrum(problem: CNN2Problem, C: float, Sigma: Any, *, n_draws: int = DEFAULT_DRAWS,
                    seed: int = 0) -> np.ndarray:
    """Eigenvalues λ (descending) of Λ = Cov(K̄^{-1/2} δQ ε̄) under i.i.d. channels w ~ N(0, Σ)
    (Eq. 8's law), from the K × K Gram matrix u_kᵀ K̄⁻¹ u_l / (C K): Σ λ / (y·y) is the train-α
    Jensen shift of `kernel_fluctuation_correction` (same seed, same draws), and ½ Σ λ is the
    mean of the second-order data action ½ ε̄ᵀ δQ K̄⁻¹ δQ ε̄ that i.i.d. channels ignore
    (docs/derivations/cnn2.md, "Kernel fluctuations at O(1/C)": when it is not ≪ 1 the
    posterior's own kernel fluctuations differ from the i.i.d. ones). O(n K² + n² K)."""
    Sigma = jnp.asarray(Sigma, dtype=jnp.float64)
    z = np.random.default_rng(seed).standard_normal((n_draws, problem.S))
    w = jnp.asarray(z @ np.linalg.cholesky(np.asarray(Sigma)).T)
    Qbar = output_kernel(problem.P, problem.P, Sigma, problem.sigma_a2, problem.activation)
    fit = gp.gp_fit(Qbar, problem.y, problem.sigma2)
    a = gp.discrepancy(fit)
    Kinv = jax.scipy.linalg.cho_solve((fit.chol, True), jnp.eye(problem.n, dtype=jnp.float64))
    c, qa = problem.sigma_a2 / problem.N, Qbar @ a
    U = jnp.concatenate([
        _u_batch(problem.P, w[i:i + BATCH], a, qa, c, problem.activation)
        for i in range(0, n_draws, BATCH)])
    gram = np.asarray(U @ (Kinv @ U.T)) / (C * n_draws)
    return np.sort(np.linalg.eigvalsh(0.5 * (gram + gram.T)))[::-1]

