"""The `fleos` CLI on bad input: one line on stderr naming the argument or file, exit 2; a
run that fails or does not converge exits 1 (fleos.cli.args.EXIT_STATUS). One test per input of
a list of inputs each of which used to give a traceback or a wrong answer with exit 0.
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


# ---- --out that cannot be written, and sizes the machine cannot hold ---------------------------

_COMMANDS = [["eos", "cnn2", "--C", "4"], ["eos", "fcn", "--widths", "4"], ["fls", "--n", "8"],
             ["eos", "cnn3", "--samples", "k.npz", "--data", "d.npz", "--N", "1", "--S1", "1",
              "--S0", "1", "--C1", "1", "--C2", "1", "--sigma2", "1"]]


@pytest.mark.parametrize("argv", _COMMANDS, ids=lambda a: " ".join(a[:2]))
@pytest.mark.parametrize("where", ["folder", "missing folder", "under a file"])
def test_out_that_cannot_be_written_is_refused_before_any_solve(capsys, tmp_path, argv, where):
    """argparse checks --out (`out_file`), so nothing runs: no data, no solve."""
    (tmp_path / "file").write_text("")
    out = {"folder": tmp_path, "missing folder": tmp_path / "missing" / "x.json",
           "under a file": tmp_path / "file" / "x.json"}[where]
    rc, stdout, err = _run(capsys, *argv, "--out", str(out))
    _assert_one_line(rc, err, "argument --out")
    assert stdout == ""
    assert not (tmp_path / "missing").exists()


def test_out_file_holds_exactly_what_stdout_gets(capsys, tmp_path):
    argv = ["eos", "cnn2", "--n", "8", "--S", "4", "--N", "2", "--n-test", "0", "--C", "4",
            "--tol", "1e-6"]
    rc, stdout, err = _run(capsys, *argv)
    assert rc == 0, err
    out = tmp_path / "r.json"
    rc, nothing, err = _run(capsys, *argv, "--out", str(out))
    assert rc == 0 and nothing == "", err
    strip = lambda doc: {**doc, "solutions": [{k: v for k, v in s.items() if "seconds" not in k}  # noqa: E731
                                              for s in doc["solutions"]],
                         "settings": {**doc["settings"], "total_seconds": None}}
    assert strip(json.loads(out.read_text())) == strip(json.loads(stdout))
    assert out.read_text().endswith("}\n")
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left


@pytest.mark.parametrize("argv, names", [
    (["fls", "--arch", "cnn2", "--n", "100000000", "--S", "4", "--N", "4"],
     ["--arch cnn2 --n 100000000", "n×n"]),
    (["fls", "--arch", "fcn_standard", "--n", "64", "10000000"],
     ["--arch fcn_standard --n 10000000"]),
    (["eos", "cnn2", "--n", "10000000", "--C", "4"], ["--n 10000000", "n×n"]),
    (["eos", "cnn2", "--n", "64", "--n-test", "100000000000", "--C", "4"],
     ["--n-test 100000000000"]),
    (["eos", "fcn", "--n", "10000000", "--widths", "4"], ["--n 10000000"]),
    (["eos", "fcn", "--n", "64", "--d", "10000000", "--widths", "4"], ["--d 10000000", "d×d"]),
])
def test_sizes_beyond_any_machine_are_refused_before_allocating(capsys, argv, names):
    """Petabytes (≥ 1e15 bytes, so on every machine), refused before the data are drawn: the
    test would otherwise take minutes and be killed."""
    rc, out, err = _run(capsys, *argv)
    _assert_one_line(rc, err, *names, "needs ~", "available")
    assert " PB (" in err or " EB (" in err, err
    assert out == ""


def test_cnn3_kernels_too_large_are_refused_before_reading_them(capsys, tmp_path, monkeypatch):
    """With a machine that has 1 MB free (faked), the small cnn3 problem (BASE alone is more)
    is refused naming --data and its n, before the kernel files are read (they are missing)."""
    import fleos.cli.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda: 10**6)
    argv = _cnn3_args(tmp_path)
    argv[argv.index("--samples") + 1] = str(tmp_path / "missing_kernels.npz.h5")
    rc, _, err = _run(capsys, *argv)
    _assert_one_line(rc, err, "--data", "(n = 4)", "needs ~", "1 MB available")


def test_memory_check_compares_the_estimate_with_what_is_available(monkeypatch):
    from fleos.cli.args import InputError
    from fleos.cli.memory import BASE, SAFETY, SKIP_ENV, Term, require_memory, total_bytes

    terms = [Term(1e6, "small", "--a 1"), Term(2e9, "big arrays", "--b 2")]
    need, top = total_bytes(terms)
    assert need == BASE + SAFETY * 8 * (1e6 + 2e9)  # the docstring's formula
    assert top.args == "--b 2"
    require_memory(terms, available=int(need) + 1)  # fits: nothing
    with pytest.raises(InputError) as info:
        require_memory(terms, available=int(need) - 1)
    msg = str(info.value)
    assert msg.startswith(f"--b 2 needs ~{need / 1e9:.3g} GB (big arrays), this machine has ")
    assert "\n" not in msg and SKIP_ENV in msg
    monkeypatch.setenv(SKIP_ENV, "1")
    require_memory(terms, available=1)  # the documented override


@pytest.mark.parametrize("files, room", [
    ({"memory.max": "1000\n", "memory.current": "400\n"}, 600),  # cgroup v2 with a limit
    ({"memory.max": "max\n", "memory.current": "400\n"}, None),  # v2, no limit
    ({"memory/memory.limit_in_bytes": "5000\n", "memory/memory.usage_in_bytes": "1000\n"},
     4000),  # v1 with a limit
    ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1, no limit
    ({}, None),  # no cgroup files
])
def test_cgroup_room_reads_limit_minus_usage(tmp_path, files, room):
    from fleos.cli.memory import cgroup_room

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "self").write_text("0::/\n")
    assert cgroup_room(tmp_path, tmp_path / "self") == room


def test_available_memory_is_what_the_kernel_reports():
    from pathlib import Path

    from fleos.cli.memory import available_memory

    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    total = int(info["MemTotal"].split()[0]) * 1024
    have = available_memory()
    assert have is not None and 0 < have <= total


def test_memory_estimate_bounds_the_measured_peak(tmp_path):
    """A real run's peak resident set (the kernel's count, ru_maxrss of the child) is below
    the estimate, and the estimate is not so loose that it would refuse runs that fit (less
    than 3× the peak). At n = 1500 the n×n kernels are a third of the peak; measured on the
    2-core reference machine: 0.58 GB at n = 1000, 0.73 GB at n = 2000."""
    import os
    import subprocess
    import sys

    from fleos.cli.memory import cnn2_terms, total_bytes

    n = 1500
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false "
           "intra_op_parallelism_threads=1"}
    argv = [sys.executable, "-m", "fleos.cli", "eos", "cnn2", "--n", str(n), "--n-test", "0",
            "--C", "1e6", "--out", str(tmp_path / "r.json")]
    # A fresh parent, so that no earlier child of this test session counts in its ru_maxrss.
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", probe, *argv], check=True, env=env,
                          capture_output=True, text=True)
    peak = int(done.stdout.split()[-1]) * 1024  # ru_maxrss is in kB on Linux
    need, _ = total_bytes(cnn2_terms(n, 0, 20, 64, 0, f"--n {n}"))
    assert peak < need < 3 * peak, (peak, need)
