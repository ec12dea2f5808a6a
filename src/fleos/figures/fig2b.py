"""Fig. 2b: the 3-layer FCN in mean-field scaling. Train MSE, top Σ eigenvalue and train α,
experiment (dots ± SE across seeds) and EoS (Eq. 5, lines), each divided by its GP value at
the same width, against the width N (largest n). In MF scaling the GP itself depends on N
(fleos.theory.eos.fcn).

Table: one row per (quantity, N): experiment ± SE, EoS, GP, their ratios, whether the EoS
converged, the Rao-Blackwellized experiment and the GP at the sampled mean kernel ⟨Q⟩ where
recorded (docs/langevin.md §9), the equilibration evidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fleos.analysis.aggregate import equilibration_summary
from fleos.core.diagnostics import EquilibriumGates
from fleos.figures.common import (
    SERIES_SIGMA,
    Inputs,
    Row,
    agg_index,
    fmt,
    nan,
    optional,
    theory_index,
)

# The columns of the report's verdict line (fleos.figures.render.verdict).
AGREEMENT = {"exp": "exp", "se": "exp_se", "theory": "eos",
             "what": "train MSE, top Σ eigenvalue, train α"}
QUANTITIES = (("mse_train_norm", "train MSE"), ("sigma_top", r"top $\Sigma$ eigenvalue"),
              ("alpha_train", r"train $\alpha$"))


def table(inputs: Inputs, config: Mapping[str, Any]) -> list[Row]:
    gates = EquilibriumGates.from_config(config)
    aggs = agg_index(inputs["aggregate"])
    theory = theory_index(inputs["theory"])
    n = max(theory)
    th = theory[n]
    trows = sorted(th["rows"], key=lambda r: r["width"])
    rows = []
    for key, _ in QUANTITIES:
        for r in trows:
            a = aggs[(n, int(r["width"]))]
            eq = equilibration_summary(a, SERIES_SIGMA if key == "sigma_top" else ("loss",),
                                       gates)
            if key == "sigma_top":
                ex, se = float(a["sigma_eigs"][0]), float(a["sigma_eigs_se"][0])
            else:
                ex, se = float(a[key]), float(a[f"{key}_se"])
            g = np.float64(nan(r[f"{key}_gp"]))
            rows.append({"n": n, "width": int(r["width"]), "quantity": key, "exp": ex,
                         "exp_se": se, "eos": nan(r[f"{key}_eos"]), "gp": g,
                         "exp_over_gp": ex / g, "exp_over_gp_se": se / g,
                         "eos_over_gp": nan(r[f"{key}_eos"]) / g,
                         "eos_converged": bool(r["eos_converged"]),
                         "teacher_seed": th.get("teacher_seed"),
                         # Rao-Blackwellized estimate and the GP at the sampled mean kernel
                         # ⟨Q⟩ (NaN unless recorded; docs/langevin.md §9)
                         "exp_rb": optional(a, f"{key}_rb"),
                         "exp_rb_se": optional(a, f"{key}_rb_se"),
                         "meankernel": optional(a, f"{key}_meankernel"),
                         "meankernel_se": optional(a, f"{key}_meankernel_se"), **eq})
    return rows


def draw(rows: list[Row], inputs: Inputs, config: Mapping[str, Any]) -> Any:
    """Everything from `rows`: the EoS line joins only converged widths."""

    from fleos.figures.style import BLUE, GREEN, NONCONV, RED, hollow_legend, plt, points

    fig, ax = plt.subplots(figsize=(6, 4.3))
    hollow = False
    for (key, label), col in zip(QUANTITIES, (BLUE, RED, GREEN), strict=True):
        rs = [r for r in rows if r["quantity"] == key]
        Ns = np.array([r["width"] for r in rs], float)
        conv = np.array([r["eos_converged"] for r in rs], bool)
        g = np.array([r["gp"] for r in rs])
        eos = np.array([r["eos"] for r in rs]) / g
        ax.plot(Ns[conv], eos[conv], "-", marker="_", markersize=14, color=col)
        ax.plot(Ns[~conv], eos[~conv], **NONCONV)
        hollow = points(ax, Ns, np.array([r["exp"] for r in rs]) / g,
                        np.array([r["exp_se"] for r in rs]) / g, rs, col,
                        label=label) or hollow
    ax.plot([], [], "k-", marker="_", markersize=14, label="EoS (Eq. 5)")
    if not all(r["eos_converged"] for r in rows):
        ax.plot([], [], label="EoS not converged", **NONCONV)
    if hollow:
        hollow_legend(ax)
    ax.axhline(1.0, color="0.7", linewidth=0.8, zorder=0)
    ax.set_xscale("log")
    ax.set_xticks(Ns)
    ax.set_xticklabels([str(int(v)) for v in Ns])
    ax.minorticks_off()
    ax.set_xlabel("width N (= N1 = N2)")
    ax.set_ylabel("value / GP value")
    ax.legend(fontsize=8)
    ax.set_title(f"Fig. 2b - 3-layer FCN (MF), n = {rows[0]['n']}", fontsize=9)
    fig.tight_layout()
    return fig


def summary(rows: list[Row]) -> list[str]:
    lines = []
    for q, _ in QUANTITIES:
        rs = [r for r in rows if r["quantity"] == q]
        devs = [abs(r["exp"] - r["eos"]) / r["exp_se"] for r in rs
                if r["eos_converged"] and r["exp_se"] > 0]
        lines.append(f"{q}: experiment/GP {[fmt(r['exp_over_gp']) for r in rs]}, "
                     f"EoS/GP {[fmt(r['eos_over_gp']) for r in rs]} at widths "
                     f"{[r['width'] for r in rs]}; max deviation (exp − EoS) = "
                     f"{fmt(max(devs) if devs else math.nan)} SE.")
    bad = sorted({r["width"] for r in rows if not r["eos_converged"]})
    if bad:
        lines.append(f"EoS NOT converged at widths {bad}.")
    return lines
