"""fleos.sampling.experiment.run_job: resume bit-identity, NaN back-off, checkpoints, CLI.

Tiny sizes (2-layer CNN, S=4, N=3, n=8, C=4, two chains) so each job compiles and runs in a
few seconds on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import fleos  # noqa: F401
from fleos.config import ExperimentConfig, JobSpec
from fleos.nets.data import make_dataset
from fleos.nets.datasets import save_dataset
from fleos.sampling.experiment import ChainDivergedError, CheckpointMismatchError, run_job
from fleos.sampling.io import read_samples

MODEL = {"S": 4, "N": 3, "sigma_w2": 2.0, "sigma_a2": 2.0}


def _exp(steps: int = 600, lr: float = 1e-3, **sampler) -> ExperimentConfig:
    d = {"arch": "cnn2", "model": MODEL, "data": {"n": [8], "n_test": 5}, "sigma2": 0.1,
         "widths": [4], "seeds": 2, "seeds_per_job": 2,
         "sampler": {"steps": steps, "schedule": {"kind": "constant", "lr": lr, "burn_in": 100},
                     "record_every": 5, "snapshot_every": 50, "checkpoint_every": 200,
                     **sampler}}
    return ExperimentConfig.from_dict("cnn2", d)


JOB = JobSpec("cnn2", 8, 4, (0, 1))


@pytest.fixture(scope="module")
def data_path(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "n8.npz"
    save_dataset(make_dataset("cnn2", MODEL, 8, 5, 0, 1), p)
    return p


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_path) -> Path:
    """An uninterrupted run of the job used by the resume tests."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    run_job(_exp(), JOB, data_path, out, progress=False)
    return out


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset)
                      else None)
        attrs = {k: h5.attrs[k] for k in ("config", "config_hash", "schedule_states",
                                          "steps_done")}
    out["_attrs"] = np.asarray(json.dumps({k: str(v) for k, v in attrs.items()}))
    return out


def _assert_identical(a: Path, b: Path) -> None:
    da, db = _datasets(a), _datasets(b)
    assert sorted(da) == sorted(db)
    for k in da:
        # bitwise: same dtype, shape and bytes (NaN patterns included)
        assert da[k].dtype == db[k].dtype and da[k].shape == db[k].shape, k
        assert da[k].tobytes() == db[k].tobytes(), f"dataset {k} differs"


def test_output_contents(reference) -> None:
    r = read_samples(reference)
    assert list(r["seeds"]) == [0, 1]
    # burn-in 100, record every 5 up to 600: samples at 105, ..., 600 -> 100 per chain
    assert list(r["count"]) == [100, 100]
    assert r["f_train"]["mean"].shape == (2, 8) and r["sigma"]["mean"].shape == (2, 4, 4)
    assert r["loss"]["sse"].shape == (2, 600)
    np.testing.assert_array_equal(r["snapshots"]["epoch"], np.arange(0, 601, 50))
    assert r["snapshots"]["w_teacher"].shape == (2, 13, 4)
    assert not r["snapshots"]["sampling"][:, :3].any() and r["snapshots"]["sampling"][:, 3:].all()
    assert r["backoffs"]["epoch"].shape == (0,)
    assert np.all(np.isfinite(r["diagnostics"]["w_teacher"]["iat"]))
    assert r["diagnostics"]["w_teacher"]["rhat"].shape == (4,)
    # Sigma means are covariance matrices: symmetric positive semi-definite
    S = r["sigma"]["mean"]
    np.testing.assert_allclose(S, np.swapaxes(S, 1, 2), rtol=1e-12)
    assert np.linalg.eigvalsh(S).min() > 0
    assert r["top_modes"]["proj"].shape == (2, 16, 4, 4)
    assert r["attrs"]["steps_done"] == 600


def test_chains_independent_of_chunk_companions(data_path, reference, tmp_path) -> None:
    """Seed 1 alone gives the same chain as seed 1 in the (0, 1) chunk (keys per seed)."""
    out = tmp_path / "one.h5"
    run_job(_exp(), JobSpec("cnn2", 8, 4, (1,)), data_path, out, progress=False)
    a, b = read_samples(reference), read_samples(out)
    np.testing.assert_array_equal(a["loss"]["sse"][1], b["loss"]["sse"][0])
    np.testing.assert_array_equal(a["sigma"]["mean"][1], b["sigma"]["mean"][0])


_CHILD = r"""
import sys, time
sys.path.insert(0, {tests!r})
from test_experiment import _exp, JOB
from fleos.sampling.experiment import run_job
# Slow the job down between chunks (progress callback) so the parent can kill it mid-run;
# sleeping does not change any number.
run_job(_exp(), JOB, {data!r}, {out!r}, checkpoint_path={ckpt!r}, progress_every=0,
        log=lambda s: (print(s, flush=True), time.sleep(0.3)))
"""


def test_kill_and_resume_is_bit_identical(data_path, reference, tmp_path) -> None:
    out, ckpt = tmp_path / "out.h5", tmp_path / "job.ckpt"
    code = _CHILD.format(tests=str(Path(__file__).parent), data=str(data_path), out=str(out),
                         ckpt=str(ckpt))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not ckpt.exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # killed before the end: no output file
    # only a checkpoint (and at most a half-written next checkpoint, if the kill landed
    # during its write) are left
    leftovers = {p.name for p in tmp_path.iterdir()} - {"job.ckpt"}
    assert all(n.startswith(".job.ckpt.") and n.endswith(".tmp") for n in leftovers)

    lines: list[str] = []
    run_job(_exp(), JOB, data_path, out, checkpoint_path=ckpt, log=lines.append)
    assert any("resumed from checkpoint" in line for line in lines)
    assert not ckpt.exists()  # deleted after the output was written
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]  # stale temporaries removed
    _assert_identical(reference, out)


def test_corrupt_checkpoint_is_discarded_with_warning(data_path, reference, tmp_path) -> None:
    out, ckpt = tmp_path / "out.h5", tmp_path / "job.ckpt"
    ckpt.write_bytes(b"garbage, e.g. a disk that filled up")
    with pytest.warns(UserWarning, match=r"job\.ckpt is unreadable.*restarting from scratch"):
        run_job(_exp(), JOB, data_path, out, checkpoint_path=ckpt, progress=False)
    assert (tmp_path / "job.ckpt.corrupt").exists()
    _assert_identical(reference, out)


def test_checkpoint_of_other_config_is_refused(data_path, tmp_path) -> None:
    from fleos.sampling.experiment import _checkpoint_doc, _State  # build a checkpoint cheaply
    from fleos.sampling.io import save_checkpoint

    ckpt = tmp_path / "job.ckpt"
    st = _State(step=200, params={}, extra=None, acc={}, sched=[], losses=[],
                snap_epochs=[],
                snap_sampling=[], snaps=[], full=[], lr_scale=np.ones(2),
                n_backoffs=np.zeros(2, np.int64))
    save_checkpoint(ckpt, _checkpoint_doc(st, np.zeros((2, 2), np.uint32), "f" * 64))
    with pytest.raises(CheckpointMismatchError, match=r"job\.ckpt was written for a different "
                                                      r"configuration"):
        run_job(_exp(), JOB, data_path, tmp_path / "o.h5", checkpoint_path=ckpt,
                progress=False)
    assert not (tmp_path / "o.h5").exists() and ckpt.exists()


def test_divergence_backs_off_and_is_recorded(data_path, tmp_path) -> None:
    # lr = 3 is far beyond the stiffest-direction limit (2/lambda_max; the prior term alone
    # has curvature 1/v = S/sigma_w2 = 2): the chains blow up in the first chunk. One back-off
    # by 1e-3 gives lr = 3e-3, stable (1e-3 runs fine above).
    out = tmp_path / "o.h5"
    lines: list[str] = []
    run_job(_exp(steps=300, lr=3.0, backoff_factor=1e-3, max_backoffs=2), JOB, data_path, out,
            log=lines.append)
    r = read_samples(out)
    b = r["backoffs"]
    assert sorted(b["seed"]) == [0, 1] and list(b["rollback_to"]) == [0, 0]
    np.testing.assert_allclose(b["old_lr"], 3.0)
    np.testing.assert_allclose(b["new_lr"], 3e-3)
    assert np.all(b["epoch"] < 50)  # detected in the first chunk
    np.testing.assert_allclose(r["lr"]["final"], 3e-3)
    assert np.all(np.isfinite(r["loss"]["sse"])) and np.all(np.isfinite(r["sigma"]["mean"]))
    assert any("diverged" in line for line in lines)


def test_exhausted_backoffs_raise_naming_seed_and_step(data_path, tmp_path) -> None:
    out, ckpt = tmp_path / "o.h5", tmp_path / "c.ckpt"
    with pytest.raises(ChainDivergedError) as e:
        run_job(_exp(steps=300, lr=3.0, backoff_factor=0.9, max_backoffs=1), JOB, data_path,
                out, checkpoint_path=ckpt, progress=False)
    msg = str(e.value)
    assert "experiment 'cnn2'" in msg and "seed 0" in msg and "at step" in msg
    assert not out.exists()
    assert not any(p.suffix in (".h5", ".tmp") for p in tmp_path.iterdir())


def test_cli_sample(data_path, tmp_path) -> None:
    import yaml

    from fleos.cli import sample

    cfg = {"experiments": {"cnn2": {
        "arch": "cnn2", "model": MODEL, "data": {"n": [8], "n_test": 5}, "sigma2": 0.1,
        "widths": [4], "seeds": 2, "seeds_per_job": 2,
        "sampler": {"steps": 100000, "schedule": {"kind": "constant", "lr": 1e-3,
                                                  "burn_in": 50},
                    "record_every": 5, "snapshot_every": 50, "checkpoint_every": 100}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    parser = argparse.ArgumentParser(prog="fleos")
    sample.register(parser.add_subparsers(dest="command"))
    help_text = parser._subparsers._group_actions[0].choices["sample"].format_help()
    for opt in ("--config", "--experiment", "--n", "--width", "--seeds", "--data", "--out",
                "--checkpoint", "--set"):
        assert opt in help_text
    base = ["sample", "--config", str(tmp_path / "c.yaml"), "--experiment", "cnn2", "--n", "8",
            "--width", "4", "--seeds", "0", "--data", str(data_path), "--quiet"]
    args = parser.parse_args(base + ["--out", str(tmp_path / "o.h5"),
                                     "--set", "experiments.cnn2.sampler.steps=100"])
    assert args.func(args) == 0
    r = read_samples(tmp_path / "o.h5")
    assert r["attrs"]["steps_done"] == 100 and r["config"]["sampler"]["steps"] == 100
    # a bad override: exit status 2 (bad input, fleos.cli.EXIT_STATUS), message names the
    # key, no output
    args = parser.parse_args(base + ["--out", str(tmp_path / "bad.h5"),
                                     "--set", "experiments.cnn2.sigma2=-1"])
    assert args.func(args) == 2
    assert not (tmp_path / "bad.h5").exists()
    # n mismatch with the data file is named
    assert base[6] == "8"
    args = parser.parse_args([*base[:6], "9", *base[7:], "--out", str(tmp_path / "b.h5"),
                              "--set", "experiments.cnn2.sampler.steps=100"])
    assert args.func(args) == 2


def test_kernels_recorded_for_cnn3(tmp_path) -> None:
    model = {"N": 2, "S0": 3, "S1": 2, "sigma_w2": 2.0, "sigma_v2": 2.0, "sigma_a2": 2.0}
    data = tmp_path / "d.npz"
    save_dataset(make_dataset("cnn3", model, 5, 3, 0, 1), data)
    exp = ExperimentConfig.from_dict("cnn3", {
        "arch": "cnn3", "model": model, "data": {"n": 5, "n_test": 3}, "sigma2": 0.1,
        "widths": [3], "seeds": 1, "seeds_per_job": 1,
        "sampler": {"steps": 60, "schedule": {"kind": "constant", "lr": 1e-3, "burn_in": 0},
                    "record_every": 3, "snapshot_every": 20, "checkpoint_every": 1000}})
    out = run_job(exp, JobSpec("cnn3", 5, 3, (4,)), data, tmp_path / "o.h5", progress=False)
    r = read_samples(out)
    assert r["K2"]["mean"].shape == (1, 10, 10) and r["Q2"]["mean"].shape == (1, 10, 10)
    assert r["snapshots"]["h2_teacher"].shape == (1, 4, 3)
    assert r["snapshots"]["h2_random"].shape == (1, 4, 3)
    assert list(r["count"]) == [20]
    os.remove(out)


class _Stop(Exception):
    pass


def _interrupted(exp, data_path, tmp_path):
    """Run `exp` until its first checkpoint is on disk, then stop it (as a kill would).
    Returns the (unwritten) output path and the checkpoint."""
    out, ckpt = tmp_path / "out.h5", tmp_path / "job.ckpt"

    def stop_after_checkpoint(_line: str) -> None:
        if ckpt.exists():
            raise _Stop

    with pytest.raises(_Stop):
        run_job(exp, JOB, data_path, out, checkpoint_path=ckpt, progress_every=0,
                log=stop_after_checkpoint)
    assert ckpt.exists() and not out.exists()
    return out, ckpt


@pytest.mark.parametrize("integrator,layout", [
    ("lm", {}), ("baoab", {}), ("mala", {}),
    ("baoab", {"chain_batch": 1, "data_blocks": 4}),
    ("baoab", {"rao_blackwell_every": 10, "kernels": ["sigma", "Qf"]}),
])
def test_integrators_resume_bit_identically(data_path, tmp_path, integrator, layout) -> None:
    """Every integrator's state (BAOAB's velocity and cached gradient, MALA's cached U and
    gradient) goes into the checkpoint: an interrupted run resumes to the same bytes, also
    with chains run one at a time, the gradient accumulated over data blocks, and the
    Rao-Blackwellized sums."""
    exp = _exp(integrator=integrator, friction=2.0, **layout)
    ref = tmp_path / "ref.h5"
    run_job(exp, JOB, data_path, ref, progress=False)
    out, ckpt = _interrupted(exp, data_path, tmp_path)
    lines: list[str] = []
    run_job(exp, JOB, data_path, out, checkpoint_path=ckpt, log=lines.append)
    assert any("resumed from checkpoint" in line for line in lines)
    _assert_identical(ref, out)
    assert read_samples(out)["attrs"]["config"]  # the integrator is part of the stored config
    assert f'"integrator": "{integrator}"' in str(read_samples(out)["attrs"]["config"])


def test_layout_changes_rounding_only(data_path, reference, tmp_path) -> None:
    """One chain at a time and 4 data blocks give the default layout's chains up to float32
    round-off: compared over the first 100 epochs, before rounding differences can grow."""
    out = tmp_path / "layout.h5"
    lines: list[str] = []
    run_job(_exp(chain_batch=1, data_blocks=4), JOB, data_path, out, log=lines.append)
    assert any("1 chain(s) vmapped at a time, gradient over 4 data block(s) of 2 rows" in line
               for line in lines)
    a, b = read_samples(reference), read_samples(out)
    np.testing.assert_allclose(b["loss"]["sse"][:, :100], a["loss"]["sse"][:, :100], rtol=1e-4)


def test_unstable_lr_warns_naming_both_numbers(data_path, tmp_path) -> None:
    with pytest.warns(UserWarning, match=r"lr 5 is beyond the stability bound 2/λ_max = "):
        with pytest.raises(ChainDivergedError):
            run_job(_exp(steps=200, lr=5.0, max_backoffs=0), JOB, data_path,
                    tmp_path / "x.h5", progress=False)


def test_stability_is_rechecked_after_the_start(data_path, reference, tmp_path,
                                                monkeypatch) -> None:
    """λ_max is estimated again at the first checkpoint (step 200 here, = the fixed 200 steps):
    a curvature that grows along the run (a stand-in for `stiffest_curvature` returning 100,
    then 4000) makes the warning name the step and both numbers, the second estimate is made
    at the chains' parameters of that step, and the check changes no sampled number (the
    output is bit-identical to the reference run, which made the real estimates)."""
    import jax

    import fleos.sampling.experiment as ex

    calls: list[np.ndarray] = []

    def growing(potential, params, n_iter=50, key=None, precond=None) -> float:
        calls.append(np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)]))
        return (100.0, 4000.0)[len(calls) - 1]

    monkeypatch.setattr(ex, "stiffest_curvature", growing)
    out = tmp_path / "x.h5"
    with pytest.warns(UserWarning, match=r"lr 0\.001 is beyond the stability bound 2/λ_max = "
                      r"0\.0005 \(λ_max = 4000 of the preconditioned Hessian at step 200; 100 "
                      r"at the initial parameters\)"):
        run_job(_exp(), JOB, data_path, out, progress=False)
    assert len(calls) == 2
    assert not np.array_equal(calls[0], calls[1])  # the chain moved between the estimates
    _assert_identical(reference, out)


def test_stability_recheck_within_bound_logs_one_line(data_path, tmp_path,
                                                      monkeypatch) -> None:
    """Within the bound the re-check logs one line, at the first checkpoint when it comes
    before 200 steps (100 here); with check_stability off no estimate is made."""
    import fleos.sampling.experiment as ex

    monkeypatch.setattr(ex, "stiffest_curvature", lambda *a, **k: 100.0)
    lines: list[str] = []
    run_job(_exp(steps=300, checkpoint_every=100), JOB, data_path, tmp_path / "x.h5",
            log=lines.append, progress=False)
    hits = [line for line in lines if "stability: lr·λ_max" in line]
    assert hits == ["[cnn2 n=8 width=4 seeds=[0, 1]] stability: lr·λ_max = 0.1 (λ_max = 100 "
                    "of the preconditioned Hessian at step 100; 100 at the initial parameters)"]
    monkeypatch.setattr(ex, "stiffest_curvature", lambda *a, **k: pytest.fail("called"))
    run_job(_exp(steps=300, check_stability=False), JOB, data_path, tmp_path / "y.h5",
            progress=False)


def test_rao_blackwellized_outputs(data_path, tmp_path) -> None:
    """The job stores the readout-integrated means beside the sampled ones: counts follow
    rao_blackwell_every over the sampling stage, Qf is a PSD kernel, the two estimators of
    train α agree, and Jensen's inequality holds exactly: the Rao-Blackwellized train α, the
    average of the convex α(Q) = yᵀ(Q + σ²I)⁻¹y / y·y over the samples, is at least α(⟨Q⟩)."""
    from fleos.analysis.aggregate import aggregate_job, load_chunks
    from fleos.nets.datasets import load_dataset

    exp = _exp(steps=2000, rao_blackwell_every=10, kernels=["sigma", "Qf"])
    out = tmp_path / "rb.h5"
    run_job(exp, JOB, data_path, out, progress=False)
    r = read_samples(out)
    assert list(r["rb_count"]) == [190, 190]  # steps 110, 120, ..., 2000
    assert r["f_train_rb"]["mean"].shape == (2, 8) and r["f_test_rb"]["mean"].shape == (2, 5)
    Q = r["Qf"]["mean"]
    assert Q.shape == (2, 8, 8) and np.linalg.eigvalsh(Q).min() > -1e-12
    agg = aggregate_job("cnn2", {"sigma2": exp.sigma2}, load_chunks([out]),
                        load_dataset(data_path))
    # Same chains, so the seed-to-seed spread cancels in the per-seed difference; its scale
    # is the readout noise of the sampled α, ~ the SE of one seed's time average. Bound: 5×
    # the larger of the paired SE across the 2 seeds and the sampled α's own SE (with two
    # seeds a paired SE alone has one degree of freedom and can come out tiny by chance).
    diff = agg["alpha_train_seeds"] - agg["alpha_train_rb_seeds"]
    bound = 5 * max(diff.std(ddof=1) / np.sqrt(diff.size), float(agg["alpha_train_se"]))
    assert abs(diff.mean()) < bound, (diff, bound)
    assert agg["alpha_train_rb"] >= agg["alpha_train_meankernel"] - 1e-12
    # A test-set α of the RB means far from the sampled one: |Δ| ≪ the 1/σ² = 10 that a
    # zero f_test_rb would give.
    dt = agg["alpha_test_seeds"] - agg["alpha_test_rb_seeds"]
    assert abs(dt.mean()) < 0.25 / exp.sigma2, dt
