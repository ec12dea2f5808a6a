"""The cluster path on a real (one-node) SLURM cluster, through the shipped profile.

Needs the cluster of tests/slurm/start_cluster.sh (see docs/cluster.md); skipped without one
unless FLEOS_REQUIRE_SLURM=1 (then it fails). Both tests run a temporary copy of the workflow
with `--profile slurm`, exactly as a user would, plus the options a cluster without an
accounting daemon needs (`--slurm-status-command squeue`, docs/cluster.md).

1. The smoke config runs to its figures, and every job really went through sbatch: each SLURM
   job id that Snakemake reports is in slurmctld's job completion record (jobcomp/filetxt) as
   COMPLETED, with the temporary workflow copy as its working directory.
2. One sampling job is cancelled (`scancel`) after it has written a checkpoint; Snakemake's
   retry (profile: `retries`) resumes it from that checkpoint, and the sample file it finally
   writes is bit-identical to the one of an uninterrupted run.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# A cluster without slurmdbd: poll with squeue (the plugin would pick sacct, which cannot
# answer there, and then wait forever); short first wait so that small jobs finish quickly.
SLURM_ARGS = [
    "--profile", "slurm",
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "2",
    "--slurm-keep-successful-logs",
    # No accounts without an accounting daemon (the plugin would try to guess one via sacct).
    "--slurm-no-account",
    "--jobs", "4",
]
# Status problems show up as hangs, never as failures: every run has a hard limit.
RUN_TIMEOUT_S = 1200
SUBMIT_RE = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)")


def _stop(proc: subprocess.Popen, log: str) -> None:
    """Interrupt a Snakemake run, then cancel whatever SLURM jobs it left running.

    SIGINT, not SIGTERM: with the SLURM executor Snakemake keeps scheduling after a SIGTERM."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    ids = [m.group(2) for m in SUBMIT_RE.finditer(log)]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def run_snakemake(workdir: Path, args: list[str], *, timeout: float = RUN_TIMEOUT_S,
                  on_line=None) -> tuple[int, str]:
    """Run snakemake in ``workdir``; return (exit code, combined output).

    ``on_line(line)`` is called for every output line as it comes (used to act mid-run).
    """
    proc = subprocess.Popen([SNAKEMAKE, *args], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # a thread, so that the deadline holds even when output stalls
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line:
            seen.append(line)
            if on_line is not None:
                on_line(line)
        if time.monotonic() > deadline:
            _stop(proc, "\n".join(seen))
            pytest.fail(f"snakemake {' '.join(args)} still running after {timeout} s "
                        "(a hang: SLURM status polling?). Output tail:\n"
                        + "\n".join(seen[-60:]))
    proc.wait()
    return proc.returncode, "\n".join(seen)


def jobcomp_records(path: Path | None) -> dict[str, dict[str, str]]:
    """slurmctld's job completion log (JobCompType=jobcomp/filetxt), keyed by JobId."""
    if path is None or not path.exists():
        return {}
    records = {}
    for line in path.read_text().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "JobId" in fields:
            records[fields["JobId"]] = fields
    return records


def wait_for_records(cluster, ids: list[str], timeout: float = 30) -> dict[str, dict]:
    """Completion records are written when slurmctld has cleaned the job up: wait for them."""
    deadline = time.monotonic() + timeout
    while True:
        recs = jobcomp_records(cluster.jobcomp_log)
        if all(i in recs for i in ids) or time.monotonic() > deadline:
            return recs
        time.sleep(0.5)


@pytest.fixture
def workflow_copy(workflow_copy: Path) -> Path:
    """conftest's copy of the workflow plus the repository root's `slurm` profile link, so
    that `--profile slurm` resolves there as in a clone."""
    link = workflow_copy / "slurm"
    if not link.exists():
        link.symlink_to(os.readlink(Path(__file__).resolve().parents[1] / "slurm"))
    return workflow_copy


def smoke_config(workdir: Path) -> dict:
    path = workdir / "config" / "smoke.yaml"
    if not path.exists():
        pytest.fail(f"{path.relative_to(workdir)} is missing: the SLURM tests run the smoke config")
    return yaml.safe_load(path.read_text())


def test_smoke_config_through_slurm_profile(slurm_cluster, workflow_copy: Path) -> None:
    """The smoke config, via `--profile slurm`, to all its figures, every job in sbatch."""
    smoke_config(workflow_copy)
    rc, out = run_snakemake(workflow_copy,
                            ["all", *SLURM_ARGS, "--configfile", "config/smoke.yaml"])
    assert rc == 0, f"snakemake through SLURM failed (exit {rc}):\n{out[-6000:]}"

    # Every job Snakemake ran remotely went through sbatch and completed in SLURM.
    submitted = {m.group(2): m.group(3) for m in SUBMIT_RE.finditer(out)}
    assert submitted, f"no job was submitted to SLURM:\n{out[-4000:]}"
    rules = {m.group(1) for log in submitted.values() if (m := re.search(r"/rule_([^/]+)/", log))}
    assert "sample" in rules, f"no sampling job went through SLURM (rules: {rules})"
    recs = wait_for_records(slurm_cluster, list(submitted))
    for jid, log in submitted.items():
        assert jid in recs, f"SLURM job {jid} is not in the job completion log " \
                            f"{slurm_cluster.jobcomp_log}"
        assert recs[jid]["JobState"] == "COMPLETED", recs[jid]
        assert Path(recs[jid]["WorkDir"]).resolve() == workflow_copy.resolve(), recs[jid]
        assert Path(log).exists(), f"SLURM log {log} of job {jid} is missing"

    # Nothing is left to do: every figure and table of the smoke config exists and is newer
    # than its inputs (a dry run over the same target plans no job).
    rc, dry = run_snakemake(workflow_copy, ["all", "-n", "--cores", "1",
                                            "--configfile", "config/smoke.yaml"], timeout=300)
    assert rc == 0 and "Nothing to be done" in dry, dry[-3000:]
    results = workflow_copy / smoke_config(workflow_copy)["results"]
    pngs = sorted((results / "figures").glob("*.png"))
    csvs = sorted((results / "tables").glob("*.csv"))
    assert pngs and csvs, "no figure or table was written"
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    for csv in csvs:
        assert len(csv.read_text().strip().splitlines()) >= 2, f"{csv} has no data row"


def _long_sampling_config(workdir: Path) -> tuple[Path, str, Path]:
    """A one-job variant of the smoke config whose sampling job runs long enough to be killed.

    Returns (config file, the sample file target, the checkpoint path). Steps and checkpoint
    interval are raised so that the job writes many checkpoints over a few tens of seconds.
    """
    cfg = smoke_config(workdir)
    name = next(iter(cfg["experiments"]))
    exp = cfg["experiments"][name]
    cfg["experiments"] = {name: exp}
    exp["widths"] = exp["widths"][:1]
    exp["data"]["n"] = exp["data"]["n"][:1]
    exp["seeds"] = exp["seeds_per_job"]
    s = exp["sampler"]
    s["steps"] = KILL_TEST_STEPS
    s["checkpoint_every"] = KILL_TEST_STEPS // 50
    s["snapshot_every"] = KILL_TEST_STEPS // 50
    s["record_every"] = 10
    sched = s["schedule"]
    if "burn_in" in sched:
        sched["burn_in"] = KILL_TEST_STEPS // 2
    path = workdir / "config" / "kill_test.yaml"
    path.write_text(yaml.safe_dump(cfg))
    n, w = exp["data"]["n"][0], exp["widths"][0]
    res = cfg["results"]
    target = f"{res}/samples/{name}/n{n}/w{w}/chunk0.h5"
    ckpt = workdir / f"{res}/checkpoints/{name}/n{n}/w{w}/chunk0.ckpt"
    return path, target, ckpt


# Enough steps that the sampling job runs for tens of seconds after its first checkpoint.
KILL_TEST_STEPS = 40_000


def _h5_arrays(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda k, v: out.__setitem__(k, v[()])
                      if isinstance(v, h5py.Dataset) else None)
    return out


def test_cancelled_sampling_job_resumes_identically(slurm_cluster, workflow_copy: Path,
                                                    tmp_path: Path) -> None:
    """scancel a sampling job after a checkpoint; the retry resumes and matches a clean run."""
    from fleos.sampling.io import load_checkpoint, read_samples

    cfg_path, target, ckpt = _long_sampling_config(workflow_copy)
    cancelled: dict[str, object] = {}

    def cancel_after_checkpoint(line: str) -> None:
        m = SUBMIT_RE.search(line)
        if m and "/rule_sample/" in m.group(3) and "jid" not in cancelled:
            cancelled["jid"] = m.group(2)
            # Wait (in this callback: the run keeps going in SLURM) for a checkpoint.
            deadline = time.monotonic() + 300
            while not ckpt.exists() and time.monotonic() < deadline:
                if (workflow_copy / target).exists():
                    break
                time.sleep(0.2)
            if not ckpt.exists():
                return
            cancelled["step"] = int(load_checkpoint(ckpt)["meta"].get("step", -1))
            subprocess.run(["scancel", m.group(2)], check=True)

    rc, out = run_snakemake(
        workflow_copy,
        [target, *SLURM_ARGS, "--configfile", str(cfg_path.relative_to(workflow_copy))],
        on_line=cancel_after_checkpoint,
    )
    assert "step" in cancelled, (
        f"the sampling job finished or failed before writing a checkpoint; raise "
        f"KILL_TEST_STEPS. Output:\n{out[-4000:]}")
    assert rc == 0, f"the retried run failed (exit {rc}):\n{out[-6000:]}"
    submissions = [m for m in SUBMIT_RE.finditer(out) if "/rule_sample/" in m.group(3)]
    assert len(submissions) == 2, f"expected one cancelled and one retried job:\n{out[-4000:]}"
    first, second = (m.group(2) for m in submissions)
    recs = wait_for_records(slurm_cluster, [first, second])
    assert recs[first]["JobState"] == "CANCELLED", recs.get(first)
    assert recs[second]["JobState"] == "COMPLETED", recs.get(second)
    assert cancelled["step"] > 0

    # The retry resumed from the checkpoint rather than starting again.
    res = smoke_config(workflow_copy)["results"]
    job_log = (workflow_copy / target.replace(f"{res}/samples", f"{res}/logs/sample")
               ).with_suffix(".log")
    log_text = job_log.read_text()
    assert re.search(r"resum", log_text, re.IGNORECASE), \
        f"the retried job's log {job_log} does not report a resume:\n{log_text[-3000:]}"

    # Reference: the same job, never interrupted, run locally in a second copy.
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    for part in ("Snakefile", "workflow", "config", "profiles", "envs"):
        if (workflow_copy / part).exists():
            subprocess.run(["cp", "-r", str(workflow_copy / part), str(ref_dir / part)],
                           check=True)
    rc, ref_out = run_snakemake(ref_dir, [target, "--cores", "2", "--configfile",
                                          str(cfg_path.relative_to(workflow_copy))])
    assert rc == 0, ref_out[-4000:]

    read_samples(workflow_copy / target)  # complete and well-formed
    got, ref = _h5_arrays(workflow_copy / target), _h5_arrays(ref_dir / target)
    assert sorted(got) == sorted(ref)
    for key in ref:
        # Bit-identical: the chain noise at step t depends only on (chain key, t).
        assert np.array_equal(got[key], ref[key]), f"dataset {key} differs after the resume"
