"""Equations of state of the 3-layer CNN (Eq. 14) evaluated at empirical kernels (Fig. 5).

Geometry (Eq. 14, docs/architecture.md): x ∈ R^{N·S1·S0}; input patch (j, i) = x[(i + j·S1)·S0 :
(i + j·S1 + 1)·S0], j ∈ [0, N), i ∈ [0, S1). Input layer h1_{cji} = w_c · x_{(j,i)} with
w_c ~ N(0, Σ) (prior Σ = σ_w²/S0 I); hidden h2_{c'j} = Σ_{i,c} v_{c'ci} φ(h1_{cji}) with
v ~ N(0, σ_v²/(C1 S1)); readout f = Σ_{j,c'} a_{c'j} φ(h2_{c'j}) with a ~ N(0, σ_a²/(C2 N)).

Kernels. Hidden-layer index (μ, j) is flattened μ-major: row μ·N + j (the order of the sampler's
h2 of shape (batch, N, C2) reshaped to (batch·N, C2)).
    K1_{(μji),(νj'i')} = x_{μ,(j,i)} Σ x_{ν,(j',i')}
    Q2_{(μj),(νj')}    = (σ_v²/S1) Σ_i G(K1)_{(μji),(νj'i)}        (v shares i: same-i pairs)
    Q_f,μν             = (σ_a²/N) Σ_j G(K2)_{(μj),(νj)}             (a shares j: same-j pairs)
Q2 is (nN × nN) (2000 × 2000 at the paper's size); it is accumulated over i one (nN × nN) block
at a time, never holding the (n N S1)² matrix K1.

Equations (Eq. 5 with C1, C2 in place of N1, N2; derivation in docs/derivations/cnn3.md):
    Σ_pred⁻¹ = (S0/σ_w²) I + (2 C2/C1) ∂D_KL(K2 ‖ Q2(Σ))/∂Σ                (Eq. 5, line 4)
where ∂D_KL/∂Σ = Tr{½ Q2⁻¹(Q2 − K2)Q2⁻¹ ∂Q2/∂Σ}. Fig. 5 evaluates it as the paper did, with
both kernels of the KL term estimated empirically (K̂2 and Q̂2, the recorded `Q2/mean`) and
the analytic ∂Q2/∂Σ at Σ_emp (`post_kernel="empirical"`). With the analytic Q2(Σ_emp) in the
KL term instead (`post_kernel="analytic"`), K̂2 − Q2 in Q2's small-eigenvalue directions
(Q2 is ill-conditioned) dominates and Σ_pred⁻¹ can turn indefinite (docs/figures.md, Fig. 5).
    Q2_pred  = [K2⁻¹ + (1/C2) Tr{A ∂Q_f/∂K2}]⁻¹,  A = εεᵀ − K_f⁻¹, f̄ from Q_f(K2)  (line 2)
with ∂D_KL(K‖Q)/∂Q = −½ Q⁻¹(K − Q)Q⁻¹ (see fleos.theory.eos.fcn). float64 throughout (inverses of
2000 × 2000 kernels); `ridge`·I regularizes empirical kernels of limited rank.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import fleos  # noqa: F401  (float64)
from fleos.core import gp as gpmod
from fleos.core.kernels import activation_kernel, patches, post_kernel
from fleos.core.linalg import spd_inverse
from fleos.theory.eos.fcn import kl_grad_wrt_q

Array = jnp.ndarray


def cnn3_patches(X: Array, N: int, S1: int, S0: int) -> Array:
    """(n, N, S1, S0) array with [μ, j, i] = input patch (j, i) of row μ (Eq. 14)."""
    P = patches(jnp.asarray(X, dtype=jnp.float64), N * S1, S0)  # patch p = i + j·S1
    return P.reshape(P.shape[0], N, S1, S0)


def _hidden_rows(P: Array, i: Any) -> Array:
    """(n·N, S0) rows x_{μ,(j,i)} for one i, μ-major."""
    n, N = P.shape[0], P.shape[1]
    return jax.lax.dynamic_index_in_dim(P, i, axis=2, keepdims=False).reshape(n * N, -1)


@partial(jax.jit, static_argnames=("activation",))
def q2_from_sigma(P: Array, Sigma: Array, sigma_v2: float, activation: str = "erf") -> Array:
    """Q2 = (σ_v²/S1) Σ_i G(K1_i), K1_i = P_i Σ P_iᵀ (nN × nN), accumulated over i."""
    S1 = P.shape[2]
    nN = P.shape[0] * P.shape[1]

    def body(i: Any, acc: Array) -> Array:
        Pi = _hidden_rows(P, i)
        return acc + post_kernel(Pi @ Sigma @ Pi.T, activation)

    acc = jax.lax.fori_loop(0, S1, body, jnp.zeros((nN, nN), dtype=jnp.float64))
    return (sigma_v2 / S1) * acc


@partial(jax.jit, static_argnames=("activation",))
def q2_vjp_sigma(
    P: Array, Sigma: Array, B: Array, sigma_v2: float, activation: str = "erf"
) -> Array:
    """Tr{B ∂Q2/∂Σ} = ∇_Σ ⟨B, Q2(Σ)⟩, one i-block at a time (memory O((nN)²))."""
    S1 = P.shape[2]

    def body(i: Any, acc: Array) -> Array:
        Pi = _hidden_rows(P, i)
        _, vjp = jax.vjp(lambda K: post_kernel(K, activation), Pi @ Sigma @ Pi.T)
        Kbar = vjp(B)[0]
        return acc + Pi.T @ Kbar @ Pi

    acc = jax.lax.fori_loop(0, S1, body, jnp.zeros_like(Sigma))
    return (sigma_v2 / S1) * acc


def qf_from_k2(K2: Array, N: int, sigma_a2: float, activation: str = "erf") -> Array:
    """Q_f,μν = (σ_a²/N) Σ_j G(K2)_{(μj),(νj)} (n × n) from the (nN × nN) hidden pre-kernel."""
    nN = K2.shape[0]
    n = nN // N
    K4 = K2.reshape(n, N, n, N)
    Kjj = jnp.einsum("ajbj->jab", K4)  # (N, n, n) same-j blocks
    diag = jnp.einsum("jaa->ja", Kjj)
    G = activation_kernel(activation)(Kjj, diag[:, :, None], diag[:, None, :])
    return (sigma_a2 / N) * jnp.sum(G, axis=0)


def gp_kernels(
    X: Array, N: int, S1: int, S0: int, sigma_w2: float, sigma_v2: float,
    activation: str = "erf",
) -> tuple[Array, Array]:
    """The C → ∞ kernels: Σ_GP = σ_w²/S0 I and Q2_GP = K2_GP = Q2(Σ_GP)."""
    Sigma = (sigma_w2 / S0) * jnp.eye(S0, dtype=jnp.float64)
    return Sigma, q2_from_sigma(cnn3_patches(X, N, S1, S0), Sigma, sigma_v2, activation)


def kl_grad_sigma(
    X: Array, Sigma: Array, K2: Array, N: int, S1: int, S0: int, sigma_v2: float,
    ridge: float = 0.0, activation: str = "erf", Q2: Array | None = None,
) -> Array:
    """∂D_KL(K2 ‖ Q2)/∂Σ = Tr{½ Q2⁻¹(Q2 − K2)Q2⁻¹ ∂Q2/∂Σ} (Eq. 5, line 4; ridge added to Q2).

    ∂Q2/∂Σ is always the analytic one at `Sigma`. The Q2 inside the KL term is `Q2` when
    given (the empirical post-kernel Q̂2, as in the paper's Fig. 5), else the analytic
    Q2(Sigma). With Q̂2 this is the gradient at Σ of D_KL(K2 ‖ Q̂2 + Q2(Σ') − Q2(Σ)).
    """
    P = cnn3_patches(X, N, S1, S0)
    Sigma = jnp.asarray(Sigma, dtype=jnp.float64)
    Q2 = (q2_from_sigma(P, Sigma, sigma_v2, activation) if Q2 is None
          else jnp.asarray(Q2, dtype=jnp.float64))
    Q2 = Q2 + ridge * jnp.eye(Q2.shape[0], dtype=jnp.float64)
    B = kl_grad_wrt_q(jnp.asarray(K2, dtype=jnp.float64), spd_inverse(Q2))
    g = q2_vjp_sigma(P, Sigma, B, sigma_v2, activation)
    return 0.5 * (g + g.T)


def predict_sigma(
    X: Array, Sigma_emp: Array, K2_emp: Array, C1: float, C2: float, *, N: int, S1: int,
    S0: int, sigma_w2: float, sigma_v2: float, ridge: float = 0.0, activation: str = "erf",
    Q2_emp: Array | None = None,
) -> Array:
    """Σ predicted by the last line of Eq. 5 at the empirical Σ and K2 (Fig. 5, left).

    Σ_pred⁻¹ = (S0/σ_w²) I + (2 C2/C1) ∂D_KL(K2 ‖ Q2)/∂Σ |_{Σ = Σ_emp}, with Q2 = `Q2_emp`
    (the empirical post-kernel: the paper's choice) when given, else the analytic
    Q2(Σ_emp) (`kl_grad_sigma`). Returns the inverse of that matrix (NaN-free even if it is
    indefinite; check its eigenvalues).
    """
    g = kl_grad_sigma(X, Sigma_emp, K2_emp, N, S1, S0, sigma_v2, ridge, activation,
                      Q2=Q2_emp)
    prec = (S0 / sigma_w2) * jnp.eye(S0, dtype=jnp.float64) + (2.0 * C2 / C1) * g
    Sp = jnp.linalg.inv(prec)
    return 0.5 * (Sp + Sp.T)


def predict_q2(
    K2_emp: Array, y: Array, sigma2: float, C2: float, *, N: int, sigma_a2: float,
    ridge: float = 0.0, activation: str = "erf",
) -> Array:
    """Q2 predicted from the empirical K2 by the second line of Eq. 5 (Fig. 5, right).

    Q2_pred = [K2⁻¹ + (1/C2) Tr{A ∂Q_f/∂K2}]⁻¹, A = εεᵀ − K_f⁻¹, ε = K_f⁻¹ y, K_f = Q_f(K2) + σ²I.
    """
    K2 = jnp.asarray(K2_emp, dtype=jnp.float64)
    y = jnp.asarray(y, dtype=jnp.float64)
    Qf, vjp = jax.vjp(lambda K: qf_from_k2(K, N, sigma_a2, activation), K2)
    n = Qf.shape[0]
    Kf_inv = spd_inverse(Qf + sigma2 * jnp.eye(n, dtype=jnp.float64))
    eps = Kf_inv @ y
    A = jnp.outer(eps, eps) - Kf_inv
    tr = vjp(A)[0]
    K2_inv = spd_inverse(K2 + ridge * jnp.eye(K2.shape[0], dtype=jnp.float64))
    M = K2_inv + (1.0 / C2) * 0.5 * (tr + tr.T)
    Qp = jnp.linalg.inv(M)
    return 0.5 * (Qp + Qp.T)


def fig5_spectra(
    X: Array, y: Array, Sigma_emp: Array, K2_emp: Array, Q2_emp: Array | None, C1: float,
    C2: float, *, N: int, S1: int, S0: int, sigma2: float, sigma_w2: float, sigma_v2: float,
    sigma_a2: float, ridge: float = 0.0, activation: str = "erf", top_sigma: int = 50,
    top_q2: int = 100,
) -> dict[str, Any]:
    """Everything Fig. 5 draws, as descending spectra (the workflow's theory rule and
    `fleos eos cnn3` both call this):

    * ``sigma_pred_eigs``: Σ_pred (Eq. 5, line 4) with the empirical Q̂2 in the KL term (the
      paper's; None without Q̂2), ``sigma_pred_analytic_q2_eigs`` with the analytic Q2(Σ_emp);
      ``*_valid``: whether that Σ_pred is positive definite;
    * ``q2_pred_eigs``: Q2 predicted from K̂2 (Eq. 5, line 2);
    * ``sigma_emp_eigs``, ``q2_emp_eigs``; ``sigma_gp_eigs``, ``q2_gp_eigs`` (C → ∞).
    """
    geo = {"N": N, "S1": S1, "S0": S0}
    kw = {**geo, "sigma_w2": sigma_w2, "sigma_v2": sigma_v2, "ridge": ridge,
          "activation": activation}
    s_an = top_eigs(predict_sigma(X, Sigma_emp, K2_emp, C1, C2, **kw), top_sigma)
    s_emp = (top_eigs(predict_sigma(X, Sigma_emp, K2_emp, C1, C2, Q2_emp=Q2_emp, **kw),
                      top_sigma) if Q2_emp is not None else None)
    q_pred = predict_q2(K2_emp, y, sigma2, C2, N=N, sigma_a2=sigma_a2, ridge=ridge,
                        activation=activation)
    s_gp, q_gp = gp_kernels(X, N, S1, S0, sigma_w2, sigma_v2, activation)
    return {
        "sigma_pred_eigs": s_emp,
        "sigma_pred_valid": bool(s_emp is not None and min(s_emp) > 0),
        "sigma_pred_analytic_q2_eigs": s_an,
        "sigma_pred_analytic_q2_valid": bool(min(s_an) > 0),
        "q2_pred_eigs": top_eigs(q_pred, top_q2),
        "sigma_emp_eigs": top_eigs(Sigma_emp, top_sigma),
        "q2_emp_eigs": top_eigs(Q2_emp, top_q2) if Q2_emp is not None else None,
        "sigma_gp_eigs": top_eigs(s_gp, top_sigma), "q2_gp_eigs": top_eigs(q_gp, top_q2),
    }


def top_eigs(M: Array, k: int) -> list[float]:
    """The k largest eigenvalues of a symmetric matrix, descending."""
    ev = np.linalg.eigvalsh(np.asarray(M))[::-1]
    return [float(v) for v in ev[:k]]


def gp_alpha(K2: Array, y: Array, sigma2: float, N: int, sigma_a2: float,
             activation: str = "erf") -> float:
    """Train α of GP inference with Q_f(K2) (e.g. at the empirical or the GP K2)."""
    Qf = qf_from_k2(jnp.asarray(K2), N, sigma_a2, activation)
    fit = gpmod.gp_fit(Qf, jnp.asarray(y), sigma2)
    return float(gpmod.alpha(jnp.asarray(y), gpmod.gp_train_mean(fit, jnp.asarray(y)), sigma2))
