"""Shared pytest fixtures.

* ``slurm_cluster``: the one-node SLURM cluster of tests/slurm/start_cluster.sh. Tests that use
  it are skipped with the reason when no cluster answers, unless ``FLEOS_REQUIRE_SLURM=1``
  (set by .ci/run), in which case they fail: CI must never silently skip the cluster path.
* ``workflow_copy``: a fresh copy of the workflow (Snakefile, workflow/, config/, profiles/)
  in a temporary directory, so end-to-end runs never touch the repository's results/.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

import fleos

# As the CLI and the workflow do: one BLAS thread beside XLA's pool (fleos/__init__.py).
fleos.limit_blas_threads()

REPO = Path(__file__).resolve().parents[1]
# What a run of the workflow needs besides the installed fleos package.
WORKFLOW_PARTS = ("Snakefile", "workflow", "config", "profiles", "envs")


@dataclass(frozen=True)
class SlurmCluster:
    """A reachable SLURM controller with at least one usable node."""

    node: str
    state: str
    jobcomp_log: Path | None  # the job completion record (JobCompType=jobcomp/filetxt)


@functools.cache
def _slurm_status() -> tuple[SlurmCluster | None, str]:
    """Probe the cluster once per session; return (cluster, "") or (None, why not usable).

    Cached: without a controller each sinfo call waits ~10 s for its connection to fail."""
    if shutil.which("sinfo") is None:
        return None, "SLURM client tools (sinfo) are not installed"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True,
                             text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None, "sinfo did not answer within 20 s (slurmctld down?)"
    if out.returncode != 0:
        return None, f"sinfo failed: {out.stderr.strip() or out.stdout.strip()}"
    nodes = [line.split() for line in out.stdout.splitlines() if line.strip()]
    usable = [(n, s) for n, s in nodes if s.rstrip("*") in ("idle", "mixed", "allocated",
                                                             "completing")]
    if not usable:
        return None, f"no usable SLURM node (sinfo: {nodes})"
    cfg = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                         timeout=20).stdout
    jobcomp = None
    for line in cfg.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "JobCompLoc" and value.strip().startswith("/"):
            jobcomp = Path(value.strip())
    return SlurmCluster(node=usable[0][0], state=usable[0][1], jobcomp_log=jobcomp), ""


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The running test cluster; skip (or fail under FLEOS_REQUIRE_SLURM=1) without one."""
    cluster, why = _slurm_status()
    if cluster is None:
        msg = (f"no SLURM cluster: {why}. Start one with `sudo tests/slurm/start_cluster.sh` "
               "(docs/cluster.md)")
        if os.environ.get("FLEOS_REQUIRE_SLURM") == "1":
            pytest.fail(f"FLEOS_REQUIRE_SLURM=1 but {msg}", pytrace=False)
        pytest.skip(msg)
    return cluster


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    """A copy of the workflow in a temporary directory (results/ starts empty)."""
    missing = [p for p in ("Snakefile", "workflow", "config") if not (REPO / p).exists()]
    if missing:
        pytest.fail(f"workflow files missing from the repository: {missing}")
    dest = tmp_path / "wf"
    dest.mkdir()
    for part in WORKFLOW_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dest / part)
    return dest
