"""Fig. 6: Myrtle-5 (ReLU). Pre-activations (position-averaged, per channel) of layers 2 and 4
on the probe images, projected on the 1st and 10th eigenvectors of the trained network's
empirical kernel of that layer: trained (blue) vs untrained prior draws (grey), with Gaussian
fits (dashed).

Table: one row per (layer, eigenvector, trained / untrained): the Gaussian fit and the
equilibration evidence; trained rows add the posterior correlations between pre-activations of
different channels of their layer (`corr_within_*`) and across the two layers (`corr_cross_*`),
each beside its null (`fleos.analysis.correlations`): the paper's evidence for channels
decoupling, correlations of order 10⁻³ at its scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fleos.analysis.aggregate import equilibration_summary
from fleos.core.diagnostics import EquilibriumGates
from fleos.figures.common import PRIOR_EQ, Inputs, Row, agg_index, fit_row, fmt
from fleos.nets.models import MYRTLE_PROBE_LAYERS

FIRST_COLUMNS = ("layer",)  # the header of an empty table (no eigenvector available)
LAYERS, EIGENVECTORS = MYRTLE_PROBE_LAYERS, (1, 10)
STATES = (("prior_", "untrained"), ("", "trained"))  # drawing order: the prior below
CORR_STATS = ("rms", "null_rms", "excess_ms", "excess_ms_se", "mean", "mean_se")
CROSS = "_x_".join(LAYERS)  # the aggregate's name of the cross-layer family


def _correlations(a: Mapping[str, Any], layer: str, trained: bool) -> dict[str, float]:
    """The trained network's cross-channel (this layer) and cross-layer correlations; NaN for
    the untrained rows and where the run did not measure them (fewer than 2 chains or too
    short a window). Every row has the columns: the table's header is its first row's keys."""
    out = {}
    for kind, family in (("within", layer), ("cross", CROSS)):
        for stat in CORR_STATS:
            v = a.get(f"corr_{family}_{stat}") if trained else None
            out[f"corr_{kind}_{stat}"] = float(v) if v is not None else float("nan")
    return out


def _eq(a: Mapping[str, Any], pre: str, k: str, gates: EquilibriumGates) -> dict[str, Any]:
    return equilibration_summary(a, (f"{k}_sq",), gates) if not pre else PRIOR_EQ


def table(inputs: Inputs, config: Mapping[str, Any]) -> list[Row]:
    gates = EquilibriumGates.from_config(config)
    aggs = agg_index(inputs["aggregate"])
    key = max(aggs)
    a = aggs[key]
    rows = []
    for layer in LAYERS:
        for ev in EIGENVECTORS:
            k = f"{layer}_proj{ev}"
            if f"{k}_values" not in a:
                continue
            for pre, lab in STATES:
                if f"{pre}{k}_values" in a:
                    f = fit_row(f"{pre}{k}", a)
                    rows.append({"layer": layer, "eigenvector": ev, "state": lab,
                                 "mean": f["mean"], "mean_se": f["mean_se"], "var": f["var"],
                                 "var_se": f["var_se"], "ks": f["ks"],
                                 "excess_kurtosis": f["excess_kurtosis"],
                                 "excess_kurtosis_se": f["excess_kurtosis_se"],
                                 "n": key[0], "C": key[1], **_eq(a, pre, k, gates),
                                 **_correlations(a, layer, trained=not pre)})
    return rows


def draw(rows: list[Row], inputs: Inputs, config: Mapping[str, Any]) -> Any:
    gates = EquilibriumGates.from_config(config)

    from fleos.figures.style import BLUE, GREY, hist_with_fit, plt

    exp = config["experiments"]["myrtle5"]
    aggs = agg_index(inputs["aggregate"])
    key = max(aggs)
    a = aggs[key]
    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    colors = {"untrained": GREY, "trained": BLUE}
    for i, layer in enumerate(LAYERS):
        for j, ev in enumerate(EIGENVECTORS):
            ax = axes[i, j]
            k = f"{layer}_proj{ev}"
            if f"{k}_values" not in a:
                ax.text(0.5, 0.5, f"eigenvector {ev} unavailable\n(probe too small)",
                        ha="center", transform=ax.transAxes)
                continue
            for pre, lab in STATES:
                if f"{pre}{k}_values" in a:
                    hist_with_fit(ax, a[f"{pre}{k}_values"], fit_row(f"{pre}{k}", a),
                                  colors[lab], lab, bins=40, eq=_eq(a, pre, k, gates))
            ax.set_title(f"{'abcd'[2 * i + j]}) {layer}, eigenvector {ev}", fontsize=9)
            ax.set_xlabel(f"pre-activation projected on eigenvector {ev}")
            ax.set_ylabel("density")
            ax.legend(fontsize=7)
    label = exp.get("label", "CIFAR-10")
    fig.suptitle(f"Fig. 6 - Myrtle-5 (ReLU), C = {key[1]}, n = {key[0]}; data: {label}",
                 fontsize=10)
    fig.tight_layout()
    return fig


def summary(rows: list[Row]) -> list[str]:
    lines = [f"{r['layer']}, eigenvector {r['eigenvector']}, {r['state']}: mean "
             f"{fmt(r['mean'])}, variance {fmt(r['var'])}, KS {fmt(r['ks'])}." for r in rows]
    seen = set()
    for r in rows:
        for kind in ("within", "cross"):
            what = (f"between channels of {r['layer']}" if kind == "within"
                    else "between channels of " + " and ".join(LAYERS))
            if what in seen or math.isnan(r.get(f"corr_{kind}_rms", math.nan)):
                continue                                # said already, or not measured
            seen.add(what)
            g = {s: fmt(r[f"corr_{kind}_{s}"]) for s in CORR_STATS}
            se = ("(no SE: the jackknife needs ≥ 3 chains)"
                  if math.isnan(r[f"corr_{kind}_excess_ms_se"]) else f"± {g['excess_ms_se']}")
            lines.append(f"Posterior correlation {what}: RMS {g['rms']} against the null's "
                         f"{g['null_rms']} (independent chains: the noise floor), excess mean "
                         f"square {g['excess_ms']} {se}; mean {g['mean']} ± {g['mean_se']}.")
    return lines
