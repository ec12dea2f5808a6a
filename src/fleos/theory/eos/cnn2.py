"""Equations of state of the 2-layer CNN (Eq. 8 of Seroussi, Naveh & Ringel 2023).

    f̄ = Q_f (Q_f + σ² I)⁻¹ y,
    [Q_f]_μν = (σ_a²/N) Σ_i G(X Σ Xᵀ)_{μi,νi},
    Σ⁻¹ = (S/σ_w²) I − (1/C) Tr{(ε εᵀ − K_f⁻¹) ∂Q_f/∂Σ},   ε = (y − f̄)/σ² = K_f⁻¹ y,

with K_f = Q_f + σ² I. Eq. 8 is the stationarity condition of the variational free energy

    F(Σ) = C [ (S/2σ_w²) Tr Σ − ½ log det Σ ] + ½ yᵀ K_f(Σ)⁻¹ y + ½ log det K_f(Σ)

(derivation and sign conventions: docs/derivations/cnn2.md). Σ is treated as a matrix of
independent entries, so ∂/∂Σ_ss' is the plain (unsymmetrized) matrix gradient.

Numerics. The unknown is the precision Λ = Σ⁻¹ (S × S, symmetric); Eq. 8 is the fixed point
Λ = T(Λ) := (S/σ_w²) I − B(Λ⁻¹)/C with B(Σ) = Tr{A ∂Q_f/∂Σ}, A = εεᵀ − K_f⁻¹. The trace term is
one vector-Jacobian product: B = ∇_Σ ⟨A, Q_f(Σ)⟩ with A held fixed (the closed-form pullback
`fleos.core.kernels.cnn2_output_kernel_vjp`), so no S² × n² Jacobian is ever formed. Λ must stay
positive definite: T is evaluated through a Cholesky factor of Λ, and a non-PD Λ yields NaN,
which the solvers in `fleos.theory.solvers` treat as "outside the domain" and step back from.
The residual reported is the relative one, ||T(Λ) − Λ||_F / ||(S/σ_w²) I||_F (a fixed scale,
so that it is a function of Λ alone). Everything is float64: K_f has eigenvalues down to σ²
while its top ones are O(n), and K_f⁻¹ enters the trace term.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from fleos.core import gp
from fleos.core.kernels import (
    ACTIVATIONS,
    cnn2_output_kernel,
    cnn2_output_kernel_vjp,
    patches,
)
from fleos.theory.solvers import SolveResult, anderson, anneal, newton_krylov

Array = jnp.ndarray

METHODS = ("anderson", "newton_krylov")


@dataclass(frozen=True, eq=False)
class CNN2Problem:
    """Data and hyper-parameters of the 2-layer CNN EoS (Eqs. 7-8).

    P: (n, N, S) train patches (patch i of row μ = x_μ[iS:(i+1)S]); y: (n,) targets.
    P_test, y_test: optional test patches (n_test, N, S) and targets.
    sigma2: σ² (likelihood noise = Langevin temperature / 2); sigma_a2, sigma_w2: prior weight
    variances σ_a², σ_w² (a ~ N(0, σ_a²/(NC)), w ~ N(0, σ_w²/S I)); activation: "erf" or
    "linear" (the kernels of `fleos.core.kernels`; "relu" would need the mean as a slow variable).
    """

    P: Array
    y: Array
    P_test: Array | None = None
    y_test: Array | None = None
    sigma2: float = 0.1
    sigma_a2: float = 2.0
    sigma_w2: float = 2.0
    activation: str = "erf"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.activation not in ("erf", "linear"):
            raise ValueError(
                f"CNN2Problem: activation {self.activation!r} not supported; allowed: "
                f"'erf', 'linear' (known kernels: {sorted(ACTIVATIONS)})"
            )
        if self.P.ndim != 3:
            raise ValueError(f"CNN2Problem: P must be (n, N, S), got shape {self.P.shape}")
        if self.y.shape != (self.P.shape[0],):
            raise ValueError(f"CNN2Problem: y has shape {self.y.shape}, expected ({self.n},)")
        if (self.P_test is None) != (self.y_test is None) and self.P_test is None:
            raise ValueError("CNN2Problem: y_test given without P_test")
        if self.P_test is not None and self.P_test.shape[1:] != self.P.shape[1:]:
            raise ValueError(
                f"CNN2Problem: P_test patches {self.P_test.shape[1:]} differ from P "
                f"{self.P.shape[1:]}"
            )
        for name in ("sigma2", "sigma_a2", "sigma_w2"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CNN2Problem: {name} must be > 0, got {getattr(self, name)}")

    @property
    def n(self) -> int:
        return int(self.P.shape[0])

    @property
    def N(self) -> int:
        return int(self.P.shape[1])

    @property
    def S(self) -> int:
        return int(self.P.shape[2])

    @classmethod
    def from_arrays(
        cls,
        X: Any,
        y: Any,
        N: int,
        S: int,
        X_test: Any = None,
        y_test: Any = None,
        *,
        sigma2: float = 0.1,
        sigma_a2: float = 2.0,
        sigma_w2: float = 2.0,
        activation: str = "erf",
        meta: dict[str, Any] | None = None,
    ) -> CNN2Problem:
        """Build from flat inputs X (n × N·S), cut into N patches of size S (Eq. 7)."""
        f64 = partial(jnp.asarray, dtype=jnp.float64)
        P = patches(f64(X), N, S)
        P_test = patches(f64(X_test), N, S) if X_test is not None else None
        return cls(
            P=P, y=f64(y).reshape(-1), P_test=P_test,
            y_test=None if y_test is None else f64(y_test).reshape(-1),
            sigma2=float(sigma2), sigma_a2=float(sigma_a2), sigma_w2=float(sigma_w2),
            activation=activation, meta=dict(meta or {}),
        )

    @classmethod
    def from_npz(cls, path: str | os.PathLike, S: int, **kwargs: Any) -> CNN2Problem:
        """Read X (n × d), y, optional X_test, y_test from an .npz file; N = d / S."""
        path = os.fspath(path)
        try:
            data = np.load(path)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read data file {path!r}: {err}") from err
        with data:
            for key in ("X", "y"):
                if key not in data.files:
                    raise ValueError(
                        f"data file {path!r} has no key {key!r} (keys: {sorted(data.files)})"
                    )
            X, y = data["X"], data["y"]
            if X.ndim != 2:
                raise ValueError(f"data file {path!r}: X must be 2-D (n × d), got {X.shape}")
            if X.shape[1] % S:
                raise ValueError(
                    f"data file {path!r}: input width {X.shape[1]} is not a multiple of S={S}"
                )
            X_test = data["X_test"] if "X_test" in data.files else None
            y_test = data["y_test"] if "y_test" in data.files else None
            if (X_test is None) != (y_test is None):
                raise ValueError(
                    f"data file {path!r}: X_test and y_test must be given together"
                )
            meta = dict(kwargs.pop("meta", None) or {})
            meta.setdefault("data_file", path)
            return cls.from_arrays(X, y, X.shape[1] // S, S, X_test, y_test, meta=meta,
                                   **kwargs)


# ---------------------------------------------------------------------------------------------
# The EoS map
# ---------------------------------------------------------------------------------------------


def _tril_inverse(L: Array, leaf: int = 128) -> Array:
    """L⁻¹ of a lower-triangular L by 2 × 2 block recursion, [[L₁₁, 0], [L₂₁, L₂₂]]⁻¹ =
    [[X₁₁, 0], [−X₂₂ L₂₁ X₁₁, X₂₂]] (as LAPACK trtri): the work is matrix products, down to
    `leaf`-sized triangular solves."""
    n = L.shape[0]
    if n <= leaf:
        return jsl.solve_triangular(L, jnp.eye(n, dtype=L.dtype), lower=True)
    h = n // 2
    X11, X22 = _tril_inverse(L[:h, :h], leaf), _tril_inverse(L[h:, h:], leaf)
    X21 = -X22 @ (L[h:, :h] @ X11)
    top = jnp.concatenate([X11, jnp.zeros((h, n - h), dtype=L.dtype)], axis=1)
    return jnp.concatenate([top, jnp.concatenate([X21, X22], axis=1)], axis=0)


def _tril_gram(X: Array, leaf: int = 128) -> Array:
    """XᵀX for a lower-triangular X, skipping its zero upper block (as LAPACK lauum)."""
    n = X.shape[0]
    if n <= leaf:
        return X.T @ X
    h = n // 2
    X21, X22 = X[h:, :h], X[h:, h:]
    top_left = _tril_gram(X[:h, :h], leaf) + X21.T @ X21
    top_right = X21.T @ X22
    return jnp.concatenate([jnp.concatenate([top_left, top_right], axis=1),
                            jnp.concatenate([top_right.T, _tril_gram(X22, leaf)], axis=1)],
                           axis=0)


def _inverse_from_cholesky(L: Array) -> Array:
    """K⁻¹ = L⁻ᵀ L⁻¹ for K = L Lᵀ: ≈ 4n³/3 flops of matrix products (`_tril_inverse`,
    `_tril_gram`), where `cho_solve` against I makes two full triangular solves (2n³ flops,
    slower per flop); at n = 1600 on one core ≈ 3× faster (bench/RESULTS.md)."""
    return _tril_gram(_tril_inverse(L))


def discrepancy_and_inverse(P: Array, y: Array, Sigma: Array, sigma2: float, sigma_a2: float,
                            activation: str) -> tuple[Array, Array]:
    """ε = K_f⁻¹ y and K_f⁻¹ at the kernel Q_f(Σ) (Eq. 8's first two lines), through one
    Cholesky factor of K_f = Q_f + σ² I: the field A = εεᵀ − K_f⁻¹ that Σ feels."""
    Qf = cnn2_output_kernel(P, P, Sigma, sigma_a2, activation)
    fit = gp.gp_fit(Qf, y, sigma2)
    return gp.discrepancy(fit), _inverse_from_cholesky(fit.chol)


@partial(jax.jit, static_argnames=("activation",))
def trace_term(
    P: Array, y: Array, Sigma: Array, sigma2: float, sigma_a2: float, activation: str = "erf",
    field_sign: float = -1.0,
) -> Array:
    """B(Σ) = Tr{(εεᵀ − K_f⁻¹) ∂Q_f/∂Σ} (Eq. 8), symmetric S × S.

    field_sign: the sign s of the field A = εεᵀ + s K_f⁻¹. Eq. 8 is s = −1 (derived from the
    sampled action, docs/derivations/cnn2.md "The sign of the field"); s = +1 is a diagnostic
    only, the sign of the authors' FCN notebook, which the exact referee rejects.

    One pass for Q_f, one Cholesky of K_f (giving ε = K_f⁻¹ y and K_f⁻¹), then the closed-form
    pullback ∇_Σ ⟨A, Q_f(Σ)⟩ with A = εεᵀ − K_f⁻¹ held fixed, accumulated patch by patch
    (`fleos.core.kernels.cnn2_output_kernel_vjp`: no S² × n² Jacobian, O(n²) memory).
    """
    # All float64. Q_f and this pullback in float32 would be 2.3-2.5× faster, but their error
    # in T(Λ) = (S/σ_w²) I − B/C is 7.6e-8 of the residual scale at C = 40 at the paper's size
    # (∝ 1/C; bench/RESULTS.md), above tol = 1e-8 for C ≲ 300; and K_f has eigenvalues from σ²
    # up to O(n), so its Cholesky and K_f⁻¹ need float64 at any C.
    eps, Kinv = discrepancy_and_inverse(P, y, Sigma, sigma2, sigma_a2, activation)
    A = jnp.outer(eps, eps) + field_sign * Kinv
    B = cnn2_output_kernel_vjp(P, Sigma, A, sigma_a2, activation)
    return 0.5 * (B + B.T)


def trace_term_reference(
    P: Array, y: Array, Sigma: Array, sigma2: float, sigma_a2: float, activation: str = "erf"
) -> Array:
    """B(Σ) by `jax.vjp` of `fleos.core.kernels.cnn2_output_kernel` (autodiff through the
    forward Q_f): the straightforward form of `trace_term`, kept as its test reference."""
    Qf, pullback = jax.vjp(lambda s: cnn2_output_kernel(P, P, s, sigma_a2, activation), Sigma)
    fit = gp.gp_fit(Qf, y, sigma2)
    eps = gp.discrepancy(fit)
    Kinv = jsl.cho_solve((fit.chol, True), jnp.eye(y.shape[0], dtype=Qf.dtype))
    (B,) = pullback(jnp.outer(eps, eps) - Kinv)
    return 0.5 * (B + B.T)


def _sigma_from_precision(Lam: Array) -> Array:
    """Σ = Λ⁻¹ through a Cholesky factor: NaN if Λ is not positive definite (by design)."""
    L = jnp.linalg.cholesky(Lam)
    return jsl.cho_solve((L, True), jnp.eye(Lam.shape[0], dtype=Lam.dtype))


def _scale(problem: CNN2Problem) -> float:
    """||(S/σ_w²) I||_F: the fixed scale of the relative residual."""
    return problem.S / problem.sigma_w2 * math.sqrt(problem.S)


@partial(jax.jit, static_argnames=("activation",))
def _eos_map_scaled(
    u: Array, P: Array, y: Array, inv_C: float, sigma2: float, sigma_a2: float,
    sigma_w2: float, scale: float, field_sign: float = -1.0, *, activation: str,
) -> Array:
    """T(Λ)/scale at Λ = scale·u: the EoS fixed-point map in units of the residual scale
    (field_sign: see `trace_term`)."""
    S = P.shape[-1]
    Lam = 0.5 * (u + u.T) * scale
    Sigma = _sigma_from_precision(Lam)
    B = trace_term(P, y, Sigma, sigma2, sigma_a2, activation, field_sign)
    T = (S / sigma_w2) * jnp.eye(S, dtype=Lam.dtype) - inv_C * B
    return T / scale


def _eos_fp(activation: str):
    """The scaled fixed-point map u ↦ T(scale·u)/scale for one activation, and its residual;
    built once per activation so the solvers' compiled programs are reused across C."""

    def fp(u: Array, *args: Any) -> Array:
        return _eos_map_scaled(u, *args, activation=activation)

    def res(u: Array, *args: Any) -> Array:
        return fp(u, *args) - u

    return fp, res


_EOS_FP = {act: _eos_fp(act) for act in ("erf", "linear")}


def eos_map(problem: CNN2Problem, C: float, Sigma: Array) -> Array:
    """T(Σ⁻¹) = (S/σ_w²) I − B(Σ)/C: the right-hand side of the last line of Eq. 8."""
    Sigma = jnp.asarray(Sigma, dtype=jnp.float64)
    B = trace_term(problem.P, problem.y, Sigma, problem.sigma2, problem.sigma_a2,
                   problem.activation)
    return (problem.S / problem.sigma_w2) * jnp.eye(problem.S) - B / C


def eos_residual(problem: CNN2Problem, C: float, Sigma: Array) -> float:
    """Relative residual ||Σ⁻¹ − T(Σ⁻¹)||_F / ||(S/σ_w²) I||_F of Eq. 8 at Σ."""
    Sigma = jnp.asarray(Sigma, dtype=jnp.float64)
    R = jnp.linalg.inv(Sigma) - eos_map(problem, C, Sigma)
    return float(jnp.linalg.norm(R) / _scale(problem))


def gp_sigma(problem: CNN2Problem) -> Array:
    """Σ of the GP limit C → ∞ (Eq. 8 with the trace term dropped): (σ_w²/S) I."""
    return (problem.sigma_w2 / problem.S) * jnp.eye(problem.S, dtype=jnp.float64)


#: Anderson history and mixing β for Eq. 8. At small C the plain step Λ ← T(Λ) overshoots
#: along Σ's growing top mode (the map's slope there is ≈ −760/C on the paper-size sweep, from
#: the residual's growth in the first step), so a full step (β = 1) first multiplies the
#: residual by up to 19 at C = 40; β = 1/2 and a longer history (12) took the paper-size sweep
#: from 111 to 91 map evaluations (bench/RESULTS.md, "The Eq. 8 sweep, before and after").
ANDERSON_M = 12
ANDERSON_DAMPING = 0.5


def _solve_precision(
    problem: CNN2Problem, C: float, Lam0: Array, *, tol: float, max_iter: int, method: str,
    m: int, damping: float = 1.0, field_sign: float = -1.0,
) -> SolveResult:
    """Solve Eq. 8 in the precision Λ = Σ⁻¹ (x of the result = Λ), from Λ0."""
    if method not in METHODS:
        raise ValueError(f"solve_cnn2: unknown method {method!r}; allowed: {list(METHODS)}")
    if not C > 0:
        raise ValueError(f"solve_cnn2: C must be > 0, got {C}")
    scale = _scale(problem)
    u0 = jnp.asarray(Lam0, dtype=jnp.float64) / scale
    u0 = 0.5 * (u0 + u0.T)
    f64 = partial(jnp.asarray, dtype=jnp.float64)
    args = (problem.P, problem.y, f64(1.0 / C), f64(problem.sigma2), f64(problem.sigma_a2),
            f64(problem.sigma_w2), f64(scale), f64(field_sign))
    fp, res_fn = _EOS_FP[problem.activation]
    if method == "anderson":
        res = anderson(fp, u0, args=args, tol=tol, max_iter=max_iter, m=m, damping=damping)
    else:
        res = newton_krylov(res_fn, u0, args=args, tol=tol, max_iter=max_iter)
    return replace(res, x=0.5 * (res.x + res.x.T) * scale)


def _precision_to_sigma(res: SolveResult) -> SolveResult:
    Sigma = jnp.linalg.inv(res.x)
    return replace(res, x=0.5 * (Sigma + Sigma.T))


def solve_cnn2(
    problem: CNN2Problem,
    C: float,
    Sigma0: Array | None = None,
    *,
    tol: float = 1e-8,
    max_iter: int = 100,
    method: str = "anderson",
    m: int = ANDERSON_M,
    damping: float = ANDERSON_DAMPING,
    field_sign: float = -1.0,
) -> SolveResult:
    """Solve Eq. 8 for Σ at channel count C (x of the result = Σ).

    tol: bound on the relative residual ||Σ⁻¹ − T(Σ⁻¹)||_F / ||(S/σ_w²) I||_F.
    Sigma0: start (default: the GP solution (σ_w²/S) I). method: "anderson" (Anderson
    acceleration of the fixed point Λ = T(Λ), history m, mixing `damping`; defaults:
    `ANDERSON_M`, `ANDERSON_DAMPING`) or "newton_krylov" (exact JVPs + GMRES on T(Λ) − Λ).
    The residual of the result is evaluated at the returned Σ (up to the rounding of one
    S × S inversion Λ → Σ). field_sign: the sign of K_f⁻¹ in the field, −1 for
    Eq. 8; +1 is a diagnostic only (`trace_term`).
    """
    Sigma0 = gp_sigma(problem) if Sigma0 is None else jnp.asarray(Sigma0, dtype=jnp.float64)
    res = _solve_precision(problem, C, jnp.linalg.inv(Sigma0), tol=tol, max_iter=max_iter,
                           method=method, m=m, damping=damping, field_sign=field_sign)
    return _precision_to_sigma(res)


def sweep_cnn2(
    problem: CNN2Problem,
    Cs: Sequence[float],
    *,
    tol: float = 1e-8,
    max_iter: int = 60,
    method: str = "anderson",
    m: int = ANDERSON_M,
    damping: float = ANDERSON_DAMPING,
    min_ratio: float = 1.01,
    extrapolate: bool = True,
    progress: Callable[[float, SolveResult], None] | None = None,
    field_sign: float = -1.0,
) -> list[SolveResult]:
    """Solve Eq. 8 at every C of Cs by annealing from the GP solution (C = ∞) downward
    (`fleos.theory.solvers.anneal`: warm starts, geometric step insertion on failure). With
    `extrapolate`, each start is the linear extrapolation in 1/C of the last two precisions
    Λ = Σ⁻¹ (Λ is linear in 1/C to first order, Eq. 8; a quadratic one through three points
    took 120 evaluations against 111 on the paper-size sweep, bench/RESULTS.md). m, damping:
    Anderson's history and mixing (`solve_cnn2`). Results
    (x = Σ) in the order of Cs. `progress(C, result)` is called after every solve
    (`fleos.theory.solvers.progress_printer`). field_sign: the sign of K_f⁻¹ in the field, −1
    for Eq. 8 (+1: diagnostic, `trace_term`)."""
    Cs = [float(c) for c in Cs]

    def solve_at(C: float, Lam0: Array) -> SolveResult:
        return _solve_precision(problem, C, Lam0, tol=tol, max_iter=max_iter, method=method,
                                m=m, damping=damping, field_sign=field_sign)

    Lam_gp = jnp.linalg.inv(gp_sigma(problem))
    results = anneal(solve_at, Cs, Lam_gp, min_ratio=min_ratio, extrapolate=extrapolate,
                     progress=progress)
    return [_precision_to_sigma(r) for r in results]


# ---------------------------------------------------------------------------------------------
# Observables
# ---------------------------------------------------------------------------------------------


def cnn2_observables(problem: CNN2Problem, Sigma: Array) -> dict[str, Any]:
    """Predictions of the effective GP with kernel Q_f(Σ) (Eq. 8; test points: Q_f extended
    to (test, train) pairs, the paper's formula below Eq. 8).

    Returns alpha_train, alpha_test (α = (y − f̄)·y/(σ² y·y)), train_mse_normalized
    (Σ(f̄ − y)²/(σ² Σ y²), the paper's Fig. 2b/3 scale), train_mse and test_mse (means of the
    squared errors), sigma_eigs (descending), f_train, f_test (numpy arrays). Test entries are
    None when the problem has no test set.
    """
    Sigma = jnp.asarray(Sigma, dtype=jnp.float64)
    Qf = cnn2_output_kernel(problem.P, problem.P, Sigma, problem.sigma_a2, problem.activation)
    fit = gp.gp_fit(Qf, problem.y, problem.sigma2)
    f_train = gp.gp_train_mean(fit, problem.y)
    out: dict[str, Any] = {
        "alpha_train": float(gp.alpha(problem.y, f_train, problem.sigma2)),
        "train_mse_normalized": float(gp.normalized_mse(problem.y, f_train, problem.sigma2)),
        "train_mse": float(jnp.mean((f_train - problem.y) ** 2)),
        "sigma_eigs": np.sort(np.linalg.eigvalsh(np.asarray(Sigma)))[::-1],
        "f_train": np.asarray(f_train),
        "alpha_test": None,
        "test_mse": None,
        "f_test": None,
    }
    if problem.P_test is not None:
        Q_tf = cnn2_output_kernel(problem.P_test, problem.P, Sigma, problem.sigma_a2,
                                  problem.activation)
        f_test = gp.gp_predict(fit, Q_tf)
        out["f_test"] = np.asarray(f_test)
        if problem.y_test is not None:
            out["alpha_test"] = float(gp.alpha(problem.y_test, f_test, problem.sigma2))
            out["test_mse"] = float(jnp.mean((f_test - problem.y_test) ** 2))
    return out


def cnn2_gp_observables(problem: CNN2Problem) -> dict[str, Any]:
    """Observables of the GP limit C → ∞ (Σ = σ_w²/S I)."""
    return cnn2_observables(problem, gp_sigma(problem))
