"""Fig. 4: the 3-layer CNN (Eq. 14). Left: input weights dotted with the normalized teacher
weight (blue) and a random unit vector (green); right: hidden pre-activations h2 dotted with
the normalized teacher h2 (blue) and a random teacher's h2 (green). Dots: trained
(equilibrium samples pooled over channels, time and seeds); dashed: Gaussian fits. Insets:
2-D histograms of (teacher, random) overlaps before (prior draws) and after training.

Table: one row per (overlap, trained / prior): the Gaussian fit of the recorded channels'
values (mean, variance ± SE, KS, excess kurtosis); for trained rows the second moment over ALL
channels (``var_all`` ± SE across seeds, the recorder's all-channel mean square: the variance,
as the mean is 0 by the weights' sign symmetry), which a single specialised channel cannot
hide from by falling outside the recorded subset (for w_random it also averages the R random
directions, which carry a little of the teacher direction each, where the fit reads the first
one); the teacher-over-random variance ratios of both; the equilibration evidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fleos.analysis.aggregate import equilibration_summary
from fleos.core.diagnostics import EquilibriumGates
from fleos.figures.common import PRIOR_EQ, Inputs, Row, agg_index, fit_row, fmt

# (teacher overlap, random overlap, their axis labels): left and right panel
PANELS = (("w_teacher", "w_random", r"$w\cdot w^*/|w^*|$", r"$w\cdot w_r/|w_r|$"),
          ("h2_teacher", "h2_random", r"$h^{(2)}\cdot h^{(2)*}/|h^{(2)*}|$",
           r"$h^{(2)}\cdot h^{(2)}_r/|h^{(2)}_r|$"))


def _largest(inputs: Inputs) -> tuple[tuple[int, int], dict[str, Any]]:
    """(n, C) and aggregate of the largest sampled configuration."""
    aggs = agg_index(inputs["aggregate"])
    key = max(aggs)
    a = aggs[key]
    for k in (k for panel in PANELS for k in panel[:2]):
        if f"{k}_values" not in a:
            raise ValueError(f"aggregate for n={key[0]} C={key[1]} lacks {k} overlaps")
    return key, a


def table(inputs: Inputs, config: Mapping[str, Any]) -> list[Row]:
    gates = EquilibriumGates.from_config(config)
    key, a = _largest(inputs)
    rows = []
    for kt, kr, _, _ in PANELS:
        for k in (kt, kr):
            eq = equilibration_summary(a, (f"{k}_sq",), gates)
            for state, pre in (("trained", ""), ("prior", "prior_")):
                if f"{pre}{k}_fit" in a:
                    f = fit_row(f"{pre}{k}", a)
                    rows.append({"n": key[0], "C": key[1], "quantity": k, "state": state,
                                 "mean": f["mean"], "mean_se": f["mean_se"], "var": f["var"],
                                 "var_se": f["var_se"], "ks": f["ks"],
                                 "excess_kurtosis": f["excess_kurtosis"],
                                 "excess_kurtosis_se": f["excess_kurtosis_se"],
                                 **_all_channels(a, k, state),
                                 "teacher_seed": int(a["teacher_seed"]),
                                 **(eq if state == "trained" else PRIOR_EQ)})
    ratio_w = fit_row("w_teacher", a)["var"] / fit_row("w_random", a)["var"]
    ratio_h = fit_row("h2_teacher", a)["var"] / fit_row("h2_random", a)["var"]
    ratio_all = {p: _all_channels(a, f"{p}_teacher", "trained")["var_all"]
                 / _all_channels(a, f"{p}_random", "trained")["var_all"] for p in ("w", "h2")}
    for r in rows:
        w = r["quantity"].startswith("w_")
        r["teacher_over_random_var"] = ratio_w if w else ratio_h
        r["teacher_over_random_var_all"] = ratio_all["w" if w else "h2"]
    return rows


def _all_channels(a: Mapping[str, Any], k: str, state: str) -> dict[str, float]:
    """The all-channel second moment ``<k>_msq_all`` of a trained row (NaN for prior rows
    and for aggregates of sample files without the recorder's all-channel mean squares)."""
    v = a.get(f"{k}_msq_all") if state == "trained" else None
    m, se = (float(v[0]), float(v[1])) if v is not None else (math.nan, math.nan)
    return {"var_all": m, "var_all_se": se}


def draw(rows: list[Row], inputs: Inputs, config: Mapping[str, Any]) -> Any:
    gates = EquilibriumGates.from_config(config)

    from fleos.figures.style import BLUE, GREEN, hist2d_inset, hist_with_fit, plt

    key, a = _largest(inputs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    for ax, (kt, kr, lt, lr) in zip(axes, PANELS, strict=True):
        for k, col, lab in ((kt, BLUE, lt), (kr, GREEN, lr)):
            hist_with_fit(ax, a[f"{k}_values"], fit_row(k, a), col, lab, style="dots",
                          eq=equilibration_summary(a, (f"{k}_sq",), gates))
        if f"prior_{kt}_values" in a:
            # Inset at 0.1 of the width, not at the edge: its y tick labels then stay inside
            # the main axes instead of printing over the main axis's tick labels.
            hist2d_inset(ax, a[f"prior_{kt}_values"], a[f"prior_{kr}_values"], "before",
                         [0.1, 0.62, 0.24, 0.33])
        hist2d_inset(ax, a[f"{kt}_values"], a[f"{kr}_values"], "after",
                     [0.74, 0.62, 0.24, 0.33])
        ax.set_xlabel("overlap")
        ax.set_ylabel("density")
        ax.legend(fontsize=7, loc="lower center")
    fig.suptitle(f"Fig. 4 - 3-layer CNN, n = {key[0]}, C1 = C2 = {key[1]} "
                 "(insets: teacher vs random overlap, before / after)", fontsize=10)
    fig.tight_layout()
    return fig


def summary(rows: list[Row]) -> list[str]:
    return [f"{r['quantity']} ({r['state']}): variance {fmt(r['var'])} ± "
            f"{fmt(r['var_se'])}, KS {fmt(r['ks'])}"
            + (f"; over all channels {fmt(r['var_all'])} ± {fmt(r['var_all_se'])}"
               if math.isfinite(r["var_all"]) else "") + "." for r in rows]
