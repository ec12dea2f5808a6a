"""Analytic solution of the 2-layer CNN equations of state (Eq. 9).

Derivation: docs/derivations/cnn2_analytic.md. Summary, for the CNN of Eq. 7 with erf,
inputs x ~ N(0, I_{NS}), linear teacher y = Σ_i a*_i (w*·x_i) and priors
a_ic ~ N(0, σ_a²/(NC)), w_c ~ N(0, σ_w²/S I):

* λ∞ = (4/π) σ_a² σ_w² / (N S (1 + 2σ_w²)) is the eigenvalue (w.r.t. the data measure) of the
  continuum GP kernel Q_f(x, x') on the linear functions v·x_i (first term of the arcsin
  series of G; large S, so that x_i Σ x_i concentrates on Tr Σ = σ_w²).
* With Σ = l* ŵŵᵀ + (σ_w²/S)(1 − ŵŵᵀ), ŵ = w*/|w*|, the target's eigenvalue is
  λ* = λ∞ S l*/σ_w², and Eq. 8's third line, evaluated on ε(x) = α y(x), gives
  l* = (σ_w²/S) / (1 − χ2),  χ2 = α² n² λ∞ |a*|²|w*|² / C   (the FLS of the 2-layer CNN).
* GP inference on the target mode gives Eq. 9:  σ² α = 1 − q_train λ*/(λ* + σ²/n).
  With σ_a² = σ_w² = |a*|² = |w*|² = 1 this is the paper's printed form (S λ∞ l* = λ*).

q_train = 1 is the equivalent-kernel (EK) limit. Beyond it, the train-set α of a GP whose
target sits in one kernel mode is α = 1/(nλ* + κ) with the renormalized ridge κ solving
κ = σ² + κ Σ_k λ_k/(nλ_k + κ) over all kernel modes k (linear modes: N at λ*, N(S−1) at λ∞;
the non-linear arcsin modes all have nλ_k ≪ κ and contribute their total trace r). Its first
order in 1/n ("first_order") is κ₁ = σ² + r + σ² Σ_lin λ_k/(nλ_k + σ²); the full solution is
"renormalized". q_train is then the value that puts α in the form of Eq. 9. Both are OUR
RECONSTRUCTION: the paper defers q_train's "perturbative correction (in 1/n)" to its
Supplementary Material (3), which is not available, so "first_order" is what that correction
would be by the derivation's argument, not the paper's own expression.

Two optional corrections beyond the paper (off by default, so the default of `solve_eq9` is
Eq. 9 as printed; `PRINTED_OPTIONS` spells it out): `kinv_term` keeps the O(N/C) K_f⁻¹
part of Eq. 8's trace, and `finite_s` the O(1/S) leakage of the target out of the kernel's
linear modes, which is amplified by nλ*/κ.
Recommended for comparisons with the numeric EoS or experiments:
`q_train="renormalized", kinv_term=True, finite_s=True` with the actual teacher norms
(agreement with the numeric Eq. 8 at the paper's scale: see the derivation, §5). The EK value
q_train = 1 overestimates α_GP by 30-100 % at the paper's n, hence also χ2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.stats import chi2 as chi2_dist

__all__ = [
    "Eq9Result",
    "analytic_sigma",
    "cnn2_lambda_inf",
    "cnn2_nonlinear_trace",
    "cnn2_target_leakage",
    "eq9_residual",
    "solve_eq9",
    "train_alpha_of_lambda",
]

Q_TRAIN_MODES = ("first_order", "renormalized")


@dataclass(frozen=True)
class Eq9Result:
    """Solution of Eq. 9.

    alpha: train-set α (the paper's α of Eq. 9); l_star: eigenvalue of Σ along w*;
    chi2: the FLS χ2 = α² n² λ∞ |a*|²|w*|²/C; lambda_inf: λ∞; q_train: the q_train of Eq. 9
    at the solution (1 in the EK limit; for the 1/n modes, the value implied by κ);
    converged: True iff the residual of Eq. 9 at the returned α is below 1e-10 relative;
    lambda_star: the target mode's kernel eigenvalue λ* = λ∞/(1 − χ2);
    kappa: the renormalized ridge used (σ² for q_train given as a number);
    alpha_test: the test-set α predicted in the same approximation, κ α / σ²
    (equal to α in the EK limit); residual: |Eq. 9 residual| at alpha (and of the χ2
    equation); l_perp: the inert eigenvalue of Σ (σ_w²/S unless kinv_term);
    alpha_lin: the α of Eq. 9 proper (= alpha unless finite_s); nu: the target leakage ν.
    """

    alpha: float
    l_star: float
    chi2: float
    lambda_inf: float
    q_train: float
    converged: bool
    lambda_star: float = math.nan
    kappa: float = math.nan
    alpha_test: float = math.nan
    residual: float = math.nan
    l_perp: float = math.nan
    alpha_lin: float = math.nan
    nu: float = 0.0


def _check_positive(**kwargs: float) -> None:
    for name, value in kwargs.items():
        if not (value > 0):
            raise ValueError(f"{name} must be > 0, got {value!r}")


def cnn2_lambda_inf(S: int, N: int, sigma_a2: float = 1.0, sigma_w2: float = 1.0) -> float:
    """λ∞: eigenvalue of the C → ∞ continuum kernel Q_f(x, x') (Eq. 8, Σ = σ_w²/S I) on the
    linear functions v·x_i, w.r.t. x ~ N(0, I) (the λ∞ of Eq. 9).

    From the arcsin series G = (2/π)(ρ + ρ³/6 + …), ρ = 2 x_iΣx'_i / (1 + 2 Tr Σ) at large S:
    the linear part of Q_f is (σ_a²/N)(4/π)/(1 + 2σ_w²) Σ_i x_i Σ x'_i, whose eigenvalue on
    v·x_i is (4/π) σ_a² σ_w² / (N S (1 + 2σ_w²)).
    """
    _check_positive(S=S, N=N, sigma_a2=sigma_a2, sigma_w2=sigma_w2)
    return (4.0 / math.pi) * sigma_a2 * sigma_w2 / (N * S * (1.0 + 2.0 * sigma_w2))


def cnn2_nonlinear_trace(sigma_a2: float = 1.0, sigma_w2: float = 1.0) -> float:
    """r: total eigenvalue weight E_x[Q_f(x, x)] of the non-linear (ρ³, ρ⁵, …) arcsin modes,
    r = σ_a² (2/π)[arcsin ρ₀ − ρ₀], ρ₀ = 2σ_w²/(1 + 2σ_w²) (Σ = σ_w²/S I, large S).
    These modes have tiny individual eigenvalues, so on the training set they act as an
    extra ridge (a 1/n correction to the EK limit)."""
    _check_positive(sigma_a2=sigma_a2, sigma_w2=sigma_w2)
    rho0 = 2.0 * sigma_w2 / (1.0 + 2.0 * sigma_w2)
    return sigma_a2 * (2.0 / math.pi) * (math.asin(rho0) - rho0)


def cnn2_target_leakage(S: int, sigma_w2: float = 1.0) -> float:
    """ν: fraction of a linear target's power outside the linear eigenspace of Q_f at finite S.

    On data the erf kernel normalizes each patch, G ∝ x·Σx'/√((1 + 2k)(1 + 2k')) with
    k = x_iΣx_i, so its linear modes are v·x_i/√(1 + 2k_i), not v·x_i. With x_i = ρ θ
    (ρ² ~ χ²_S independent of the direction θ) and Σ = σ_w²/S I, the captured fraction of
    the target (w*·x_i) is E[ρ²/√(1+2k)]² / (E[ρ²/(1+2k)] E[ρ²]), k = σ_w² ρ²/S, so
    ν = 1 − that (exact 1-D quadrature over χ²_S); ν ≈ 2σ_w⁴/(S(1 + 2σ_w²)²) at large S.
    """
    _check_positive(S=S, sigma_w2=sigma_w2)
    dist = chi2_dist(S)

    def moment(power: float) -> float:
        return float(dist.expect(lambda t: t / (1.0 + 2.0 * sigma_w2 * t / S) ** power))

    return max(0.0, 1.0 - moment(0.5) ** 2 / (moment(1.0) * S))


def _kappa(
    mode: str, n: int, S: int, N: int, sigma2: float, lam_perp: float, lam_star: float, r: float
) -> float:
    """Renormalized ridge κ (see module docstring); 'first_order' or 'renormalized'."""

    def lin_sum(kappa: float) -> float:
        # N target-direction modes (one per patch) at λ*, the other N(S−1) linear modes at λ⊥
        # (= λ∞ unless the K_f⁻¹ term of Eq. 8 is kept).
        return (N * lam_star / (n * lam_star + kappa)
                + N * (S - 1) * lam_perp / (n * lam_perp + kappa))

    if mode == "first_order":
        return sigma2 + r + sigma2 * lin_sum(sigma2)
    # eq(κ) = κ − σ² − r − κ·lin_sum(κ) is < 0 at κ = σ² (κ·lin_sum(κ) > 0 ≥ σ² − κ + r) and
    # grows like κ(1 − NS/n) for NS < n (each κλ/(nλ + κ) < κ/n); we double the upper end
    # until the sign changes, which also covers NS ≥ n (there κλ/(nλ + κ) ≤ λ bounds it).
    def eq(kappa: float) -> float:
        return kappa - sigma2 - r - kappa * lin_sum(kappa)

    lo, hi = sigma2, 2.0 * (sigma2 + r) + 1.0
    while eq(hi) <= 0.0:
        hi *= 2.0
        if hi > 1e300:
            raise ValueError("no renormalized ridge κ found (kernel trace diverges?)")
    return brentq(eq, lo, hi, xtol=1e-15, rtol=1e-14, maxiter=200)


def train_alpha_of_lambda(
    lam_star: float,
    n: int,
    sigma2: float,
    q_train: float | str = 1.0,
    *,
    S: int | None = None,
    N: int | None = None,
    lam_perp: float | None = None,
    r: float = 0.0,
) -> tuple[float, float, float]:
    """Train α of GP inference when the target is a kernel mode of eigenvalue λ*
    (right-hand side of Eq. 9 divided by σ²). Returns (α, q_train, κ).

    S, N, lam_perp (eigenvalue of the N(S−1) linear modes orthogonal to the target direction)
    and r (trace of the non-linear modes) are needed only for the κ modes.

    q_train a number: α = [1 − q λ*/(λ* + σ²/n)]/σ² (Eq. 9 as printed; κ = σ²).
    'first_order' / 'renormalized': α = 1/(nλ* + κ) with κ as in the module docstring, and
    q_train = (1 − σ²α)(λ* + σ²/n)/λ* (the q that gives the same α in Eq. 9's form).
    """
    if isinstance(q_train, str):
        if q_train not in Q_TRAIN_MODES:
            raise ValueError(
                f"q_train={q_train!r} is not a number or one of {Q_TRAIN_MODES}"
            )
        if S is None or N is None or lam_perp is None:
            raise ValueError(f"q_train={q_train!r} needs S, N and lam_perp")
        kappa = _kappa(q_train, n, S, N, sigma2, lam_perp, lam_star, r)
        a = 1.0 / (n * lam_star + kappa)
        q = (1.0 - sigma2 * a) * (lam_star + sigma2 / n) / lam_star
        return a, q, kappa
    q = float(q_train)
    a = (1.0 - q * lam_star / (lam_star + sigma2 / n)) / sigma2
    return a, q, sigma2


def eq9_residual(
    alpha: float,
    n: int,
    S: int,
    N: int,
    C: float,
    sigma2: float,
    sigma_a2: float = 1.0,
    sigma_w2: float = 1.0,
    q_train: float = 1.0,
    teacher_norms: tuple[float, float] | None = None,
) -> float:
    """σ²α − 1 + q λ*/(λ* + σ²/n) with λ* = S λ∞ l*/σ_w², l* = (σ_w²/S)/(1 − χ2) (Eq. 9).

    Written independently of `solve_eq9` (in the paper's variables, with a fixed numeric q)
    so that tests can check the solver's output against the equation itself. Returns +inf
    off the physical branch (χ2 ≥ 1)."""
    lam = cnn2_lambda_inf(S, N, sigma_a2, sigma_w2)
    a2, w2 = teacher_norms if teacher_norms is not None else (1.0, 1.0)
    chi2 = alpha**2 * n**2 * lam * a2 * w2 / C
    if chi2 >= 1.0:
        return math.inf
    l_star = (sigma_w2 / S) / (1.0 - chi2)
    lam_star = S * lam * l_star / sigma_w2
    return sigma2 * alpha - 1.0 + q_train * lam_star / (lam_star + sigma2 / n)


def solve_eq9(
    n: int,
    S: int,
    N: int,
    C: float,
    sigma2: float,
    sigma_a2: float = 1.0,
    sigma_w2: float = 1.0,
    q_train: float | str = 1.0,
    teacher_norms: tuple[float, float] | None = None,
    kinv_term: bool = False,
    finite_s: bool = False,
) -> Eq9Result:
    """Solve Eq. 9 for the train α of the 2-layer CNN (Eq. 7) at C channels.

    teacher_norms: (|a*|², |w*|²) of the actual teacher; None means the paper's (1, 1).
    q_train: a number (1 = EK limit, Eq. 9 as printed), 'first_order' (first 1/n correction)
    or 'renormalized' (all orders in the renormalized ridge κ).
    kinv_term: keep the −K_f⁻¹ part of the trace in Eq. 8's last line (the paper drops it;
    it shifts every eigenvalue of Σ⁻¹ by the O(N/C) amount δ = (N/C) nλ∞/(nλ∞ + κ_GP), see
    the derivation), giving l⊥ = (σ_w²/S)/(1 + δ) and l* = (σ_w²/S)/(1 + δ − χ2).
    finite_s: keep the finite-S leakage of the target out of the kernel's linear modes
    (fraction ν = `cnn2_target_leakage(S, σ_w²)`, O(1/S)): those components are fitted
    with the ridge κ alone, so the reported α becomes (1 − ν) α_lin + ν/κ and the test α
    (1 − ν) κ α_lin/σ² + ν/σ², where α_lin is the α of Eq. 9 (which also sets χ2). The paper
    drops it (f̄ linear "at large S"); it matters when nλ* ≫ κ (large n), see the derivation.
    C = math.inf gives the GP value (χ2 = 0, l* = σ_w²/S).

    Physical branch: Σ must stay positive definite, i.e. χ2 < 1 + δ (l* > 0). We solve in
    the variable χ2 ∈ [0, 1 + δ): α(χ2) = √(χ2 C / (n² λ∞ |a*|²|w*|²)) is increasing,
    λ*(χ2) = λ∞/(1 + δ − χ2) → ∞ at the end of the branch, so the train α that GP inference
    predicts for that mode, F(χ2), decreases from F(0) > 0 to F(end) = (1 − q)/σ² (0 for the
    κ modes). Hence h(χ2) = α(χ2) − F(χ2) rises from −F(0) to α_max − F(end): exactly one
    root on the branch when F(0) > 0 (the GP's train α is positive: always for q ≤ 1 and the
    κ modes) and α_max > F(end) (always for q ≥ 1 and the κ modes), found by brentq. If there
    is no root on the branch (a q_train far from 1), `converged` is False and alpha is nan.
    """
    _check_positive(n=n, S=S, N=N, C=C, sigma2=sigma2)
    lam = cnn2_lambda_inf(S, N, sigma_a2, sigma_w2)
    r = cnn2_nonlinear_trace(sigma_a2, sigma_w2)
    if teacher_norms is None:
        a2, w2 = 1.0, 1.0
    else:
        a2, w2 = (float(v) for v in teacher_norms)
        _check_positive(teacher_norm_a2=a2, teacher_norm_w2=w2)

    nu = cnn2_target_leakage(S, sigma_w2) if finite_s else 0.0
    delta = 0.0
    if kinv_term and not math.isinf(C):
        _, _, kappa_gp = train_alpha_of_lambda(
            lam, n, sigma2, q_train, S=S, N=N, lam_perp=lam, r=r
        )
        delta = (N / C) * n * lam / (n * lam + kappa_gp)
    lam_perp = lam / (1.0 + delta)

    def F(chi2: float) -> tuple[float, float, float]:
        lam_star = lam / (1.0 + delta - chi2)
        return train_alpha_of_lambda(
            lam_star, n, sigma2, q_train, S=S, N=N, lam_perp=lam_perp, r=r
        )

    def finish(chi2: float, converged: bool) -> Eq9Result:
        alpha_lin, q, kappa = F(chi2)
        lam_star = lam / (1.0 + delta - chi2)
        l_star = (sigma_w2 / S) / (1.0 + delta - chi2)
        res = abs(sigma2 * alpha_lin - 1.0 + q * lam_star / (lam_star + sigma2 / n))
        # The χ2 equation itself: χ2 = α² n² λ∞ |a*|²|w*|² / C.
        chi_res = 0.0 if math.isinf(C) else abs(chi2 - alpha_lin**2 * n**2 * lam * a2 * w2 / C)
        alpha = (1.0 - nu) * alpha_lin + nu / kappa
        alpha_test = (1.0 - nu) * kappa * alpha_lin / sigma2 + nu / sigma2
        ok = converged and res <= 1e-10 and chi_res <= 1e-10
        return Eq9Result(
            alpha=alpha,
            l_star=l_star,
            chi2=chi2,
            lambda_inf=lam,
            q_train=q,
            converged=ok,
            lambda_star=lam_star,
            kappa=kappa,
            alpha_test=alpha_test,
            residual=max(res, chi_res),
            l_perp=(sigma_w2 / S) / (1.0 + delta),
            alpha_lin=alpha_lin,
            nu=nu,
        )

    if math.isinf(C):
        return finish(0.0, True)

    scale = C / (n**2 * lam * a2 * w2)  # α² = χ2 · scale

    def h(chi2: float) -> float:
        return math.sqrt(chi2 * scale) - F(chi2)[0]

    hi = (1.0 + delta) * (1.0 - 1e-15)
    if h(hi) <= 0.0 or h(0.0) >= 0.0:
        nan = math.nan
        return Eq9Result(nan, nan, nan, lam, nan, False, residual=nan)
    chi2 = brentq(h, 0.0, hi, xtol=1e-16, rtol=4 * np.finfo(float).eps, maxiter=500)
    return finish(chi2, True)


def analytic_sigma(
    S: int,
    w_star: np.ndarray,
    l_star: float,
    sigma_w2: float = 1.0,
    l_perp: float | None = None,
) -> np.ndarray:
    """Σ of the analytic solution: l* along ŵ = w*/|w*|, σ_w²/S on its orthogonal complement
    (the inert eigenvalues of Eq. 9; pass `l_perp` = Eq9Result.l_perp to override when the
    K_f⁻¹ term is kept). Returns an (S, S) float64 array."""
    w = np.asarray(w_star, dtype=np.float64).reshape(-1)
    if w.shape[0] != S:
        raise ValueError(f"w_star has length {w.shape[0]}, expected S = {S}")
    norm = np.linalg.norm(w)
    if norm == 0:
        raise ValueError("w_star must be non-zero")
    u = w / norm
    base = sigma_w2 / S if l_perp is None else float(l_perp)
    return base * np.eye(S) + (l_star - base) * np.outer(u, u)


RECOMMENDED_OPTIONS: dict[str, Any] = {"q_train": "renormalized", "kinv_term": True,
                                       "finite_s": True}
"""The derivation's recommended (corrected) form of Eq. 9 (docs/derivations/cnn2_analytic.md);
used with the actual teacher norms."""
PRINTED_OPTIONS: dict[str, Any] = {"q_train": 1.0, "kinv_term": False, "finite_s": False}
"""Eq. 9 exactly as printed: the equivalent-kernel q_train = 1, no K_f⁻¹ term, no finite-S
leakage; used with |a*|² = |w*|² = 1 (`unit_teacher_norms=True`), as the paper assumes."""


def analytic_observables(
    problem: Any, C: float, teacher: Mapping[str, np.ndarray], *,
    unit_teacher_norms: bool = False, **options: Any,
) -> dict[str, Any]:
    """Eq. 9 at C for a `fleos.theory.eos.cnn2.CNN2Problem`, and GP inference with Q_f(Σ_Eq.9).

    As in the paper's Fig. 3 (dashed lines): Σ is obtained analytically (l* along w*), then
    the test α comes from numerical GP inference with that Σ. `teacher` holds `teacher_w`
    (w*) and optionally `teacher_param_a` (a*, for the teacher norms). `options` override
    `RECOMMENDED_OPTIONS` (q_train, kinv_term, finite_s); Eq. 9 as printed is
    ``**PRINTED_OPTIONS, unit_teacher_norms=True`` (|a*|² = |w*|² = 1 instead of the actual
    teacher's norms). A root that Eq. 9 does not have is reported with converged = False and
    NaN predictions.
    """
    from fleos.theory.eos.cnn2 import cnn2_observables

    if "teacher_w" not in teacher:
        raise ValueError("the analytic solution needs the teacher input weight: key "
                         "'teacher_w' missing from the data")
    opts = {**RECOMMENDED_OPTIONS, **options}
    w_star = np.asarray(teacher["teacher_w"], dtype=np.float64).reshape(-1)
    norms = None
    if "teacher_param_a" in teacher and not unit_teacher_norms:
        norms = (float(np.sum(np.asarray(teacher["teacher_param_a"], np.float64) ** 2)),
                 float(w_star @ w_star))
    r = solve_eq9(problem.n, problem.S, problem.N, C, problem.sigma2, problem.sigma_a2,
                  problem.sigma_w2, teacher_norms=norms, **opts)
    out: dict[str, Any] = {
        "alpha_train": float(r.alpha), "l_star": float(r.l_star), "chi2": float(r.chi2),
        "lambda_inf": float(r.lambda_inf), "converged": bool(r.converged),
        "alpha_test_ek": float(r.alpha_test),
        "alpha_test_gp_inference": math.nan, "alpha_train_gp_inference": math.nan,
        "options": {**opts, "teacher_norms": norms},
    }
    if r.converged:
        l_perp = r.l_perp if np.isfinite(r.l_perp) else None
        Sigma = analytic_sigma(problem.S, w_star, r.l_star, problem.sigma_w2, l_perp=l_perp)
        obs = cnn2_observables(problem, Sigma)
        out["alpha_test_gp_inference"] = float(obs["alpha_test"])
        out["alpha_train_gp_inference"] = float(obs["alpha_train"])
    return out
