"""fleos: feature-learning equations of state.

Langevin-sampled finite-width Bayesian networks side by side with the equations of state (EoS)
of Seroussi, Naveh & Ringel, "Separation of scales and a thermodynamic description of feature
learning in some CNNs", Nat. Commun. 14, 908 (2023). Equation numbers in docstrings refer to
that paper's main text.

Precision: importing fleos switches JAX to allow float64 (``jax_enable_x64``). The theory
(kernels, GP inference, EoS solvers) needs it: the kernels' Gram matrices are nearly singular
(σ² ≪ eigenvalues of Q_f) and their inverses, log-determinants and the Newton/Anderson steps
lose several digits in float32. The sampler keeps its own dtype (float32 by default) by
creating its parameters and data explicitly in that dtype.

BLAS threads: JAX's CPU LAPACK calls (Cholesky, triangular solves, eigh) go to scipy's
OpenBLAS, whose spinning worker threads oversubscribe the cores next to XLA's own pool. On the
2-core reference machine, with another process running, a 1024 × 1024 Cholesky took 0.5-1.3 s
with the default threads and 0.02 s with one, the FCN EoS residual 4.1 s and 0.42 s; one thread
was as fast on an idle machine too (bench/RESULTS.md, "BLAS threads"). ``limit_blas_threads``
sets the limit; the ``fleos`` CLI, the Snakemake workflow and the benchmarks call it (one
thread unless ``FLEOS_BLAS_THREADS`` says otherwise). A plain ``import fleos`` leaves your
process's BLAS threads alone unless ``FLEOS_BLAS_THREADS`` is set in the environment.
"""

import os

import jax
import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS now, so limit_blas_threads reaches it)
import threadpoolctl

jax.config.update("jax_enable_x64", True)


def limit_blas_threads(threads: int | None = None) -> None:
    """Limit every loaded BLAS/LAPACK thread pool (numpy's, scipy's) to `threads` threads.

    Default: the environment variable FLEOS_BLAS_THREADS, else 1 (see the module docstring
    for why). Process-wide and persistent, like `threadpoolctl.threadpool_limits`.
    """
    if threads is None:
        raw = os.environ.get("FLEOS_BLAS_THREADS", "1")
        try:
            threads = int(raw)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(f"FLEOS_BLAS_THREADS must be a positive integer, got {raw!r}")
    elif threads < 1:
        raise ValueError(f"limit_blas_threads: threads must be >= 1, got {threads!r}")
    threadpoolctl.threadpool_limits(limits=threads, user_api="blas")


if "FLEOS_BLAS_THREADS" in os.environ:
    limit_blas_threads()

__version__ = "0.1.0"
