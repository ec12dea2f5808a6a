"""fleos.analysis.correlations against synthetic chains with known correlations: independent
channels (true correlation 0) and channels sharing a common factor (true correlation ρ),
autocorrelated in time like Langevin chains. Tolerances: 4 of the statistic's own SE."""

from __future__ import annotations

import numpy as np
import pytest

from fleos.analysis.correlations import preactivation_correlations


def ar1(rng: np.random.Generator, shape: tuple[int, ...], phi: float = 0.8) -> np.ndarray:
    """(chains, T, ...) unit-variance AR(1) series along axis 1."""
    x = rng.standard_normal(shape)
    out = np.empty(shape)
    out[:, 0] = x[:, 0]
    for t in range(1, shape[1]):
        out[:, t] = phi * out[:, t - 1] + np.sqrt(1 - phi**2) * x[:, t]
    return out


def test_independent_channels_show_no_excess_over_the_null():
    rng = np.random.default_rng(0)
    H = {"layer2": ar1(rng, (8, 400, 16, 6)) + 3.0, "layer4": ar1(rng, (8, 400, 16, 5))}
    out = preactivation_correlations(H)
    assert set(out) == {"layer2", "layer4", "layer2~layer4"}
    for stats in out.values():
        assert abs(stats["excess_ms"]) < 4 * stats["excess_ms_se"]
        assert abs(stats["mean"]) < 4 * stats["mean_se"]
        # the noise floor: Bartlett's variance of the sample correlation of two independent
        # AR(1) series, (1 + φ²)/((1 − φ²) T), averaged over 8 chains of T = 400: ≈ 0.038
        assert stats["null_rms"] == pytest.approx(np.sqrt(1.64 / 0.36 / (8 * 400)), rel=0.15)
    assert out["layer2"]["pairs"] == 15 and out["layer2~layer4"]["pairs"] == 30


def test_a_common_factor_is_measured_above_the_null():
    """Channels c = √ρ·f + √(1 − ρ)·e_c share the factor f: their correlation is ρ; across
    layers (the same f, another loading) √(ρ ρ')."""
    rng = np.random.default_rng(1)
    rho, rho4 = 0.09, 0.16
    f = ar1(rng, (8, 600, 12, 1))
    H2 = np.sqrt(rho) * f + np.sqrt(1 - rho) * ar1(rng, (8, 600, 12, 6))
    H4 = np.sqrt(rho4) * f + np.sqrt(1 - rho4) * ar1(rng, (8, 600, 12, 4))
    out = preactivation_correlations({"layer2": H2, "layer4": H4})
    for key, true in (("layer2", rho), ("layer4", rho4), ("layer2~layer4", np.sqrt(rho * rho4))):
        s = out[key]
        assert abs(s["mean"] - true) < 4 * s["mean_se"], (key, s)
        assert abs(s["excess_ms"] - true**2) < 4 * s["excess_ms_se"], (key, s)
        assert s["excess_ms"] > 4 * s["excess_ms_se"]


@pytest.mark.parametrize("bad, match", [
    ({"layer2": np.zeros((8, 10, 4))}, "expected \\(chains, T, P, c\\)"),
    ({"layer2": np.zeros((1, 10, 4, 3))}, ">= 2 chains"),
    ({"layer2": np.zeros((4, 10, 4, 3)), "layer4": np.zeros((4, 12, 4, 3))}, "disagree"),
])
def test_bad_snapshots_name_the_layer(bad, match):
    with pytest.raises(ValueError, match=match):
        preactivation_correlations(bad)


def test_the_excess_error_counts_chains_not_inputs():
    """Probe inputs that share their chain's trajectory (h = x_chain + small noise per input)
    carry one chain's worth of information, not P inputs' worth. Independent channels, 8
    chains, 20 runs: excess/SE is then t-like with 7 degrees of freedom (the jackknife over
    chains). Bounds: |z| < 5 in every run (P(|t₇| > 5) = 0.16 % per run, 3 % for any of 20);
    |z| > 2 in at most 6 (P(|t₇| > 2) = 8.6 %, expected 1.7; P(≥ 7) = 0.1 %); and the SD of z
    between 0.5 and 2 (t₇'s is 1.18; an SE 3× too large would put it near 0.4, one too small
    above 2). An SE from the spread over inputs gave |z| of 10-141 on these runs
    (docs/figures.md)."""
    z = []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        shared = ar1(rng, (8, 200, 1, 5))
        H = shared + 0.05 * rng.standard_normal((8, 200, 12, 5))
        s = preactivation_correlations({"layer2": H})["layer2"]
        z.append(s["excess_ms"] / s["excess_ms_se"])
    z = np.array(z)
    assert np.abs(z).max() < 5, z
    assert (np.abs(z) > 2).sum() <= 6, z
    assert 0.5 < z.std(ddof=1) < 2, z


def test_two_chains_give_no_jackknife_error():
    """A jackknife over 2 chains has one degree of freedom: the SE is NaN, the rest stands."""
    rng = np.random.default_rng(3)
    s = preactivation_correlations({"layer2": ar1(rng, (2, 100, 4, 3))})["layer2"]
    assert np.isnan(s["excess_ms_se"])
    assert np.isfinite(s["excess_ms"]) and np.isfinite(s["mean_se"])
