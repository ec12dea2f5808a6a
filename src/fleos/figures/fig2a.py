"""Fig. 2a: the 3-layer FCN in mean-field scaling (Eq. 1). QQ plot of the most strongly
fluctuating first-layer weight mode (projection of the input weights on the top eigenvector
of each chain's Σ) against a normal, one curve per sampled scale (n, N), growing scale lighter
to darker; insets: histograms with Gaussian fits at the smallest and the largest scale.

Table: one row per (n, N): the mode's eigenvalue, the variance of its Gaussian fit, the KS
distance and excess kurtosis (how far from Gaussian), the equilibration evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fleos.analysis.aggregate import equilibration_summary
from fleos.core.diagnostics import EquilibriumGates
from fleos.core.observables import qq_points
from fleos.figures.common import SERIES_SIGMA, Inputs, Row, agg_index, fit_row, fmt, not_eq


def _scales(aggs: Mapping[tuple[int, int], Any]) -> list[tuple[int, int]]:
    """The sampled (n, N), by growing scale n·N."""
    return sorted(aggs, key=lambda k: (k[0] * k[1], k))


def table(inputs: Inputs, config: Mapping[str, Any]) -> list[Row]:
    gates = EquilibriumGates.from_config(config)
    aggs = agg_index(inputs["aggregate"])
    rows = []
    for key in _scales(aggs):
        a = aggs[key]
        if "mode1_values" not in a:
            raise ValueError(f"aggregate n={key[0]} N={key[1]} has no top-mode projections "
                             "(sampler.full_snapshots must be > 0)")
        f = fit_row("mode1", a)
        rows.append({"n": key[0], "width": key[1], "mode_eigval": float(np.mean(a["mode1_eigval"])),
                     "var": f["var"], "var_se": f["var_se"], "ks": f["ks"],
                     "excess_kurtosis": f["excess_kurtosis"],
                     "excess_kurtosis_se": f["excess_kurtosis_se"], "values": int(f["count"]),
                     "n_seeds": int(len(a["seeds"])), "teacher_seed": int(a["teacher_seed"]),
                     **equilibration_summary(a, ("mode1_sq", *SERIES_SIGMA), gates)})
    return rows


def draw(rows: list[Row], inputs: Inputs, config: Mapping[str, Any]) -> Any:

    from fleos.figures.style import BLUE, hist_with_fit, plt

    aggs = agg_index(inputs["aggregate"])
    keys = _scales(aggs)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    cmap = plt.get_cmap("viridis")
    for i, (key, row) in enumerate(zip(keys, rows, strict=True)):
        t, e = qq_points(aggs[key]["mode1_values"])
        col = cmap(0.15 + 0.7 * i / max(1, len(keys) - 1))
        ax.plot(t, e, "o", color=col, markersize=2.5, label=f"n={key[0]}, N={key[1]}"
                + (" (not equilibrated)" if not_eq(row) else ""),
                markerfacecolor="white" if not_eq(row) else col)
    lim = 3.2
    ax.plot([-lim, lim], [-lim, lim], "k-", linewidth=0.8)
    ax.set_xlim(-lim, lim)
    ax.set_xlabel("normal quantiles")
    ax.set_ylabel("empirical quantiles (standardized)")
    ax.legend(loc="upper left", fontsize=7)
    for j, key in enumerate([keys[0], keys[-1]] if len(keys) > 1 else keys[:1]):
        ins = ax.inset_axes([0.64, 0.08 + 0.32 * j, 0.33, 0.22])
        a = aggs[key]
        hist_with_fit(ins, a["mode1_values"], fit_row("mode1", a), BLUE, "", bins=30)
        ins.set_title(f"n={key[0]}, N={key[1]}", fontsize=7)
        ins.tick_params(labelsize=6)
    ax.set_title("Fig. 2a - top first-layer weight mode, 3-layer FCN (MF)", fontsize=9)
    fig.tight_layout()
    return fig


def summary(rows: list[Row]) -> list[str]:
    return [f"n = {r['n']}, N = {r['width']}: KS distance {fmt(r['ks'])}, "
            f"excess kurtosis {fmt(r['excess_kurtosis'])} ± {fmt(r['excess_kurtosis_se'])} "
            f"({'jackknife over seeds' if r['n_seeds'] > 1 else 'i.i.d. formula'}; "
            f"{r['values']} values)."
            for r in rows]
