"""Reliability: nothing is lost, errors are clear (docs/reliability.md lists every row).

Rows tested here (the others point to their owners' tests, see docs/reliability.md):

* kill -9 of a sampling process at several random moments, restarted each time: the final
  sample file is bit-identical to that of an uninterrupted run;
* invalid config values stop `snakemake -n` before any job, naming the key;
* a corrupt or truncated sample file reaching the aggregation stops it with the file named;
* two Snakemake runs on one directory: the second is refused by Snakemake's lock and the
  first one's results are intact.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

# --------------------------------------------------------------------------------------------
# kill -9 at random points
# --------------------------------------------------------------------------------------------

# A tiny 2-layer CNN job (Eq. 7): small enough for CI, long enough (a few seconds of stepping
# with a checkpoint every 200 steps) that kills land before, between and during checkpoints.
KILL_EXPERIMENT = {
    "arch": "cnn2",
    "model": {"S": 8, "N": 4, "activation": "erf", "sigma_w2": 2.0, "sigma_a2": 2.0},
    "data": {"kind": "teacher", "n": [32], "n_test": 16, "teacher_seed": 0, "data_seed": 1},
    "sigma2": 0.1,
    "widths": [8],
    "seeds": 2,
    "seeds_per_job": 2,
    "sampler": {
        "dtype": "float32",
        "steps": 6000,
        "schedule": {"kind": "constant", "lr": 1.0e-3, "burn_in": 1000},
        "record_every": 10,
        "snapshot_every": 200,
        "checkpoint_every": 200,
    },
}

DRIVER = textwrap.dedent("""
    import sys, yaml
    from fleos.config import ExperimentConfig, JobSpec
    from fleos.sampling.experiment import run_job
    cfg_path, data, out, ckpt = sys.argv[1:5]  # argv[5]: n
    exp = ExperimentConfig.from_dict("cnn2", yaml.safe_load(open(cfg_path)))
    job = JobSpec("cnn2", int(sys.argv[5]), exp.widths[0], tuple(range(exp.seeds_per_job)))
    print("START", flush=True)
    run_job(exp, job, data, out, ckpt, progress=False)
    print("DONE", flush=True)
""")


def _h5_datasets(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda k, v: out.__setitem__(k, v[()])
                      if isinstance(v, h5py.Dataset) else None)
    return out


def _kill_job_setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    from fleos.nets.data import make_dataset
    from fleos.nets.datasets import save_dataset

    d = KILL_EXPERIMENT["data"]
    ds = make_dataset("cnn2", KILL_EXPERIMENT["model"], d["n"][0], d["n_test"],
                      d["teacher_seed"], d["data_seed"])
    data = tmp_path / "data.npz"
    save_dataset(ds, data)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(KILL_EXPERIMENT))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return cfg, data, driver


def _start(driver: Path, cfg: Path, data: Path, out: Path, ckpt: Path) -> subprocess.Popen:
    n = str(KILL_EXPERIMENT["data"]["n"][0])
    return subprocess.Popen([sys.executable, str(driver), str(cfg), str(data), str(out),
                             str(ckpt), n], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _kill_three_times(driver: Path, cfg: Path, data: Path, out: Path, ckpt: Path,
                      delays: np.ndarray) -> tuple[int, list[int]]:
    """Start the job and SIGKILL it once per delay: after it writes a new checkpoint (so it
    has made progress), wait the delay. Returns the kills that landed and the step each
    restart resumed from."""
    from fleos.sampling.io import load_checkpoint

    kills, resumed_steps = 0, []
    for delay in delays:
        mtime0 = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        proc = _start(driver, cfg, data, out, ckpt)
        while proc.poll() is None and (not ckpt.exists() or ckpt.stat().st_mtime_ns == mtime0):
            time.sleep(0.01)
        deadline = time.monotonic() + delay
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is not None:  # finished before the kill moment
            assert proc.returncode == 0, proc.stdout.read()
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        if out.exists():  # killed after the (atomic) final write: the file must be complete
            break
        resumed_steps.append(int(load_checkpoint(ckpt)["meta"]["step"]))
    return kills, resumed_steps


@pytest.mark.slow
def test_kill9_at_random_points_then_restart_is_identical(tmp_path: Path) -> None:
    """SIGKILL a sampling process at 3 random moments; the restarted job ends bit-identical."""
    cfg, data, driver = _kill_job_setup(tmp_path)

    # Reference: uninterrupted. Its timeline (first checkpoint, end) sets the kill window.
    ref_out, ref_ckpt = tmp_path / "ref.h5", tmp_path / "ref.ckpt"
    t0 = time.monotonic()
    proc = _start(driver, cfg, data, ref_out, ref_ckpt)
    t_first_ckpt = None
    while proc.poll() is None:
        if t_first_ckpt is None and ref_ckpt.exists():
            t_first_ckpt = time.monotonic() - t0
        time.sleep(0.05)
    t_end = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout.read()
    print(f"reference job: first checkpoint after {t_first_ckpt:.1f} s, done after {t_end:.1f} s")
    assert t_first_ckpt is not None, "the reference job never wrote a checkpoint"

    # Each kill lands at a random moment of the stepping phase: after the process has written
    # a new checkpoint (so it has made progress), wait U(0, 0.3) of the reference's stepping
    # time and SIGKILL. Seeded, so a failure can be replayed; kills land between checkpoints
    # and sometimes during a checkpoint write (atomic renames must keep that safe).
    rng = np.random.default_rng(20231)
    t_stepping = t_end - t_first_ckpt
    out, ckpt = tmp_path / "out.h5", tmp_path / "out.ckpt"
    # The delays are drawn against the reference's speed; if the machine's load changes and the
    # job outruns them (fewer than 2 kills land mid-run), start over with delays half as long.
    for attempt in range(4):
        out.unlink(missing_ok=True)
        ckpt.unlink(missing_ok=True)
        kills, resumed_steps = _kill_three_times(
            driver, cfg, data, out, ckpt, rng.uniform(0.0, 0.3 * t_stepping, 3) / 2**attempt)
        if kills >= 2 and len(resumed_steps) >= 2:
            break
        print(f"attempt {attempt}: only {kills} kills landed mid-run; shorter delays")
    if not out.exists():
        proc = _start(driver, cfg, data, out, ckpt)
        text, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, text
    assert kills >= 2 and len(resumed_steps) >= 2, \
        f"only {kills} kills landed mid-run in 4 attempts: the job is too short for this test"
    # Progress across restarts: every restart resumed from a later checkpoint.
    steps = resumed_steps
    assert all(b > a for a, b in zip(steps[:-1], steps[1:], strict=True)), steps
    from fleos.sampling.io import read_samples

    read_samples(out)  # complete and well-formed

    got, ref = _h5_datasets(out), _h5_datasets(ref_out)
    assert sorted(got) == sorted(ref)
    for key in ref:
        assert np.array_equal(got[key], ref[key], equal_nan=True), f"{key} differs after kills"


# --------------------------------------------------------------------------------------------
# invalid configuration: refused before any job runs, naming the key and the allowed values
# --------------------------------------------------------------------------------------------

def _set(*path_value):
    *path, value = path_value

    def mutate(cfg: dict) -> None:
        node = cfg
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return mutate


def _rename_experiment(cfg: dict) -> None:
    cfg["experiments"]["cnn9"] = cfg["experiments"].pop("cnn3")


BAD_CONFIGS = {
    # case: (mutation of config/smoke.yaml, regexes that the error must match: key, allowed)
    "negative sigma2": (_set("experiments", "cnn2", "sigma2", -0.1),
                        [r"experiments\.cnn2\.sigma2|\['experiments'\]\['cnn2'\]\['sigma2'\]",
                         r"minimum of 0|> ?0"]),
    "C = 0": (_set("experiments", "cnn2", "widths", [0, 8]),
              [r"experiments\.cnn2\.widths|\['experiments'\]\['cnn2'\]\['widths'\]",
               r"minimum of 1|>= ?1"]),
    "n larger than the data": (_set("experiments", "myrtle5", "data", "n", [100_000]),
                               [r"experiments\.myrtle5\.data\.n"]),
    "unknown experiment name": (_rename_experiment,
                                [r"cnn9", r"(?s)fcn3.*cnn2.*cnn3.*myrtle5"]),
    "missing CIFAR-10 path": (
        lambda c: c["experiments"]["myrtle5"]["model"].update(
            dataset="cifar10", cifar_path="/nonexistent/cifar-10-batches-py"),
        [r"experiments\.myrtle5\.model\.cifar_path", r"/nonexistent/cifar-10-batches-py",
         r"digits"]),
    "theory method typo": (_set("experiments", "cnn2", "theory", "method", "andersen"),
                           [r"experiments.*cnn2.*theory.*method|andersen",
                            r"anderson.*newton_krylov"]),
    "unknown theory key": (_set("experiments", "fcn3", "theory", "max_iters", 10),
                           [r"max_iters", r"experiments.*fcn3.*theory"]),
}


# Known gaps, owned by the workflow's config validation (workflow/scripts/wfconfig.py); listed
# in docs/reliability.md "Open items". strict: once fixed, the XPASS fails and this must go.
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_invalid_config_refused_before_any_job(case: str, workflow_copy: Path) -> None:
    """A bad value stops Snakemake before any job, naming the key and the allowed values.

    Run with `--touch`: a real (not dry) run, so checks made while the DAG is built count
    (a dry run only warns about a missing CIFAR-10 folder, so that the paper config can be
    planned on a laptop), but one that would only touch outputs instead of computing them:
    if the config were wrongly accepted, the results folder appears at once."""
    mutate, patterns = BAD_CONFIGS[case]
    cfg = yaml.safe_load((workflow_copy / "config" / "smoke.yaml").read_text())
    mutate(cfg)
    cfg["results"] = "results-bad"
    (workflow_copy / "config" / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([SNAKEMAKE, "all", "--touch", "--cores", "1",
                           "--configfile", "config/bad.yaml"],
                          cwd=workflow_copy, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{case}: snakemake accepted the config:\n{text[-3000:]}"
    for pat in patterns:
        assert re.search(pat, text), f"{case}: error does not match {pat!r}:\n{text[-3000:]}"
    assert not (workflow_copy / "results-bad").exists(), f"{case}: a job ran before the error"


# --------------------------------------------------------------------------------------------
# corrupt or truncated sample file: the aggregation names it and stops, writes nothing
# --------------------------------------------------------------------------------------------

def _sample_file(path: Path, seeds: tuple[int, ...]) -> None:
    """A well-formed sample file (fleos.sampling.io layout) with random contents."""
    from fleos.sampling.io import REQUIRED_DATASETS, write_samples

    rng = np.random.default_rng(seeds[0])
    tree: dict = {}
    for key in REQUIRED_DATASETS:
        *parents, leaf = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = rng.normal(size=(len(seeds), 3))
    tree["seeds"] = np.asarray(seeds)
    write_samples(path, tree, config={"name": "cnn2", "sigma2": 0.1}, seeds=seeds, n=8, width=4)


@pytest.mark.parametrize("damage", ["truncated", "not HDF5", "incomplete"])
def test_corrupt_sample_file_stops_aggregation_naming_it(damage: str, tmp_path: Path) -> None:
    """The aggregation stage (fleos job aggregate -> aggregate_experiment) refuses a
    damaged chunk file with its path and the reason, and writes no aggregate."""
    import h5py

    from fleos.analysis.aggregate import aggregate_experiment
    from fleos.sampling.io import CorruptFileError

    good, bad = tmp_path / "chunk0.h5", tmp_path / "chunk1.h5"
    _sample_file(good, (0, 1))
    _sample_file(bad, (2, 3))
    if damage == "truncated":  # e.g. a copy cut short, or a full disk
        with open(bad, "r+b") as fh:
            fh.truncate(bad.stat().st_size // 2)
        why = "unreadable"
    elif damage == "not HDF5":
        bad.write_bytes(b"\x00garbage" * 100)
        why = "unreadable"
    else:  # a writer that died before its final flag (not possible through fleos.sampling.io)
        with h5py.File(bad, "r+") as h5:
            h5.attrs["complete"] = False
        why = "incomplete"
    out = tmp_path / "aggregate.npz"
    with pytest.raises(CorruptFileError) as err:
        aggregate_experiment("cnn2", {"arch": "cnn2", "sigma2": 0.1}, [good, bad],
                             data_path=tmp_path / "unused.npz", out_path=out)
    assert str(bad) in str(err.value) and why in str(err.value), str(err.value)
    assert not out.exists(), "an aggregate was written from a corrupt chunk"


# --------------------------------------------------------------------------------------------
# two Snakemake runs on one directory: the second is refused by the lock
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_second_snakemake_run_is_refused_by_the_lock(workflow_copy: Path) -> None:
    """While a run holds the directory, the same command started again fails with Snakemake's
    lock error and touches nothing; the first run then finishes with valid results."""
    from fleos.sampling.io import read_samples

    cfg = yaml.safe_load((workflow_copy / "config" / "smoke.yaml").read_text())
    name = "cnn2"
    exp = cfg["experiments"][name]
    target = (f"{cfg['results']}/samples/{name}/n{exp['data']['n'][0]}/w{exp['widths'][0]}/"
              "chunk0.h5")
    cmd = [SNAKEMAKE, target, "--cores", "1", "--configfile", "config/smoke.yaml"]
    first = subprocess.Popen(cmd, cwd=workflow_copy, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    locks = workflow_copy / ".snakemake" / "locks"
    deadline = time.monotonic() + 300
    while not (locks.is_dir() and any(locks.iterdir())):
        assert first.poll() is None, f"first run ended before locking:\n{first.stdout.read()}"
        assert time.monotonic() < deadline, "first run never took the lock"
        time.sleep(0.05)
    second = subprocess.run(cmd, cwd=workflow_copy, capture_output=True, text=True,
                            timeout=300)
    first_still_running = first.poll() is None
    out1, _ = first.communicate(timeout=600)
    text2 = second.stdout + second.stderr
    assert first_still_running, "the first run finished before the second one was checked"
    assert second.returncode != 0, f"the second run was not refused:\n{text2[-3000:]}"
    assert re.search(r"cannot be locked|LockException", text2), text2[-3000:]
    assert first.returncode == 0, out1[-3000:]
    read_samples(workflow_copy / target)  # the first run's result is complete and valid
    # The first run released its lock (Snakemake removes the lock folder when done).
    assert not (locks.is_dir() and any(locks.iterdir())), "the first run left its lock behind"


# --------------------------------------------------------------------------------------------
# an EoS that does not converge: the figure and the table mark it
# --------------------------------------------------------------------------------------------

def test_nonconverged_eos_is_marked_in_figure_and_table(tmp_path: Path) -> None:
    """Fig. 2b from workflow-format inputs where the EoS failed at one width: that point is
    flagged in the CSV and the rst summary, drawn as a marker, and left out of the EoS curves."""
    import csv

    import matplotlib.pyplot as plt

    from fleos.core.files import write_json
    from fleos.figures import fig2b
    from fleos.figures.render import render_figure

    n, widths, bad_width = 16, [8, 16, 32], 8
    aggs = []
    for w in widths:
        p = tmp_path / f"w{w}.npz"
        np.savez(p, **{"n": n, "width": w, "mse_train_norm": 0.5, "mse_train_norm_se": 0.05,
                       "sigma_eigs": np.array([2.0, 1.0]),
                       "sigma_eigs_se": np.array([0.1, 0.1]),
                       "alpha_train": 3.0, "alpha_train_se": 0.2})
        aggs.append(str(p))
    rows = []
    for w in widths:
        ok = w != bad_width
        # A failed solve returns its last iterate: a value that must not be drawn as a result.
        rows.append({"width": w, "eos_converged": ok,
                     **{f"{q}_eos": (1.0 if ok else 50.0) for q in
                        ("mse_train_norm", "sigma_top", "alpha_train")},
                     **{f"{q}_gp": 1.0 for q in ("mse_train_norm", "sigma_top", "alpha_train")}})
    theory = tmp_path / "theory.json"
    write_json(theory, {"n": n, "teacher_seed": 0, "rows": rows})

    inputs = {"aggregate": aggs, "theory": [str(theory)]}
    fig = fig2b.draw(fig2b.table(inputs, {}), inputs, {})
    ax = fig.axes[0]
    curves = [ln for ln in ax.lines if ln.get_linestyle() == "-" and len(ln.get_xdata())]
    assert curves, "no EoS curve drawn"
    for ln in curves:
        assert bad_width not in list(ln.get_xdata()), "non-converged point joined to the curve"
    crosses = [ln for ln in ax.lines if ln.get_marker() == "x" and len(ln.get_xdata())]
    assert crosses and all(list(c.get_xdata()) == [bad_width] for c in crosses)
    assert "EoS not converged" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)

    csv_path, summary = tmp_path / "fig2b.csv", tmp_path / "fig2b.rst"
    render_figure("fig2b", inputs, {}, tmp_path / "fig2b.png", tmp_path / "fig2b.pdf", csv_path,
                  summary)
    with open(csv_path) as fh:
        written = list(csv.DictReader(fh))
    assert "eos_converged" in written[0]
    flags = {(int(r["width"]), r["eos_converged"]) for r in written}
    assert {f for f in flags if f[0] == bad_width} == {(bad_width, "False")}, flags
    assert all(f[1] == "True" for f in flags if f[0] != bad_width), flags
    assert f"NOT converged at widths [{bad_width}]" in summary.read_text()


# --------------------------------------------------------------------------------------------
# Checkpoints: identity includes the data, arrays carry a checksum, a full disk is one line
# --------------------------------------------------------------------------------------------

CKPT_MODEL = {"S": 4, "N": 3, "sigma_w2": 2.0, "sigma_a2": 2.0}


def _ckpt_experiment():
    from fleos.config import ExperimentConfig

    return ExperimentConfig.from_dict("cnn2", {
        "arch": "cnn2", "model": CKPT_MODEL, "data": {"n": [8], "n_test": 5}, "sigma2": 0.1,
        "widths": [4], "seeds": 1, "seeds_per_job": 1,
        "sampler": {"steps": 400, "schedule": {"kind": "constant", "lr": 1e-3, "burn_in": 50},
                    "record_every": 5, "snapshot_every": 100, "checkpoint_every": 100}})


def _checkpoint_after_first_save(tmp_path: Path) -> tuple[Path, Path]:
    """(data file, checkpoint) of a job stopped right after its first checkpoint."""
    from fleos.config import JobSpec
    from fleos.nets.data import make_dataset
    from fleos.nets.datasets import save_dataset
    from fleos.sampling import experiment
    from fleos.sampling.experiment import run_job

    data = tmp_path / "n8.npz"
    save_dataset(make_dataset("cnn2", CKPT_MODEL, 8, 5, 0, 1), data)
    ckpt = tmp_path / "job.ckpt"

    class Stop(Exception):
        pass

    real = experiment.save_checkpoint

    def save_then_stop(path, state):
        real(path, state)
        raise Stop

    experiment.save_checkpoint = save_then_stop
    try:
        with pytest.raises(Stop):
            run_job(_ckpt_experiment(), JobSpec("cnn2", 8, 4, (0,)), data, tmp_path / "o.h5",
                    checkpoint_path=ckpt, progress=False)
    finally:
        experiment.save_checkpoint = real
    assert ckpt.exists()
    return data, ckpt


def test_checkpoint_on_other_data_content_is_refused(tmp_path: Path) -> None:
    """Same config, same n, y negated: the checkpoint must not be resumed."""
    from fleos.config import JobSpec
    from fleos.sampling.experiment import CheckpointMismatchError, run_job

    data, ckpt = _checkpoint_after_first_save(tmp_path)
    with np.load(data) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["y"] = -arrays["y"]
    np.savez(data, **arrays)
    with pytest.raises(CheckpointMismatchError, match=r"job\.ckpt was written for a different "
                                                      r"configuration or data"):
        run_job(_ckpt_experiment(), JobSpec("cnn2", 8, 4, (0,)), data, tmp_path / "o.h5",
                checkpoint_path=ckpt, progress=False)
    assert ckpt.exists() and not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("bump", ["global", "arch"])
def test_checkpoint_of_other_numerics_is_refused(tmp_path: Path, monkeypatch, bump) -> None:
    """A numerics version bump reruns the job; its half-finished checkpoint, written by the old
    numerics, must not be resumed into the new chain (global version, or the architecture's)."""
    import fleos.sampling
    from fleos.config import JobSpec
    from fleos.sampling.experiment import CheckpointMismatchError, run_job

    data, ckpt = _checkpoint_after_first_save(tmp_path)
    if bump == "global":
        monkeypatch.setattr(fleos.sampling, "NUMERICS_VERSION",
                            fleos.sampling.NUMERICS_VERSION + 1)
    else:
        versions = dict(fleos.sampling.ARCH_NUMERICS_VERSIONS)
        versions["cnn2"] = versions.get("cnn2", 1) + 1
        monkeypatch.setattr(fleos.sampling, "ARCH_NUMERICS_VERSIONS", versions)
    with pytest.raises(CheckpointMismatchError, match=r"job\.ckpt was written for a different "):
        run_job(_ckpt_experiment(), JobSpec("cnn2", 8, 4, (0,)), data, tmp_path / "o.h5",
                checkpoint_path=ckpt, progress=False)
    assert ckpt.exists() and not (tmp_path / "o.h5").exists()


def test_hand_edited_checkpoint_is_refused_naming_it(tmp_path: Path) -> None:
    """Values changed in place (still valid HDF5): the checksum catches it; the job warns
    naming the file, moves it aside and recomputes, ending identical to a clean run."""
    import h5py

    from fleos.config import JobSpec
    from fleos.sampling.experiment import run_job
    from fleos.sampling.io import CorruptFileError, load_checkpoint

    data, ckpt = _checkpoint_after_first_save(tmp_path)
    with h5py.File(ckpt, "r+") as h5:
        name = next(k for k in _h5_datasets(ckpt) if k.startswith("arrays/params/"))
        h5[name][...] = np.asarray(h5[name]) + 1.0
    with pytest.raises(CorruptFileError, match=r"job\.ckpt: its arrays do not match their "
                                               r"stored checksum"):
        load_checkpoint(ckpt)
    job = JobSpec("cnn2", 8, 4, (0,))
    with pytest.warns(UserWarning, match=r"job\.ckpt.*checksum.*moved it to .*job\.ckpt\.corrupt"):
        run_job(_ckpt_experiment(), job, data, tmp_path / "o.h5", checkpoint_path=ckpt,
                progress=False)
    run_job(_ckpt_experiment(), job, data, tmp_path / "ref.h5", progress=False)
    got, ref = _h5_datasets(tmp_path / "o.h5"), _h5_datasets(tmp_path / "ref.h5")
    assert sorted(got) == sorted(ref)
    for k in ref:
        assert np.array_equal(got[k], ref[k], equal_nan=True), k


def test_full_checkpoint_folder_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    """ENOSPC while writing a checkpoint: `fleos sample` exits 1 with one line naming the
    checkpoint and its folder (docs/reliability.md); no temporary file is left behind."""
    import errno

    from fleos.cli import main
    from fleos.nets.data import make_dataset
    from fleos.nets.datasets import save_dataset

    data = tmp_path / "n8.npz"
    save_dataset(make_dataset("cnn2", CKPT_MODEL, 8, 5, 0, 1), data)
    exp = _ckpt_experiment().to_dict()
    del exp["name"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"experiments": {"cnn2": exp}}))
    ckdir = tmp_path / "ckpts"

    def full(fd):  # the disk fills while the checkpoint is flushed
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    rc = main(["sample", "--config", str(cfg), "--experiment", "cnn2", "--n", "8", "--width",
               "4", "--seeds", "0", "--data", str(data), "--out", str(tmp_path / "o.h5"),
               "--checkpoint", str(ckdir / "job.ckpt"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    # the job's first lines say which backend and chain layout it runs on, and the stability
    # re-check's verdict (due at the first checkpoint here); then the reason, on one line
    assert len(err) == 4 and "backend" in err[0] and "layout:" in err[1], err
    assert "stability:" in err[2], err
    assert "Traceback" not in "".join(err), err
    assert re.match(rf"fleos sample: error: cannot write checkpoint {re.escape(str(ckdir))}"
                    r"/job\.ckpt: no space left on device", err[3]), err
    assert list(ckdir.iterdir()) == []
