"""`fleos train-alpha` / fleos.analysis.train_alpha: the train-α decomposition of a cnn2 run.

Reference: a tiny 2-layer CNN with the *linear* activation, whose Gaussian-channel kernel is
linear in Σ, Q(Σ)_ab = σ_a²/N Σ_i p_ai·Σ p_bi, so every column has a closed form in numpy and
the channel-statistics term ⟨Q⟩ − Gauss(Σ̂) is exactly zero when ⟨Q⟩ is the mean of Q(Σ_k)
over samples Σ_k whose mean is Σ̂. All comparisons are float64 arithmetic of the same
quantity by two routes (numpy here, jax in the module): tolerance 1e-10, far above rounding
(≈ 1e-15 per operation on a 12 × 12 system) and far below the differences the test must see
(the fluctuation term here is ≈ 1e-2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from fleos.analysis.train_alpha import COLUMNS, decompose, markdown_table
from fleos.cli import main
from fleos.nets.datasets import Dataset, save_dataset
from fleos.theory.eos.cnn2 import CNN2Problem

ROOT = Path(__file__).resolve().parents[1]
N, S, SIGMA2, SIGMA_A2 = 3, 4, 0.1, 2.0
N_TRAIN, N_TEST, C = 12, 7, 16


def _data(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_TRAIN, N * S))
    X_test = rng.standard_normal((N_TEST, N * S))
    w = rng.standard_normal(S)
    y, y_test = (np.sum(np.tanh(x.reshape(len(x), N, S) @ w), axis=1) for x in (X, X_test))
    return Dataset(X=X, y=y, X_test=X_test, y_test=y_test)


def _Q(Xa: np.ndarray, Xb: np.ndarray, Sigma: np.ndarray) -> np.ndarray:
    Pa, Pb = Xa.reshape(len(Xa), N, S), Xb.reshape(len(Xb), N, S)
    return SIGMA_A2 / N * np.einsum("ais,st,bit->ab", Pa, Sigma, Pb)


def _alpha(y: np.ndarray, f: np.ndarray) -> float:
    return float((y - f) @ y / (SIGMA2 * y @ y))


def _alphas(ds: Dataset, Q: np.ndarray, Q_test: np.ndarray) -> tuple[float, float]:
    K = Q + SIGMA2 * np.eye(len(Q))
    return (_alpha(ds.y, Q @ np.linalg.solve(K, ds.y)),
            _alpha(ds.y_test, Q_test @ np.linalg.solve(K, ds.y)))


def _synthetic_point(ds: Dataset, seed: int = 1) -> tuple[dict, dict, dict]:
    """Theory row, aggregate and the numpy reference of one (n, C) point: 40 sampled Σ_k
    (C channels each), the EoS Σ at the prior σ_w²/S I."""
    rng = np.random.default_rng(seed)
    sigmas = []
    for _ in range(40):
        W = rng.standard_normal((S, C)) * np.sqrt(2.0 / S) * rng.uniform(0.5, 1.5)
        sigmas.append(W @ W.T / C)
    sigma_mean = np.mean(sigmas, axis=0)
    per_sample = [_alphas(ds, _Q(ds.X, ds.X, s), _Q(ds.X_test, ds.X, s)) for s in sigmas]
    Q_mean = np.mean([_Q(ds.X, ds.X, s) for s in sigmas], axis=0)
    eos = _alphas(ds, _Q(ds.X, ds.X, np.eye(S) * 2.0 / S), _Q(ds.X_test, ds.X, np.eye(S) * 2.0 / S))
    ref = {
        "gauss": _alphas(ds, _Q(ds.X, ds.X, sigma_mean), _Q(ds.X_test, ds.X, sigma_mean)),
        "meankernel": _alphas(ds, Q_mean, np.zeros((N_TEST, N_TRAIN)))[0],
        "rb": float(np.mean([a[0] for a in per_sample])),
    }
    agg = {"sigma_mean": sigma_mean, "alpha_train_meankernel": ref["meankernel"],
           "alpha_train_meankernel_se": 0.001, "alpha_train_rb": ref["rb"],
           "alpha_train_rb_se": 0.002, "alpha_train": ref["rb"] + 0.003, "alpha_train_se": 0.01,
           "alpha_test_rb": float(np.mean([a[1] for a in per_sample])), "alpha_test_rb_se": 0.02,
           "alpha_test": 0.9, "alpha_test_se": 0.05}
    theory_row = {"C": C, "alpha_train_eos": eos[0], "alpha_test_eos": eos[1]}
    return theory_row, agg, ref


def _problem(ds: Dataset) -> CNN2Problem:
    return CNN2Problem.from_arrays(ds.X, ds.y, N, S, ds.X_test, ds.y_test, sigma2=SIGMA2,
                                   sigma_a2=SIGMA_A2, sigma_w2=2.0, activation="linear")


def test_decomposition_matches_the_closed_form_of_a_linear_network():
    ds = _data()
    theory_row, agg, ref = _synthetic_point(ds)
    row = decompose(_problem(ds), C, theory_row, agg)
    assert list(row) == list(COLUMNS)
    assert row["n"] == N_TRAIN and row["C"] == C
    # Gauss(Σ̂): the EoS kernel formula at the sampled Σ̂, against numpy's
    assert row["alpha_train_gauss"] == pytest.approx(ref["gauss"][0], rel=1e-10)
    assert row["alpha_test_gauss"] == pytest.approx(ref["gauss"][1], rel=1e-10)
    # linear Q(Σ): the mean kernel IS the Gaussian-channel kernel at the mean Σ
    assert abs(row["channel_term"]) < 1e-10
    # the Σ term: against the EoS at the prior; non-zero here (Σ̂ differs from it)
    assert row["sigma_term"] == pytest.approx(ref["gauss"][0] - theory_row["alpha_train_eos"],
                                              rel=1e-10)
    assert abs(row["sigma_term"]) > 1e-4
    # fluctuations: Jensen (train α convex in Q), strictly positive for distinct samples
    assert row["fluctuation_term"] == pytest.approx(ref["rb"] - ref["meankernel"], rel=1e-12)
    assert row["fluctuation_term"] > 1e-4
    assert row["fluctuation_term_times_C"] == pytest.approx(C * row["fluctuation_term"])
    # the three terms add up to RB − EoS
    total = row["sigma_term"] + row["channel_term"] + row["fluctuation_term"]
    assert total == pytest.approx(row["alpha_train_rb"] - row["alpha_train_eos"], abs=1e-12)


def test_decompose_names_what_a_run_without_rao_blackwell_lacks():
    ds = _data()
    theory_row, agg, _ = _synthetic_point(ds)
    del agg["alpha_train_meankernel"]
    with pytest.raises(KeyError, match="alpha_train_meankernel.*rao_blackwell_every"):
        decompose(_problem(ds), C, theory_row, agg)


def _tiny_run(tmp_path, with_rb: bool = True):
    ds = _data()
    theory_row, agg, _ = _synthetic_point(ds)
    res = tmp_path / "results"
    save_dataset(ds, res / "data" / "cnn2" / f"n{N_TRAIN}.npz")
    (res / "theory" / "cnn2").mkdir(parents=True)
    (res / "theory" / "cnn2" / f"n{N_TRAIN}.json").write_text(json.dumps({"rows": [theory_row]}))
    if not with_rb:
        agg = {k: v for k, v in agg.items() if "meankernel" not in k}
    path = res / "aggregate" / "cnn2" / f"n{N_TRAIN}" / f"w{C}.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, **{k: np.asarray(v) for k, v in agg.items()})
    exp = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["experiments"]["cnn2"]
    exp["model"].update({"N": N, "S": S, "activation": "linear", "sigma_a2": SIGMA_A2})
    exp["data"]["n"], exp["widths"], exp["sigma2"] = [N_TRAIN], [C], SIGMA2
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"experiments": {"cnn2": exp}}))
    return ds, theory_row, agg, res, cfg


def test_train_alpha_command_prints_the_table_and_writes_the_rows(tmp_path, capsys):
    ds, theory_row, agg, res, cfg = _tiny_run(tmp_path)
    out = tmp_path / "rows.json"
    rc = main(["train-alpha", "--results", str(res), "--config", str(cfg), "--out", str(out)])
    assert rc == 0
    expected = decompose(_problem(ds), C, theory_row, agg)
    doc = json.loads(out.read_text())
    assert doc["experiment"] == "cnn2" and len(doc["rows"]) == 1
    assert doc["rows"][0] == pytest.approx(expected, rel=1e-12)
    table = capsys.readouterr().out.strip().splitlines()
    assert table == markdown_table([expected]).splitlines()
    assert table[2].startswith(f"| {N_TRAIN} | {C} | {theory_row['alpha_train_eos']:.4f} |")


@pytest.mark.parametrize("case, named", [
    ("no_rb", "--results"), ("no_config", "--config"), ("no_experiment", "--experiment"),
    ("not_cnn2", "--config"), ("no_results", "--results"),
])
def test_train_alpha_bad_input_is_one_line_exit_2(tmp_path, capsys, case, named):
    _, _, _, res, cfg = _tiny_run(tmp_path, with_rb=case != "no_rb")
    args = ["train-alpha", "--results", str(res), "--config", str(cfg)]
    if case == "no_config":
        args[4] = str(tmp_path / "missing.yaml")
    elif case == "no_experiment":
        args += ["--experiment", "fcn"]
    elif case == "not_cnn2":
        doc = yaml.safe_load(cfg.read_text())
        doc["experiments"]["cnn2"]["arch"] = "fcn"
        cfg.write_text(yaml.safe_dump(doc))
    elif case == "no_results":
        args[2] = str(tmp_path / "nowhere")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fleos train-alpha: error: {named}"), err
