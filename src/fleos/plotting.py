"""One function per paper figure, each returning the figure and its agreement table.

Figures follow the layout of Seroussi, Naveh & Ringel, Nat. Commun. 14, 908 (2023); the
tables state in numbers what the figure draws (experiment ± SE across seeds, theory, GP) and
mark every EoS point that did not converge: such points are drawn as open grey crosses and
never joined to the converged curve. Every experimental point carries its equilibration
evidence (`fleos.analysis.aggregate.equilibration_summary`: columns rhat, ess, drift_se, n_backoffs,
equilibrated, eq_series); a point that is not equilibrated is drawn hollow (a histogram:
dotted) and named in the summary. `render_figure` writes PNG, PDF and CSV.

Inputs are the workflow's files: aggregate ``.npz`` (fleos.analysis.aggregate.aggregate_experiment),
theory JSON (fleos.theory.runs), data ``.npz`` (fleos.nets.datasets.save_dataset).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from fleos.analysis.aggregate import (  # noqa: E402
    EQ_DRIFT_MAX,
    EQ_RHAT_MAX,
    equilibration_summary,
    load_aggregate,
    unpack_fit,
)
from fleos.core.observables import qq_points  # noqa: E402
from fleos.theory.runs import read_json  # noqa: E402

Table = tuple[list[str], list[dict[str, Any]]]
FIG3_COLUMNS = [
    "n", "C", "alpha_test_exp", "alpha_test_exp_se", "alpha_test_eos",
    "alpha_test_eq9_printed", "alpha_test_eq9_corrected", "alpha_test_gp", "alpha_train_exp",
    "alpha_train_exp_se", "alpha_train_eos", "alpha_train_eq9_printed",
    "alpha_train_eq9_corrected", "alpha_train_gp",
]
BLUE, GREEN, RED, GREY = "tab:blue", "tab:green", "tab:red", "0.5"
NONCONV = {"marker": "x", "color": "0.4", "linestyle": "none", "markersize": 7}
EQ_COLUMNS = ["rhat", "ess", "drift_se", "n_backoffs", "equilibrated", "eq_series"]
HOLLOW_LABEL = f"hollow: not equilibrated (R̂ > {EQ_RHAT_MAX} or |drift| > {EQ_DRIFT_MAX:g} SE)"
# The series (fleos.analysis.aggregate.equilibration_series) behind each headline observable.
SERIES_SIGMA = ("w_teacher_sq", "w_random_sq")  # Σ along the teacher and random directions
SERIES_CNN3 = ("w_teacher_sq", "w_random_sq", "h2_teacher_sq", "h2_random_sq", "loss")


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def _agg_index(paths: Sequence[str]) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    """{(n, width): aggregate} from aggregate file paths."""
    out = {}
    for p in paths:
        a = load_aggregate(p)
        out[(int(a["n"]), int(a["width"]))] = a
    return out


def _theory_index(paths: Sequence[str]) -> dict[int, dict[str, Any]]:
    return {int(d["n"]): d for d in (read_json(p) for p in paths)}


def _hist_with_fit(ax: Any, values: np.ndarray, fit: Mapping[str, float], color: str,
                   label: str, bins: int = 60, style: str = "step",
                   eq: Mapping[str, Any] | None = None) -> None:
    """Histogram (density) of values and the dashed Gaussian moment fit (Figs. 3, 4, 6).
    A flagged `eq` (equilibration_summary) draws hollow dots / a dotted outline and says
    "not equilibrated" in the label."""
    bad = eq is not None and _not_eq(eq)
    if bad:
        label = f"{label} (not equilibrated)"
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    lo, hi = np.quantile(values, [0.0005, 0.9995])
    edges = np.linspace(lo, hi, bins + 1)
    h, e = np.histogram(values, bins=edges, density=True)
    centers = 0.5 * (e[1:] + e[:-1])
    lab = f"{label}: var {fit['var']:.3g}±{fit['var_se']:.2g}"
    if style == "dots":
        ax.plot(centers, h, "o", color=color, markersize=3, label=lab,
                markerfacecolor="white" if bad else color)
    else:
        ax.stairs(h, e, color=color, label=lab, linestyle=":" if bad else "-")
    xs = np.linspace(lo, hi, 300)
    sd = math.sqrt(max(fit["var"], 1e-300))
    ax.plot(xs, np.exp(-0.5 * ((xs - fit["mean"]) / sd) ** 2) / (sd * math.sqrt(2 * math.pi)),
            "--", color=color, linewidth=1)


def _fit_row(prefix: str, agg: Mapping[str, np.ndarray]) -> dict[str, float]:
    return unpack_fit(agg[f"{prefix}_fit"])


def _not_eq(eq: Mapping[str, Any]) -> bool:
    """True only for a point measured and flagged (None = not measurable is not flagged)."""
    return eq.get("equilibrated") is False


def _points(ax: Any, x: Sequence[float], y: Sequence[float], yerr: Sequence[float] | None,
            eqs: Sequence[Mapping[str, Any]], color: str, label: str | None = None,
            **kw: Any) -> bool:
    """Error-bar points, filled when equilibrated and hollow when flagged. Returns whether
    any point was hollow (the caller then adds HOLLOW_LABEL to the legend)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    bad = np.array([_not_eq(e) for e in eqs], bool)
    kw = {"capsize": 3, **kw}
    ax.errorbar(x, y, yerr=yerr, fmt="o", color=color, label=label, **kw)
    if bad.any():  # white faces over the flagged points
        ax.plot(x[bad], y[bad], "o", color=color, markerfacecolor="white",
                markersize=kw.get("markersize", 6), zorder=5)
    return bool(bad.any())


# ---------------------------------------------------------------------------------------------
# Fig. 3: 2-layer CNN
# ---------------------------------------------------------------------------------------------


def _sigma_top_columns(agg: Mapping[str, Any] | None, theory_row: Mapping[str, Any],
                       gp: Mapping[str, Any]) -> dict[str, float]:
    """Top eigenvalue of Σ (the feature-learning direction): experiment (jackknife SE across
    seeds), EoS (Eq. 8), GP, and the experiment's deviation from the EoS in SE."""
    exp = float(agg["sigma_eigs"][0]) if agg is not None and "sigma_eigs" in agg else math.nan
    se = float(agg["sigma_eigs_se"][0]) if agg is not None and "sigma_eigs" in agg else math.nan
    eos = _nan(theory_row.get("sigma_top_eos"))
    return {"sigma_top_exp": exp, "sigma_top_exp_se": se, "sigma_top_eos": eos,
            "sigma_top_gp": _nan(gp.get("sigma_top")),
            "sigma_dev_eos_in_se": (exp - eos) / se if se else math.nan}


def fig3(inputs: Mapping[str, Sequence[str]], config: Mapping[str, Any]) -> tuple[Any, Table]:
    """Fig. 3. Left: test α/α_GP vs C (dots: experiment ± SE; solid: numeric EoS, Eq. 8;
    dotted: Eq. 9 exactly as printed, dashed: Eq. 9 corrected (fleos.theory.eos.cnn2_analytic), each
    with GP inference on its analytic Σ), inset: train α/α_GP (the same lines: Eq. 9's train
    α, fully analytic). Right: histograms of w_c·w*/|w*| and of w_c projected on
    a random unit vector, with Gaussian fits, at the largest n and the width
    ``figures.fig3.hist_width`` (default: the largest width, as in the paper's C = 640).
    """
    exp = config["experiments"]["cnn2"]
    aggs = _agg_index(inputs["aggregate"])
    theory = _theory_index(inputs["theory"])
    fig, (ax, axh) = plt.subplots(1, 2, figsize=(11, 4.3), gridspec_kw={"width_ratios": [1.3, 1]})
    # Lower right, low: below the rising test-α curve and its points (upper right would hide
    # the largest C).
    axin = ax.inset_axes([0.6, 0.05, 0.37, 0.25])
    rows: list[dict[str, Any]] = []
    curve_lo: list[float] = []  # lowest theory values, so that no curve is clipped
    curve_c: list[float] = []  # every C solved (sampled and theory.C_grid): the x ticks
    not_converged_drawn = False
    hollow = False
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, n in enumerate(sorted(theory)):
        th, col = theory[n], colors[k % len(colors)]
        q_train_label = str(th.get("analytic_options", {}).get("q_train", "renormalized"))
        if q_train_label == "first_order":  # Supplementary Material (3) is not available
            q_train_label += " (our reconstruction)"
        gp_te, gp_tr = _nan(th["gp"]["alpha_test"]), _nan(th["gp"]["alpha_train"])
        trows = sorted(th["rows"], key=lambda r: r["C"])
        Cs = np.array([r["C"] for r in trows], float)
        conv = np.array([r["eos_converged"] for r in trows], bool)
        an_ok = np.array([r["analytic_converged"] for r in trows], bool)
        pr_ok = np.array([r.get("eq9_printed_converged", False) for r in trows], bool)
        eos_te = np.array([_nan(r["alpha_test_eos"]) for r in trows]) / gp_te
        eos_tr = np.array([_nan(r["alpha_train_eos"]) for r in trows]) / gp_tr
        an_te = np.array([_nan(r["alpha_test_analytic"]) for r in trows]) / gp_te
        an_tr = np.array([_nan(r["alpha_train_analytic"]) for r in trows]) / gp_tr
        pr_te = np.array([_nan(r.get("alpha_test_eq9_printed")) for r in trows]) / gp_te
        pr_tr = np.array([_nan(r.get("alpha_train_eq9_printed")) for r in trows]) / gp_tr
        for a, eos, an, pr in ((ax, eos_te, an_te, pr_te), (axin, eos_tr, an_tr, pr_tr)):
            a.plot(Cs[conv], eos[conv], "-", color=col)
            a.plot(Cs[~conv], eos[~conv], **NONCONV)
            a.plot(Cs[an_ok], an[an_ok], "--", color=col)
            a.plot(Cs[pr_ok], pr[pr_ok], ":", color=col)
        curve_lo.extend(np.concatenate([eos_te[conv], an_te[an_ok], pr_te[pr_ok]]).tolist())
        not_converged_drawn = not_converged_drawn or not bool(conv.all())
        curve_c.extend(Cs.tolist())
        # Experiment and table: the sampled widths only (theory-only C_grid points draw the
        # lines above).
        trows = [r for r in trows if r.get("sampled", True)]
        Cs = np.array([r["C"] for r in trows], float)
        e_te, e_te_se, e_tr, e_tr_se, eqs = [], [], [], [], []
        for r in trows:
            a = aggs.get((n, int(r["C"])))
            # Train loss for α; Σ along w* and a random direction for what sets test α.
            eqs.append(equilibration_summary(a, ("loss", *SERIES_SIGMA)) if a is not None
                       else {})
            e_te.append(float(a["alpha_test"]) if a is not None else math.nan)
            e_te_se.append(float(a["alpha_test_se"]) if a is not None else math.nan)
            e_tr.append(float(a["alpha_train"]) if a is not None else math.nan)
            e_tr_se.append(float(a["alpha_train_se"]) if a is not None else math.nan)
            rows.append({
                "n": n, "C": int(r["C"]),
                "alpha_test_exp": e_te[-1], "alpha_test_exp_se": e_te_se[-1],
                "alpha_test_eos": _nan(r["alpha_test_eos"]),
                "alpha_test_eq9_printed": _nan(r.get("alpha_test_eq9_printed")),
                "alpha_test_eq9_corrected": _nan(r["alpha_test_analytic"]),
                "alpha_test_gp": gp_te,
                "alpha_train_exp": e_tr[-1], "alpha_train_exp_se": e_tr_se[-1],
                "alpha_train_eos": _nan(r["alpha_train_eos"]),
                "alpha_train_eq9_printed": _nan(r.get("alpha_train_eq9_printed")),
                "alpha_train_eq9_corrected": _nan(r["alpha_train_analytic"]),
                "alpha_train_gp": gp_tr,
                "eos_converged": bool(r["eos_converged"]),
                "eos_residual": _nan(r["eos_residual"]),
                "eq9_printed_converged": bool(r.get("eq9_printed_converged", False)),
                "eq9_corrected_converged": bool(r["analytic_converged"]),
                "eq9_corrected_q_train": q_train_label,
                "test_ratio_exp": e_te[-1] / gp_te, "test_ratio_eos": _nan(r["alpha_test_eos"])
                / gp_te, "test_dev_eos_in_se": (e_te[-1] - _nan(r["alpha_test_eos"]))
                / e_te_se[-1] if e_te_se[-1] else math.nan,
                "teacher_seed": th.get("teacher_seed"),
                "n_seeds": int(len(a["seeds"])) if a is not None else 0,
                **_sigma_top_columns(a, r, th["gp"]),
                **eqs[-1],
            })
        hollow = _points(ax, Cs, np.array(e_te) / gp_te, np.array(e_te_se) / gp_te, eqs, col,
                         label=f"n = {n}") or hollow
        _points(axin, Cs, np.array(e_tr) / gp_tr, np.array(e_tr_se) / gp_tr, eqs, col,
                capsize=2, markersize=3)
    ax.plot([], [], "k-", label="EoS (numeric, Eq. 8)")
    ax.plot([], [], "k:", label="Eq. 9 as printed ($q_{train}$ = 1, unit teacher norms)")
    ax.plot([], [], "k--", label="Eq. 9 corrected (ridge, $K_f^{-1}$, finite S, teacher norms)")
    if not_converged_drawn:  # any failed EoS point, sampled or theory-only (C_grid)
        ax.plot([], [], label="EoS not converged", **NONCONV)
    if hollow:
        ax.plot([], [], "o", color="k", markerfacecolor="white", label=HOLLOW_LABEL)
    all_c = sorted({int(c) for c in curve_c})
    sampled_c = sorted({int(r["C"]) for r in rows} | {all_c[0], all_c[-1]})
    for a, ticks in ((ax, all_c), (axin, sampled_c)):
        a.set_xscale("log")
        a.axhline(1.0, color="0.7", linewidth=0.8, zorder=0)
        a.set_xticks(ticks)
        a.set_xticklabels([str(c) for c in ticks], fontsize=8 if a is ax else 6)
        a.minorticks_off()
    lo_y = np.nanmin([r["test_ratio_exp"] for r in rows] + curve_lo)
    ax.set_ylim(min(lo_y, 1.0) - 0.15 * (1.05 - min(lo_y, 1.0)) - 0.02, 1.12)
    ax.set_xlabel("channels C")
    ax.set_ylabel(r"test $\alpha / \alpha_{\mathrm{GP}}$")
    axin.set_title("train", fontsize=8)
    axin.tick_params(labelsize=7)
    ax.legend(loc="upper left", fontsize=8)
    # Right panel: weight overlaps.
    fcfg = dict(config.get("figures", {}).get("fig3", {}))
    n_max = max(n for n, _ in aggs)
    widths = sorted(w for n, w in aggs if n == n_max)
    hw = int(fcfg.get("hist_width", widths[-1]))
    if (n_max, hw) not in aggs:
        raise ValueError(f"figures.fig3.hist_width = {hw} is not a sampled width {widths}")
    a = aggs[(n_max, hw)]
    for k, col, lab in (("w_teacher", BLUE, r"$w\cdot w^*/|w^*|$"),
                        ("w_random", GREEN, r"$w\cdot w_r/|w_r|$")):
        _hist_with_fit(axh, a[f"{k}_values"], _fit_row(k, a), col, lab,
                       eq=equilibration_summary(a, (f"{k}_sq",)))
    axh.set_title(f"n = {n_max}, C = {hw} (dashed: Gaussian fits)", fontsize=9)
    axh.set_xlabel("overlap")
    axh.set_ylabel("density")
    axh.legend(fontsize=8)
    m = exp["model"]
    fig.suptitle(f"Fig. 3 - 2-layer CNN, S={m['S']}, N={m['N']}, σ²={exp['sigma2']}, "
                 f"teacher seed {exp['data'].get('teacher_seed')}", fontsize=10)
    fig.tight_layout()
    cols = FIG3_COLUMNS + [c for c in rows[0] if c not in FIG3_COLUMNS] if rows else FIG3_COLUMNS
    return fig, (cols, rows)


# ---------------------------------------------------------------------------------------------
# Fig. 2: 3-layer FCN (a, b) and the feature-learning scale (c)
# ---------------------------------------------------------------------------------------------


def fig2a(inputs: Mapping[str, Sequence[str]], config: Mapping[str, Any]) -> tuple[Any, Table]:
    """Fig. 2a: QQ plot of the most strongly fluctuating first-layer weight mode (projection
    of the input weights on the top eigenvector of each chain's Σ) against a normal, one curve
    per sampled scale (n, N), growing scale lighter to darker; insets: histograms with
    Gaussian fits at the smallest and the largest scale."""
    aggs = _agg_index(inputs["aggregate"])
    keys = sorted(aggs, key=lambda k: (k[0] * k[1], k))
    fig, ax = plt.subplots(figsize=(5.5, 5))
    cmap = plt.get_cmap("viridis")
    rows = []
    for i, key in enumerate(keys):
        a = aggs[key]
        if "mode1_values" not in a:
            raise ValueError(f"aggregate n={key[0]} N={key[1]} has no top-mode projections "
                             "(sampler.full_snapshots must be > 0)")
        t, e = qq_points(a["mode1_values"])
        col = cmap(0.15 + 0.7 * i / max(1, len(keys) - 1))
        eq = equilibration_summary(a, ("mode1_sq", *SERIES_SIGMA))
        ax.plot(t, e, "o", color=col, markersize=2.5, label=f"n={key[0]}, N={key[1]}"
                + (" (not equilibrated)" if _not_eq(eq) else ""),
                markerfacecolor="white" if _not_eq(eq) else col)
        f = _fit_row("mode1", a)
        rows.append({"n": key[0], "width": key[1], "mode_eigval": float(np.mean(a["mode1_eigval"])),
                     "var": f["var"], "var_se": f["var_se"], "ks": f["ks"],
                     "excess_kurtosis": f["excess_kurtosis"], "values": int(f["count"]),
                     "n_seeds": int(len(a["seeds"])), "teacher_seed": int(a["teacher_seed"]),
                     **eq})
    lim = 3.2
    ax.plot([-lim, lim], [-lim, lim], "k-", linewidth=0.8)
    ax.set_xlim(-lim, lim)
    ax.set_xlabel("normal quantiles")
    ax.set_ylabel("empirical quantiles (standardized)")
    ax.legend(loc="upper left", fontsize=7)
    for j, key in enumerate([keys[0], keys[-1]] if len(keys) > 1 else keys[:1]):
        ins = ax.inset_axes([0.64, 0.08 + 0.32 * j, 0.33, 0.22])
        a = aggs[key]
        _hist_with_fit(ins, a["mode1_values"], _fit_row("mode1", a), BLUE, "", bins=30)
        ins.set_title(f"n={key[0]}, N={key[1]}", fontsize=7)
        ins.tick_params(labelsize=6)
    ax.set_title("Fig. 2a - top first-layer weight mode, 3-layer FCN (MF)", fontsize=9)
    fig.tight_layout()
    return fig, (list(rows[0]), rows)


def fig2b(inputs: Mapping[str, Sequence[str]], config: Mapping[str, Any]) -> tuple[Any, Table]:
    """Fig. 2b: train MSE, top Σ eigenvalue and train α, experiment (dots ± SE) and EoS
    (lines), each divided by its GP value, against the width N (largest n)."""
    aggs = _agg_index(inputs["aggregate"])
    theory = _theory_index(inputs["theory"])
    n = max(theory)
    th = theory[n]
    qty = [("mse_train_norm", "train MSE", "mse_train_norm", "mse_train_norm"),
           ("sigma_top", r"top $\Sigma$ eigenvalue", "sigma_top", "sigma_top"),
           ("alpha_train", r"train $\alpha$", "alpha_train", "alpha_train")]
    fig, ax = plt.subplots(figsize=(6, 4.3))
    rows = []
    trows = sorted(th["rows"], key=lambda r: r["width"])
    Ns = np.array([r["width"] for r in trows], float)
    conv = np.array([r["eos_converged"] for r in trows], bool)
    hollow = False
    for (key, label, _, _), col in zip(qty, (BLUE, RED, GREEN), strict=True):
        # GP value per width: in MF scaling the GP itself depends on N (fleos.theory.eos.fcn).
        g = np.array([_nan(r[f"{key}_gp"]) for r in trows])
        eos = np.array([_nan(r[f"{key}_eos"]) for r in trows]) / g
        ax.plot(Ns[conv], eos[conv], "-", color=col)
        ax.plot(Ns[~conv], eos[~conv], **NONCONV)
        ex, se, eqs = [], [], []
        for r in trows:
            a = aggs[(n, int(r["width"]))]
            eqs.append(equilibration_summary(a, SERIES_SIGMA if key == "sigma_top"
                                             else ("loss",)))
            if key == "sigma_top":
                ex.append(float(a["sigma_eigs"][0]))
                se.append(float(a["sigma_eigs_se"][0]))
            else:
                ex.append(float(a[key]))
                se.append(float(a[f"{key}_se"]))
        hollow = _points(ax, Ns, np.array(ex) / g, np.array(se) / g, eqs, col,
                         label=label) or hollow
        for r, e_, s_, g_, eq in zip(trows, ex, se, g, eqs, strict=True):
            rows.append({"n": n, "width": int(r["width"]), "quantity": key, "exp": e_,
                         "exp_se": s_, "eos": _nan(r[f"{key}_eos"]), "gp": g_,
                         "exp_over_gp": e_ / g_, "exp_over_gp_se": s_ / g_,
                         "eos_over_gp": _nan(r[f"{key}_eos"]) / g_,
                         "eos_converged": bool(r["eos_converged"]),
                         "teacher_seed": th.get("teacher_seed"), **eq})
    ax.plot([], [], "k-", label="EoS (Eq. 5)")
    if not conv.all():
        ax.plot([], [], label="EoS not converged", **NONCONV)
    if hollow:
        ax.plot([], [], "o", color="k", markerfacecolor="white", label=HOLLOW_LABEL)
    ax.axhline(1.0, color="0.7", linewidth=0.8, zorder=0)
    ax.set_xscale("log")
    ax.set_xticks(Ns)
    ax.set_xticklabels([str(int(v)) for v in Ns])
    ax.minorticks_off()
    ax.set_xlabel("width N (= N1 = N2)")
    ax.set_ylabel("value / GP value")
    ax.legend(fontsize=8)
    ax.set_title(f"Fig. 2b - 3-layer FCN (MF), n = {n}", fontsize=9)
    fig.tight_layout()
    return fig, (list(rows[0]), rows)


def fig2c(inputs: Mapping[str, Sequence[str]], config: Mapping[str, Any]) -> tuple[Any, Table]:
    """Fig. 2c: the width N (or channels C) at which the feature-learning scale χ = 1, vs n,
    log-log, for the FCN in standard and mean-field scaling and the 2-layer CNN; solid: our
    normalization (ε/σ², σ_L² kept: Eqs. 5, 8, 9), dashed: Eq. 6 as printed (ε/σ, σ_L²
    absorbed), the one behind the paper's "standard FCNs need N = O(1)" (fleos.theory.fls). One
    table row per (n, convention)."""
    doc = read_json(inputs["theory"][0])
    ns = [int(v) for v in doc["n"]]
    curves = doc["curves"]
    fig, ax = plt.subplots(figsize=(6, 4.6))
    rows = [{"n": n, "convention": conv} for conv in ("fleos", "eq6_printed") for n in ns]
    hi, lo = 10.0, 0.3
    for name, col in zip(curves, (BLUE, RED, GREEN, "tab:purple"), strict=False):
        c = curves[name]
        cfg = c.get("config", {})
        lab = (f"{c.get('label', name)}: σ² = {_fmt(cfg.get('sigma2'))}, "
               f"σ_L² = {_fmt(cfg.get('sigma_a2'))}")
        for conv, key, style in (("fleos", "width", "o-"), ("eq6_printed", "width_eq6_printed",
                                                              "s--")):
            if key not in c:  # a theory file from before both conventions were written
                continue
            w = np.array([_nan(v) for v in c[key]])
            ax.plot(ns, w, style, color=col, markersize=4,
                    label=lab if conv == "fleos" else None)
            hi, lo = max(hi, float(np.nanmax(w)) * 2), min(lo, float(np.nanmin(w)) / 2)
            for r in (r for r in rows if r["convention"] == conv):
                r[f"width_{name}"] = w[ns.index(r["n"])]
                r[f"sigma2_{name}"] = cfg.get("sigma2", math.nan)
                r[f"sigma_L2_{name}"] = cfg.get("sigma_a2", math.nan)
                r[f"y_var_{name}"] = c.get("y_var", math.nan)
    rows = [r for r in rows if len(r) > 2]
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
    return fig, (list(rows[0]), rows)


# ---------------------------------------------------------------------------------------------
# Figs. 4 and 5: 3-layer CNN
# ---------------------------------------------------------------------------------------------


def _hist2d_inset(ax: Any, x: np.ndarray, y: np.ndarray, title: str, rect: list[float]) -> None:
    ins = ax.inset_axes(rect)
    m = min(x.size, y.size)
    if m:
        ins.hist2d(x[:m], y[:m], bins=30, cmap="Blues")
    ins.set_title(title, fontsize=7)
    ins.tick_params(labelsize=5)


# Prior draws are independent exact draws: nothing to equilibrate.
_PRIOR_EQ = {"rhat": math.nan, "ess": math.nan, "drift_se": math.nan, "n_backoffs": math.nan,
             "equilibrated": True, "eq_series": "independent prior draws"}


def fig4(inputs: Mapping[str, Sequence[str]], config: Mapping[str, Any]) -> tuple[Any, Table]:
    """Fig. 4: left, input weights dotted with the normalized teacher weight (blue) and a
    random unit vector (green); right, hidden pre-activations h2 dotted with the normalized
    teacher h2 (blue) and a random teacher's h2 (green). Dots: trained (equilibrium samples
    pooled over channels, time and seeds); dashed: Gaussian fits. Insets: 2-D histograms of
    (teacher, random) overlaps before (prior draws) and after training."""
    aggs = _agg_index(inputs["aggregate"])
    key = max(aggs)
    a = aggs[key]
    fig, (axl, axr) = plt.subplots(1, 2, figsize=(11, 4.3))
    rows = []
    panels = ((axl, "w_teacher", "w_random", r"$w\cdot w^*/|w^*|$", r"$w\cdot w_r/|w_r|$"),
              (axr, "h2_teacher", "h2_random", r"$h^{(2)}\cdot h^{(2)*}/|h^{(2)*}|$",
               r"$h^{(2)}\cdot h^{(2)}_r/|h^{(2)}_r|$"))
    for ax, kt, kr, lt, lr in panels:
        for k, col, lab in ((kt, BLUE, lt), (kr, GREEN, lr)):
            if f"{k}_values" not in a:
                raise ValueError(f"aggregate for n={key[0]} C={key[1]} lacks {k} overlaps")
            eq = equilibration_summary(a, (f"{k}_sq",))
            _hist_with_fit(ax, a[f"{k}_values"], _fit_row(k, a), col, lab, style="dots", eq=eq)
            for state, pre in (("trained", ""), ("prior", "prior_")):
                if f"{pre}{k}_fit" in a:
                    f = _fit_row(f"{pre}{k}", a)
                    rows.append({"n": key[0], "C": key[1], "quantity": k, "state": state,
                                 "mean": f["mean"], "mean_se": f["mean_se"], "var": f["var"],
                                 "var_se": f["var_se"], "ks": f["ks"],
                                 "excess_kurtosis": f["excess_kurtosis"],
                                 "teacher_seed": int(a["teacher_seed"]),
                                 **(eq if state == "trained" else _PRIOR_EQ)})
        if f"prior_{kt}_values" in a:
            # Inset at 0.1 of the width, not at the edge: its y tick labels then stay inside
            # the main axes instead of printing over the main axis's tick labels.
            _hist2d_inset(ax, a[f"prior_{kt}_values"], a[f"prior_{kr}_values"], "before",
                          [0.1, 0.62, 0.24, 0.33])
        _hist2d_inset(ax, a[f"{kt}_values"], a[f"{kr}_values"], "after",
                      [0.74, 0.62, 0.24, 0.33])
        ax.set_xlabel("overlap")
        ax.set_ylabel("density")
        ax.legend(fontsize=7, loc="lower center")
    ratio_w = _fit_row("w_teacher", a)["var"] / _fit_row("w_random", a)["var"]
    ratio_h = _fit_row("h2_teacher", a)["var"] / _fit_row("h2_random", a)["var"]
    for r in rows:
        r["teacher_over_random_var"] = ratio_w if r["quantity"].startswith("w_") else ratio_h
    fig.suptitle(f"Fig. 4 - 3-layer CNN, n = {key[0]}, C1 = C2 = {key[1]} "
                 "(insets: teacher vs random overlap, before / after)", fontsize=10)
    fig.tight_layout()
    return fig, (list(rows[0]), rows)


def fig5(inputs: Mapping[str, Sequence[str]], config: Mapping[str, Any]) -> tuple[Any, Table]:
    """Fig. 5: left, top-50 eigenvalues of Σ: empirical (± jackknife SE over seeds),
    predicted by the EoS (last line of Eq. 5) from the empirical K^(2) and Q^(2) (the paper's
    estimate; the table also holds the variant with the analytic Q2(Σ_emp) in the KL term,
    ``sigma_eos_analytic_q2``), and the GP value; right, top-10 eigenvalues of Q^(2):
    empirical, predicted from the empirical K^(2) (Eq. 5, line 2), GP; inset: the next 90
    (trailing) eigenvalues."""
    aggs = _agg_index(inputs["aggregate"])
    key = max(aggs)
    a = aggs[key]
    th = next(d for d in (read_json(p) for p in inputs["theory"])
              if int(d["n"]) == key[0] and int(d["width"]) == key[1])
    fig, (axl, axr) = plt.subplots(1, 2, figsize=(11, 4.3))
    ks = min(50, len(a["sigma_eigs"]))
    idx = np.arange(1, ks + 1)

    def eigs(k: str, m: int) -> np.ndarray:  # a spectrum of the theory file, NaN-padded to m
        v = np.array([_nan(x) for x in (th.get(k) or [])], float)[:m]
        return np.concatenate([v, np.full(m - v.size, np.nan)])

    s_pred, s_pred_an = eigs("sigma_pred_eigs", ks), eigs("sigma_pred_analytic_q2_eigs", ks)
    s_gp = eigs("sigma_gp_eigs", ks)
    eq = equilibration_summary(a, SERIES_CNN3)
    hollow = _points(axl, idx, a["sigma_eigs"][:ks], a["sigma_eigs_se"][:ks], [eq] * ks, BLUE,
                     label="empirical", markersize=3)
    pred_ok = bool(th.get("sigma_pred_valid", True))
    axl.plot(idx, s_pred, "s" if pred_ok else "x", color=RED if pred_ok else "0.4",
             markersize=3, label=r"EoS (Eq. 5) from $\hat K^{(2)}, \hat Q^{(2)}$"
             + ("" if pred_ok else " (not positive definite)"))
    axl.plot(idx, s_gp, "-", color=GREEN, label="GP")
    axl.set_yscale("log")
    axl.set_xlabel("index")
    axl.set_ylabel(r"eigenvalue of $\Sigma$")
    if hollow:
        axl.plot([], [], "o", color="k", markerfacecolor="white", label=HOLLOW_LABEL)
    axl.legend(fontsize=7)
    q_emp, q_se = a["Q2_eigs"], a["Q2_eigs_se"]
    q_pred = eigs("q2_pred_eigs", len(q_emp))
    q_gp = eigs("q2_gp_eigs", len(q_emp))
    kq = min(10, len(q_emp))
    i10 = np.arange(1, kq + 1)
    _points(axr, i10, q_emp[:kq], q_se[:kq], [eq] * kq, BLUE, label="empirical")
    axr.plot(i10, q_pred[:kq], "s", color=RED, label=r"predicted from $K^{(2)}$")
    axr.plot(i10, q_gp[:kq], "^", color=GREEN, label="GP")
    axr.set_xlabel("index")
    axr.set_ylabel(r"eigenvalue of $Q^{(2)}$")
    axr.legend(fontsize=8)
    kt = min(100, len(q_emp))
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
    rows = []
    for i in range(max(ks, kt)):
        rows.append({
            "index": i + 1,
            "sigma_exp": float(a["sigma_eigs"][i]) if i < ks else math.nan,
            "sigma_exp_se": float(a["sigma_eigs_se"][i]) if i < ks else math.nan,
            "sigma_eos": float(s_pred[i]) if i < ks else math.nan,
            "sigma_eos_analytic_q2": float(s_pred_an[i]) if i < ks else math.nan,
            "sigma_gp": float(s_gp[i]) if i < ks else math.nan,
            "q2_exp": float(q_emp[i]) if i < kt else math.nan,
            "q2_exp_se": float(q_se[i]) if i < kt else math.nan,
            "q2_pred": float(q_pred[i]) if i < len(q_pred) else math.nan,
            "q2_gp": float(q_gp[i]) if i < len(q_gp) else math.nan,
            "sigma_pred_valid": pred_ok,
            "sigma_pred_analytic_q2_valid": bool(th.get("sigma_pred_analytic_q2_valid", False)),
            "n": key[0], "C": key[1], "teacher_seed": int(a["teacher_seed"]), **eq,
        })
    fig.suptitle(f"Fig. 5 - 3-layer CNN spectra, n = {key[0]}, C = {key[1]}", fontsize=10)
    fig.tight_layout()
    return fig, (list(rows[0]), rows)


# ---------------------------------------------------------------------------------------------
# Fig. 6: Myrtle-5
# ---------------------------------------------------------------------------------------------


def fig6(inputs: Mapping[str, Sequence[str]], config: Mapping[str, Any]) -> tuple[Any, Table]:
    """Fig. 6: Myrtle-5 pre-activations (position-averaged, per channel) of layers 2 and 4 on
    the probe images, projected on the 1st and 10th eigenvectors of the trained network's
    empirical kernel of that layer: trained (blue) vs untrained prior draws (grey), with
    Gaussian fits (dashed)."""
    exp = config["experiments"]["myrtle5"]
    aggs = _agg_index(inputs["aggregate"])
    key = max(aggs)
    a = aggs[key]
    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    rows = []
    for i, layer in enumerate(("layer2", "layer4")):
        for j, ev in enumerate((1, 10)):
            ax = axes[i, j]
            k = f"{layer}_proj{ev}"
            if f"{k}_values" not in a:
                ax.text(0.5, 0.5, f"eigenvector {ev} unavailable\n(probe too small)",
                        ha="center", transform=ax.transAxes)
                continue
            for pre, col, lab in (("prior_", GREY, "untrained"), ("", BLUE, "trained")):
                if f"{pre}{k}_values" in a:
                    f = _fit_row(f"{pre}{k}", a)
                    eq = equilibration_summary(a, (f"{k}_sq",)) if not pre else _PRIOR_EQ
                    _hist_with_fit(ax, a[f"{pre}{k}_values"], f, col, lab, bins=40, eq=eq)
                    rows.append({"layer": layer, "eigenvector": ev, "state": lab,
                                 "mean": f["mean"], "mean_se": f["mean_se"], "var": f["var"],
                                 "var_se": f["var_se"], "ks": f["ks"],
                                 "excess_kurtosis": f["excess_kurtosis"],
                                 "n": key[0], "C": key[1], **eq})
            ax.set_title(f"{'abcd'[2 * i + j]}) {layer}, eigenvector {ev}", fontsize=9)
            ax.set_xlabel(f"pre-activation projected on eigenvector {ev}")
            ax.set_ylabel("density")
            ax.legend(fontsize=7)
    label = exp.get("label", "CIFAR-10")
    fig.suptitle(f"Fig. 6 - Myrtle-5 (ReLU), C = {key[1]}, n = {key[0]}; data: {label}",
                 fontsize=10)
    fig.tight_layout()
    return fig, (list(rows[0]) if rows else ["layer"], rows)


FIGURES: dict[str, Callable[..., tuple[Any, Table]]] = {
    "fig2a": fig2a, "fig2b": fig2b, "fig2c": fig2c, "fig3": fig3, "fig4": fig4,
    "fig5": fig5, "fig6": fig6,
}


def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


def summarize(fig_name: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """The agreement of a figure in a few sentences of reStructuredText (report captions)."""
    if not rows:
        return "No rows: nothing to compare."
    lines: list[str] = []
    if fig_name == "fig3":
        for n in sorted({r["n"] for r in rows}):
            rs = sorted((r for r in rows if r["n"] == n), key=lambda r: r["C"])
            lo = rs[0]
            conv = [r for r in rs if r["eos_converged"]]
            dev = [abs(r["test_dev_eos_in_se"]) for r in conv
                   if math.isfinite(r["test_dev_eos_in_se"])]
            lines.append(
                f"n = {n}: at the smallest C = {lo['C']} the experiment gives test "
                f"α/α_GP = {_fmt(lo['test_ratio_exp'])} ± "
                f"{_fmt(lo['alpha_test_exp_se'] / lo['alpha_test_gp'])} and the EoS "
                f"{_fmt(lo['test_ratio_eos'])}; over the converged EoS points the largest "
                f"deviation (experiment − EoS) is {_fmt(max(dev) if dev else math.nan)} SE "
                f"(test α). "
                f"Train α experiment/EoS at C = {lo['C']}: {_fmt(lo['alpha_train_exp'])} / "
                f"{_fmt(lo['alpha_train_eos'])} (GP {_fmt(lo['alpha_train_gp'])}).")
            bad = [r["C"] for r in rs if not r["eos_converged"]]
            if bad:
                lines.append(f"EoS NOT converged at C = {bad} (marked x, not joined).")
    elif fig_name == "fig2b":
        for q in ("mse_train_norm", "sigma_top", "alpha_train"):
            rs = [r for r in rows if r["quantity"] == q]
            devs = [abs(r["exp"] - r["eos"]) / r["exp_se"] for r in rs
                    if r["eos_converged"] and r["exp_se"] > 0]
            lines.append(f"{q}: experiment/GP {[_fmt(r['exp_over_gp']) for r in rs]}, "
                         f"EoS/GP {[_fmt(r['eos_over_gp']) for r in rs]} at widths "
                         f"{[r['width'] for r in rs]}; max deviation (exp − EoS) = "
                         f"{_fmt(max(devs) if devs else math.nan)} SE.")
        bad = sorted({r["width"] for r in rows if not r["eos_converged"]})
        if bad:
            lines.append(f"EoS NOT converged at widths {bad}.")
    elif fig_name == "fig2a":
        for r in rows:
            lines.append(f"n = {r['n']}, N = {r['width']}: KS distance {_fmt(r['ks'])}, "
                         f"excess kurtosis {_fmt(r['excess_kurtosis'])} "
                         f"({r['values']} values).")
    elif fig_name == "fig2c":
        archs = [k[6:] for k in rows[0] if k.startswith("width_")]
        r0 = rows[0]
        lines.append("Settings: " + "; ".join(
            f"{a}: σ² = {_fmt(r0[f'sigma2_{a}'])}, σ_L² = {_fmt(r0[f'sigma_L2_{a}'])}, teacher "
            f"output variance ⟨y²⟩ = {_fmt(r0[f'y_var_{a}'])}" for a in archs)
            + " (the paper does not give σ² for the FCN).")
        for conv in ("fleos", "eq6_printed"):
            rs = [r for r in rows if r["convention"] == conv]
            for a in archs:
                lines.append(f"{conv}, {a}: " + ", ".join(f"n={r['n']}: {_fmt(r[f'width_{a}'])}"
                                                          for r in rs))
            if "cnn2" in archs and "fcn_standard" in archs:
                ok = [r["n"] for r in rs if r["width_cnn2"] > r["width_fcn_standard"]]
                lines.append(f"{conv}: the paper's ordering (CNN channels at χ = 1 above the "
                             f"standard-FCN width) holds at n = {ok if ok else 'none'} of "
                             f"{[r['n'] for r in rs]}.")
    elif fig_name == "fig4":
        for r in rows:
            lines.append(f"{r['quantity']} ({r['state']}): variance {_fmt(r['var'])} ± "
                         f"{_fmt(r['var_se'])}, KS {_fmt(r['ks'])}.")
    elif fig_name == "fig5":
        r0 = rows[0]
        valid = {True: "positive definite", False: "NOT positive definite"}
        lines.append(f"Top Σ eigenvalue: empirical {_fmt(r0['sigma_exp'])} ± "
                     f"{_fmt(r0['sigma_exp_se'])}, EoS with the empirical Q2 in the KL term "
                     f"(the paper's, drawn) {_fmt(r0['sigma_eos'])} "
                     f"({valid[bool(r0['sigma_pred_valid'])]}), with the analytic Q2(Σ_emp) "
                     f"{_fmt(r0['sigma_eos_analytic_q2'])} "
                     f"({valid[bool(r0['sigma_pred_analytic_q2_valid'])]}), GP "
                     f"{_fmt(r0['sigma_gp'])}. Top Q2 eigenvalue: empirical "
                     f"{_fmt(r0['q2_exp'])}, predicted {_fmt(r0['q2_pred'])}, GP "
                     f"{_fmt(r0['q2_gp'])}.")
    elif fig_name == "fig6":
        for r in rows:
            lines.append(f"{r['layer']}, eigenvector {r['eigenvector']}, {r['state']}: mean "
                         f"{_fmt(r['mean'])}, variance {_fmt(r['var'])}, KS {_fmt(r['ks'])}.")
    lines.extend(_eq_lines(rows))
    return "\n".join(f"* {line}" for line in lines) + "\n"


# What identifies a point in a table (rows sharing these share their equilibration record).
_ID_KEYS = ("n", "C", "width", "quantity", "layer", "eigenvector", "state")


def _eq_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Summary sentences on equilibration: the flagged points, by name and numbers, or the
    worst diagnostics when none is flagged; points without a measurement are named too."""
    points: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        if "equilibrated" in r and r.get("eq_series") != _PRIOR_EQ["eq_series"]:
            points.setdefault(", ".join(f"{k} = {r[k]}" for k in _ID_KEYS if k in r), r)
    if not points:
        return []

    def nums(r: Mapping[str, Any]) -> str:
        return (f"R̂ {_fmt(r['rhat'])}, drift {_fmt(r['drift_se'])} SE, bulk ESS "
                f"{_fmt(r['ess'])}, back-offs {_fmt(r['n_backoffs'])}; series {r['eq_series']}")

    bad = {i: r for i, r in points.items() if r["equilibrated"] is False}
    unknown = [i for i, r in points.items() if r["equilibrated"] is None]
    measured = [r for r in points.values() if r["equilibrated"] is not None]
    lines = []
    if bad:
        lines.append(f"NOT EQUILIBRATED (drawn hollow; R̂ > {EQ_RHAT_MAX} or |drift| > "
                     f"{EQ_DRIFT_MAX:g} SE): " + "; ".join(f"{i} ({nums(r)})"
                                                     for i, r in bad.items()) + ".")
    elif measured:
        worst = max(measured, key=lambda r: r["rhat"])
        lines.append(f"Equilibration: every measured point has R̂ ≤ {EQ_RHAT_MAX} and |drift| ≤ "
                     f"{EQ_DRIFT_MAX:g} SE; the largest R̂ is at "
                     f"{next(i for i, r in points.items() if r is worst)} ({nums(worst)}).")
    if unknown:
        lines.append("Equilibration not measurable (fewer than 8 sampling points common to "
                     "all seeds) at: " + "; ".join(unknown) + ".")
    return lines


def write_table(path: str | os.PathLike, columns: Sequence[str],
                rows: Sequence[Mapping[str, Any]]) -> None:
    """CSV with a header row; floats with 6 significant digits, NaN written as 'nan'."""
    from fleos.sampling.io import atomic_path

    def fmt(v: Any) -> Any:
        if isinstance(v, (float, np.floating)):
            return f"{float(v):.6g}"
        return v

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: fmt(v) for k, v in r.items()})


def render_figure(
    fig_name: str,
    inputs: Mapping[str, Sequence[str]],
    config: Mapping[str, Any],
    png: str | os.PathLike,
    pdf: str | os.PathLike,
    csv_path: str | os.PathLike,
    summary_path: str | os.PathLike | None = None,
) -> Table:
    """Draw figure `fig_name` from the workflow files and write PNG, PDF, the CSV table and
    (if asked) an rst summary of the agreement, included in the report caption."""
    if fig_name not in FIGURES:
        raise ValueError(f"unknown figure {fig_name!r}; allowed: {sorted(FIGURES)}")
    fig, (cols, rows) = FIGURES[fig_name](inputs, config)
    for p in (png, pdf):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=150)
    fig.savefig(pdf)
    plt.close(fig)
    write_table(csv_path, cols, rows)
    if summary_path is not None:
        from fleos.sampling.io import atomic_path

        with atomic_path(summary_path) as tmp:
            Path(tmp).write_text(summarize(fig_name, rows))
    return cols, rows
