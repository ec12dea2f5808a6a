"""fleos.theory.runs: the per-configuration theory records of the workflow."""

from __future__ import annotations

from fleos.theory.runs import theory_cnn2


def test_theory_cnn2_solves_the_c_grid_without_sampling_it(tmp_path):
    from fleos.nets.data import make_dataset
    from fleos.nets.datasets import save_dataset

    model = {"S": 4, "N": 4, "activation": "erf", "sigma_w2": 2.0, "sigma_a2": 2.0}
    ds = make_dataset("cnn2", model, 32, 16, teacher_seed=0, data_seed=1)
    path = tmp_path / "n32.npz"
    save_dataset(ds, path)
    exp = {"model": model, "sigma2": 0.1, "widths": [16], "data": {"teacher_seed": 0},
           "theory": {"tol": 1e-8, "max_iter": 200, "C_grid": [64, 8]}}
    th = theory_cnn2(exp, path)
    rows = sorted(th["rows"], key=lambda r: r["C"])
    assert [(r["C"], r["sampled"]) for r in rows] == [(8, False), (16, True), (64, False)]
    assert all(r["eos_converged"] for r in rows)
    # Feature learning grows as C shrinks along the curve (test α falls below its GP value).
    a = [r["alpha_test_eos"] for r in rows]
    assert a[0] < a[1] < a[2] < th["gp"]["alpha_test"]
    # The moment-matched EoS rides along (theory.matched_samples, default on): every row has
    # it, converged, with a positive Monte Carlo SE and a healthy importance-sampling ESS.
    assert th["matched_options"] == {"samples": 4096, "seed": 0}
    assert all(r["matched_converged"] and r["matched_kish_ess"] > 0.5 * 4096
               and r["sigma_top_matched_mc_se"] > 0 for r in rows)
