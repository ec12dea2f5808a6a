"""Equilibration diagnostics for Langevin chains (numpy, host side).

The paper's equilibrium claims rest on autocorrelation times (Methods: ~1e3 epochs for the
readout, up to ~1e6 for input layers) and on agreement between independent seeds. These
functions quantify both:

* `integrated_autocorr_time(x)`: τ = 1 + 2 Σ_{t≥1} ρ(t), estimated with Sokal's automatic
  window (smallest M with M ≥ c·τ(M), c = 5) or Geyer's initial monotone positive sequence;
* `effective_sample_size(x)`: n/τ (chains × time: total draws / τ of the chain-averaged ACF);
* `split_rhat(x)`: Gelman et al. split-R̂ over chains × time;
* `rhat_rank`, `ess_bulk`, `ess_mean`: the rank-normalized split-R̂ and the multi-chain
  effective sample sizes of Vehtari, Gelman, Simpson, Carpenter & Bürkner, "Rank-normalization,
  folding, and localization: an improved R̂ for assessing convergence of MCMC", Bayesian
  Analysis 16, 667 (2021) (the conventions of Stan and ArviZ, to which the tests compare);
* `half_drift`: the change of the mean between the first and second half of the window, in
  units of its Monte Carlo standard error;
* `ar1_chains`: stationary AR(1) chains, the null model against which these diagnostics'
  chance failures are calibrated.

Conventions: a 1-D array is one chain; a 2-D array is (chains, time). Computations in float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

_METHODS = ("sokal", "geyer")


def _as_chains(x: np.ndarray, name: str = "x") -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{name} must be 1-D (time) or 2-D (chains, time), got shape {a.shape}")
    if a.shape[1] < 4:
        raise ValueError(f"{name} needs at least 4 time points, got {a.shape[1]}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values")
    return a


def _autocov(a: np.ndarray) -> np.ndarray:
    """Biased autocovariances (1/T) Σ_s (a_s − ā)(a_{s+t} − ā), t = 0..T−1, of each row, by
    FFT (zero-padded to ≥ 2T − 1, so no wrap-around)."""
    t = a.shape[1]
    a = a - a.mean(axis=1, keepdims=True)
    nfft = 1 << (2 * t - 1).bit_length()
    f = np.fft.rfft(a, n=nfft, axis=1)
    return np.fft.irfft(f * np.conj(f), n=nfft, axis=1)[:, :t] / t


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation function ρ(t), t = 0..T-1, by FFT (zero-padded, so no
    wrap-around). For (chains, time) input, the chains' autocovariances (each centred on its
    own mean) are averaged before normalising."""
    a = _as_chains(x)
    t = a.shape[1]
    acov = _autocov(a).mean(axis=0)
    if acov[0] <= 0:
        # A constant series has no defined correlation; report ρ = δ_t0 (τ = 1) explicitly.
        out = np.zeros(t)
        out[0] = 1.0
        return out
    return acov / acov[0]


def integrated_autocorr_time(x: np.ndarray, method: str = "sokal", c: float = 5.0) -> float:
    """Integrated autocorrelation time τ = 1 + 2 Σ_{t≥1} ρ(t) of a stationary series.

    x: 1-D (time) or 2-D (chains, time; ACFs averaged over chains).
    method="sokal": window M = the smallest M with M ≥ c·τ(M) (Sokal 1997; c = 5 as in emcee);
    if no such M exists the series is too short (T ≲ c·τ) and the last estimate is returned,
    which underestimates τ. method="geyer": Geyer's (1992) initial monotone positive sequence
    of pair sums Γ_k = ρ(2k) + ρ(2k+1), τ = −1 + 2 Σ Γ_k.
    For an AR(1) process with coefficient φ, τ = (1 + φ)/(1 − φ).
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    rho = autocorrelation(x)
    if method == "sokal":
        taus = 2.0 * np.cumsum(rho) - 1.0  # τ(M) = 1 + 2 Σ_{t=1}^{M} ρ(t)
        ok = np.arange(len(taus)) >= c * taus
        m = int(np.argmax(ok)) if np.any(ok) else len(taus) - 1
        return float(max(taus[m], 1e-12))
    n_pairs = len(rho) // 2
    gam = rho[: 2 * n_pairs : 2] + rho[1 : 2 * n_pairs : 2]
    neg = np.nonzero(gam <= 0)[0]
    k = int(neg[0]) if len(neg) else n_pairs
    gam = np.minimum.accumulate(gam[: max(k, 1)])  # initial monotone sequence
    return float(max(-1.0 + 2.0 * np.sum(gam), 1e-12))


def effective_sample_size(x: np.ndarray, method: str = "sokal", c: float = 5.0) -> float:
    """Effective number of independent draws: (chains × time) / τ.

    For (chains, time) input, τ comes from the chain-averaged ACF (the chains are assumed to
    sample the same distribution: check `split_rhat` first).
    """
    a = _as_chains(x)
    return float(a.size / integrated_autocorr_time(a, method=method, c=c))


def split_rhat(x: np.ndarray) -> float:
    """Split-R̂ (Gelman et al., Bayesian Data Analysis, 3rd ed., §11.4) of (chains, time).

    Each chain is split in half (the middle point dropped for odd lengths), giving m = 2·chains
    sequences of length n; W = mean within-sequence variance, B/n = variance of the sequence
    means, var⁺ = (n−1)/n W + B/n, R̂ = √(var⁺/W). R̂ → 1 at equilibrium; values above ~1.01
    to 1.1 signal chains that have not mixed or are still drifting.
    """
    return _rhat_of(_split(_as_chains(x)))


# ---- Vehtari et al. (2021): rank-normalized split-R̂ and multi-chain ESS ---------------------


def _split(a: np.ndarray) -> np.ndarray:
    """(chains, n) -> (2·chains, n // 2): each chain's first and last halves (the middle draw
    of an odd-length chain is dropped), so that a drift within a chain shows up as a
    difference between sequences."""
    h = a.shape[1] // 2
    return np.concatenate([a[:, :h], a[:, -h:]], axis=0)


def _rank_normal(a: np.ndarray) -> np.ndarray:
    """Rank normalization: z = Φ⁻¹((r − 3/8)/(S + 1/4)) with r the average rank among all S
    draws (Blom's offset; Vehtari et al. 2021, Eq. 14)."""
    r = stats.rankdata(a, method="average").reshape(a.shape)
    return special.ndtri((r - 0.375) / (a.size + 0.25))


def _rhat_of(seqs: np.ndarray) -> float:
    """Plain R̂ of equal-length sequences (rows): √(var⁺/W), var⁺ = (n−1)/n W + B/n."""
    n = seqs.shape[1]
    w = seqs.var(axis=1, ddof=1).mean()
    b_over_n = seqs.mean(axis=1).var(ddof=1)
    if w <= 0:
        return float("inf") if b_over_n > 0 else 1.0
    return float(np.sqrt(((n - 1) / n * w + b_over_n) / w))


def rhat_rank(x: np.ndarray) -> float:
    """Rank-normalized split-R̂ (Vehtari et al. 2021, §4.1): the larger of the bulk R̂ (split
    chains, rank-normalized) and the tail R̂ (the same of the folded draws |θ − median θ|).

    x: (chains, draws) (or one chain). Above ~1.01 the chains disagree in location (bulk) or
    scale (tail); the workflow's gate is `EquilibriumGates.rhat_max`. One chain still gives
    a value (its two halves are compared); ArviZ returns NaN there.
    """
    seqs = _split(_as_chains(x))
    bulk = _rhat_of(_rank_normal(seqs))
    tail = _rhat_of(_rank_normal(np.abs(seqs - np.median(seqs))))
    return max(bulk, tail)


def _ess_multichain(seqs: np.ndarray) -> float:
    """Multi-chain ESS of (sequences, n) (Vehtari et al. 2021, §3.2, as in Stan):

    ρ̂_t = 1 − (W − mean_m γ̂_{m,t}) / var⁺, with γ̂_{m,t} the biased autocovariance of
    sequence m, W = the within-sequence variance and var⁺ = (n−1)/n W + B/n, so that a
    between-sequence spread lowers the ESS. τ̂ sums Geyer's initial positive sequence of pair
    sums P_k = ρ̂_{2k} + ρ̂_{2k+1}, made monotone, plus the first even lag past it when positive;
    τ̂ ≥ 1/log10(S) caps the ESS for antithetic chains; ESS = S/τ̂, S = all draws.
    """
    m, n = seqs.shape
    if np.ptp(seqs) < np.finfo(np.float64).resolution:
        return float(seqs.size)  # a constant series: every draw counts (ArviZ's convention)
    acov = _autocov(seqs).mean(axis=0)
    w = acov[0] * n / (n - 1)
    var_plus = acov[0] + (seqs.mean(axis=1).var(ddof=1) if m > 1 else 0.0)
    rho = 1.0 - (w - acov) / var_plus
    rho[0] = 1.0
    # Geyer's initial positive sequence: pair k is formed while pair k−1 was positive and
    # 2k ≤ n − 3 (Stan's truncation); j = the last pair formed.
    k_max = max((n - 3) // 2, 0)
    pairs = rho[0 : 2 * k_max + 1 : 2] + rho[1 : 2 * k_max + 2 : 2]
    nonpos = np.nonzero(pairs <= 0)[0]
    j = min(int(nonpos[0]), k_max) if len(nonpos) else k_max
    mono = np.minimum.accumulate(pairs[:j])  # initial monotone sequence of pairs 0..j−1
    # The even lag of pair j still counts when positive (or when its pair sum was ≥ 0).
    last = rho[2 * j] if (rho[2 * j] > 0 or pairs[j] >= 0) else 0.0
    tau = -1.0 + 2.0 * mono.sum() + last
    tau = max(tau, 1.0 / np.log10(seqs.size))
    return float(seqs.size / tau)


def ess_bulk(x: np.ndarray) -> float:
    """Bulk ESS (Vehtari et al. 2021, §4.2): the multi-chain ESS of the rank-normalized split
    chains; x: (chains, draws). Robust to heavy tails; the ESS to quote beside `rhat_rank`."""
    return _ess_multichain(_rank_normal(_split(_as_chains(x))))


def ess_mean(x: np.ndarray) -> float:
    """ESS for the mean (Vehtari et al. 2021, §3.2): the multi-chain ESS of the split chains
    without rank normalization; the Monte Carlo SE of the mean is sd/√ess_mean."""
    return _ess_multichain(_split(_as_chains(x)))


def mcse_mean(x: np.ndarray) -> float:
    """Monte Carlo standard error of the mean of all draws: sd(ddof=1)/√ess_mean."""
    a = _as_chains(x)
    return float(np.sqrt(a.var(ddof=1) / ess_mean(a)))


def half_drift(x: np.ndarray) -> tuple[float, float]:
    """(second-half mean − first-half mean, that difference in units of its SE) of
    (chains, draws): the halves are the first and last ⌊draws/2⌋ draws of every chain, each
    half's SE is `mcse_mean` of that half alone (its own ESS), and the two are added in
    quadrature (the halves are treated as independent, fair once draws ≫ the IAT). A
    stationary chain gives |z| < 3 with probability ≈ 0.997. A trend inside a half also
    shrinks that half's ESS, so a strongly relaxing chain saturates at a few SE: the split
    R̂ (`rhat_rank`) is the sharper test there, and the workflow flags either."""
    a = _as_chains(x)
    h = a.shape[1] // 2
    if h < 4:
        raise ValueError(f"x needs at least 8 draws for a half drift, got {a.shape[1]}")
    first, second = a[:, :h], a[:, -h:]
    diff = float(second.mean() - first.mean())
    se = float(np.hypot(mcse_mean(first), mcse_mean(second)))
    return diff, (diff / se if se > 0 else (0.0 if diff == 0 else float("inf")))


def ar1_chains(rng: np.random.Generator, chains: int, draws: int,
               rho: float | np.ndarray) -> np.ndarray:
    """(chains, draws) stationary AR(1) series with unit variance and no offsets between
    chains: x_t = ρ x_{t−1} + √(1 − ρ²) z_t, x_0 = z_0. `rho` is one lag-one correlation for
    every chain or one per chain; its τ_int is (1 + ρ)/(1 − ρ), so ρ = (τ − 1)/(τ + 1) gives
    a chain of integrated autocorrelation time τ. Equal variances matter: chains of unequal
    variance fail the rank-normalised R̂ (its folded part) without any slow mode."""
    rho = np.broadcast_to(np.asarray(rho, np.float64), (chains,))
    z = rng.standard_normal((chains, draws))
    x = np.empty_like(z)
    x[:, 0] = z[:, 0]
    s = np.sqrt(1.0 - rho**2)
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + s * z[:, t]
    return x


@dataclass(frozen=True)
class EquilibriumGates:
    """The three thresholds a sampled point's series must meet to be shown as an equilibrium
    value (config key ``gates``; docs/workflow.md). A fourth condition has no threshold: every
    chain ran at one step size over its window (`fleos.analysis.aggregate.one_step_size_failures`).

    * ``rhat_max``: rank-normalised split R̂ (`rhat_rank`) of every tracked series at most this.
      1.01 is the threshold Vehtari et al. (2021) recommend for final inference.
    * ``ess_min``: bulk ESS (`ess_bulk`, all chains together) at least this; 400 is the same
      paper's recommendation (100 per chain for 4 chains), enough for R̂ and the MCSE to be
      reliable.
    * ``drift_max``: |second-half mean − first-half mean| (`half_drift`) at most this many SE;
      a stationary series exceeds 3 SE with probability 0.3 %.
    """

    rhat_max: float = 1.01
    ess_min: float = 400.0
    drift_max: float = 3.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> EquilibriumGates:
        """The gates of a workflow config (its optional top-level ``gates`` mapping; absent keys
        take the defaults above). A key that is not a gate raises ValueError naming it."""
        raw = dict((config or {}).get("gates") or {})
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"gates.{unknown[0]}: unknown gate (known: "
                             f"{', '.join(cls.__dataclass_fields__)})")
        for k, v in raw.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise ValueError(f"gates.{k}: must be a positive number, got {v!r}")
        return cls(**{k: float(v) for k, v in raw.items()})

    def failed(self, rhat: float, ess: float, drift_se: float) -> list[str]:
        """The gates that (rhat, ess, drift_se) fail, as short labels ('rhat>1.01',
        'ess<400', 'drift>3SE'); a NaN diagnostic fails its gate (not measurable is not
        passing)."""
        out = []
        if not rhat <= self.rhat_max:
            out.append(f"rhat>{self.rhat_max:g}")
        if not ess >= self.ess_min:
            out.append(f"ess<{self.ess_min:g}")
        if not abs(drift_se) <= self.drift_max:
            out.append(f"drift>{self.drift_max:g}SE")
        return out

    def describe(self) -> str:
        """One phrase for captions and legends (with the condition the aggregate adds: one
        step size for all chains over their windows, fleos.analysis.aggregate)."""
        return (f"R̂ ≤ {self.rhat_max:g}, bulk ESS ≥ {self.ess_min:g}, "
                f"half-window drift ≤ {self.drift_max:g} SE, one step size")


__all__ = [
    "EquilibriumGates",
    "autocorrelation",
    "effective_sample_size",
    "ess_bulk",
    "ess_mean",
    "half_drift",
    "integrated_autocorr_time",
    "mcse_mean",
    "rhat_rank",
    "split_rhat",
]
