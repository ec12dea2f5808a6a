"""The theory per configuration: one JSON record per theory job of the workflow.

Each function builds the problem of one configuration from the workflow's files (the data
``.npz`` of `fleos.nets.datasets`, for cnn3 the seed-pooled kernels of the aggregate), solves
the equations of state and returns (and writes) a JSON-ready record:

* `theory_cnn2`: Fig. 3, the 2-layer CNN EoS (Eq. 8) annealed over C, with Eq. 9 and the GP;
* `theory_fcn3`: Fig. 2b, the 3-layer FCN EoS (Eq. 5) annealed over the widths, with the GP;
* `theory_cnn3`: Fig. 5, Σ and Q^(2) predicted by Eq. 5 from the empirical kernels;
* `theory_fls`: Fig. 2c, the width at which the feature-learning scale χ (Eq. 6) is 1.

`fleos.pipeline.run_theory` dispatches a workflow theory job to them. Options (tolerances,
methods, grids) come from `fleos.config.theory_options`, which holds their defaults. Records
are written atomically (`fleos.core.files.write_json`); NaN and inf become null.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the theory modules are imported lazily (JAX start-up) where they run
    from jax import Array

    from fleos.theory.eos.cnn2 import CNN2Problem

from fleos.config import theory_options
from fleos.core.files import write_json


def _test_set(ds: Any) -> tuple[Any, Any]:
    """(X_test, y_test), or (None, None) for a data set without test points."""
    if ds.X_test is None or len(ds.X_test) == 0:
        return None, None
    return ds.X_test, ds.y_test


def _rows(a: Any) -> np.ndarray:
    """Inputs as rows (images flattened)."""
    return np.asarray(a).reshape(len(a), -1)


def cnn2_problem(ds: Any, model: Mapping[str, Any], sigma2: float) -> Any:
    """The 2-layer CNN EoS problem (Eq. 8) of data set `ds` (X: n × N·S, y, X_test, y_test)
    and the ``model:`` block of a cnn2 experiment (S, N, sigma_w2, sigma_a2, activation). The
    workflow's theory and ``fleos eos cnn2`` both build it here."""
    from fleos.theory.eos.cnn2 import CNN2Problem

    X_test, y_test = _test_set(ds)
    return CNN2Problem.from_arrays(
        ds.X, ds.y, int(model["N"]), int(model["S"]), X_test, y_test, sigma2=float(sigma2),
        sigma_a2=float(model["sigma_a2"]), sigma_w2=float(model["sigma_w2"]),
        activation=model.get("activation", "erf"),
    )


def fcn_problem(ds: Any, model: Mapping[str, Any], sigma2: float, ridge: float) -> Any:
    """The FCN EoS problem (Eq. 5) of data set `ds` (rows flattened) and the ``model:``
    block of an fcn experiment (sigma_w2, sigma_a2, depth, scaling, activation). The
    workflow's theory and ``fleos eos fcn`` both build it here."""
    from fleos.nets.models import DEFAULT_SCALING
    from fleos.theory.eos.fcn import FCNProblem

    X_test, y_test = _test_set(ds)
    return FCNProblem(
        _rows(ds.X), ds.y, None if X_test is None else _rows(X_test), y_test,
        sigma_w2=float(model["sigma_w2"]), sigma_a2=float(model["sigma_a2"]), sigma2=float(sigma2),
        depth=int(model.get("depth", 3)), scaling=model.get("scaling", DEFAULT_SCALING),
        activation=model.get("activation", "erf"), ridge=float(ridge),
    )


def cnn3_spectra(ds: Any, sigma: Any, K2: Any, Q2: Any | None, model: Mapping[str, Any],
                 sigma2: float, C1: float, C2: float, ridge: float,
                 **top: int) -> dict[str, Any]:
    """Fig. 5's spectra (`fleos.theory.eos.cnn3.fig5_spectra`) at the empirical kernels Σ,
    K^(2) and (optional) Q^(2) of data set `ds` and the ``model:`` block of a cnn3 experiment
    (N, S1, S0, sigma_w2, sigma_v2, sigma_a2, activation); `top`: top_sigma, top_q2. The
    workflow's theory and ``fleos eos cnn3`` both evaluate it here."""
    from fleos.theory.eos import cnn3

    return cnn3.fig5_spectra(
        _rows(ds.X), ds.y, sigma, K2, Q2, float(C1), float(C2), N=int(model["N"]),
        S1=int(model["S1"]), S0=int(model["S0"]), sigma2=float(sigma2),
        sigma_w2=float(model["sigma_w2"]), sigma_v2=float(model["sigma_v2"]),
        sigma_a2=float(model["sigma_a2"]), ridge=float(ridge),
        activation=model.get("activation", "erf"), **top)


def theory_cnn2(exp: Mapping[str, Any], data_path: str | os.PathLike) -> dict[str, Any]:
    """Fig. 3 theory at one n: numeric EoS (Eq. 8) annealed over the widths (the sampled
    ones and `theory.C_grid`; rows say which were sampled), the analytic Eq. 9 (train α
    analytic; test α by GP inference with the analytic Σ, as in the paper) twice: as printed
    (``*_eq9_printed``: q_train = 1, unit teacher norms) and corrected (``*_analytic``:
    `theory.q_train` (default renormalized), K_f⁻¹ term, finite-S leakage, actual teacher
    norms); the moment-matched EoS (`fleos.theory.eos.cnn2_matched`, unless
    `theory.matched_samples` is 0), warm-started from Eq. 8's Σ plus the previous C's
    correction; the kernel-fluctuation correction (`theory.fluct_draws`); the fluctuating-field
    closure at the sampled widths (`theory.fluctfield_draws`, off by default); and the GP
    limit. Non-converged points are kept with converged = False."""
    from fleos.nets.datasets import load_dataset
    from fleos.theory.eos.cnn2 import cnn2_gp_observables, cnn2_observables, sweep_cnn2
    from fleos.theory.eos.cnn2_analytic import (
        PRINTED_OPTIONS,
        RECOMMENDED_OPTIONS,
        analytic_observables,
    )
    from fleos.theory.eos.cnn2_fluct import fluct_rows

    m = exp["model"]
    th = theory_options("cnn2", exp.get("theory"))
    ds = load_dataset(data_path)
    problem = cnn2_problem(ds, m, exp["sigma2"])
    # The EoS curves of Fig. 3 are drawn through the sampled widths and through
    # `theory.C_grid` (theory only: cheap, and a line through 2-3 points hides its shape).
    sampled = {int(w) for w in exp["widths"]}
    widths = sorted(sampled | set(th["C_grid"]), reverse=True)
    from fleos.theory.solvers import progress_printer

    # one line per solve (residual, iterations) to the rule's log: a sweep takes minutes
    results = sweep_cnn2(problem, widths, tol=th["tol"], max_iter=th["max_iter"],
                         method=th["method"], progress=progress_printer(_log_line, "C"))
    gp = cnn2_gp_observables(problem)
    q_train = th["q_train"]
    rows = []
    offset = 0.0  # moment-matched Σ − Eq. 8's Σ at the previous (larger) C: a warm start
    for C, res in zip(widths, results, strict=True):
        obs = cnn2_observables(problem, res.x)
        matched = {}
        if th["matched_samples"]:
            start = res.x + offset if res.converged else res.x
            matched, sigma_m = cnn2_matched_row(problem, float(C), start, th)
            ok = matched["matched_converged"] and res.converged
            offset = sigma_m - res.x if ok else 0.0
        fluct = {}
        if th["fluct_draws"] and res.converged:
            # beyond the paper: Eq. 8's predictor plus the kernel's channel-to-channel
            # fluctuations, i.i.d. (the O(1/C) term) and resummed (a hypothesis); independent
            # normals per C (docs/derivations/cnn2.md, "Kernel fluctuations at O(1/C)")
            # (both from the same draws: one pass of the channels' features, `fluct_rows`)
            seed = th["fluct_seed"] * 1_000_003 + int(C)
            fluct = fluct_rows(problem, float(C), res.x, n_draws=th["fluct_draws"], seed=seed)
        fluctfield = {}
        if th["fluctfield_draws"] and res.converged and C in sampled:
            # beyond the paper: the fluctuating-field closure, at the sampled widths only (its
            # cost: draws × (n² C N + n³) flops per field evaluation)
            fluctfield = cnn2_fluctfield_row(problem, C, res.x, th)
        an = analytic_observables(problem, float(C), ds.teacher, q_train=q_train)
        pr = analytic_observables(problem, float(C), ds.teacher, unit_teacher_norms=True,
                                  **PRINTED_OPTIONS)
        rows.append({
            "C": C, "sampled": C in sampled,
            "eos_converged": bool(res.converged), "eos_residual": float(res.residual),
            "eos_iterations": int(res.iterations), "eos_seconds": float(res.seconds),
            "eos_message": res.message,
            "alpha_test_eos": obs["alpha_test"], "alpha_train_eos": obs["alpha_train"],
            "mse_train_norm_eos": obs["train_mse_normalized"],
            "sigma_top_eos": float(obs["sigma_eigs"][0]),
            "analytic_converged": an["converged"],
            "alpha_train_analytic": an["alpha_train"],
            "alpha_test_analytic": an["alpha_test_gp_inference"],
            "alpha_test_analytic_ek": an["alpha_test_ek"], "chi2_analytic": an["chi2"],
            "l_star_analytic": an["l_star"],
            "eq9_printed_converged": pr["converged"],
            "alpha_train_eq9_printed": pr["alpha_train"],
            "alpha_test_eq9_printed": pr["alpha_test_gp_inference"],
            **matched, **fluct, **fluctfield,
        })
    # Each analytic curve's own C → ∞ limit, so that a curve divided by its GP tends to 1 (as
    # in the paper's Fig. 3): Eq. 9's train α is not the numeric GP's, its test α (GP inference
    # at the prior Σ) is.
    an_gp = analytic_observables(problem, math.inf, ds.teacher, q_train=q_train)
    pr_gp = analytic_observables(problem, math.inf, ds.teacher, unit_teacher_norms=True,
                                 **PRINTED_OPTIONS)
    return {
        "experiment": "cnn2", "n": ds.n, "teacher_seed": exp["data"].get("teacher_seed"),
        "gp_analytic": {"alpha_train": an_gp["alpha_train"],
                        "alpha_test": an_gp["alpha_test_gp_inference"]},
        "gp_eq9_printed": {"alpha_train": pr_gp["alpha_train"],
                           "alpha_test": pr_gp["alpha_test_gp_inference"]},
        "analytic_options": {**RECOMMENDED_OPTIONS, "q_train": q_train},
        "eq9_printed_options": {**PRINTED_OPTIONS, "teacher_norms": "unit"},
        "matched_options": {"samples": th["matched_samples"], "seed": th["matched_seed"]},
        "fluct_options": {"draws": th["fluct_draws"], "seed": th["fluct_seed"]},
        "fluctfield_options": {"draws": th["fluctfield_draws"], "seed": th["fluctfield_seed"]},
        "gp": {"alpha_test": gp["alpha_test"], "alpha_train": gp["alpha_train"],
               "mse_train_norm": gp["train_mse_normalized"],
               "sigma_top": float(gp["sigma_eigs"][0])},
        "rows": rows,
    }


def cnn2_matched_row(problem: CNN2Problem, C: float, start: Array, th: Mapping[str, Any],
                     log: Callable[[str], None] | None = None) -> tuple[dict[str, Any], Array]:
    """The moment-matched EoS at C (`fleos.theory.eos.cnn2_matched`), solved from `start`
    (typically Eq. 8's Σ): its observables, solver outcome and the Monte Carlo SE of its top Σ
    eigenvalue; and its Σ. One progress line to `log` (default: the theory rule's log)."""
    from fleos.theory.eos.cnn2 import cnn2_observables
    from fleos.theory.eos.cnn2_matched import matched_diagnostics, solve_cnn2_matched

    mc = {"n_samples": th["matched_samples"], "seed": th["matched_seed"]}
    # its own iteration cap (the solver's default), not Eq. 8's: at the paper's C = 80 it took
    # 153 evaluations where Eq. 8's default cap is 60
    res = solve_cnn2_matched(problem, C, start, **mc)
    (log or _log_line)(f"matched C={C:g}: residual {res.residual:.2e} after {res.iterations} "
              f"evaluations, {res.seconds:.0f} s ({res.message})")
    obs = cnn2_observables(problem, res.x)
    diag = matched_diagnostics(problem, C, res.x, **mc)
    return {
        "matched_converged": bool(res.converged), "matched_residual": float(res.residual),
        "matched_iterations": int(res.iterations), "matched_seconds": float(res.seconds),
        "alpha_test_matched": obs["alpha_test"], "alpha_train_matched": obs["alpha_train"],
        "sigma_top_matched": float(obs["sigma_eigs"][0]),
        "sigma_top_matched_mc_se": diag["top_se"], "matched_kish_ess": diag["kish_ess"],
        "matched_samples": th["matched_samples"],
    }, res.x


def cnn2_fluctfield_row(problem: CNN2Problem, C: int, Sigma_eq8: Array,
                        th: Mapping[str, Any]) -> dict[str, Any]:
    """The fluctuating-field closure at C (`fleos.theory.eos.cnn2_fluctfield`), from Eq. 8's
    Σ: its α's and top Σ with their Monte Carlo SEs, and the solver's outcome. Independent
    random numbers per C (the seed mixes in C), so the errors of different C are independent."""
    from fleos.theory.eos.cnn2_fluctfield import solve_cnn2_fluctfield

    sol = solve_cnn2_fluctfield(problem, int(C), Sigma_eq8, n_draws=th["fluctfield_draws"],
                                seed=th["fluctfield_seed"] * 1_000_003 + int(C),
                                max_iter=th["fluctfield_max_iter"],
                                window=th["fluctfield_window"])
    _log_line(f"fluctuating field C={C:g}: {sol.message}, {sol.seconds:.0f} s")
    return {
        "fluctfield_converged": sol.converged, "fluctfield_iterations": sol.iterations,
        "fluctfield_averaged": sol.averaged,
        "fluctfield_seconds": sol.seconds, "fluctfield_message": sol.message,
        "alpha_test_fluctfield": sol.alpha_test, "alpha_test_fluctfield_mc_se": sol.alpha_test_se,
        "alpha_train_fluctfield": sol.alpha_train,
        "alpha_train_fluctfield_mc_se": sol.alpha_train_se,
        "sigma_top_fluctfield": sol.sigma_top, "sigma_top_fluctfield_mc_se": sol.sigma_top_se,
        "fluctfield_draws": th["fluctfield_draws"],
    }


def theory_fcn3(exp: Mapping[str, Any], data_path: str | os.PathLike) -> dict[str, Any]:
    """Fig. 2b theory at one n: the 3-layer FCN EoS (Eq. 5) annealed over the widths.

    Each row holds the EoS observables (normalized train MSE, top Σ eigenvalue, α) and their
    GP values AT THE SAME WIDTH (in mean-field scaling the readout variance σ_a²/N makes the
    GP itself width dependent; fleos.theory.eos.fcn.fcn_observables)."""
    from fleos.nets.datasets import load_dataset
    from fleos.theory.eos.fcn import fcn_observables, paper_form_residual, sweep_fcn

    ds = load_dataset(data_path)
    th = theory_options("fcn", exp.get("theory"))
    problem = fcn_problem(ds, exp["model"], exp["sigma2"], th["ridge"])
    widths = [int(w) for w in exp["widths"]]
    from fleos.theory.solvers import progress_printer

    results = sweep_fcn(problem, widths, tol=th["tol"], max_iter=th["max_iter"],
                        method=th["method"], progress=progress_printer(_log_line, "N"))
    rows = []
    for N, res in zip(widths, results, strict=True):
        row: dict[str, Any] = {
            "width": N,
            "eos_converged": bool(res.converged), "eos_residual": float(res.residual),
            "eos_iterations": int(res.iterations), "eos_seconds": float(res.seconds),
            "eos_message": res.message,
        }
        finite = bool(np.all(np.isfinite(np.asarray(res.x["Sigma"]))))
        obs = fcn_observables(problem, res.x, N) if finite else None
        # The solver iterates on the precision form; also report Eq. 5 as printed, T(x) − x.
        # A NaN block (paper_form_residual propagates it) marks the solve as not converged.
        row["eos_residual_paper_form"] = (
            paper_form_residual(problem, res.x, N) if finite else math.nan)
        row["eos_converged"] = row["eos_converged"] and bool(
            np.isfinite(row["eos_residual_paper_form"]))
        # A non-finite (failed) solve gets NaN observables; its GP values are still defined.
        gp = fcn_observables(problem, _fcn_gp_x(problem), N)
        row.update({
            "alpha_train_eos": obs["alpha_train"] if obs else math.nan,
            "alpha_test_eos": obs["alpha_test"] if obs else math.nan,
            "mse_train_norm_eos": obs["train_mse"] if obs else math.nan,
            "sigma_top_eos": float(obs["sigma_eigs"][0]) if obs else math.nan,
            "alpha_train_gp": gp["alpha_train"], "alpha_test_gp": gp["alpha_test"],
            "mse_train_norm_gp": gp["train_mse"], "sigma_top_gp": float(gp["sigma_eigs"][0]),
        })
        rows.append(row)
    return {"experiment": "fcn3", "n": ds.n, "teacher_seed": exp["data"].get("teacher_seed"),
            "scaling": problem.scaling, "rows": rows}


def _fcn_gp_x(problem: Any) -> Any:
    from fleos.theory.eos.fcn import gp_x

    return gp_x(problem)


def theory_sweep(
    name: str, exp: Mapping[str, Any], data_path: str | os.PathLike, out_path: str | os.PathLike
) -> dict[str, Any]:
    """The theory rule of the cnn2 / fcn3 experiments: one JSON per n."""
    if exp["arch"] == "cnn2":
        doc = theory_cnn2(exp, data_path)
    elif exp["arch"] == "fcn":
        doc = theory_fcn3(exp, data_path)
    else:
        raise ValueError(f"theory_sweep: experiment {name!r} (arch {exp['arch']!r}) has no "
                         "width sweep; allowed archs: cnn2, fcn")
    write_json(out_path, doc)
    return doc


def theory_cnn3(
    exp: Mapping[str, Any], width: int, data_path: str | os.PathLike,
    kernels: Mapping[str, np.ndarray], out_path: str | os.PathLike,
) -> dict[str, Any]:
    """Fig. 5 theory (`fleos.theory.eos.cnn3.fig5_spectra`): Σ predicted by the last line of Eq. 5
    at the empirical Σ and K^(2), with the empirical Q^(2) in the KL term (the paper's
    estimate) and, for comparison, the analytic Q2(Σ_emp); Q^(2) predicted from the empirical
    K^(2) (Eq. 5, line 2); the GP (C → ∞) kernels. Spectra (descending) go to the JSON;
    ``*_valid`` is False where the predicted Σ is not positive definite. `kernels`: the
    seed-pooled ``sigma_mean``, ``K2_mean`` and optional ``Q2_mean`` of the aggregate file of
    this (n, width) (`fleos.analysis.aggregate.load_aggregate`)."""
    from fleos.nets.datasets import load_dataset

    ds = load_dataset(data_path)
    spectra = cnn3_spectra(
        ds, kernels["sigma_mean"], kernels["K2_mean"], kernels.get("Q2_mean"), exp["model"],
        exp["sigma2"], width, width, theory_options("cnn3", exp.get("theory"))["ridge"])
    doc = {"experiment": "cnn3", "n": ds.n, "width": width,
           "teacher_seed": exp["data"].get("teacher_seed"), **spectra}
    write_json(out_path, doc)
    return doc


def _log_line(line: str) -> None:
    """Progress of a theory run: stdout, which the workflow's scripts send to the rule's log."""
    print(line, flush=True)


def theory_fls(fls_cfg: Mapping[str, Any], out_path: str | os.PathLike) -> dict[str, Any]:
    """Fig. 2c (fleos.theory.fls.fls_curve): width (channels) at which χ = 1 (Eq. 6) vs n, for the
    FCN in standard and mean-field scaling and the 2-layer CNN; mean over `data_seeds`; in
    our normalization (``width``) and in Eq. 6's printed one (``width_eq6_printed``).
    Per-architecture overrides (``fls.fcn_standard: {d: 64}``, ...) go to fleos.theory.fls."""
    from fleos.theory.fls import fls_curve

    ns = [int(n) for n in fls_cfg["n"]]
    labels = {"fcn_standard": "FCN, standard scaling", "fcn_mf": "FCN, mean-field scaling",
              "cnn2": "2-layer CNN (channels)"}
    curves = {}
    for arch in fls_cfg.get("archs", list(labels)):
        c = fls_curve(arch, ns, data_seeds=tuple(fls_cfg.get("data_seeds", (1, 2, 3))),
                      teacher_seed=int(fls_cfg.get("teacher_seed", 0)),
                      **dict(fls_cfg.get(arch, {})))
        curves[arch] = {"label": labels.get(arch, arch), "width": c["width_mean"],
                        "width_std": c["width_std"], "config": c["config"],
                        "width_eq6_printed": c["width_mean_eq6_printed"],
                        "printed_factor": c["printed_factor"], "y_var": c["y_var"]}
    doc = {"n": ns, "teacher_seed": int(fls_cfg.get("teacher_seed", 0)), "curves": curves}
    write_json(out_path, doc)
    return doc
