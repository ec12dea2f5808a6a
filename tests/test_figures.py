"""fleos.figures: figures and agreement tables from synthetic workflow files.

The end-to-end smoke run (tests/test_workflow.py) draws every figure from real files; here
the figure modules get hand-made inputs with known numbers so the tables can be checked
exactly, including the marking of a non-converged EoS point.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from fleos.analysis.aggregate import FIT_FIELDS
from fleos.core.files import write_json
from fleos.figures import fig3
from fleos.figures.render import render_figure


def _fit(var: float) -> np.ndarray:
    vals = {"mean": 0.0, "var": var, "mean_se": 0.01, "var_se": 0.02, "ks": 0.01,
            "excess_kurtosis": 0.0, "count": 1000, "groups": 4, "excess_kurtosis_se": 0.05}
    return np.array([vals[f] for f in FIT_FIELDS])


def _agg(path, n, C, a_test, a_train):
    rng = np.random.default_rng(C)
    np.savez(path, n=np.array(n), width=np.array(C), seeds=np.arange(4),
             alpha_test=np.array(a_test), alpha_test_se=np.array(0.01),
             alpha_train=np.array(a_train), alpha_train_se=np.array(0.02),
             w_teacher_values=rng.normal(0, 1.5, 2000), w_teacher_fit=_fit(2.25),
             w_random_values=rng.normal(0, 0.5, 2000), w_random_fit=_fit(0.25),
             teacher_seed=np.array(0))


@pytest.fixture
def fig3_inputs(tmp_path):
    aggs = []
    for C, at, atr in ((16, 0.6, 0.5), (64, 0.8, 0.7)):
        p = tmp_path / f"w{C}.npz"
        _agg(p, 256, C, at, atr)
        aggs.append(str(p))
    rows = [
        {"C": 16, "eos_converged": False, "eos_residual": 1e-2, "alpha_test_eos": 0.3,
         "alpha_train_eos": 0.2, "analytic_converged": True, "alpha_test_analytic": 0.65,
         "alpha_train_analytic": 0.45},
        # a theory-only point (theory.C_grid): drawn in the curves, not a table row
        {"C": 32, "sampled": False, "eos_converged": True, "eos_residual": 1e-9,
         "alpha_test_eos": 0.7, "alpha_train_eos": 0.6, "analytic_converged": True,
         "alpha_test_analytic": 0.72, "alpha_train_analytic": 0.62},
        {"C": 64, "eos_converged": True, "eos_residual": 1e-9, "alpha_test_eos": 0.81,
         "alpha_train_eos": 0.69, "analytic_converged": True, "alpha_test_analytic": 0.83,
         "alpha_train_analytic": 0.7},
    ]
    th = tmp_path / "n256.json"
    # The analytic curve's own C → ∞ limit differs from the numeric GP's in train α.
    write_json(th, {"n": 256, "teacher_seed": 0, "rows": rows,
                    "gp": {"alpha_test": 1.0, "alpha_train": 0.9},
                    "gp_analytic": {"alpha_test": 1.0, "alpha_train": 0.7},
                    "gp_eq9_printed": {"alpha_test": 1.0, "alpha_train": 0.8}})
    config = {"experiments": {"cnn2": {"model": {"S": 16, "N": 8}, "sigma2": 0.1,
                                       "data": {"teacher_seed": 0}}}}
    return {"aggregate": aggs, "theory": [str(th)], "data": []}, config


def test_fig3_table_and_files(tmp_path, fig3_inputs):
    inputs, config = fig3_inputs
    png, pdf, csv_path = tmp_path / "f.png", tmp_path / "f.pdf", tmp_path / "f.csv"
    render_figure("fig3", inputs, config, png, pdf, csv_path)
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[: len(fig3.FIRST_COLUMNS)] == list(fig3.FIRST_COLUMNS)
    by_c = {int(r["C"]): r for r in rows}
    assert sorted(by_c) == [16, 64]  # sampled widths only
    assert float(by_c[64]["alpha_test_exp"]) == pytest.approx(0.8)
    assert float(by_c[64]["alpha_test_eos"]) == pytest.approx(0.81)
    assert float(by_c[64]["alpha_test_gp"]) == pytest.approx(1.0)
    assert float(by_c[64]["alpha_train_gp"]) == pytest.approx(0.9)
    # the non-converged EoS point is flagged in the table
    assert by_c[16]["eos_converged"] == "False" and by_c[64]["eos_converged"] == "True"
    # deviation of experiment from EoS in units of the experimental SE
    assert float(by_c[64]["test_dev_eos_in_se"]) == pytest.approx((0.8 - 0.81) / 0.01)


def test_fig3_divides_each_analytic_curve_by_its_own_gp_limit(fig3_inputs):
    inputs, config = fig3_inputs
    rows = fig3.table(inputs, config)
    fig = fig3.draw(rows, inputs, config)
    inset = fig.axes[0].child_axes[0]
    dashed = [ln for ln in inset.get_lines() if ln.get_linestyle() == "--" and len(ln.get_xdata())]
    assert len(dashed) == 1
    # alpha_train_analytic (0.45, 0.62, 0.7) over gp_analytic's 0.7, not the numeric GP's 0.9:
    # the curve reaches 1 where the analytic train α reaches its own C → ∞ value.
    np.testing.assert_allclose(dashed[0].get_ydata(), np.array([0.45, 0.62, 0.7]) / 0.7)


def test_fig3_scores_and_draws_the_fluctuating_field_closure(fig3_inputs):
    """A theory row with the closure's columns (theory.fluctfield_draws > 0): the table scores
    it as (experiment − theory)/√(SE_exp² + SE_mc²), and the figure draws it (legend: beyond
    the paper) only where it converged."""
    inputs, config = fig3_inputs
    doc = json.loads(open(inputs["theory"][0]).read())
    doc["rows"][2].update({"fluctfield_converged": True, "alpha_test_fluctfield": 0.79,
                           "alpha_test_fluctfield_mc_se": 0.0075,
                           "alpha_train_fluctfield": 0.66, "alpha_train_fluctfield_mc_se": 0.0,
                           "sigma_top_fluctfield": 1.0, "sigma_top_fluctfield_mc_se": 0.1})
    write_json(inputs["theory"][0], doc)
    rows = fig3.table(inputs, config)
    by_c = {r["C"]: r for r in rows}
    assert by_c[64]["fluctfield_converged"] and not by_c[16]["fluctfield_converged"]
    # test: experiment 0.8 ± 0.01, closure 0.79 ± 0.0075 -> 0.01/0.0125
    assert by_c[64]["alpha_test_dev_fluctfield_in_se"] == pytest.approx(0.8)
    assert by_c[64]["alpha_train_dev_fluctfield_in_se"] == pytest.approx((0.7 - 0.66) / 0.02)
    assert math.isnan(by_c[16]["alpha_test_dev_fluctfield_in_se"])
    fig = fig3.draw(rows, inputs, config)
    ax = fig.axes[0]
    drawn = [ln for ln in ax.get_lines() if ln.get_marker() == "d" and len(ln.get_xdata())]
    assert len(drawn) == 1
    np.testing.assert_allclose(drawn[0].get_xdata(), [64])
    np.testing.assert_allclose(drawn[0].get_ydata(), [0.79 / 1.0])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "fluctuating-field closure (beyond the paper)" in labels


def test_fig3_refuses_a_theory_file_without_the_analytic_gp(tmp_path, fig3_inputs):
    inputs, config = fig3_inputs
    doc = json.loads(open(inputs["theory"][0]).read())
    del doc["gp_analytic"]
    write_json(inputs["theory"][0], doc)
    with pytest.raises(ValueError, match="gp_analytic"):
        fig3.draw(fig3.table(inputs, config), inputs, config)


def test_fig3_rejects_unsampled_hist_width(tmp_path, fig3_inputs):
    inputs, config = fig3_inputs
    config["figures"] = {"fig3": {"hist_width": 999}}
    with pytest.raises(ValueError, match="hist_width"):
        render_figure("fig3", inputs, config, tmp_path / "a.png", tmp_path / "a.pdf",
                      tmp_path / "a.csv")


def test_fig2c_table(tmp_path):
    th = tmp_path / "fls.json"

    def curve(label, w, factor):
        return {"label": label, "width": w, "width_eq6_printed": [v * factor for v in w],
                "config": {"sigma2": 0.01, "sigma_a2": 0.01 / factor}, "y_var": 0.7}

    write_json(th, {"n": [64, 256], "curves": {
        "fcn_standard": curve("FCN standard", [20.0, 60.0], 0.005),
        "fcn_mf": curve("FCN MF", [30.0, 100.0], 1.28),
        "cnn2": curve("CNN", [50.0, math.nan], 0.05)}})
    render_figure("fig2c", {"theory": [str(th)]}, {}, tmp_path / "c.png", tmp_path / "c.pdf",
                  tmp_path / "c.csv", tmp_path / "c.rst")
    with open(tmp_path / "c.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["n"], r["convention"]) for r in rows] == [
        ("64", "fleos"), ("256", "fleos"), ("64", "eq6_printed"), ("256", "eq6_printed")]
    assert float(rows[1]["width_fcn_mf"]) == pytest.approx(100.0)
    assert float(rows[2]["width_fcn_standard"]) == pytest.approx(0.1)
    assert rows[1]["width_cnn2"] == "nan"  # no crossing: stated, not invented
    text = (tmp_path / "c.rst").read_text()
    assert "teacher output variance ⟨y²⟩ = 0.7" in text
    # CNN above the standard FCN: only at n = 64 in ours (NaN at 256), at n = 64 printed too
    assert "fleos: the paper's ordering (CNN channels at χ = 1 above the standard-FCN " \
           "width) holds at n = [64] of [64, 256]" in text


def test_unknown_figure(tmp_path):
    with pytest.raises(ValueError, match="unknown figure"):
        render_figure("fig9", {}, {}, tmp_path / "a.png", tmp_path / "a.pdf", tmp_path / "a.csv")


def test_tables_build_without_matplotlib(fig3_inputs):
    # table() is pure: with matplotlib made unimportable it still gives the rows.
    inputs, config = fig3_inputs
    code = (
        "import json, sys\n"
        "sys.modules['matplotlib'] = None  # any import of matplotlib now fails\n"
        "from fleos.figures import fig3\n"
        f"rows = fig3.table({json.dumps(dict(inputs))}, {json.dumps(config)})\n"
        "print(json.dumps([r['C'] for r in rows]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [16, 64]


def test_every_registered_figure_has_a_module():
    from fleos import pipeline
    from fleos.figures.render import FIGURE_MODULES, figure_module

    assert list(FIGURE_MODULES) == list(pipeline.FIGURES)  # one registry: the pipeline's
    for name in pipeline.FIGURES:
        module = figure_module(name)
        assert module.__name__ == f"fleos.figures.{name}"
        assert all(callable(getattr(module, f)) for f in ("table", "draw", "summary"))
    with pytest.raises(ValueError, match=r"unknown figure 'fig7'; allowed: \['fig2a'"):
        figure_module("fig7")
