"""Fig. 5: spectra of the 3-layer CNN. Left: top-50 eigenvalues of Σ: empirical (± jackknife
SE over seeds), predicted by the EoS (last line of Eq. 5) from the empirical K^(2) and Q^(2)
(the paper's estimate; the table also holds the variant with the analytic Q2(Σ_emp) in the KL
term, ``sigma_eos_analytic_q2``), and the GP value. Right: top-10 eigenvalues of Q^(2):
empirical, predicted from the empirical K^(2) (Eq. 5, line 2), GP; inset: the next 90
(trailing) eigenvalues.

Table: one row per eigenvalue index, Σ and Q^(2) side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fleos.analysis.aggregate import equilibration_summary
from fleos.core.diagnostics import EquilibriumGates
from fleos.core.files import read_json
from fleos.figures.common import SERIES_CNN3, Inputs, Row, agg_index, fmt, nan

SIGMA_TOP, Q2_TOP, Q2_INSET = 50, 10, 100  # eigenvalues drawn: Σ, Q2 main panel, Q2 inset
# The columns of the report's verdict line (fleos.figures.render.verdict): the top eigenvalue,
# the one the summary quotes (the small ones are noise-dominated in %).
AGREEMENT = {"exp": "sigma_exp", "se": "sigma_exp_se", "theory": "sigma_eos",
             "what": "top Σ eigenvalue", "rows": {"index": 1}}


def _spectra(inputs: Inputs, gates: EquilibriumGates) -> dict[str, Any]:
    """The largest sampled (n, C): its aggregate, the theory record of the same (n, C), and
    every spectrum of the figure (theory spectra NaN-padded to the empirical length)."""
    aggs = agg_index(inputs["aggregate"])
    key = max(aggs)
    a = aggs[key]
    th = next(d for d in (read_json(p) for p in inputs["theory"])
              if int(d["n"]) == key[0] and int(d["width"]) == key[1])
    ks = min(SIGMA_TOP, len(a["sigma_eigs"]))

    def eigs(k: str, m: int) -> np.ndarray:  # a spectrum of the theory file, NaN-padded to m
        v = np.array([nan(x) for x in (th.get(k) or [])], float)[:m]
        return np.concatenate([v, np.full(m - v.size, np.nan)])

    q_emp = a["Q2_eigs"]
    return {
        "key": key, "a": a, "th": th, "ks": ks, "kt": min(Q2_INSET, len(q_emp)),
        "kq": min(Q2_TOP, len(q_emp)), "q_emp": q_emp, "q_se": a["Q2_eigs_se"],
        "s_pred": eigs("sigma_pred_eigs", ks), "s_gp": eigs("sigma_gp_eigs", ks),
        "s_pred_an": eigs("sigma_pred_analytic_q2_eigs", ks),
        "q_pred": eigs("q2_pred_eigs", len(q_emp)), "q_gp": eigs("q2_gp_eigs", len(q_emp)),
        "pred_ok": bool(th.get("sigma_pred_valid", True)),
        "eq": equilibration_summary(a, SERIES_CNN3, gates),
    }


def table(inputs: Inputs, config: Mapping[str, Any]) -> list[Row]:
    s = _spectra(inputs, EquilibriumGates.from_config(config))
    a, ks, kt, key = s["a"], s["ks"], s["kt"], s["key"]
    rows = []
    for i in range(max(ks, kt)):
        rows.append({
            "index": i + 1,
            "sigma_exp": float(a["sigma_eigs"][i]) if i < ks else math.nan,
            "sigma_exp_se": float(a["sigma_eigs_se"][i]) if i < ks else math.nan,
            "sigma_eos": float(s["s_pred"][i]) if i < ks else math.nan,
            "sigma_eos_analytic_q2": float(s["s_pred_an"][i]) if i < ks else math.nan,
            "sigma_gp": float(s["s_gp"][i]) if i < ks else math.nan,
            "q2_exp": float(s["q_emp"][i]) if i < kt else math.nan,
            "q2_exp_se": float(s["q_se"][i]) if i < kt else math.nan,
            "q2_pred": float(s["q_pred"][i]) if i < len(s["q_pred"]) else math.nan,
            "q2_gp": float(s["q_gp"][i]) if i < len(s["q_gp"]) else math.nan,
            "sigma_pred_valid": s["pred_ok"],
            "sigma_pred_analytic_q2_valid": bool(s["th"].get("sigma_pred_analytic_q2_valid",
                                                             False)),
            "n": key[0], "C": key[1], "teacher_seed": int(a["teacher_seed"]), **s["eq"],
        })
    return rows


def draw(rows: list[Row], inputs: Inputs, config: Mapping[str, Any]) -> Any:
    from matplotlib.ticker import NullFormatter

    from fleos.figures.style import BLUE, GREEN, RED, hollow_legend, plt, points

    s = _spectra(inputs, EquilibriumGates.from_config(config))
    a, ks, kq, kt, key, eq = s["a"], s["ks"], s["kq"], s["kt"], s["key"], s["eq"]
    q_emp, q_pred, q_gp = s["q_emp"], s["q_pred"], s["q_gp"]
    fig, (axl, axr) = plt.subplots(1, 2, figsize=(11, 4.3))
    idx = np.arange(1, ks + 1)
    hollow = points(axl, idx, a["sigma_eigs"][:ks], a["sigma_eigs_se"][:ks], [eq] * ks, BLUE,
                    label="empirical", markersize=3)
    pred_ok = s["pred_ok"]
    axl.plot(idx, s["s_pred"], "s" if pred_ok else "x", color=RED if pred_ok else "0.4",
             markersize=3, label=r"EoS (Eq. 5) from $\hat K^{(2)}, \hat Q^{(2)}$"
             + ("" if pred_ok else " (not positive definite)"))
    axl.plot(idx, s["s_gp"], "-", color=GREEN, label="GP")
    axl.set_yscale("log")
    axl.set_xlabel("index")
    axl.set_ylabel(r"eigenvalue of $\Sigma$")
    if hollow:
        hollow_legend(axl)
    axl.legend(fontsize=7)
    i10 = np.arange(1, kq + 1)
    points(axr, i10, q_emp[:kq], s["q_se"][:kq], [eq] * kq, BLUE, label="empirical")
    axr.plot(i10, q_pred[:kq], "s", color=RED, label=r"predicted from $K^{(2)}$")
    axr.plot(i10, q_gp[:kq], "^", color=GREEN, label="GP")
    axr.set_xlabel("index")
    axr.set_ylabel(r"eigenvalue of $Q^{(2)}$")
    axr.legend(fontsize=8)
    if kt > kq:
        ins = axr.inset_axes([0.5, 0.45, 0.46, 0.3])
        it = np.arange(kq + 1, kt + 1)
        ins.plot(it, q_emp[kq:kt], "o", color=BLUE, markersize=2)
        ins.plot(it, q_pred[kq:kt], "s", color=RED, markersize=2)
        ins.plot(it, q_gp[kq:kt], "^", color=GREEN, markersize=2)
        ins.set_yscale("log")
        ins.set_title(f"eigenvalues {kq + 1}-{kt}", fontsize=7)
        # Label only the decades: matplotlib's minor log labels (2×10⁰, 3×10⁰, …) collide at
        # this size.
        ins.yaxis.set_minor_formatter(NullFormatter())
        ins.tick_params(labelsize=6, which="both")
    fig.suptitle(f"Fig. 5 - 3-layer CNN spectra, n = {key[0]}, C = {key[1]}", fontsize=10)
    fig.tight_layout()
    return fig


def summary(rows: list[Row]) -> list[str]:
    r0 = rows[0]
    valid = {True: "positive definite", False: "NOT positive definite"}
    return [f"Top Σ eigenvalue: empirical {fmt(r0['sigma_exp'])} ± "
            f"{fmt(r0['sigma_exp_se'])}, EoS with the empirical Q2 in the KL term "
            f"(the paper's, drawn) {fmt(r0['sigma_eos'])} "
            f"({valid[bool(r0['sigma_pred_valid'])]}), with the analytic Q2(Σ_emp) "
            f"{fmt(r0['sigma_eos_analytic_q2'])} "
            f"({valid[bool(r0['sigma_pred_analytic_q2_valid'])]}), GP "
            f"{fmt(r0['sigma_gp'])}. Top Q2 eigenvalue: empirical "
            f"{fmt(r0['q2_exp'])}, predicted {fmt(r0['q2_pred'])}, GP "
            f"{fmt(r0['q2_gp'])}."]
