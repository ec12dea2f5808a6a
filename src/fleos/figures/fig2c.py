"""Fig. 2c: the width N (or channels C) at which the feature-learning scale χ = 1 (Eq. 6),
vs n, log-log, for the FCN in standard and mean-field scaling and the 2-layer CNN (theory
only, fleos.theory.fls). Solid: our normalization (ε/σ², σ_L² kept: Eqs. 5, 8, 9); dashed:
Eq. 6 as printed (ε/σ, σ_L² absorbed), the one behind the paper's "standard FCNs need
N = O(1)".

Table: one row per (n, convention), one width column per architecture, with its σ², σ_L²
and teacher output variance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fleos.core.files import read_json
from fleos.figures.common import Inputs, Row, fmt, nan

# (convention, key of the curve in the theory file, line style)
CONVENTIONS = (("fleos", "width", "o-"), ("eq6_printed", "width_eq6_printed", "s--"))


def table(inputs: Inputs, config: Mapping[str, Any]) -> list[Row]:
    doc = read_json(inputs["theory"][0])
    ns = [int(v) for v in doc["n"]]
    rows = [{"n": n, "convention": conv} for conv, _, _ in CONVENTIONS for n in ns]
    for name, c in doc["curves"].items():
        cfg = c.get("config", {})
        for conv, key, _ in CONVENTIONS:
            if key not in c:  # a theory file from before both conventions were written
                continue
            w = np.array([nan(v) for v in c[key]])
            for r in (r for r in rows if r["convention"] == conv):
                r[f"width_{name}"] = w[ns.index(r["n"])]
                r[f"sigma2_{name}"] = cfg.get("sigma2", math.nan)
                r[f"sigma_L2_{name}"] = cfg.get("sigma_a2", math.nan)
                r[f"y_var_{name}"] = c.get("y_var", math.nan)
    return [r for r in rows if len(r) > 2]


def draw(rows: list[Row], inputs: Inputs, config: Mapping[str, Any]) -> Any:

    from fleos.figures.style import BLUE, GREEN, RED, plt

    doc = read_json(inputs["theory"][0])
    ns = [int(v) for v in doc["n"]]
    curves = doc["curves"]
    fig, ax = plt.subplots(figsize=(6, 4.6))
    hi, lo = 10.0, 0.3
    for name, col in zip(curves, (BLUE, RED, GREEN, "tab:purple"), strict=False):
        c = curves[name]
        cfg = c.get("config", {})
        lab = (f"{c.get('label', name)}: σ² = {fmt(cfg.get('sigma2'))}, "
               f"σ_L² = {fmt(cfg.get('sigma_a2'))}")
        for conv, key, style in CONVENTIONS:
            if key not in c:
                continue
            w = np.array([nan(v) for v in c[key]])
            ax.plot(ns, w, style, color=col, markersize=4,
                    label=lab if conv == "fleos" else None)
            hi, lo = max(hi, float(np.nanmax(w)) * 2), min(lo, float(np.nanmin(w)) / 2)
    ax.plot([], [], "k-", label="ours: ε = (y − f̄)/σ², σ_L² kept (Eqs. 5, 8, 9)")
    ax.plot([], [], "k--", label="Eq. 6 as printed: ε = (y − f̄)/σ, σ_L² absorbed")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhspan(lo / 10, 10, color="0.9", zorder=0)
    ax.set_ylim(lo, hi)
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("training set size n")
    ax.set_ylabel(r"width / channels at $\chi = 1$")
    ax.legend(fontsize=6.5)
    ax.set_title("Fig. 2c - onset of feature learning (shaded: width < 10)", fontsize=9)
    fig.tight_layout()
    return fig


def summary(rows: list[Row]) -> list[str]:
    archs = [k[6:] for k in rows[0] if k.startswith("width_")]
    r0 = rows[0]
    lines = ["Settings: " + "; ".join(
        f"{a}: σ² = {fmt(r0[f'sigma2_{a}'])}, σ_L² = {fmt(r0[f'sigma_L2_{a}'])}, teacher "
        f"output variance ⟨y²⟩ = {fmt(r0[f'y_var_{a}'])}" for a in archs)
        + " (the paper does not give σ² for the FCN)."]
    for conv, _, _ in CONVENTIONS:
        rs = [r for r in rows if r["convention"] == conv]
        for a in archs:
            lines.append(f"{conv}, {a}: " + ", ".join(f"n={r['n']}: {fmt(r[f'width_{a}'])}"
                                                      for r in rs))
        if "cnn2" in archs and "fcn_standard" in archs:
            ok = [r["n"] for r in rs if r["width_cnn2"] > r["width_fcn_standard"]]
            lines.append(f"{conv}: the paper's ordering (CNN channels at χ = 1 above the "
                         f"standard-FCN width) holds at n = {ok if ok else 'none'} of "
                         f"{[r['n'] for r in rs]}.")
    return lines
