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
one vector-Jacobian product: B = ∇_Σ ⟨A, Q_f(Σ)⟩ with A held fixed (`jax.vjp` of
`fleos.core.kernels.cnn2_output_kernel`), so no S² × n² Jacobian is ever formed. Λ must stay
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
from fleos.core.kernels import ACTIVATIONS, cnn2_output_kernel, fast_arcsin, patches
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


def _patch_g(Pa: Array, Pb: Array, Sigma: Array, activation: str) -> Array:
    """G(P_a Σ P_bᵀ) for one patch position (n_a × n_b), erf via `fast_arcsin`.

    Same function as `fleos.core.kernels.erf_g` / `linear_g` (tested against
    `fleos.core.kernels.cnn2_output_kernel` to 1e-13), restructured so that a loop over patches
    keeps only n_a × n_b arrays alive instead of N of them.
    """
    Za = Pa @ Sigma
    k_ab = Za @ Pb.T
    if activation == "linear":
        return k_ab
    k_aa = jnp.sum(Za * Pa, axis=-1)
    k_bb = jnp.sum((Pb @ Sigma) * Pb, axis=-1)
    da = jax.lax.rsqrt(1.0 + 2.0 * k_aa)
    db = jax.lax.rsqrt(1.0 + 2.0 * k_bb)
    rho = 2.0 * k_ab * da[:, None] * db[None, :]
    # |rho| <= 1 by Cauchy-Schwarz for PSD Σ; the clip only guards rounding.
    return (2.0 / math.pi) * fast_arcsin(jnp.clip(rho, -1.0, 1.0))


@partial(jax.jit, static_argnames=("activation",))
def output_kernel(
    Pa: Array, Pb: Array, Sigma: Array, sigma_a2: float, activation: str = "erf"
) -> Array:
    """Q_f (Eq. 8) between patch sets Pa (n_a, N, S) and Pb (n_b, N, S): the same values as
    `fleos.core.kernels.cnn2_output_kernel`, computed one patch position at a time."""
    N = Pa.shape[1]
    PaT, PbT = jnp.swapaxes(Pa, 0, 1), jnp.swapaxes(Pb, 0, 1)

    def body(i: int, Q: Array) -> Array:
        return Q + _patch_g(PaT[i], PbT[i], Sigma, activation)

    Q0 = jnp.zeros((Pa.shape[0], Pb.shape[0]), dtype=Sigma.dtype)
    return (sigma_a2 / N) * jax.lax.fori_loop(0, N, body, Q0)


def discrepancy_and_inverse(P: Array, y: Array, Sigma: Array, sigma2: float, sigma_a2: float,
                            activation: str) -> tuple[Array, Array]:
    """ε = K_f⁻¹ y and K_f⁻¹ at the kernel Q_f(Σ) (Eq. 8's first two lines), through one
    Cholesky factor of K_f = Q_f + σ² I: the field A = εεᵀ − K_f⁻¹ that Σ feels."""
    Qf = output_kernel(P, P, Sigma, sigma_a2, activation)
    fit = gp.gp_fit(Qf, y, sigma2)
    Kinv = jsl.cho_solve((fit.chol, True), jnp.eye(y.shape[0], dtype=Qf.dtype))
    return gp.discrepancy(fit), Kinv


@partial(jax.jit, static_argnames=("activation",))
def trace_term(
    P: Array, y: Array, Sigma: Array, sigma2: float, sigma_a2: float, activation: str = "erf",
    field_sign: float = -1.0,
) -> Array:
    """B(Σ) = Tr{(εεᵀ − K_f⁻¹) ∂Q_f/∂Σ} (Eq. 8), symmetric S × S.

    field_sign: the sign s of the field A = εεᵀ + s K_f⁻¹. Eq. 8 is s = −1 (derived from the
    sampled action, docs/derivations/cnn2.md "The sign of the field"); s = +1 is a diagnostic
    only, the sign of the authors' FCN notebook, which the exact referee rejects.

    One pass for Q_f, one Cholesky of K_f (giving ε = K_f⁻¹ y and K_f⁻¹), then the VJP
    ∇_Σ ⟨A, Q_f(Σ)⟩ with A = εεᵀ − K_f⁻¹ held fixed, accumulated patch by patch
    (`jax.vjp` of each patch's G: exact derivatives, no S² × n² Jacobian, O(n²) memory).
    """
    N = P.shape[1]
    PT = jnp.swapaxes(P, 0, 1)
    eps, Kinv = discrepancy_and_inverse(P, y, Sigma, sigma2, sigma_a2, activation)
    A = (sigma_a2 / N) * (jnp.outer(eps, eps) + field_sign * Kinv)

    def body(i: int, B: Array) -> Array:
        _, pullback = jax.vjp(lambda s: _patch_g(PT[i], PT[i], s, activation), Sigma)
        return B + pullback(A)[0]

    B = jax.lax.fori_loop(0, N, body, jnp.zeros_like(Sigma))
    return 0.5 * (B + B.T)


def trace_term_reference(
    P: Array, y: Array, Sigma: Array, sigma2: float, sigma_a2: float, activation: str = "erf"
) -> Array:
    """B(Σ) by one `jax.vjp` of `fleos.core.kernels.cnn2_output_kernel` (all patches at once):
    the straightforward form of `trace_term`, kept as its test reference (slow, O(N n²)
    memory)."""
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


def _solve_precision(
    problem: CNN2Problem, C: float, Lam0: Array, *, tol: float, max_iter: int, method: str,
    m: int, field_sign: float = -1.0,
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
        res = anderson(fp, u0, args=args, tol=tol, max_iter=max_iter, m=m, damping=1.0)
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
    m: int = 6,
    field_sign: float = -1.0,
) -> SolveResult:
    """Solve Eq. 8 for Σ at channel count C (x of the result = Σ).

    tol: bound on the relative residual ||Σ⁻¹ − T(Σ⁻¹)||_F / ||(S/σ_w²) I||_F.
    Sigma0: start (default: the GP solution (σ_w²/S) I). method: "anderson" (Anderson
    acceleration of the fixed point Λ = T(Λ), history m) or "newton_krylov" (exact JVPs +
    GMRES on T(Λ) − Λ). The residual of the result is evaluated at the returned Σ (up to the
    rounding of one S × S inversion Λ → Σ). field_sign: the sign of K_f⁻¹ in the field, −1 for
    Eq. 8; +1 is a diagnostic only (`trace_term`).
    """
    Sigma0 = gp_sigma(problem) if Sigma0 is None else jnp.asarray(Sigma0, dtype=jnp.float64)
    res = _solve_precision(problem, C, jnp.linalg.inv(Sigma0), tol=tol, max_iter=max_iter,
                           method=method, m=m, field_sign=field_sign)
    return _precision_to_sigma(res)


def sweep_cnn2(
    problem: CNN2Problem,
    Cs: Sequence[float],
    *,
    tol: float = 1e-8,
    max_iter: int = 60,
    method: str = "anderson",
    m: int = 6,
    min_ratio: float = 1.01,
    extrapolate: bool = True,
    progress: Callable[[float, SolveResult], None] | None = None,
    field_sign: float = -1.0,
) -> list[SolveResult]:
    """Solve Eq. 8 at every C of Cs by annealing from the GP solution (C = ∞) downward
    (`fleos.theory.solvers.anneal`: warm starts, geometric step insertion on failure). With
    `extrapolate`, each start is the linear extrapolation in 1/C of the last two precisions
    Λ = Σ⁻¹ (Λ is linear in 1/C to first order, Eq. 8). Results (x = Σ) in the order of Cs.
    `progress(C, result)` is called after every solve (`fleos.theory.solvers.progress_printer`).
    field_sign: the sign of K_f⁻¹ in the field, −1 for Eq. 8 (+1: diagnostic, `trace_term`)."""
    Cs = [float(c) for c in Cs]

    def solve_at(C: float, Lam0: Array) -> SolveResult:
        return _solve_precision(problem, C, Lam0, tol=tol, max_iter=max_iter, method=method,
                                m=m, field_sign=field_sign)

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
    Qf = output_kernel(problem.P, problem.P, Sigma, problem.sigma_a2, problem.activation)
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
        Q_tf = output_kernel(problem.P_test, problem.P, Sigma, problem.sigma_a2,
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
