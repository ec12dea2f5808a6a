"""Posterior correlations between pre-activations of different channels and layers (Fig. 6).

The paper supports its mean-field picture of Myrtle-5 (channels independent given the kernel)
by the size of the posterior correlations between the pre-activations of different channels,
in one layer and across layers: of order 10⁻³ at its scale. Measured here from the sampled
snapshots of the first few channels' pre-activations on the probe inputs.

For two series a, b (one probe input; a channel of one layer and another channel of the same or
another layer) the posterior correlation is estimated in each chain (the chain's own mean
removed, so a chain that has not mixed does not fake a correlation) and averaged over chains:
ρ̄ = mean_k corr_k(a, b). Its sampling noise is ~ 1/√(ESS of the pooled chains), far above 10⁻³
at any affordable length, so every statistic comes with its **null**: the same statistic with b
taken from another chain (chain k − 1, cyclically, same time index). Those pairs are
independent by construction and share the series' lengths and autocorrelations, so the null is
the noise floor of that statistic at this run's length. Reported per pair family:

- `rms`, `null_rms`: the root mean square of ρ̄ over channel pairs and probe inputs, and its
  null; `excess_ms` = rms² − null_rms², the estimate of the mean squared true correlation
  (noise and signal add in quadrature), with `excess_ms_se` the jackknife SE over chains
  (chain k left out in turn: its own pairs and the null pairs of its channels a with chain
  k − 1's b; the null pair in which chain k supplies b stays, which leaves the first-order
  variance right for independent chains). Chains are the independent units: the probe inputs
  share each chain's trajectory, so their spread understates the error (with 2 chains × 100
  snapshots it came out 20× too small). Fewer than JACKKNIFE_MIN_CHAINS chains give NaN: a
  jackknife over 2 has one degree of freedom;
- `mean`, `mean_se`: the signed mean of the per-chain correlation over all pairs and inputs,
  and its SE across chains.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: chains needed: the null pairs a chain with another one
MIN_CHAINS = 2
#: chains needed for the jackknife SE of the excess (fewer: NaN)
JACKKNIFE_MIN_CHAINS = 3


def _standardize(H: np.ndarray) -> np.ndarray:
    """(chains, T, P, c) -> per chain, per (input, channel): zero mean, unit variance in time."""
    Z = H - H.mean(axis=1, keepdims=True)
    sd = Z.std(axis=1, keepdims=True)
    return np.divide(Z, sd, out=np.zeros_like(Z), where=sd > 0)


def _pair_stats(Za: np.ndarray, Zb: np.ndarray, same: bool) -> dict[str, float]:
    """Correlations between the channels of Za and Zb (chains, T, P, c), input by input: the
    off-diagonal pairs c < c' when `same` (one layer), all pairs otherwise; and the null with
    Zb's chains shifted by one (chain k's a against chain k − 1's b)."""
    T = Za.shape[1]

    def rho(A: np.ndarray, B: np.ndarray) -> np.ndarray:
        # (chains, P, c, c'): per-chain correlation of channel c of A with channel c' of B
        return np.einsum("ktpc,ktpd->kpcd", A, B) / T

    ca, cb = Za.shape[-1], Zb.shape[-1]
    keep = np.triu(np.ones((ca, cb), bool), 1) if same else np.ones((ca, cb), bool)
    r = rho(Za, Zb)[..., keep]                              # (chains, P, pairs)
    r0 = rho(Za, np.roll(Zb, 1, axis=0))[..., keep]
    rbar, r0bar = r.mean(0), r0.mean(0)                     # (P, pairs): averaged over chains
    ms, ms0 = float(np.mean(rbar**2)), float(np.mean(r0bar**2))
    per_chain = r.mean(axis=(1, 2))                         # (chains,)
    K = len(per_chain)
    # leave-one-chain-out excesses: chain k's pairs and the null pairs it heads (k with k − 1)
    loo = ((((r.sum(0) - r) / (K - 1)) ** 2).mean(axis=(1, 2))
           - (((r0.sum(0) - r0) / (K - 1)) ** 2).mean(axis=(1, 2)))       # (chains,)
    jackknife_se = (np.sqrt((K - 1) / K * np.sum((loo - loo.mean()) ** 2))
                    if K >= JACKKNIFE_MIN_CHAINS else np.nan)
    return {"rms": float(np.sqrt(ms)), "null_rms": float(np.sqrt(ms0)),
            "excess_ms": ms - ms0,
            "excess_ms_se": float(jackknife_se),
            "mean": float(per_chain.mean()),
            "mean_se": float(per_chain.std(ddof=1) / np.sqrt(K)),
            "pairs": int(keep.sum()), "inputs": int(r.shape[1]), "chains": K, "length": T}


def preactivation_correlations(snapshots: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """Cross-channel correlations within each layer and across each pair of layers.

    snapshots: layer -> (chains, T, P, c) pre-activations (e.g. position-averaged) of c channels
    on P probe inputs, restricted to the sampling window with a common length T per chain.
    Returns {"<layer>": stats, "<layer_a>~<layer_b>": stats} (module docstring)."""
    layers = sorted(snapshots)
    Z = {}
    for layer in layers:
        H = np.asarray(snapshots[layer], np.float64)
        if H.ndim != 4:
            raise ValueError(f"snapshots[{layer!r}]: expected (chains, T, P, c), got shape "
                             f"{H.shape}")
        if H.shape[0] < MIN_CHAINS:
            raise ValueError(f"snapshots[{layer!r}]: the null needs >= {MIN_CHAINS} chains, "
                             f"got {H.shape[0]}")
        if H.shape[1] < 2:
            raise ValueError(f"snapshots[{layer!r}]: too few time points ({H.shape[1]})")
        Z[layer] = _standardize(H)
    shapes = {Z[k].shape[:3] for k in layers}
    if len(shapes) > 1:
        raise ValueError(f"snapshots: layers disagree in (chains, T, P): {sorted(shapes)}")
    out: dict[str, dict] = {}
    for i, a in enumerate(layers):
        if Z[a].shape[-1] >= 2:
            out[a] = _pair_stats(Z[a], Z[a], same=True)
        for b in layers[i + 1:]:
            out[f"{a}~{b}"] = _pair_stats(Z[a], Z[b], same=False)
    return out
