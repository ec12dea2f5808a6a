"""Equations of state of the L-layer FCN (Eq. 5 of the paper, Eq. 13 for middle layers).

Unknowns (the "slow variables"): Σ (d × d), the covariance of the input-layer weights, and the
hidden pre-kernels K^(2), …, K^(L-1) (n × n) on the training set. With K^(1) = X Σ Xᵀ,
Q^(l) = σ_w² G(K^(l-1)) and Q_f = σ_L² G(K^(L-1)), the EoS are the stationarity conditions of

    F(Σ, K) = N_1 D_KL(N(0,Σ) ‖ N(0, σ_1²/d I)) + Σ_{l=2}^{L-1} N_l D_KL(K^(l) ‖ Q^(l))
              + ½ yᵀ K_f⁻¹ y + ½ log det K_f,           K_f = Q_f + σ² I

(derivation and the sign/factor check of the KL derivative: docs/derivations/fcn.md). Written
as the fixed-point map of Eq. 5:

    Σ      ← [ (d/σ_1²) I + (2 N_2/N_1) ∂D_KL(K^(2)‖Q^(2))/∂Σ ]⁻¹            (Eq. 5, line 4)
    K^(l)  ← [ Q^(l)⁻¹ + (2 N_{l+1}/N_l) ∂D_KL(K^(l+1)‖Q^(l+1))/∂K^(l) ]⁻¹   (Eq. 5 l. 3, Eq. 13)
    K^(L-1)← [ Q^(L-1)⁻¹ − (1/N_{L-1}) Tr{A^(L) ∂Q_f/∂K^(L-1)} ]⁻¹          (Eq. 5, line 2)
    A^(L)  = ε εᵀ − K_f⁻¹,  ε = (y − f̄)/σ² = K_f⁻¹ y                          (Eq. 5, line 5)

with ∂D_KL(K‖Q)/∂K_prev = −½ Tr[Q⁻¹ (K − Q) Q⁻¹ ∂Q/∂K_prev]. Every trace term is a vector-Jacobian
product of the elementwise kernel map (Tr{B ∂Q/∂K} = ∇_K ⟨B, Q(K)⟩), never an n²×n² Jacobian.

Solving (`solve_fcn`): Newton-Krylov on the precision form P(u⁻¹) − u, u = (Σ⁻¹, K⁻¹), with
the free energy F as line-search merit and a positive-definite step curve; its residual is
finite at the GP point at every width, and it converges from there at the paper's sizes
(docs/derivations/fcn.md §5; at extreme widths anneal with `sweep_fcn`).

Scalings: "standard": σ_L² = σ_a²; "mean_field": readout prior σ_a²/N_{L-1}², i.e.
σ_L² = σ_a²/N_{L-1} in Q_f (the paper's FCN experiments). All hidden widths are equal to
`width` unless a tuple of widths is passed.

Precision: float64 throughout (fleos enables x64): Q^(l)⁻¹ and K_f⁻¹ of kernels whose spectra
span many decades enter differences (Q⁻¹ − correction) that lose several digits in float32.
Nearly singular post-kernels are regularized by `ridge`·I (the paper: "a small positive
regularizer to be taken to zero"); the default 0 is fine for erf at n ≲ 2000 (Q^(2) of
Gaussian data is well conditioned); the linear activation with n > d needs a ridge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from fleos.core import gp as gpmod
from fleos.core.kernels import activation_kernel, post_kernel, post_kernel_cross
from fleos.core.linalg import spd_inverse, sym
from fleos.nets.models import DEFAULT_SCALING, SCALINGS
from fleos.theory.solvers import SolveResult, anderson, anneal, newton_krylov

Array = jnp.ndarray

SOLVERS = ("newton_krylov", "anderson")


# ---------------------------------------------------------------------------------------------
# Problem definition
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FCNProblem:
    """An FCN EoS problem: data, prior variances, depth, scaling, activation, ridge.

    X (n, d), y (n,): training set; X_test, y_test: optional test set (for α_test).
    sigma_w2: σ_l² of every hidden layer (input weights ~ N(0, σ_w²/d)).
    sigma_a2: readout variance σ_a² (standard: a ~ N(0, σ_a²/N); mean-field: N(0, σ_a²/N²)).
    sigma2: likelihood noise σ². depth: L ≥ 2. activation: 'erf' or 'linear' (odd
    activations only: Eq. 5 assumes centred pre-activations; ReLU needs the means too).
    ridge: added to every hidden post-kernel Q^(l) before it is inverted.
    """

    X: Any
    y: Any
    X_test: Any = None
    y_test: Any = None
    sigma_w2: float = 2.0
    sigma_a2: float = 2.0
    sigma2: float = 0.01
    depth: int = 3
    scaling: str = DEFAULT_SCALING
    activation: str = "erf"
    ridge: float = 0.0

    def __post_init__(self) -> None:
        X = jnp.asarray(self.X, dtype=jnp.float64)
        y = jnp.asarray(self.y, dtype=jnp.float64)
        if X.ndim != 2:
            raise ValueError(f"FCNProblem: X must be (n, d), got shape {X.shape}")
        if y.shape != (X.shape[0],):
            raise ValueError(f"FCNProblem: y must have shape ({X.shape[0]},), got {y.shape}")
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        if (self.X_test is None) != (self.y_test is None):
            raise ValueError("FCNProblem: give both X_test and y_test or neither")
        if self.X_test is not None:
            Xt = jnp.asarray(self.X_test, dtype=jnp.float64)
            yt = jnp.asarray(self.y_test, dtype=jnp.float64)
            if Xt.ndim != 2 or Xt.shape[1] != X.shape[1] or yt.shape != (Xt.shape[0],):
                raise ValueError(
                    f"FCNProblem: X_test {Xt.shape} / y_test {yt.shape} do not match X {X.shape}"
                )
            object.__setattr__(self, "X_test", Xt)
            object.__setattr__(self, "y_test", yt)
        for key in ("sigma_w2", "sigma_a2", "sigma2"):
            if not (float(getattr(self, key)) > 0):
                raise ValueError(f"FCNProblem: {key} must be > 0, got {getattr(self, key)!r}")
        if not (float(self.ridge) >= 0):
            raise ValueError(f"FCNProblem: ridge must be >= 0, got {self.ridge!r}")
        if not isinstance(self.depth, (int, np.integer)) or self.depth < 2:
            raise ValueError(f"FCNProblem: depth must be an integer >= 2, got {self.depth!r}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"FCNProblem: scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if self.activation not in ("erf", "linear"):
            raise ValueError(
                f"FCNProblem: activation must be 'erf' or 'linear' (odd activations; Eq. 5), "
                f"got {self.activation!r}"
            )
        activation_kernel(self.activation)

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        return int(self.X.shape[1])

    def widths(self, width: float | Sequence[float]) -> tuple[float, ...]:
        """(N_1, …, N_{L-1}) from one width (all equal) or a sequence of L−1 widths."""
        if isinstance(width, Sequence):
            ws = tuple(float(w) for w in width)
            if len(ws) != self.depth - 1:
                raise ValueError(f"width: need {self.depth - 1} widths for depth {self.depth}")
        else:
            ws = (float(width),) * (self.depth - 1)
        if not all(w > 0 for w in ws):
            raise ValueError(f"width: widths must be > 0, got {ws}")
        return ws

    def readout_var(self, width: float | Sequence[float]) -> float:
        """σ_L² in Q_f = σ_L² G(K^(L-1)): σ_a² (standard) or σ_a²/N_{L-1} (mean-field)."""
        if self.scaling == "standard":
            return float(self.sigma_a2)
        return float(self.sigma_a2) / self.widths(width)[-1]


# ---------------------------------------------------------------------------------------------
# Building blocks (pure functions of arrays)
# ---------------------------------------------------------------------------------------------


def kl_gauss(K: Array, Q: Array) -> Array:
    """D_KL(N(0,K) ‖ N(0,Q)) = ½[Tr(Q⁻¹K) − n + log det Q − log det K] (Eq. 5, 13)."""
    n = K.shape[-1]
    Lq = jnp.linalg.cholesky(Q)
    Lk = jnp.linalg.cholesky(K)
    tr = jnp.trace(jsl.cho_solve((Lq, True), K))
    logdet_q = 2.0 * jnp.sum(jnp.log(jnp.diagonal(Lq)))
    logdet_k = 2.0 * jnp.sum(jnp.log(jnp.diagonal(Lk)))
    return 0.5 * (tr - n + logdet_q - logdet_k)


def gp_neg_log_evidence(Qf: Array, y: Array, sigma2: float, log_det_sign: Any = 1.0) -> Array:
    """½ yᵀ K_f⁻¹ y + ½ log det K_f (up to a constant): the output-layer term of F.

    Its derivative w.r.t. Q_f is −½ A^(L) with A^(L) = εεᵀ − K_f⁻¹ (Eq. 5, line 5).
    `log_det_sign` −1 flips the log-det term: the merit whose gradient has the diagnostic
    field A = εεᵀ + K_f⁻¹ (`_params`' field_sign +1).
    """
    fit = gpmod.gp_fit(Qf, y, sigma2)
    return 0.5 * jnp.dot(y, fit.weights) + log_det_sign * jnp.sum(jnp.log(jnp.diagonal(fit.chol)))


def trace_term(B: Array, K: Array, scale: float, activation: str) -> Array:
    """Tr{B ∂Q/∂K_μν} for Q = scale · G(K): the VJP ∇_K ⟨B, scale G(K)⟩ (no n²×n² Jacobian).

    Entries K_μν are treated as independent (the convention of Eq. 6); for symmetric B and K
    the result is symmetric.
    """
    _, vjp = jax.vjp(lambda k: scale * post_kernel(k, activation), K)
    return vjp(B)[0]


def kl_grad_wrt_q(K: Array, Q_inv: Array) -> Array:
    """∂D_KL(K‖Q)/∂Q = ½ Q⁻¹ (Q − K) Q⁻¹ = −½ Q⁻¹ (K − Q) Q⁻¹ (checked in the tests)."""
    return 0.5 * (Q_inv - Q_inv @ K @ Q_inv)


def gp_x(problem: FCNProblem) -> dict[str, Any]:
    """The GP-limit solution (N → ∞): Σ = σ_w²/d I, K^(l) = Q^(l) (NNGP recursion)."""
    d = problem.d
    Sigma = (problem.sigma_w2 / d) * jnp.eye(d, dtype=jnp.float64)
    K = problem.X @ Sigma @ problem.X.T
    Ks = []
    for _ in range(problem.depth - 2):
        K = problem.sigma_w2 * post_kernel(K, problem.activation)
        Ks.append(K)
    return {"Sigma": Sigma, "K": Ks}


def _data(problem: FCNProblem) -> dict[str, Array]:
    return {"X": problem.X, "y": problem.y}


def _params(problem: FCNProblem, width: float | Sequence[float],
            field_sign: float = -1.0) -> dict[str, Array]:
    """Scalars of the EoS as traced arrays, so that one compiled solver serves every width.

    field_sign: the sign s of the output field A^(L) = εεᵀ + s K_f⁻¹. Eq. 5 is s = −1 (derived
    from the action the sampler samples, docs/derivations/fcn.md §8);
    s = +1 is the sign of the authors' FCN notebook, kept as a diagnostic to score both."""
    if field_sign not in (-1.0, 1.0):
        raise ValueError(f"field_sign must be -1 or +1, got {field_sign!r}")
    f64 = jnp.float64
    return {
        "field_sign": jnp.asarray(field_sign, dtype=f64),
        "Ns": jnp.asarray(problem.widths(width), dtype=f64),
        "sL2": jnp.asarray(problem.readout_var(width), dtype=f64),
        "sigma_w2": jnp.asarray(problem.sigma_w2, dtype=f64),
        "sigma2": jnp.asarray(problem.sigma2, dtype=f64),
        "ridge": jnp.asarray(problem.ridge, dtype=f64),
    }


def _post_kernels_core(
    x: dict[str, Any], X: Array, p: dict[str, Array], activation: str
) -> tuple[list, Array]:
    """[Q^(2), …, Q^(L-1)] (ridge included) and Q_f from Σ and the pre-kernels (Eq. 5)."""
    prev = X @ x["Sigma"] @ X.T  # K^(1)
    eye = jnp.eye(X.shape[0], dtype=jnp.float64)
    Qs = []
    for K in x["K"]:
        Qs.append(p["sigma_w2"] * post_kernel(prev, activation) + p["ridge"] * eye)
        prev = K
    Qf = p["sL2"] * post_kernel(prev, activation)
    return Qs, Qf


def _post_kernels(problem: FCNProblem, x: dict[str, Any], sL2: float) -> tuple[list, Array]:
    p = {"sigma_w2": problem.sigma_w2, "ridge": problem.ridge, "sL2": sL2}
    return _post_kernels_core(x, problem.X, p, problem.activation)


def _precisions_core(
    x: dict[str, Any], data: dict[str, Array], p: dict[str, Array], activation: str
) -> dict[str, Any]:
    """Right-hand sides of Eq. 5 in inverse form: P_Σ (= Σ⁻¹ at a solution) and P_K^(l).

    P_Σ = (d/σ_1²) I + (2/N_1) ∂(downstream)/∂Σ, P_K^(l) = Q^(l)⁻¹ + (2/N_l) ∂(downstream)/∂K^(l),
    where "downstream" of a layer is N_{l+1} D_KL(K^(l+1)‖Q^(l+1)) or, for l = L−1, the output
    term ½yᵀK_f⁻¹y + ½ log det K_f, whose Q_f-derivative is −½ A^(L) (Eq. 5, line 5).
    """
    X, y = data["X"], data["y"]
    n, d = X.shape
    Ns = p["Ns"]
    Sigma, Ks = x["Sigma"], list(x["K"])
    n_hidden = len(Ks)
    Qs, Qf = _post_kernels_core(x, X, p, activation)
    # Output layer: A^(L) = εεᵀ − K_f⁻¹, ε = K_f⁻¹ y = (y − f̄)/σ² (field_sign −1; `_params`).
    Kf_inv = spd_inverse(Qf + p["sigma2"] * jnp.eye(n, dtype=jnp.float64))
    eps = Kf_inv @ y
    A = jnp.outer(eps, eps) + p["field_sign"] * Kf_inv
    # Downstream gradient w.r.t. K^(L-1) (or K^(1) when L = 2): −½ Tr{A ∂Q_f/∂K}.
    K_last = Ks[-1] if n_hidden else X @ Sigma @ X.T
    g = -0.5 * trace_term(A, K_last, p["sL2"], activation)
    P_K: list[Array] = [jnp.zeros(())] * n_hidden
    for m in range(n_hidden - 1, -1, -1):
        # Layer l = m + 2: pre-kernel K^(l) = Ks[m], post-kernel Q^(l) = Qs[m], width N_l.
        Q_inv = spd_inverse(Qs[m])
        N_l = Ns[m + 1]
        P_K[m] = sym(Q_inv + (2.0 / N_l) * g)
        # Gradient of N_l D_KL(K^(l) ‖ Q^(l)(K^(l-1))) w.r.t. K^(l-1), K^(l) held fixed.
        K_prev = Ks[m - 1] if m > 0 else X @ Sigma @ X.T
        g = N_l * trace_term(kl_grad_wrt_q(Ks[m], Q_inv), K_prev, p["sigma_w2"], activation)
    # g is now ∂(downstream)/∂K^(1); chain rule through K^(1) = X Σ Xᵀ.
    g_Sigma = X.T @ g @ X
    P_S = (d / p["sigma_w2"]) * jnp.eye(d, dtype=jnp.float64) + (2.0 / Ns[0]) * g_Sigma
    return {"Sigma": sym(P_S), "K": P_K}


def _fixed_point_core(
    x: dict[str, Any], data: dict[str, Array], p: dict[str, Array], activation: str
) -> dict[str, Any]:
    """T(x) of Eq. 5 (see module docstring): the inverses of the right-hand sides.

    NaN where a right-hand side is not positive definite (far from the solution, e.g. the GP
    point at a small mean-field width).
    """
    return _invert_blocks(_precisions_core(x, data, p, activation))


def fixed_point_map(problem: FCNProblem, width: float | Sequence[float]) -> Any:
    """T(x) of Eq. 5: x = dict(Sigma=(d,d), K=[K^(2), …, K^(L-1)]) ↦ the right-hand sides.

    The EoS hold where T(x) = x. Pure and jit-compatible (not jitted here).
    """
    data, p, act = _data(problem), _params(problem, width), problem.activation
    return lambda x: _fixed_point_core(x, data, p, act)


_fixed_point_jit = jax.jit(_fixed_point_core, static_argnames=("activation",))


def _free_energy_core(
    x: dict[str, Any], data: dict[str, Array], p: dict[str, Array], activation: str
) -> Array:
    """F(Σ, K) of the module docstring (traced width scalars, so one compile per sweep)."""
    X, y = data["X"], data["y"]
    d = X.shape[1]
    Qs, Qf = _post_kernels_core(x, X, p, activation)
    prior = (p["sigma_w2"] / d) * jnp.eye(d, dtype=jnp.float64)
    F = p["Ns"][0] * kl_gauss(x["Sigma"], prior)
    for m, K in enumerate(x["K"]):
        F = F + p["Ns"][m + 1] * kl_gauss(K, Qs[m])
    return F + gp_neg_log_evidence(Qf, y, p["sigma2"], -p["field_sign"])


def free_energy(problem: FCNProblem, x: dict[str, Any], width: float | Sequence[float]) -> Array:
    """F(Σ, K) whose stationary points are the EoS (docs/derivations/fcn.md)."""
    return _free_energy_core(x, _data(problem), _params(problem, width), problem.activation)


def residual_blocks(problem: FCNProblem, x: dict[str, Any], width: Any,
                    field_sign: float = -1.0) -> dict[str, float]:
    """Relative Frobenius residual ‖T(x)_b − x_b‖/‖x_b‖ of each block b (Sigma, K2, …).

    T(x) − x is the EoS in their paper form (Eq. 5), independent of the solver's residual.
    field_sign: see `_params` (−1: Eq. 5).
    """
    Tx = _fixed_point_jit(x, _data(problem), _params(problem, width, field_sign),
                          problem.activation)
    out = {"Sigma": float(jnp.linalg.norm(Tx["Sigma"] - x["Sigma"]) / jnp.linalg.norm(x["Sigma"]))}
    for m, (a, b) in enumerate(zip(Tx["K"], x["K"], strict=True)):
        out[f"K{m + 2}"] = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
    return out


def paper_form_residual(problem: FCNProblem, x: dict[str, Any], width: Any,
                        field_sign: float = -1.0) -> float:
    """The largest block of `residual_blocks` (Eq. 5 as printed), NaN if any block is NaN.

    Python's ``max`` would drop a NaN block depending on where it sits; a residual must never
    hide a block that failed to evaluate. field_sign: see `_params` (−1: Eq. 5)."""
    return _nan_max(residual_blocks(problem, x, width, field_sign).values())


def _nan_max(values: Any) -> float:
    """max of finite-or-NaN numbers that propagates NaN (NaN if empty)."""
    r = np.asarray(list(values), np.float64)
    return float(np.max(r)) if r.size else math.nan


# Unknowns and their companions (scales, steps) are pytrees {"Sigma": M, "K": [M, ...]} of one
# structure; blockwise operations are tree maps over them.
_blockwise = jax.tree_util.tree_map


def _scales(x_ref: dict[str, Any]) -> dict[str, Any]:
    return _blockwise(jnp.linalg.norm, x_ref)


def _invert_blocks(x: dict[str, Any]) -> dict[str, Any]:
    """(Σ, K^(l)) ↦ (Σ⁻¹, K^(l)⁻¹), and back: the map is its own inverse."""
    return _blockwise(lambda M: sym(spd_inverse(M)), x)


def _precision_residual_core(
    u: dict[str, Any], data: dict[str, Array], p: dict[str, Array], sc: dict[str, Any],
    activation: str,
) -> dict[str, Any]:
    """Eq. 5 in precision form: P(x) − u at x = u⁻¹, u = (Σ⁻¹, K^(l)⁻¹), blockwise relative.

    P are the right-hand sides of Eq. 5 before inversion (`_precisions_core`); each block is
    divided by the norm of its GP value. Why precisions: the feature-learning term enters the
    right-hand side linearly, P_K = Q⁻¹ − (1/N)(…); the inverted form K = P_K⁻¹ has a pole
    where that term cancels an eigenvalue of Q⁻¹ (χ = 1, Eq. 6) and is undefined at the GP
    point below the feature-learning width, whereas P(u⁻¹) − u is finite wherever u is
    positive definite. The EoS are also the gradient of F: ∂F/∂K = (N/2)(P_K − K⁻¹).
    """
    P = _precisions_core(_invert_blocks(u), data, p, activation)
    return _blockwise(lambda a, b, s: (a - b) / s, P, u, sc)


def _free_energy_of_precisions(
    u: dict[str, Any], data: dict[str, Array], p: dict[str, Array], sc: dict[str, Any],
    activation: str,
) -> Array:
    """F at x = u⁻¹: the line-search merit of the Newton solver (its stationary points are
    the roots of `_precision_residual_core`)."""
    return _free_energy_core(_invert_blocks(u), data, p, activation)


def _retract_spd(u: dict[str, Any], du: dict[str, Any], t: Array, *_: Any) -> dict[str, Any]:
    """The step curve u(t) = u + t du + ½ t² du u⁻¹ du, blockwise.

    Tangent to the straight line at t = 0 (Newton's local convergence is kept) and positive
    definite for every t, since u(t) = ½ u + ½ (u + t du) u⁻¹ (u + t du): a precision can at
    most halve per step along a direction, so a covariance at most doubles, instead of a
    straight step crossing into indefinite matrices along the soft (feature-learning) mode.
    """
    def curve(a: Array, b: Array) -> Array:
        tb = t * b
        return sym(a + tb + 0.5 * tb @ spd_inverse(a) @ tb)

    return _blockwise(curve, u, du)


def _unscale(u: dict[str, Any], sc: dict[str, Any]) -> dict[str, Any]:
    return _blockwise(jnp.multiply, u, sc)


def _rescale(x: dict[str, Any], sc: dict[str, Any]) -> dict[str, Any]:
    return _blockwise(jnp.divide, x, sc)


def _scaled_map_core(
    u: dict[str, Any], data: dict[str, Array], p: dict[str, Array], sc: dict[str, Any],
    activation: str,
) -> dict[str, Any]:
    """T of Eq. 5 in scaled variables u = x / (GP block norms), for Anderson."""
    return _rescale(_fixed_point_core(_unscale(u, sc), data, p, activation), sc)


# One object per activation: fleos.theory.solvers compiles once per function object and passes data,
# width-dependent scalars and scales as traced `args`, so a whole sweep (any widths) reuses one
# compiled program.
_ACTIVATIONS = ("erf", "linear")
_RESIDUALS = {a: partial(_precision_residual_core, activation=a) for a in _ACTIVATIONS}
_MERITS = {a: partial(_free_energy_of_precisions, activation=a) for a in _ACTIVATIONS}
_MAPS = {a: partial(_scaled_map_core, activation=a) for a in _ACTIVATIONS}

# Newton-Krylov settings (fleos.theory.solvers.newton_krylov): early-terminating GMRES (one exact
# JVP per Krylov vector, stopping at the Eisenstat-Walker forcing term, capped at 0.5: far from
# the root an accurate direction is wasted), the free energy as line-search merit, and the
# positive-definite step curve. The residual norm may rise while F falls, hence the longer
# stall window.
NK_OPTIONS: dict[str, Any] = {
    "linear_solver": "arnoldi", "gmres_restart": 40, "gmres_maxiter": 2, "eta_max": 0.5,
    "stall_window": 15,
}


def solve_fcn(
    problem: FCNProblem,
    width: float | Sequence[float],
    x0: dict[str, Any] | None = None,
    tol: float = 1e-8,
    max_iter: int = 50,
    method: str = "newton_krylov",
    field_sign: float = -1.0,
) -> SolveResult:
    """Solve Eq. 5 at one width, starting from x0 (default: the GP solution).

    method 'newton_krylov' (default): Newton on the precision form of Eq. 5,
    R(u) = P(u⁻¹) − u with u = (Σ⁻¹, K^(l)⁻¹), each block relative to its GP norm, so `tol`
    bounds a relative Euclidean norm. Exact JVPs + GMRES (the paper's method), a line search
    on the free energy F (whose gradient the EoS are) and a step curve that keeps every
    covariance positive definite. The residual is finite at the GP point at every width and
    the paper-size problems converge from there without annealing (docs/derivations/fcn.md
    §5); at extreme widths it can stall: `sweep_fcn` anneals. `tol` bounds the precision-form
    residual; `residual_blocks` gives Eq. 5 as printed (T(x) − x), up to ~40× larger.
    method 'anderson': fleos.theory.solvers.anderson on x ← T(x) (Eq. 5 inverted, scaled by the GP
    norms); converges at large widths, stalls at small mean-field widths.
    The returned SolveResult's `x` is (Σ, K) and its `residual` the solver's residual
    evaluated at that point; `residual_blocks` gives the paper form T(x) − x.
    field_sign: the sign of K_f⁻¹ in the output field, −1 for Eq. 5 (+1: diagnostic, `_params`).
    """
    if method not in SOLVERS:
        raise ValueError(f"solve_fcn: method must be one of {SOLVERS}, got {method!r}")
    x_gp = gp_x(problem)
    if x0 is None:
        x0 = x_gp
    x0 = {"Sigma": jnp.asarray(x0["Sigma"], dtype=jnp.float64),
          "K": [jnp.asarray(K, dtype=jnp.float64) for K in x0["K"]]}
    if len(x0["K"]) != problem.depth - 2:
        raise ValueError(f"solve_fcn: x0['K'] must hold {problem.depth - 2} pre-kernels")
    data, p = _data(problem), _params(problem, width, field_sign)
    act = problem.activation
    if method == "newton_krylov":
        u0 = _invert_blocks(x0)
        sc = _scales(_invert_blocks(x_gp))
        res = newton_krylov(_RESIDUALS[act], u0, args=(data, p, sc), tol=tol,
                            max_iter=max_iter, merit=_MERITS[act], retract=_retract_spd,
                            **NK_OPTIONS)
        if res.iterations == 0 and not math.isfinite(res.residual):
            res = replace(res, message=(
                "residual not finite at x0: x0 must hold positive-definite Σ and K"))
        return replace(res, x=_invert_blocks(res.x))
    sc = _scales(x_gp)
    res = anderson(_MAPS[act], _rescale(x0, sc), args=(data, p, sc), tol=tol,
                   max_iter=max_iter)
    return replace(res, x=_unscale(res.x, sc))


def sweep_fcn(
    problem: FCNProblem,
    widths: Sequence[float],
    tol: float = 1e-8,
    max_iter: int = 50,
    method: str = "newton_krylov",
    min_ratio: float = 1.05,
    progress: Callable[[float, SolveResult], None] | None = None,
    field_sign: float = -1.0,
) -> list[SolveResult]:
    """Solve Eq. 5 at each width, from large to small (the paper's annealing, Methods).

    Uses fleos.theory.solvers.anneal: each width is warm-started at the previous solution, and
    intermediate widths are inserted where a solve stalls (rare with the default Newton
    solver, which also converges from the GP point). `progress(width, result)` is called after
    every solve (`fleos.theory.solvers.progress_printer`). field_sign: see `solve_fcn`.
    """
    def solve_at(w: float, x_start: Any) -> SolveResult:
        return solve_fcn(problem, w, x_start, tol=tol, max_iter=max_iter, method=method,
                         field_sign=field_sign)

    return anneal(solve_at, list(widths), gp_x(problem), min_ratio=min_ratio,
                  progress=progress)


# ---------------------------------------------------------------------------------------------
# Test points and observables
# ---------------------------------------------------------------------------------------------


def output_kernels(
    problem: FCNProblem, x: dict[str, Any], width: float | Sequence[float]
) -> tuple[Array, Array | None]:
    """Q_f on train × train and (if a test set is given) test × train.

    Test points enter as training points with infinite noise (paper, "extending the EoS to
    test points"): they get no downstream pull, so each hidden pre-activation on a test point
    is the prior conditional given the training ones:
        K_{*t} = Q_{*t} Q⁻¹ K,   k_{**} = q_{**} + diag(Q_{*t} Q⁻¹ (K − Q) Q⁻¹ Q_{t*})
    (derivation in docs/derivations/fcn.md). In the GP limit (K = Q) this is the NNGP kernel.
    """
    p = _params(problem, width)
    if problem.X_test is None:
        return _post_kernels_core(x, problem.X, p, problem.activation)[1], None
    return _output_kernels_jit(x, problem.X, problem.X_test, p, problem.activation)


@partial(jax.jit, static_argnames=("act",))
def _output_kernels_jit(x, X, Xt, p, act):  # noqa: ANN001, ANN202
    g = activation_kernel(act)
    S = x["Sigma"]
    K_tt = X @ S @ X.T
    Qs, Qf = _post_kernels_core(x, X, p, act)
    K_st = Xt @ S @ X.T
    k_ss = jnp.einsum("ad,de,ae->a", Xt, S, Xt)
    for m, K in enumerate(x["K"]):
        Q_tt = Qs[m]  # ridge included
        Q_st = p["sigma_w2"] * post_kernel_cross(K_st, k_ss, jnp.diagonal(K_tt), act)
        q_ss = p["sigma_w2"] * g(k_ss, k_ss, k_ss)
        Lq = jnp.linalg.cholesky(Q_tt)
        W = jsl.cho_solve((Lq, True), Q_st.T).T  # Q_{*t} Q⁻¹
        K_st = W @ K
        k_ss = q_ss + jnp.einsum("at,tu,au->a", W, K - Q_tt, W)
        K_tt = K
    Qf_st = p["sL2"] * post_kernel_cross(K_st, k_ss, jnp.diagonal(K_tt), act)
    return Qf, Qf_st


def _basic_observables(problem: FCNProblem, x: dict[str, Any], width: Any) -> dict[str, Any]:
    Qf, Qf_st = output_kernels(problem, x, width)
    fit = gpmod.gp_fit(Qf, problem.y, problem.sigma2)
    f_tr = gpmod.gp_train_mean(fit, problem.y)
    out: dict[str, Any] = {
        "train_mse": float(gpmod.normalized_mse(problem.y, f_tr, problem.sigma2)),
        "alpha_train": float(gpmod.alpha(problem.y, f_tr, problem.sigma2)),
        "alpha_test": None,
        "sigma_eigs": [float(v) for v in jnp.linalg.eigvalsh(sym(x["Sigma"]))[::-1]],
    }
    if Qf_st is not None:
        f_te = gpmod.gp_predict(fit, Qf_st)
        out["alpha_test"] = float(gpmod.alpha(problem.y_test, f_te, problem.sigma2))
    return out


def fcn_observables(
    problem: FCNProblem, x: dict[str, Any], width: float | Sequence[float]
) -> dict[str, Any]:
    """Fig. 2b observables at solution x, their GP values and ratios to GP.

    train_mse: Σ(f̄ − y)²/(σ² Σ y²) (paper, 3-layer FCN section); alpha_train / alpha_test:
    α = (y − f̄)·y/(σ² y·y); sigma_eigs: eigenvalues of Σ, descending. `*_gp`: the same at
    the GP solution (Σ = σ_w²/d I, K = Q) *of the same width*: in mean-field scaling the
    readout variance σ_a²/N makes the GP itself width-dependent. `*_over_gp`: ratios, with
    sigma_top_over_gp the top eigenvalue of Σ over σ_w²/d.
    Deviation from the architecture table: `width` is required (it sets σ_L² in MF scaling).
    """
    obs = _basic_observables(problem, x, width)
    ref = _basic_observables(problem, gp_x(problem), width)
    for key in ("train_mse", "alpha_train", "alpha_test", "sigma_eigs"):
        obs[f"{key}_gp"] = ref[key]
    for key in ("train_mse", "alpha_train", "alpha_test"):
        obs[f"{key}_over_gp"] = (
            None if obs[key] is None else obs[key] / ref[key]
        )
    obs["sigma_top_over_gp"] = obs["sigma_eigs"][0] / ref["sigma_eigs"][0]
    return obs


def result_summary(
    problem: FCNProblem, width: float, res: SolveResult
) -> dict[str, Any]:
    """One JSON-ready record of a solve: status and observables (used by `fleos eos fcn`)."""
    rec: dict[str, Any] = {
        "width": width,
        "converged": bool(res.converged),
        "iterations": int(res.iterations),
        "residual": float(res.residual) if np.isfinite(res.residual) else None,
        "seconds": float(res.seconds),
        "message": res.message,
    }
    finite = bool(jnp.all(jnp.isfinite(res.x["Sigma"]))) and all(
        bool(jnp.all(jnp.isfinite(K))) for K in res.x["K"]
    )
    if finite:
        # The solver's residual is the precision form's; this is Eq. 5 as printed (T(x) − x),
        # the largest relative block. A NaN block means the returned point is not a solution.
        paper = paper_form_residual(problem, res.x, width)
        rec["residual_paper_form"] = paper if np.isfinite(paper) else None
        if not np.isfinite(paper):
            rec["converged"] = False
            rec["message"] = f"{res.message}; Eq. 5 residual is NaN in a block"
        rec.update(fcn_observables(problem, res.x, width))
    return rec


def with_ridge(problem: FCNProblem, ridge: float) -> FCNProblem:
    """A copy of `problem` with another ridge (to extrapolate ridge → 0)."""
    return replace(problem, ridge=ridge)


__all__ = [
    "FCNProblem",
    "SCALINGS",
    "fixed_point_map",
    "paper_form_residual",
    "free_energy",
    "fcn_observables",
    "gp_x",
    "kl_gauss",
    "output_kernels",
    "residual_blocks",
    "solve_fcn",
    "sweep_fcn",
    "trace_term",
]
