"""The report's verdict line per figure (fleos.figures.render.verdict), checked against rows
whose deviations are computed by hand."""

from __future__ import annotations

import math

from fleos.figures.render import summarize, verdict


def _row(c, exp, se, eos, eq, **extra):
    return {"n": 32, "C": c, "alpha_test_exp": exp, "alpha_test_exp_se": se,
            "alpha_test_eos": eos, "eos_converged": True, "equilibrated": eq, **extra}


def test_verdict_of_a_theory_figure_is_the_largest_deviation_in_percent_and_se():
    rows = [
        _row(8, 1.10, 0.05, 1.00, True),    # +10 %, 2 SE
        _row(16, 0.95, 0.01, 1.00, False),  # -5 %, 5 SE
        # a non-converged EoS point and a missing experiment do not count
        _row(32, 3.0, 0.01, 1.0, True, eos_converged=False),
        _row(64, math.nan, math.nan, 1.0, None),
    ]
    assert verdict("fig3", rows) == (
        "**fig3**: experiment vs EoS (test α, 2 points): largest deviation 10 %, 5 SE; "
        "2 of 4 sampled points equilibrated (1 unmeasured).")


def test_verdict_of_a_shape_figure_and_of_the_theory_only_figure():
    rows = [{"n": 16, "width": 8, "ks": 0.1, "excess_kurtosis": -0.5, "equilibrated": True},
            {"n": 16, "width": 16, "ks": 0.2, "excess_kurtosis": 0.25, "equilibrated": True}]
    assert verdict("fig2a", rows) == (
        "**fig2a**: Gaussianity (no EoS): largest KS distance 0.2, largest absolute excess "
        "kurtosis 0.5; 2 of 2 sampled points equilibrated.")
    assert verdict("fig2c", [{"n": 16, "convention": "fleos", "width_cnn2": 1.7}]) == (
        "**fig2c**: theory only.")


def test_the_verdict_is_the_first_line_of_the_summary(monkeypatch):
    # the report's landing page includes only the summary file's first line
    from fleos.figures import fig3

    monkeypatch.setattr(fig3, "summary", lambda rows: ["the figure's own sentence"])
    rows = [_row(8, 1.10, 0.05, 1.00, True, rhat=1.0, ess=500.0, drift_se=0.1, n_backoffs=0,
                 eq_series="loss", failed_gates="")]
    lines = summarize("fig3", rows).splitlines()
    assert lines[:2] == ["* " + verdict("fig3", rows), "* the figure's own sentence"]
