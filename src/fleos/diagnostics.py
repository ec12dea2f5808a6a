"""Equilibration diagnostics for Langevin chains (numpy, host side).

The paper's equilibrium claims rest on autocorrelation times (Methods: ~1e3 epochs for the
readout, up to ~1e6 for input layers) and on agreement between independent seeds. These
functions quantify both:

* `integrated_autocorr_time(x)`: τ = 1 + 2 Σ_{t≥1} ρ(t), estimated with Sokal's automatic
  window (smallest M with M ≥ c·τ(M), c = 5) or Geyer's initial monotone positive sequence;
* `effective_sample_size(x)`: n/τ (chains × time: total draws / τ of the chain-averaged ACF);
* `split_rhat(x)`: Gelman et al. split-R̂ over chains × time.

Conventions: a 1-D array is one chain; a 2-D array is (chains, time). Computations in float64.
"""

from __future__ import annotations

import numpy as np

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


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation function ρ(t), t = 0..T-1, by FFT (zero-padded, so no
    wrap-around). For (chains, time) input, the chains' autocovariances (each centred on its
    own mean) are averaged before normalising."""
    a = _as_chains(x)
    t = a.shape[1]
    a = a - a.mean(axis=1, keepdims=True)
    nfft = 1 << (2 * t - 1).bit_length()
    f = np.fft.rfft(a, n=nfft, axis=1)
    acov = np.fft.irfft(f * np.conj(f), n=nfft, axis=1)[:, :t].mean(axis=0) / t
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
    a = _as_chains(x)
    n = a.shape[1] // 2
    seqs = np.concatenate([a[:, :n], a[:, -n:]], axis=0)
    w = seqs.var(axis=1, ddof=1).mean()
    b_over_n = seqs.mean(axis=1).var(ddof=1)
    if w <= 0:
        return float("inf") if b_over_n > 0 else 1.0
    var_plus = (n - 1) / n * w + b_over_n
    return float(np.sqrt(var_plus / w))


__all__ = [
    "autocorrelation",
    "effective_sample_size",
    "integrated_autocorr_time",
    "split_rhat",
]
