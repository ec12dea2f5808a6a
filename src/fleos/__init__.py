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
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
