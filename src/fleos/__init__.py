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

BLAS threads: importing fleos limits OpenBLAS (numpy's and scipy's, which also serves JAX's
CPU LAPACK calls: Cholesky, triangular solves, eigh) to one thread, or to the number in the
environment variable ``FLEOS_BLAS_THREADS``. XLA runs its own thread pool beside it, and
OpenBLAS's spinning threads on top oversubscribe the cores: on the 2-core reference machine,
with another process running, a 1024 × 1024 Cholesky took 0.5-1.3 s with the default threads
and 0.02 s with one, the FCN EoS residual 4.1 s and 0.42 s; one thread is as fast on an idle
machine too (bench/RESULTS.md, "BLAS threads").
"""

import os

import jax
import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS, so that the limit below reaches it)
import threadpoolctl

jax.config.update("jax_enable_x64", True)


def _blas_threads() -> int:
    raw = os.environ.get("FLEOS_BLAS_THREADS", "1")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"FLEOS_BLAS_THREADS must be a positive integer, got {raw!r}")
    return value


threadpoolctl.threadpool_limits(limits=_blas_threads(), user_api="blas")

__version__ = "0.1.0"
