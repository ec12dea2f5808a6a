"""Package-level settings of fleos: float64 and the BLAS thread limit (fleos/__init__.py)."""

from __future__ import annotations

import subprocess
import sys

import jax
import pytest
import threadpoolctl

import fleos


def test_float64_is_enabled():
    assert jax.config.jax_enable_x64


def test_limit_blas_threads_sets_every_blas_pool():
    fleos.limit_blas_threads(1)
    pools = [d for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"]
    assert pools and all(d["num_threads"] == 1 for d in pools)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        fleos.limit_blas_threads(0)


def test_the_variable_sets_the_limit_at_import_and_a_bad_value_is_named():
    code = ("import fleos, threadpoolctl; "
            "print(max(d['num_threads'] for d in threadpoolctl.threadpool_info()))")
    env_bad = {"FLEOS_BLAS_THREADS": "two", "PATH": ""}
    bad = subprocess.run([sys.executable, "-c", code], env=env_bad, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "FLEOS_BLAS_THREADS" in bad.stderr and "'two'" in bad.stderr
    one = subprocess.run([sys.executable, "-c", code], env={"FLEOS_BLAS_THREADS": "1"},
                         capture_output=True, text=True, check=True)
    assert one.stdout.strip() == "1"
