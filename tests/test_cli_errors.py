"""The `fleos` CLI on bad input: one line on stderr naming the argument or file, exit 2; a
run that fails or does not converge exits 1 (fleos.cli.args.EXIT_STATUS). One test per input of
issue #12's list, each of which used to give a traceback or a wrong answer with exit 0.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fleos.cli import main
from fleos.cli.args import EXIT_STATUS


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse's own exits (bad values, --help)
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_one_line(rc: int, err: str, *names: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], lines[0]


def _npz(path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def _fleos_data(path, n: int, d: int, X=None) -> str:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)) if X is None else X
    return _npz(path, X=X, y=rng.standard_normal(len(X)), X_test=rng.standard_normal((3, d)),
                y_test=rng.standard_normal(3))


# ---- exit 0 with a wrong answer, before ----------------------------------------------------


def test_cnn2_with_no_training_points_is_refused(capsys, tmp_path):
    data = _fleos_data(tmp_path / "d.npz", 0, 32)
    rc, out, err = _run(capsys, "eos", "cnn2", "--data", data, "--S", "16", "--C", "4")
    _assert_one_line(rc, err, "--data", "n = 0")
    assert out == ""


def test_cnn2_patch_count_that_does_not_match_the_data_is_refused(capsys, tmp_path):
    data = _fleos_data(tmp_path / "d.npz", 6, 96)
    rc, _, err = _run(capsys, "eos", "cnn2", "--data", data, "--S", "16", "--N", "8",
                      "--C", "4")
    _assert_one_line(rc, err, "--N 8", "96 columns", "6 patches")


@pytest.mark.parametrize("argv, name", [
    (["eos", "cnn2", "--C", "4", "--tol", "-1"], "--tol"),
    (["eos", "cnn2", "--C", "4", "--max-iter", "0"], "--max-iter"),
    (["eos", "cnn2", "--C", "4", "--matched-samples", "100"], "--matched-samples"),
    (["fls", "--n", "8", "16", "--sigma2", "-1"], "--sigma2"),
])
def test_nonsense_settings_are_refused(capsys, argv, name):
    rc, _, err = _run(capsys, *argv)
    _assert_one_line(rc, err, f"argument {name}")


# ---- tracebacks, before ----------------------------------------------------------------------


@pytest.mark.parametrize("argv, name", [
    (["eos", "fcn", "--widths", "0"], "--widths"),
    (["eos", "fcn", "--widths", "4", "--d", "0"], "--d"),
    (["eos", "fcn", "--widths", "4", "--depth", "1"], "--depth"),
    (["eos", "fcn", "--widths", "4", "--sigma2", "-0.1"], "--sigma2"),
    (["eos", "fcn", "--widths", "4", "--sigma-w2", "-2"], "--sigma-w2"),
    (["eos", "fcn", "--widths", "4", "--ridge", "-1"], "--ridge"),
    (["fls", "--n", "0"], "--n"),
    (["eos", "cnn2", "--C", "0"], "--C"),
    (["eos", "cnn2", "--C", "nan"], "--C"),
])
def test_bad_argument_values_are_named(capsys, argv, name):
    rc, _, err = _run(capsys, *argv)
    _assert_one_line(rc, err, f"argument {name}")


def test_fcn_with_no_training_points_is_refused(capsys, tmp_path):
    data = _fleos_data(tmp_path / "d.npz", 0, 8)
    rc, _, err = _run(capsys, "eos", "fcn", "--data", data, "--widths", "4")
    _assert_one_line(rc, err, "--data", "n = 0")


def _cnn3_args(tmp_path, *extra: str, K2=None) -> list[str]:
    S0, S1, N, n = 3, 2, 2, 4
    data = _fleos_data(tmp_path / "d.npz", n, N * S1 * S0)  # N·S1 patches of size S0
    K2 = np.eye(n * N) if K2 is None else K2
    ker = _npz(tmp_path / "k.npz", Sigma=np.eye(S0), K2=K2)
    return ["eos", "cnn3", "--samples", ker, "--data", data, "--N", str(N), "--S1", str(S1),
            "--S0", str(S0), "--C1", "10", "--C2", "10", "--sigma2", "0.1", *extra]


@pytest.mark.parametrize("extra, name", [
    (["--C1", "0"], "--C1"),
    (["--sigma2", "-1"], "--sigma2"),
    (["--sigma-v2", "-1"], "--sigma-v2"),
])
def test_cnn3_bad_settings_are_named(capsys, tmp_path, extra, name):
    rc, _, err = _run(capsys, *_cnn3_args(tmp_path, *extra))
    _assert_one_line(rc, err, f"argument {name}")


def test_cnn3_nan_in_k2_names_the_file(capsys, tmp_path):
    K2 = np.eye(8)
    K2[1, 2] = np.nan
    rc, _, err = _run(capsys, *_cnn3_args(tmp_path, K2=K2))
    _assert_one_line(rc, err, "--samples", "k.npz", "K2", "NaN")


def test_cnn3_data_of_another_geometry_is_named(capsys, tmp_path):
    rc, _, err = _run(capsys, *_cnn3_args(tmp_path, "--S1", "3"))
    _assert_one_line(rc, err, "--data", "12 columns", "--N 2 --S1 3 --S0 3")


def test_cnn3_valid_input_still_runs(capsys, tmp_path):
    rc, out, err = _run(capsys, *_cnn3_args(tmp_path))
    assert rc == 0, err
    assert json.loads(out)["sigma_pred_analytic_q2_eigs"]


# ---- silent or misleading failures, before ---------------------------------------------------


def test_cnn2_nan_in_x_is_named(capsys, tmp_path):
    X = np.random.default_rng(1).standard_normal((6, 32))
    X[2, 5] = np.nan
    data = _fleos_data(tmp_path / "d.npz", 6, 32, X=X)
    rc, _, err = _run(capsys, "eos", "cnn2", "--data", data, "--S", "16", "--C", "4")
    _assert_one_line(rc, err, "--data", "X contains NaN")


@pytest.mark.parametrize("arch, extra", [("cnn2", ["--C", "4"]), ("fcn", ["--widths", "4"])])
def test_text_file_given_as_npz_is_named_as_such(capsys, tmp_path, arch, extra):
    text = tmp_path / "data.npz"
    text.write_text("X,y\n1,2\n")
    rc, _, err = _run(capsys, "eos", arch, "--data", str(text), *extra)
    _assert_one_line(rc, err, "--data", "not an .npz archive")
    assert "pickle" not in err


def test_missing_data_file_is_named(capsys, tmp_path):
    rc, _, err = _run(capsys, "eos", "fcn", "--data", str(tmp_path / "nope.npz"),
                      "--widths", "4")
    _assert_one_line(rc, err, "--data", "no such file")


# ---- the convention, documented ----------------------------------------------------------------


@pytest.mark.parametrize("argv", [[], ["eos"], ["eos", "cnn2"], ["eos", "fcn"], ["eos", "cnn3"],
                                  ["fls"], ["sample"]])
def test_help_documents_the_exit_status(capsys, argv):
    rc, out, _ = _run(capsys, *argv, "--help")
    assert rc == 0
    assert " ".join(EXIT_STATUS.split()) in " ".join(out.split())


def test_nonconverged_run_exits_1_with_its_json(capsys, tmp_path):
    rc, out, err = _run(capsys, "eos", "cnn2", "--n", "16", "--S", "4", "--N", "2",
                        "--n-test", "0", "--C", "2", "--max-iter", "1", "--tol", "1e-14")
    assert rc == 1, err
    assert json.loads(out)["solutions"][0]["converged"] is False


def test_cnn2_matched_eos_on_request(capsys):
    """--matched-samples adds the moment-matched EoS to every solution (off by default)."""
    argv = ["eos", "cnn2", "--n", "16", "--S", "4", "--N", "2", "--n-test", "4", "--C", "8"]
    rc, out, _ = _run(capsys, *argv)
    assert rc == 0 and "matched" not in json.loads(out)["solutions"][0]
    rc, out, err = _run(capsys, *argv, "--matched-samples", "256")
    assert rc == 0, err
    m = json.loads(out)["solutions"][0]["matched"]
    assert m["matched_converged"] and m["matched_samples"] == 256
    assert "matched C=8" in err  # progress goes to stderr, the JSON alone to stdout
