"""Feature-learning scale (FLS) χ and the width at which χ = 1 (paper, Eq. 6 and Fig. 2c).

FCN (Eq. 6 convention): χ = (σ_L²/N_{L-1}) εᵀ Q^(L-1) ε, ε = (y − f̄)/σ² = K_f⁻¹ y.
Eq. 6 shows the feature-learning term of Eq. 5 (line 2) for a linear penultimate layer as the
rank-one update (σ_L²/N_{L-1}) εεᵀ of (Q^(L-1))⁻¹; its size relative to (Q^(L-1))⁻¹ is
χ. The paper writes χ = N⁻¹ εᵀ Q^(L-1) ε with σ_L² = O(1) absorbed; we keep σ_L² because it
is what distinguishes the mean-field scaling (σ_L² = σ_a²/N; for Fig. 2c the paper fixes
σ_L² = 2/256). We use ε = (y − f̄)/σ², the ε of Eq. 5/8 (Eq. 6's "/σ" is dimensionally
inconsistent with its own K_f⁻¹ term; see docs/derivations/fcn.md).

2-layer CNN (matrix form of Eq. 8): the εεᵀ term shifts Σ⁻¹ = (S/σ_w²) I − (1/C) M − …, with
M = ∂(εᵀ Q_f(Σ) ε)/∂Σ; relative to Σ_GP⁻¹ its size is χ = λ_max(Σ_GP^{1/2} M Σ_GP^{1/2})/C.
Along w* this is the χ_2 = α² n² λ_∞/C of Eq. 9 (l* = [1 − χ_2]⁻¹/S).

Two normalizations (docs/derivations/fls_normalization.md). Ours (``convention="fleos"``,
above) is the one of Eqs. 5/8 and of Eq. 9's χ_2 = α²n²λ_∞/C: it reproduces the paper's CNN
number (α_GP² n² λ_∞ = 634 vs the printed 633.2). Eq. 6 as printed
(``convention="eq6_printed"``: ε = (y − f̄)/σ, σ_L² absorbed) is smaller by the factor
σ²/σ_L² (`printed_factor`): ≈ 1/200 for the standard FCN (σ² = 0.01, σ_L² = 2), which is what
the paper's statement "FCNs with standard scaling require N = O(1)" needs.

χ ∝ 1/width at fixed ε, and we evaluate ε (and Q) at the GP solution (width → ∞), so the
width at which χ = 1 is the width-free number χ·width at the GP point (for the FCN in MF
scaling σ_L² is held fixed, as in the paper's Fig. 2c).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import fleos  # noqa: F401  (float64)
from fleos.core import gp as gpmod
from fleos.core.kernels import cnn2_output_kernel, fcn_gp_kernels, patches

Array = jnp.ndarray

ARCHS = ("fcn_standard", "fcn_mf", "cnn2")
CONVENTIONS = ("fleos", "eq6_printed")

# Defaults: Fig. 2b geometry for the FCNs, Fig. 3 geometry for the CNN.
DEFAULTS: dict[str, dict[str, Any]] = {
    "fcn_standard": {"d": 128, "depth": 3, "sigma_w2": 2.0, "sigma_a2": 2.0, "sigma2": 0.01,
                     "activation": "erf"},
    # Mean-field: readout variance in Q_f fixed at 2/256 (the paper, Fig. 2c).
    "fcn_mf": {"d": 128, "depth": 3, "sigma_w2": 2.0, "sigma_a2": 2.0 / 256, "sigma2": 0.01,
               "activation": "erf"},
    "cnn2": {"S": 64, "N": 20, "sigma_w2": 2.0, "sigma_a2": 2.0, "sigma2": 0.1,
             "activation": "erf"},
}


def chi(eps: Array, Q_prev: Array, width: float, readout_var: float = 1.0) -> float:
    """χ = (σ_L²/N) εᵀ Q^(L-1) ε (Eq. 6 convention; see module docstring)."""
    return float(readout_var * (eps @ Q_prev @ eps) / width)


def fcn_chi_times_width(
    X: Array, y: Array, sigma_w2: float, readout_var: float, sigma2: float, depth: int = 3,
    activation: str = "erf",
) -> float:
    """N · χ at the GP solution of an FCN: σ_L² ε_GPᵀ Q^(L-1) ε_GP (= width at χ = 1)."""
    ks = fcn_gp_kernels(jnp.asarray(X), (sigma_w2,) * (depth - 1) + (readout_var,), activation)
    eps = gpmod.discrepancy(gpmod.gp_fit(ks[-1], jnp.asarray(y), sigma2))
    return chi(eps, ks[-2], 1.0, readout_var)


@partial(jax.jit, static_argnames=("activation",))
def _cnn2_patch_terms(P_i: Array, Sigma: Array, eps: Array, scale: Array, activation: str):  # noqa: ANN202
    """Q_f contribution of one patch and ∂(εᵀ Q_f,i ε)/∂Σ (one patch at a time: memory)."""
    def f(S: Array) -> Array:
        return cnn2_output_kernel(P_i, P_i, S, scale, activation)

    Qi = f(Sigma)
    g = jax.grad(lambda S: eps @ f(S) @ eps)(Sigma)
    return Qi, g


def cnn2_chi_matrix(
    X: Array, y: Array, S: int, N: int, sigma_w2: float, sigma_a2: float, sigma2: float,
    Sigma: Array | None = None, activation: str = "erf",
) -> tuple[Array, Array]:
    """(M, Q_f) for the 2-layer CNN: M = ∂(εᵀ Q_f(Σ) ε)/∂Σ with ε from GP inference at Σ.

    Σ defaults to the GP value σ_w²/S I. The per-patch kernels of Eq. 8 are summed patch by
    patch (fleos.core.kernels.cnn2_output_kernel on one patch, scaled by 1/N).
    """
    P = patches(jnp.asarray(X), N, S)
    if Sigma is None:
        Sigma = (sigma_w2 / S) * jnp.eye(S, dtype=jnp.float64)
    # cnn2_output_kernel divides by its number of patches (1 here): pass σ_a²/N.
    scale = jnp.asarray(sigma_a2 / N, dtype=jnp.float64)
    zero = jnp.zeros(P.shape[0], dtype=jnp.float64)
    Qf = sum(_cnn2_patch_terms(P[:, i : i + 1], Sigma, zero, scale, activation)[0]
             for i in range(N))
    eps = gpmod.discrepancy(gpmod.gp_fit(Qf, jnp.asarray(y), sigma2))
    M = sum(_cnn2_patch_terms(P[:, i : i + 1], Sigma, eps, scale, activation)[1]
            for i in range(N))
    return 0.5 * (M + M.T), Qf


def cnn2_chi_times_width(
    X: Array, y: Array, S: int, N: int, sigma_w2: float, sigma_a2: float, sigma2: float,
    activation: str = "erf",
) -> float:
    """C · χ at the GP solution: λ_max(Σ_GP^{1/2} M Σ_GP^{1/2}) (= channels at χ = 1)."""
    M, _ = cnn2_chi_matrix(X, y, S, N, sigma_w2, sigma_a2, sigma2, activation=activation)
    return float(jnp.linalg.eigvalsh((sigma_w2 / S) * M)[-1])


def _config(arch: str, overrides: dict[str, Any]) -> dict[str, Any]:
    if arch not in ARCHS:
        raise ValueError(f"unknown FLS arch {arch!r}; allowed: {list(ARCHS)}")
    cfg = dict(DEFAULTS[arch])
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in cfg:
            raise ValueError(f"unknown FLS option {key!r} for arch {arch!r}; allowed: {list(cfg)}")
        cfg[key] = value
    return cfg


def printed_factor(cfg: dict[str, Any]) -> float:
    """χ of Eq. 6 as printed over ours: σ²/σ_L² (ε/σ instead of ε/σ² squares to a factor σ²;
    σ_L² absorbed drops the readout variance), σ_L² = the readout variance in Q_f
    (`sigma_a2`: σ_a² standard, the fixed 2/256 mean-field, σ_a² for the CNN)."""
    return float(cfg["sigma2"] / cfg["sigma_a2"])


def _teacher_data(arch: str, cfg: dict[str, Any], n: int, data_seed: int,
                  teacher_seed: int) -> Any:
    from fleos.nets.data import make_dataset

    if arch.startswith("fcn"):
        # The teacher has the standard readout (width 1); MF only changes the student's σ_L².
        tcfg = {"d": cfg["d"], "depth": cfg["depth"], "sigma_w2": cfg["sigma_w2"],
                "sigma_a2": DEFAULTS["fcn_standard"]["sigma_a2"], "activation": cfg["activation"]}
        return make_dataset("fcn", tcfg, n, 0, teacher_seed, data_seed)
    tcfg = {"S": cfg["S"], "N": cfg["N"], "sigma_w2": cfg["sigma_w2"], "sigma_a2": cfg["sigma_a2"]}
    return make_dataset("cnn2", tcfg, n, 0, teacher_seed, data_seed)


def width_at_chi_one(
    arch: str, n: int, data_seed: int = 1, teacher_seed: int = 0, convention: str = "fleos",
    **overrides: Any,
) -> float:
    """Width N_{L-1} (FCN) or channels C (CNN) at which χ = 1, for n teacher samples.

    Data: fleos.nets.data.make_dataset with the arch's teacher (iid Gaussian inputs). χ is
    evaluated at the GP solution, in `convention` "fleos" (ε/σ², σ_L² kept) or "eq6_printed"
    (ε/σ, σ_L² absorbed); see the module docstring.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    cfg = _config(arch, overrides)
    ds = _teacher_data(arch, cfg, n, data_seed, teacher_seed)
    if arch.startswith("fcn"):
        w = fcn_chi_times_width(ds.X, ds.y, cfg["sigma_w2"], cfg["sigma_a2"], cfg["sigma2"],
                                cfg["depth"], cfg["activation"])
    else:
        w = cnn2_chi_times_width(ds.X, ds.y, cfg["S"], cfg["N"], cfg["sigma_w2"],
                                 cfg["sigma_a2"], cfg["sigma2"], cfg["activation"])
    return w * (printed_factor(cfg) if convention == "eq6_printed" else 1.0)


def fls_curve(
    arch: str, ns: Sequence[int], data_seeds: Sequence[int] = (1, 2, 3), teacher_seed: int = 0,
    **overrides: Any,
) -> dict[str, Any]:
    """Fig. 2c curve: width at χ = 1 vs n, mean/std/min/max over data seeds (fixed teacher),
    in our convention; ``width_mean_eq6_printed`` in Eq. 6's printed one (× `printed_factor`);
    ``y_var``: the teacher's output variance ⟨y²⟩ over all the data sets used."""
    cfg = _config(arch, overrides)
    per_seed = np.array([[width_at_chi_one(arch, int(n), s, teacher_seed, **overrides)
                          for s in data_seeds] for n in ns])
    y_var = float(np.mean([np.mean(np.asarray(_teacher_data(arch, cfg, int(n), s,
                                                            teacher_seed).y) ** 2)
                           for n in ns for s in data_seeds]))
    return {
        "arch": arch,
        "config": cfg,
        "printed_factor": printed_factor(cfg),
        "y_var": y_var,
        "width_mean_eq6_printed": (per_seed.mean(axis=1) * printed_factor(cfg)).tolist(),
        "teacher_seed": teacher_seed,
        "data_seeds": list(data_seeds),
        "n": [int(n) for n in ns],
        "width_mean": per_seed.mean(axis=1).tolist(),
        "width_std": (per_seed.std(axis=1, ddof=1) if len(data_seeds) > 1
                      else np.zeros(len(ns))).tolist(),
        "width_min": per_seed.min(axis=1).tolist(),
        "width_max": per_seed.max(axis=1).tolist(),
        "per_seed": per_seed.tolist(),
    }
