"""fleos.analysis.aggregate: error bars across seeds, chunk pooling, and observables of one job.

Synthetic sample files (written with fleos.sampling.io.write_samples in the documented layout) with
known per-seed means let every number be checked exactly or against its known law; the one
statistical check uses 5 standard errors.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from fleos.analysis.aggregate import (
    aggregate_job,
    alpha_per_seed,
    engine_config,
    equilibration_record,
    equilibration_series,
    jackknife,
    load_chunks,
    mean_se,
    normalized_mse,
    unpack_fit,
)
from fleos.core import gp
from fleos.sampling.io import write_samples


def test_mean_se_is_std_over_sqrt_m():
    v = np.array([1.0, 2.0, 4.0, 7.0])
    m, se = mean_se(v)
    assert m == pytest.approx(3.5)
    assert se == pytest.approx(np.std(v, ddof=1) / 2)
    with pytest.raises(ValueError, match="2 seeds"):
        mean_se(np.array([1.0]))


def test_jackknife_of_the_mean_equals_standard_error():
    # For a linear statistic the delete-one jackknife SE is exactly std(ddof=1)/√m.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 3))
    est, se = jackknife(lambda m: m, x)
    np.testing.assert_allclose(est, x.mean(0))
    np.testing.assert_allclose(se, x.std(0, ddof=1) / 3, rtol=1e-12)


def test_jackknife_nonlinear_matches_delta_method():
    # stat = mean²: delta-method SE = 2|μ| σ/√m. With m = 400 seeds of N(2, 1), the jackknife
    # SE estimates 2·2·1/20 = 0.2 with relative error ~ 1/√(2m) ≈ 3.5 %; allow 5 of those.
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 1.0, size=(400,))
    est, se = jackknife(lambda m: m**2, x)
    assert est == pytest.approx(x.mean() ** 2)
    assert se == pytest.approx(2 * abs(x.mean()) * x.std(ddof=1) / 20, rel=5 * 0.035)


def test_alpha_and_mse_match_gp_module():
    rng = np.random.default_rng(2)
    y = rng.normal(size=20)
    f = rng.normal(size=(3, 20))
    a = alpha_per_seed(f, y, 0.1)
    for i in range(3):
        assert a[i] == pytest.approx(float(gp.alpha(y, f[i], 0.1)))
    assert normalized_mse(f[0], y, 0.1) == pytest.approx(float(gp.normalized_mse(y, f[0], 0.1)))


def test_engine_config_strips_workflow_keys():
    exp = {"arch": "cnn2", "theory": {}, "resources": {}, "label": "x", "seeds": 2}
    assert engine_config(exp) == {"arch": "cnn2", "seeds": 2}


# ---------------------------------------------------------------------------------------------
# Synthetic sample files
# ---------------------------------------------------------------------------------------------

N_TRAIN, N_TEST, S, C, T = 12, 8, 4, 6, 30


def _chunk(path, seeds, rng, y, y_test, sigma_scale, extra=None):
    k = len(seeds)
    f_tr = y[None, :] * (1 - 0.1 * (1 + np.arange(k)[:, None])) + 0.01 * rng.normal(size=(k, 12))
    f_te = 0.5 * y_test[None, :] + 0.01 * rng.normal(size=(k, N_TEST))
    A = rng.normal(size=(k, S, S))
    sig = sigma_scale * (np.eye(S)[None] + 0.05 * (A + A.transpose(0, 2, 1)))
    w_t = rng.normal(0.0, 2.0, size=(k, T, C))
    w_r = rng.normal(0.0, 0.5, size=(k, T, C, 2))
    mask = np.ones((k, T), bool)
    mask[:, :5] = False  # burn-in snapshots, to be ignored
    w_t[:, :5] = 1e6  # would wreck the fit if used
    datasets = {
        "seeds": np.asarray(seeds),
        "count": np.full(k, 100),
        "f_train": {"mean": f_tr, "sq_mean": f_tr**2 + 1},
        "f_test": {"mean": f_te, "sq_mean": f_te**2 + 1},
        "sigma": {"mean": sig},
        "loss": {"sse": np.zeros((k, 4), np.float32), "epoch": np.arange(4)},
        "lr": {"final": np.full(k, 1e-4)},
        "snapshots": {"epoch": np.arange(T), "sampling": mask, "w_teacher": w_t,
                      # the recorder's all-channel mean square: here the recorded channels'
                      # and as many again at 4× their power (a specialised group outside)
                      "w_teacher_msq": 2.5 * (w_t**2).mean(-1),
                      "w_random": w_r, "directions": rng.normal(size=(S, 2))},
        **(extra or {}),
    }
    write_samples(path, datasets, config={"sampler": {}}, seeds=tuple(seeds), n=N_TRAIN,
                  width=C)
    return f_tr, f_te, sig


@pytest.fixture
def chunks(tmp_path):
    rng = np.random.default_rng(3)
    y, y_test = rng.normal(size=N_TRAIN), rng.normal(size=N_TEST)
    p0, p1 = tmp_path / "chunk0.h5", tmp_path / "chunk1.h5"
    a = _chunk(p0, (0, 1, 2), rng, y, y_test, 1.0)
    b = _chunk(p1, (3, 4), rng, y, y_test, 1.2)
    return [p0, p1], (y, y_test), a, b


def test_load_chunks_joins_chain_axis(chunks):
    paths, _, a, b = chunks
    s = load_chunks(paths)
    np.testing.assert_array_equal(s["seeds"], [0, 1, 2, 3, 4])
    np.testing.assert_allclose(s["f_train/mean"], np.concatenate([a[0], b[0]]))
    assert s["snapshots/w_teacher"].shape == (5, T, C)
    assert s["snapshots/epoch"].shape == (T,)  # not a per-chain dataset: not concatenated
    assert s["n"] == N_TRAIN and s["width"] == C


def test_load_chunks_rejects_repeated_seeds(chunks):
    paths, *_ = chunks
    with pytest.raises(ValueError, match="repeated seeds"):
        load_chunks([paths[0], paths[0]])


@pytest.mark.parametrize("extra_in_first", [True, False])
def test_load_chunks_rejects_a_chain_dataset_missing_from_one_file(tmp_path, extra_in_first):
    """A per-chain dataset that one file lacks must not be taken from the others alone."""
    rng = np.random.default_rng(4)
    y, y_test = rng.normal(size=N_TRAIN), rng.normal(size=N_TEST)
    with_x, without_x = tmp_path / "with.h5", tmp_path / "without.h5"
    _chunk(with_x, (0, 1), rng, y, y_test, 1.0, extra={"probe": {"q": np.ones((2, 3))}})
    _chunk(without_x, (2, 3), rng, y, y_test, 1.0)
    paths = [with_x, without_x] if extra_in_first else [without_x, with_x]
    with pytest.raises(ValueError, match=r"without\.h5: lacks 'probe/q'.*1 of the 2 files"):
        load_chunks(paths)


def test_load_chunks_fills_top_modes_of_a_job_that_has_none(tmp_path):
    """A spike-schedule job whose chains never reached the final stage writes no top modes;
    its chains get NaN rows (-1 for integers), each row staying with its chain."""
    rng = np.random.default_rng(5)
    y, y_test = rng.normal(size=N_TRAIN), rng.normal(size=N_TEST)
    with_tm, without_tm = tmp_path / "with.h5", tmp_path / "without.h5"
    modes = {"top_modes": {"eigvals": np.arange(6.0).reshape(2, 3),
                           "epoch": np.array([7, 9], np.int64)}}
    _chunk(without_tm, (0, 1, 2), rng, y, y_test, 1.0)
    _chunk(with_tm, (3, 4), rng, y, y_test, 1.0, extra=modes)
    s = load_chunks([without_tm, with_tm])
    np.testing.assert_array_equal(s["seeds"], [0, 1, 2, 3, 4])
    assert np.isnan(s["top_modes/eigvals"][:3]).all()
    np.testing.assert_array_equal(s["top_modes/eigvals"][3:], modes["top_modes"]["eigvals"])
    np.testing.assert_array_equal(s["top_modes/epoch"], [-1, -1, -1, 7, 9])


def test_aggregate_job_numbers(chunks):
    paths, (y, y_test), a, b = chunks
    s = load_chunks(paths)
    data = SimpleNamespace(y=y, y_test=y_test, X=None, teacher={})
    out = aggregate_job("cnn2", {"sigma2": 0.1}, s, data)
    f_tr = np.concatenate([a[0], b[0]])
    al = alpha_per_seed(f_tr, y, 0.1)
    assert out["alpha_train"] == pytest.approx(al.mean())
    assert out["alpha_train_se"] == pytest.approx(al.std(ddof=1) / math.sqrt(5))
    # normalized MSE from the pooled posterior mean (not the mean of per-seed MSEs)
    assert out["mse_train_norm"] == pytest.approx(normalized_mse(f_tr.mean(0), y, 0.1))
    sig = np.concatenate([a[2], b[2]])
    np.testing.assert_allclose(out["sigma_eigs"], np.linalg.eigvalsh(sig.mean(0))[::-1])
    assert np.all(out["sigma_eigs_se"] > 0)
    # Gaussian fit of the teacher overlaps uses sampling snapshots only (burn-in is 1e6):
    # N(0, 4) values, 5·25·6 = 750 of them: var within 5 SE = 5·4·√(2/749) ≈ 1.03
    fit = unpack_fit(out["w_teacher_fit"])
    assert fit["count"] == 5 * 25 * C and fit["groups"] == 5
    assert abs(fit["var"] - 4.0) < 5 * 4.0 * math.sqrt(2 / 749)
    assert out["w_teacher_values"].size == 750
    assert out["w_random_var_dirs"].shape == (2,)
    # the all-channel second moment: each seed's mean over its sampling snapshots of the
    # recorder's mean square, then mean ± SE across the 5 seeds (burn-in excluded)
    msq = 2.5 * (load_chunks(paths)["snapshots/w_teacher"][:, 5:].astype(float) ** 2).mean(-1)
    per_seed = msq.mean(1)
    np.testing.assert_allclose(out["w_teacher_msq_all"],
                               [per_seed.mean(), per_seed.std(ddof=1) / math.sqrt(5)])
    assert "w_random_msq_all" not in out  # no all-channel record, no number
    assert abs(unpack_fit(out["w_random_fit"])["var"] - 0.25) < 5 * 0.25 * math.sqrt(2 / 749)


def test_aggregate_job_refuses_chains_without_samples(chunks):
    paths, (y, y_test), *_ = chunks
    s = load_chunks(paths)
    s["count"] = s["count"].copy()
    s["count"][1] = 0
    data = SimpleNamespace(y=y, y_test=y_test, X=None, teacher={})
    with pytest.raises(ValueError, match=r"seeds \[1\]"):
        aggregate_job("cnn2", {"sigma2": 0.1}, s, data)


# ---------------------------------------------------------------------------------------------
# Equilibration evidence
# ---------------------------------------------------------------------------------------------

T_EQ = 400  # snapshots per chain (the first 40 before sampling)


def _eq_chunk(path, seeds, rng, drift, backoffs, rollback_to=None):
    """A chunk whose w_teacher snapshots are AR(1) (φ = 0.5) with unit variance, plus
    `drift`·t/T (a chain still relaxing) during sampling; `backoffs` back-off events, rolled
    back to epochs 0, 1, ... (before the window, which starts at epoch 80) unless
    `rollback_to` says otherwise."""
    k = len(seeds)
    x = np.empty((k, T_EQ, C))
    x[:, 0] = rng.normal(size=(k, C))
    for t in range(1, T_EQ):
        x[:, t] = 0.5 * x[:, t - 1] + math.sqrt(0.75) * rng.normal(size=(k, C))
    x += drift * np.arange(T_EQ)[None, :, None] / T_EQ
    mask = np.ones((k, T_EQ), bool)
    mask[:, :40] = False
    sse = 1.0 + 0.1 * rng.normal(size=(k, 2 * T_EQ)).astype(np.float32)
    ev = np.arange(backoffs)
    write_samples(path, {
        "seeds": np.asarray(seeds), "count": np.full(k, 100),
        "f_train": {"mean": rng.normal(size=(k, N_TRAIN)), "sq_mean": np.ones((k, N_TRAIN))},
        "f_test": {"mean": rng.normal(size=(k, N_TEST)), "sq_mean": np.ones((k, N_TEST))},
        "loss": {"sse": sse, "epoch": np.arange(2 * T_EQ)},
        "lr": {"final": np.full(k, 1e-4)},
        "backoffs": {"epoch": ev, "chain": ev % k, "seed": np.asarray(seeds)[ev % k],
                     "old_lr": np.ones(backoffs), "new_lr": np.full(backoffs, 0.5),
                     "rollback_to": ev if rollback_to is None else np.asarray(rollback_to)},
        "snapshots": {"epoch": 2 * np.arange(T_EQ), "sampling": mask, "w_teacher": x,
                      "directions": rng.normal(size=(S, 2))},
    }, config={"sampler": {}}, seeds=tuple(seeds), n=N_TRAIN, width=C)


@pytest.mark.parametrize("drift", [0.0, 3.0])
def test_table_flags_a_drifting_chain_and_passes_a_stationary_one(tmp_path, drift):
    from fleos.analysis.aggregate import EQ_FIELDS, equilibration_summary
    from fleos.figures.render import summarize

    rng = np.random.default_rng(11)
    paths = [tmp_path / "c0.h5", tmp_path / "c1.h5"]
    # one back-off per chain, all before the window: every chain samples at the same η
    _eq_chunk(paths[0], (0, 1, 2), rng, drift, backoffs=3)
    _eq_chunk(paths[1], (3, 4), rng, drift, backoffs=2)
    s = load_chunks(paths)
    data = SimpleNamespace(y=rng.normal(size=N_TRAIN), y_test=rng.normal(size=N_TEST))
    out = aggregate_job("cnn2", {"sigma2": 0.1}, s, data)
    assert int(out["n_backoffs"]) == 5  # the events of both chunks
    assert out["step_size"].tolist() == [0.0, 0.0]
    rec = dict(zip(EQ_FIELDS, out["eq_w_teacher_sq"], strict=True))
    eq = equilibration_summary(out, ("w_teacher_sq", "loss"))
    row = {"n": N_TRAIN, "C": C, **eq}
    text = summarize("fig3_like", [row])
    if drift == 0.0:
        # Stationary: 5 seeds × 360 independent draws; R̂ − 1 = O(1/ESS) ≈ 1e-3, the bulk
        # ESS ≈ 1800 and the half drift is N(0, 1): inside the default gates (1.01, 400, 3 SE).
        assert rec["rhat"] < 1.01 and rec["ess"] > 400 and abs(rec["drift_se"]) < 3
        assert eq["equilibrated"] is True and eq["failed_gates"] == ""
        assert "NOT EQUILIBRATED" not in text
        assert "every measured point passes the gates (R̂ ≤ 1.01, bulk ESS ≥ 400" in text
    else:
        # ⟨x²⟩ = 1 + 9(t/T)² grows from ≈ 2.1 (first half) to ≈ 6.4 (second), against an SE
        # of a few 0.01: both diagnostics fire.
        assert rec["drift_se"] > 3 and rec["rhat"] > 1.05
        assert eq["equilibrated"] is False
        assert "rhat>1.01" in eq["failed_gates"] and "drift>3SE" in eq["failed_gates"]
        assert f"NOT EQUILIBRATED (drawn hollow; gates R̂ ≤ 1.01, bulk ESS ≥ 400, half-window " \
               f"drift ≤ 3 SE, one step size): n = {N_TRAIN}, C = {C} (fails rhat>1.01" in text
    assert eq["n_backoffs"] == 5 and eq["eq_series"] == "w_teacher_sq;loss"
    assert np.isfinite(out["eq_loss"]).all()


def test_step_size_record_counts_backoffs_inside_each_chains_window_and_scale_spread():
    from fleos.analysis.aggregate import step_size_record

    epochs = 20 * np.arange(20)  # snapshots at 0, 20, ..., 380
    sampling = np.zeros((4, 20), bool)
    sampling[:2, 5:] = True  # seeds 10, 11 sample over [100, 380]
    sampling[2, 10:15] = True  # seed 12 over [200, 280] (a window that ends early)
    # seed 13 never samples
    samples = {"seeds": np.array([10, 11, 12, 13]), "snapshots/epoch": epochs,
               "snapshots/sampling": sampling,
               "backoffs/seed": np.array([10, 11, 11, 12, 12, 13]),
               # 10: before the window (scale 1/2 for the whole window); 11: at its start
               # (scale 1/2), then inside (counted); 12: after its window's end, and before
               # its start (scale 1/2); 13: never sampled, ignored
               "backoffs/rollback_to": np.array([0, 100, 120, 300, 150, 40]),
               "backoffs/old_lr": np.array([1.0, 1.0, 0.5, 0.5, 1.0, 1.0]),
               "backoffs/new_lr": np.array([0.5, 0.5, 0.25, 0.25, 0.5, 0.5])}
    inside, spread = step_size_record(samples)
    assert inside == 1 and spread == 0.0  # every sampled chain's window starts at η/2
    samples["backoffs/rollback_to"] = np.array([0, 100, 120, 300, 250, 40])  # 12: inside
    samples["backoffs/old_lr"][4], samples["backoffs/new_lr"][4] = 0.5, 0.25
    inside, spread = step_size_record(samples)
    # seed 12's window now starts at the schedule's η (scale 1) against 1/2 for the others
    assert inside == 2 and spread == pytest.approx(1.0)
    no_list = {k: v for k, v in samples.items() if not k.startswith("backoffs/")}
    assert np.isnan(step_size_record(no_list)).all()


def test_one_step_size_is_a_gate():
    from fleos.analysis.aggregate import equilibration_summary

    passing = {"eq_loss": np.array([1.002, 900.0, 0.1, 0.5]), "n_backoffs": np.array(2)}
    assert equilibration_summary(passing, ("loss",))["equilibrated"] is True  # nothing said
    same = {**passing, "step_size": np.array([0.0, 0.0])}
    assert equilibration_summary(same, ("loss",))["failed_gates"] == ""
    moved = {**same, "step_size": np.array([1.0, 0.0])}
    eq = equilibration_summary(moved, ("loss",))
    assert eq["equilibrated"] is False and eq["failed_gates"] == "eta changed in window"
    split = {**same, "step_size": np.array([0.0, 1.0])}
    eq = equilibration_summary(split, ("loss",))
    assert eq["equilibrated"] is False and eq["failed_gates"] == "eta differs across chains"
    both = {**passing, "eq_loss": np.array([1.03, 900.0, 0.1, 0.5]),
            "step_size": np.array([2.0, 1.0])}
    assert equilibration_summary(both, ("loss",))["failed_gates"] == (
        "rhat>1.01;eta changed in window;eta differs across chains")
    # not measurable, yet known to fail
    eq = equilibration_summary({"step_size": np.array([1.0, 0.0])}, ("loss",))
    assert eq["equilibrated"] is False
    assert eq["failed_gates"] == "not measurable;eta changed in window"


def test_a_backoff_inside_the_window_fails_an_otherwise_passing_point(tmp_path):
    from fleos.analysis.aggregate import equilibration_summary

    rng = np.random.default_rng(11)
    paths = [tmp_path / "c0.h5", tmp_path / "c1.h5"]
    # the stationary chains of the drift-free case above, which pass R̂, ESS and drift; one
    # back-off of seed 3 that holds from epoch 400, inside the window [80, 798]: seed 3 then
    # starts its window at the schedule's η like the others, and changes it inside
    _eq_chunk(paths[0], (0, 1, 2), rng, 0.0, backoffs=0)
    _eq_chunk(paths[1], (3, 4), rng, 0.0, backoffs=1, rollback_to=[400])
    s = load_chunks(paths)
    data = SimpleNamespace(y=rng.normal(size=N_TRAIN), y_test=rng.normal(size=N_TEST))
    out = aggregate_job("cnn2", {"sigma2": 0.1}, s, data)
    assert out["step_size"].tolist() == [1.0, 0.0]
    eq = equilibration_summary(out, ("w_teacher_sq",))
    assert eq["rhat"] < 1.01 and eq["ess"] > 400 and abs(eq["drift_se"]) < 3
    assert eq["equilibrated"] is False and eq["failed_gates"] == "eta changed in window"


def test_gates_each_fail_on_their_own_and_come_from_the_config():
    from fleos.analysis.aggregate import equilibration_summary
    from fleos.core.diagnostics import EquilibriumGates

    g = EquilibriumGates()
    assert (g.rhat_max, g.ess_min, g.drift_max) == (1.01, 400.0, 3.0)
    assert g.failed(1.005, 1000.0, 0.5) == []
    assert g.failed(1.011, 1000.0, 0.5) == ["rhat>1.01"]
    assert g.failed(1.005, 399.0, 0.5) == ["ess<400"]
    assert g.failed(1.005, 1000.0, -3.1) == ["drift>3SE"]
    assert g.failed(math.nan, math.nan, math.nan) == ["rhat>1.01", "ess<400", "drift>3SE"]
    loose = EquilibriumGates.from_config({"gates": {"rhat_max": 1.05, "ess_min": 100}})
    assert (loose.rhat_max, loose.ess_min, loose.drift_max) == (1.05, 100.0, 3.0)
    assert EquilibriumGates.from_config({}) == g
    # One aggregate record: R̂ 1.03, ESS 150, drift 1 SE fails the default gates on R̂ and ESS
    # and passes the loose ones.
    agg = {"eq_loss": np.array([1.03, 150.0, 0.1, 1.0]), "n_backoffs": np.array(0)}
    strict = equilibration_summary(agg, ("loss",))
    assert strict["equilibrated"] is False and strict["failed_gates"] == "rhat>1.01;ess<400"
    assert equilibration_summary(agg, ("loss",), loose)["equilibrated"] is True


@pytest.mark.parametrize("gates, key", [({"rhat": 1.01}, "gates.rhat"),
                                        ({"ess_min": -1}, "gates.ess_min"),
                                        ({"drift_max": "3"}, "gates.drift_max")])
def test_bad_gates_name_their_key(gates, key):
    from fleos.core.diagnostics import EquilibriumGates

    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        EquilibriumGates.from_config({"gates": gates})


def test_equilibration_not_measurable_is_said():
    from fleos.analysis.aggregate import equilibration_summary
    from fleos.figures.render import summarize

    eq = equilibration_summary({"n_backoffs": np.array(0)}, ("loss",))
    assert eq["equilibrated"] is None and math.isnan(eq["rhat"])
    assert "not measurable" in summarize("x", [{"n": 8, "C": 4, **eq}])


def test_gates_rerun_the_sampled_figures_only_when_their_value_changes():
    import copy

    import yaml

    from fleos.pipeline import figure_params

    cfg = yaml.safe_load(open("config/smoke.yaml"))
    spelled = copy.deepcopy(cfg)
    spelled["gates"] = {"rhat_max": 1.01, "ess_min": 400, "drift_max": 3}
    loose = copy.deepcopy(cfg)
    loose["gates"] = {"rhat_max": 1.05}
    assert figure_params(spelled, "fig3") == figure_params(cfg, "fig3")
    assert figure_params(loose, "fig3") != figure_params(cfg, "fig3")
    assert figure_params(loose, "fig2c") == figure_params(cfg, "fig2c")  # theory only


def test_gate_series_are_the_all_channel_means_not_the_recorded_subset():
    """A mean-field FCN can break the channels' permutation symmetry: one unit aligns with the
    teacher and stays so for ≫ 10⁴ steps. Which unit it is differs between chains; if it falls
    inside the recorded subset of one chain only, that chain's subset series sits at another
    level and R̂ fails, although the posterior the figures report (Σ, a mean over all units)
    has mixed. Synthetic chains: 8 chains, 400 snapshots, 10 units of which the first 4 are
    recorded; chain 6's specialized unit is unit 0, every other chain's is unit 9. The
    all-channel mean square (`w_teacher_msq`) passes R̂; the subset's would not, and a file
    without `_msq` falls back to it."""
    rng = np.random.default_rng(0)
    chains, T, units = 8, 400, 10
    proj = 0.2 * rng.standard_normal((chains, T, units))
    for c in range(chains):
        proj[c, :, 0 if c == 6 else 9] += 1.5
    mask = np.ones((chains, T), bool)
    base = {"snapshots/sampling": mask, "snapshots/epoch": np.arange(T),
            "snapshots/w_teacher": proj[..., :4]}
    subset = equilibration_series(base)["w_teacher_sq"]
    full = equilibration_series({**base, "snapshots/w_teacher_msq": (proj**2).mean(-1)})
    np.testing.assert_allclose(full["w_teacher_sq"], (proj**2).mean(-1))
    assert equilibration_record(subset)[0] > 1.1        # R̂ of the subset (1.29): the artefact
    assert equilibration_record(full["w_teacher_sq"])[0] < 1.01


def test_top_mode_series_reads_all_channels_at_every_snapshot():
    """Fig. 2a's gate series `mode1_sq` is v₁ᵀΣ̂(θ_t)v₁ = the mean of (w·v₁)² over ALL units at
    every sampling snapshot, v₁ each chain's top Σ eigenvector, when the file has the
    per-snapshot Σ̂ (`snapshots/sigma`); without it, it falls back to the last kept full
    snapshots of the recorded units (`top_modes/proj`), a shorter subset series."""
    rng = np.random.default_rng(1)
    chains, T, units, d, kept = 3, 40, 6, 4, 10
    W = rng.standard_normal((chains, T, units, d))
    W[..., 0] *= 3.0                                      # a leading mode along e₀
    v = rng.standard_normal((chains, d, 2))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    mask = np.ones((chains, T), bool)
    mask[:, :5] = False                                   # burn-in snapshots are not read
    proj = np.einsum("ctud,cdk->ctuk", W[:, -kept:, :2], v)  # the recorded units 0, 1
    base = {"snapshots/sampling": mask, "snapshots/epoch": np.arange(T),
            "top_modes/eigvecs": v, "top_modes/proj": proj}
    fallback = equilibration_series(base)["mode1_sq"]
    np.testing.assert_allclose(fallback, (proj[..., 0] ** 2).mean(-1))
    sigma = np.einsum("ctud,ctue->ctde", W, W) / units
    series = equilibration_series({**base, "snapshots/sigma": sigma})["mode1_sq"]
    direct = (np.einsum("ctud,cd->ctu", W, v[..., 0]) ** 2).mean(-1)[:, 5:]
    np.testing.assert_allclose(series, direct, rtol=1e-12)
    # an older chunk joined with a newer one: Σ̂ for some chains only -> the fallback for all
    mixed = equilibration_series({**base, "snapshots/sigma": sigma[:2]})["mode1_sq"]
    np.testing.assert_array_equal(mixed, fallback)


def test_fig4_rows_carry_the_all_channel_second_moment():
    """Fig. 4's trained rows give `var_all` ± SE from `<p>_msq_all` and the teacher/random
    ratio of these; prior rows, and aggregates without the all-channel record, give NaN."""
    from fleos.figures import fig4

    a = {"w_teacher_msq_all": np.array([0.22, 0.006]),
         "w_random_msq_all": np.array([0.044, 0.0001])}
    assert fig4._all_channels(a, "w_teacher", "trained") == {"var_all": 0.22,
                                                             "var_all_se": 0.006}
    assert all(math.isnan(v) for v in fig4._all_channels(a, "w_teacher", "prior").values())
    assert all(math.isnan(v) for v in fig4._all_channels(a, "h2_teacher", "trained").values())
    row = {"quantity": "w_teacher", "state": "trained", "var": 0.224, "var_se": 0.006,
           "ks": 0.006, **fig4._all_channels(a, "w_teacher", "trained")}
    prior = {**row, "state": "prior", **fig4._all_channels(a, "w_teacher", "prior")}
    lines = fig4.summary([row, prior])
    assert "over all channels 0.22" in lines[0] and "over all channels" not in lines[1]
