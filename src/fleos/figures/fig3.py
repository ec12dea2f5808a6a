"""Fig. 3: the 2-layer CNN (Eq. 7). Left: test α/α_GP vs C (dots: experiment ± SE across
seeds; solid: numeric EoS, Eq. 8; dash-dotted: the moment-matched EoS, Eq. 8 with Σ the
covariance of the non-Gaussian mean-field channel law (fleos.theory.eos.cnn2_matched); dotted:
Eq. 9 exactly as printed, dashed: Eq. 9 corrected (fleos.theory.eos.cnn2_analytic), each with
GP inference on its analytic Σ), inset: train
α/α_GP (the same lines: Eq. 9's train α, fully analytic). Right: histograms of w_c·w*/|w*|
and of w_c projected on a random unit vector, with Gaussian fits, at the largest n and the
width ``figures.fig3.hist_width`` (default: the largest width, as in the paper's C = 640).

Table: one row per sampled (n, C): α train/test of the experiment, the EoS, Eq. 9 as
printed and corrected, the moment-matched EoS, the GP; the deviation experiment − EoS in SE;
the top eigenvalue of Σ (experiment, Eq. 8, moment-matched with its Monte Carlo SE);
the Rao-Blackwellized α and the train α of the GP at the sampled mean kernel ⟨Q⟩ where
recorded (docs/langevin.md §9); the equilibration evidence.
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
    fit_row,
    fmt,
    nan,
    optional,
    theory_index,
)

# The columns of the report's verdict line (fleos.figures.render.verdict).
AGREEMENT = {"exp": "alpha_test_exp", "se": "alpha_test_exp_se", "theory": "alpha_test_eos",
             "what": "test α"}
FIRST_COLUMNS = (
    "n", "C", "alpha_test_exp", "alpha_test_exp_se", "alpha_test_eos",
    "alpha_test_eq9_printed", "alpha_test_eq9_corrected", "alpha_test_gp", "alpha_train_exp",
    "alpha_train_exp_se", "alpha_train_eos", "alpha_train_eq9_printed",
    "alpha_train_eq9_corrected", "alpha_train_gp",
)


# The moment-matched EoS (fleos.theory.eos.cnn2_matched; NaN when theory.matched_samples = 0)
MATCHED_COLUMNS = (
    "alpha_test_matched", "alpha_train_matched", "sigma_top_matched", "sigma_top_matched_mc_se",
    "matched_kish_ess",
)

# Eq. 8's predictor plus the kernel's channel-to-channel fluctuations (beyond the paper;
# fleos.theory.eos.cnn2_fluct): the i.i.d. O(1/C) term and its resummed variant, each with
# its Monte Carlo SE (NaN when theory.fluct_draws = 0)
FLUCT_COLUMNS = tuple(f"alpha_{q}_{v}{se}" for v in ("fluct", "fluct_resummed")
                      for q in ("test", "train") for se in ("", "_mc_se"))
FLUCT_STYLE = (0, (5, 1, 1, 1, 1, 1))  # dash-dot-dot: the fluctuation-corrected predictor
# The fluctuating-field closure (beyond the paper; fleos.theory.eos.cnn2_fluctfield), at the
# sampled widths, with Monte Carlo SEs (NaN when theory.fluctfield_draws = 0)
FLUCTFIELD_COLUMNS = tuple(f"{q}_fluctfield{se}" for q in ("alpha_test", "alpha_train",
                                                             "sigma_top") for se in ("", "_mc_se"))
FLUCTFIELD_STYLE = "-d"  # thin line through open diamonds: computed at the sampled C only
# Which theories each observable is scored against, in "experiment − theory in SE" columns
# (the SE combines the experiment's SE and the theory's Monte Carlo SE, when it has one).
SCORED = {"alpha_test": ("eos", "matched", "fluct", "fluct_resummed", "fluctfield"),
          "alpha_train": ("eos", "matched", "fluct", "fluct_resummed", "fluctfield"),
          "sigma_top": ("matched", "fluctfield")}

RB_COLUMNS = (
    "alpha_train_rb", "alpha_train_rb_se", "alpha_test_rb", "alpha_test_rb_se",
    "alpha_train_meankernel", "alpha_train_meankernel_se",
)


def _sigma_top_columns(agg: Mapping[str, Any] | None, theory_row: Mapping[str, Any],
                       gp: Mapping[str, Any]) -> dict[str, float]:
    """Top eigenvalue of Σ (the feature-learning direction): experiment (jackknife SE across
    seeds), EoS (Eq. 8), GP, and the experiment's deviation from the EoS in SE."""
    exp = float(agg["sigma_eigs"][0]) if agg is not None and "sigma_eigs" in agg else math.nan
    se = float(agg["sigma_eigs_se"][0]) if agg is not None and "sigma_eigs" in agg else math.nan
    eos = nan(theory_row.get("sigma_top_eos"))
    return {"sigma_top_exp": exp, "sigma_top_exp_se": se, "sigma_top_eos": eos,
            "sigma_top_gp": nan(gp.get("sigma_top")),
            "sigma_dev_eos_in_se": (exp - eos) / se if se else math.nan}


def _scores(row: Mapping[str, Any]) -> dict[str, float]:
    """``<q>_dev_<theory>_in_se`` = (experiment − theory) / √(SE_exp² + SE_theory²) for the
    pairs of `SCORED`; NaN where either side is missing."""
    out = {}
    for q, theories in SCORED.items():
        exp, se = row[f"{q}_exp"], row[f"{q}_exp_se"]
        for t in theories:
            th, th_se = row.get(f"{q}_{t}", math.nan), row.get(f"{q}_{t}_mc_se", 0.0)
            th_se = 0.0 if th_se != th_se else th_se  # no MC SE recorded: exact theory
            tot = math.hypot(se, th_se)
            out[f"{q}_dev_{t}_in_se"] = (exp - th) / tot if tot > 0 else math.nan
    return out


def _q_train_label(th: Mapping[str, Any]) -> str:
    label = str(th.get("analytic_options", {}).get("q_train", "renormalized"))
    if label == "first_order":  # Supplementary Material (3) is not available
        label += " (our reconstruction)"
    return label


def table(inputs: Inputs, config: Mapping[str, Any]) -> list[Row]:
    """One row per sampled (n, C) of the theory files (theory-only `C_grid` points draw the
    lines only)."""
    gates = EquilibriumGates.from_config(config)
    aggs = agg_index(inputs["aggregate"])
    theory = theory_index(inputs["theory"])
    rows: list[Row] = []
    for n in sorted(theory):
        th = theory[n]
        gp_te, gp_tr = nan(th["gp"]["alpha_test"]), nan(th["gp"]["alpha_train"])
        for r in sorted(th["rows"], key=lambda r: r["C"]):
            if not r.get("sampled", True):
                continue
            a = aggs.get((n, int(r["C"])))
            # Train loss for α; Σ along w* and a random direction for what sets test α.
            eq = equilibration_summary(a, ("loss", *SERIES_SIGMA), gates) if a is not None else {}
            e_te = float(a["alpha_test"]) if a is not None else math.nan
            e_te_se = float(a["alpha_test_se"]) if a is not None else math.nan
            e_tr = float(a["alpha_train"]) if a is not None else math.nan
            e_tr_se = float(a["alpha_train_se"]) if a is not None else math.nan
            rows.append({
                "n": n, "C": int(r["C"]),
                "alpha_test_exp": e_te, "alpha_test_exp_se": e_te_se,
                "alpha_test_eos": nan(r["alpha_test_eos"]),
                "alpha_test_eq9_printed": nan(r.get("alpha_test_eq9_printed")),
                "alpha_test_eq9_corrected": nan(r["alpha_test_analytic"]),
                "alpha_test_gp": gp_te,
                "alpha_train_exp": e_tr, "alpha_train_exp_se": e_tr_se,
                "alpha_train_eos": nan(r["alpha_train_eos"]),
                "alpha_train_eq9_printed": nan(r.get("alpha_train_eq9_printed")),
                "alpha_train_eq9_corrected": nan(r["alpha_train_analytic"]),
                "alpha_train_gp": gp_tr,
                "eos_converged": bool(r["eos_converged"]),
                "eos_residual": nan(r["eos_residual"]),
                "eq9_printed_converged": bool(r.get("eq9_printed_converged", False)),
                "eq9_corrected_converged": bool(r["analytic_converged"]),
                "eq9_corrected_q_train": _q_train_label(th),
                "test_ratio_exp": e_te / gp_te, "test_ratio_eos": nan(r["alpha_test_eos"])
                / gp_te, "test_dev_eos_in_se": (e_te - nan(r["alpha_test_eos"]))
                / e_te_se if e_te_se else math.nan,
                "teacher_seed": th.get("teacher_seed"),
                "n_seeds": int(len(a["seeds"])) if a is not None else 0,
                **_sigma_top_columns(a, r, th["gp"]),
                **{k: nan(r.get(k)) for k in MATCHED_COLUMNS},
                "matched_converged": bool(r.get("matched_converged", False)),
                **{k: nan(r.get(k)) for k in FLUCT_COLUMNS},
                **{k: nan(r.get(k)) for k in FLUCTFIELD_COLUMNS},
                "fluctfield_converged": bool(r.get("fluctfield_converged", False)),
                # Rao-Blackwellized estimates and the GP at the sampled mean kernel
                # (NaN unless the run recorded them: sampler.rao_blackwell_every, kernel Qf)
                **{k: optional(a, k) for k in RB_COLUMNS},
                **eq,
            })
            rows[-1].update(_scores(rows[-1]))
    return rows


def _own_gp(th: Mapping[str, Any], key: str) -> dict[str, float]:
    """The C → ∞ limit of an analytic curve (theory file key `key`: 'gp_analytic' or
    'gp_eq9_printed'); a theory file written before these keys existed is refused by name."""
    if key not in th:
        raise ValueError(f"theory file for n = {th.get('n')} has no {key!r}: it was written by "
                         "an older fleos; rerun its theory job (--forcerun theory)")
    return {k: nan(v) for k, v in th[key].items()}


def draw(rows: list[Row], inputs: Inputs, config: Mapping[str, Any]) -> Any:
    """The figure: theory curves from the theory files (every C solved), experiment points
    from `rows`, histograms from the aggregate at (largest n, hist_width)."""
    gates = EquilibriumGates.from_config(config)

    from fleos.figures.style import BLUE, GREEN, NONCONV, hist_with_fit, hollow_legend, plt, points

    exp = config["experiments"]["cnn2"]
    aggs = agg_index(inputs["aggregate"])
    theory = theory_index(inputs["theory"])
    fig, (ax, axh) = plt.subplots(1, 2, figsize=(11, 6.2), gridspec_kw={"width_ratios": [1.3, 1]})
    # Lower right, low: below the rising test-α curve and its points (upper right would hide
    # the largest C).
    axin = ax.inset_axes([0.6, 0.05, 0.37, 0.25])
    curve_lo: list[float] = []  # lowest theory values, so that no curve is clipped
    curve_c: list[float] = []  # every C solved (sampled and theory.C_grid): the x ticks
    not_converged_drawn = False
    matched_drawn = False
    fluct_drawn = False
    fluctfield_drawn = False
    hollow = False
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, n in enumerate(sorted(theory)):
        th, col = theory[n], colors[k % len(colors)]
        gp_te, gp_tr = nan(th["gp"]["alpha_test"]), nan(th["gp"]["alpha_train"])
        trows = sorted(th["rows"], key=lambda r: r["C"])
        Cs = np.array([r["C"] for r in trows], float)
        conv = np.array([r["eos_converged"] for r in trows], bool)
        an_ok = np.array([r["analytic_converged"] for r in trows], bool)
        pr_ok = np.array([r.get("eq9_printed_converged", False) for r in trows], bool)
        eos_te = np.array([nan(r["alpha_test_eos"]) for r in trows]) / gp_te
        eos_tr = np.array([nan(r["alpha_train_eos"]) for r in trows]) / gp_tr
        # Each curve divided by its own C → ∞ limit, as in the paper: Eq. 9's analytic train α
        # has a GP limit of its own (not the numeric GP's).
        an_gp, pr_gp = _own_gp(th, "gp_analytic"), _own_gp(th, "gp_eq9_printed")
        an_te = np.array([nan(r["alpha_test_analytic"]) for r in trows]) / an_gp["alpha_test"]
        an_tr = np.array([nan(r["alpha_train_analytic"]) for r in trows]) / an_gp["alpha_train"]
        pr_te = (np.array([nan(r.get("alpha_test_eq9_printed")) for r in trows])
                 / pr_gp["alpha_test"])
        pr_tr = (np.array([nan(r.get("alpha_train_eq9_printed")) for r in trows])
                 / pr_gp["alpha_train"])
        mm_ok = np.array([r.get("matched_converged", False) for r in trows], bool)
        mm_te = np.array([nan(r.get("alpha_test_matched")) for r in trows]) / gp_te
        mm_tr = np.array([nan(r.get("alpha_train_matched")) for r in trows]) / gp_tr
        matched_drawn = matched_drawn or bool(mm_ok.any())
        fl_te = np.array([nan(r.get("alpha_test_fluct_resummed")) for r in trows]) / gp_te
        fl_tr = np.array([nan(r.get("alpha_train_fluct_resummed")) for r in trows]) / gp_tr
        fl_ok = conv & np.isfinite(fl_te) & np.isfinite(fl_tr)
        fluct_drawn = fluct_drawn or bool(fl_ok.any())
        ff_ok = np.array([r.get("fluctfield_converged", False) for r in trows], bool)
        ff_te = np.array([nan(r.get("alpha_test_fluctfield")) for r in trows]) / gp_te
        ff_tr = np.array([nan(r.get("alpha_train_fluctfield")) for r in trows]) / gp_tr
        fluctfield_drawn = fluctfield_drawn or bool(ff_ok.any())
        for a, eos, an, pr, mm, fl, ff in ((ax, eos_te, an_te, pr_te, mm_te, fl_te, ff_te),
                                           (axin, eos_tr, an_tr, pr_tr, mm_tr, fl_tr, ff_tr)):
            a.plot(Cs[conv], eos[conv], "-", color=col)
            a.plot(Cs[mm_ok], mm[mm_ok], "-.", color=col, linewidth=1.0)
            a.plot(Cs[fl_ok], fl[fl_ok], linestyle=FLUCT_STYLE, color=col, linewidth=1.0)
            a.plot(Cs[ff_ok], ff[ff_ok], FLUCTFIELD_STYLE, color=col, linewidth=1.0,
                   markersize=4, markerfacecolor="none")
            a.plot(Cs[~conv], eos[~conv], **NONCONV)
            a.plot(Cs[an_ok], an[an_ok], "--", color=col)
            a.plot(Cs[pr_ok], pr[pr_ok], ":", color=col)
        curve_lo.extend(np.concatenate([eos_te[conv], an_te[an_ok], pr_te[pr_ok],
                                        mm_te[mm_ok], fl_te[fl_ok], ff_te[ff_ok]]).tolist())
        not_converged_drawn = not_converged_drawn or not bool(conv.all())
        curve_c.extend(Cs.tolist())
        # The experiment: the sampled widths of this n, i.e. the table's rows.
        rs = [r for r in rows if r["n"] == n]
        Cs = np.array([r["C"] for r in rs], float)

        def col_of(key: str, rs: list[Row] = rs) -> np.ndarray:
            return np.array([r[key] for r in rs])

        hollow = points(ax, Cs, col_of("alpha_test_exp") / gp_te,
                        col_of("alpha_test_exp_se") / gp_te, rs, col,
                        label=f"n = {n}") or hollow
        points(axin, Cs, col_of("alpha_train_exp") / gp_tr, col_of("alpha_train_exp_se") / gp_tr,
               rs, col, capsize=2, markersize=3)
    ax.plot([], [], "k-", label="EoS (numeric, Eq. 8)")
    if matched_drawn:
        ax.plot([], [], "k-.", linewidth=1.0, label="EoS, Σ moment-matched (beyond the paper)")
    if fluct_drawn:
        ax.plot([], [], color="k", linestyle=FLUCT_STYLE, linewidth=1.0,
                label="Eq. 8 + kernel fluctuations, resummed (beyond the paper)")
    if fluctfield_drawn:
        ax.plot([], [], FLUCTFIELD_STYLE, color="k", linewidth=1.0, markersize=4,
                markerfacecolor="none", label="fluctuating-field closure (beyond the paper)")
    ax.plot([], [], "k:", label="Eq. 9 as printed ($q_{train}$ = 1, unit teacher norms)")
    ax.plot([], [], "k--", label="Eq. 9 corrected (beyond the paper: ridge, $K_f^{-1}$, "
                                 "finite S, teacher norms)")
    if not_converged_drawn:  # any failed EoS point, sampled or theory-only (C_grid)
        ax.plot([], [], label="EoS not converged", **NONCONV)
    if hollow:
        hollow_legend(ax)
    all_c = sorted({int(c) for c in curve_c})
    sampled = {int(r["C"]) for r in rows}
    # the inset's ticks: the sampled C and the curve's ends, unless an end would print over
    # a sampled tick (closer than a factor 2 on the log axis)
    ends = {c for c in (all_c[0], all_c[-1])
            if all(max(c, s) >= 2 * min(c, s) for s in sampled)}
    sampled_c = sorted(sampled | ends)
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
    # Below both panels, across the figure: inside, the entries hid the points near the top of
    # the curves, and below the left panel alone they ran off the canvas.
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=7.5,
               frameon=False)
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
        hist_with_fit(axh, a[f"{k}_values"], fit_row(k, a), col, lab,
                      eq=equilibration_summary(a, (f"{k}_sq",), gates))
    axh.set_title(f"n = {n_max}, C = {hw} (dashed: Gaussian fits)", fontsize=9)
    axh.set_xlabel("overlap")
    axh.set_ylabel("density")
    axh.set_ylim(top=1.3 * axh.get_ylim()[1])  # room for the legend above the histograms
    axh.legend(fontsize=8, loc="upper right")
    m = exp["model"]
    fig.suptitle(f"Fig. 3 - 2-layer CNN, S={m['S']}, N={m['N']}, σ²={exp['sigma2']}, "
                 f"teacher seed {exp['data'].get('teacher_seed')}", fontsize=10)
    fig.tight_layout(rect=(0, 0.16, 1, 1))  # the bottom strip holds the legend
    return fig


def _pct(exp: float, theory: float) -> str:
    ok = theory != 0 and math.isfinite(exp / theory)
    return f"{100 * (exp / theory - 1):+.1f} %" if ok else "n/a"


def summary(rows: list[Row]) -> list[str]:
    """Per n: experiment vs EoS at the smallest C, the largest deviation in SE, and the C
    where the EoS did not converge."""
    lines = []
    for n in sorted({r["n"] for r in rows}):
        rs = sorted((r for r in rows if r["n"] == n), key=lambda r: r["C"])
        lo = rs[0]
        conv = [r for r in rs if r["eos_converged"]]
        dev = [abs(r["test_dev_eos_in_se"]) for r in conv
               if math.isfinite(r["test_dev_eos_in_se"])]
        lines.append(
            f"n = {n}: at the smallest C = {lo['C']} the experiment gives test "
            f"α/α_GP = {fmt(lo['test_ratio_exp'])} ± "
            f"{fmt(lo['alpha_test_exp_se'] / lo['alpha_test_gp'])} and the EoS "
            f"{fmt(lo['test_ratio_eos'])}; over the converged EoS points the largest "
            f"deviation (experiment − EoS) is {fmt(max(dev) if dev else math.nan)} SE "
            f"(test α). "
            f"Train α experiment/EoS at C = {lo['C']}: {fmt(lo['alpha_train_exp'])} / "
            f"{fmt(lo['alpha_train_eos'])} (GP {fmt(lo['alpha_train_gp'])}).")
        mm = [r for r in rs if r["matched_converged"]]
        if mm:
            lines.append(
                f"n = {n}, experiment − theory, Eq. 8 / moment-matched EoS: "
                + "; ".join(
                    f"C = {r['C']}: test α "
                    f"{_pct(r['alpha_test_exp'], r['alpha_test_eos'])} / "
                    f"{_pct(r['alpha_test_exp'], r['alpha_test_matched'])}, top Σ "
                    f"{_pct(r['sigma_top_exp'], r['sigma_top_eos'])} / "
                    f"{_pct(r['sigma_top_exp'], r['sigma_top_matched'])}" for r in mm) + ".")
        rb = [r for r in rs if math.isfinite(r["alpha_train_rb"])]
        if rb:
            def col(f, rb=rb) -> str:
                return ", ".join(fmt(f(r)) for r in rb)

            lines.append(
                f"n = {n}, C = {col(lambda r: r['C'])}: train α with the readout integrated "
                f"out (Rao-Blackwellized) {col(lambda r: r['alpha_train_rb'])} (SE "
                f"{col(lambda r: r['alpha_train_rb_se'])}) against the EoS "
                f"{col(lambda r: r['alpha_train_eos'])}; the GP at the sampled mean kernel ⟨Q⟩ "
                f"gives {col(lambda r: r['alpha_train_meankernel'])}, so the kernel's "
                f"fluctuations raise train α by "
                f"{col(lambda r: r['alpha_train_rb'] - r['alpha_train_meankernel'])} "
                f"(Jensen: ≥ 0; docs/langevin.md §9).")
        bad = [r["C"] for r in rs if not r["eos_converged"]]
        if bad:
            lines.append(f"EoS NOT converged at C = {bad} (marked x, not joined).")
    return lines
