"""The equations of state (Eqs. 5, 8, 9) and their solvers, the feature-learning scale (Eq. 6),
and the per-configuration theory runs."""

# The version of the numbers a theory job writes (a param of the workflow's `theory` rule,
# fleos.pipeline.numerics_version). Bump it by hand when a change alters what an unchanged
# config's EoS, Eq. 9 or FLS results are (beyond the solver tolerance): every theory job then
# reruns (about 40 min of cnn2 sweeps at the paper's scale). A refactor leaves it alone.
NUMERICS_VERSION = 1

# The version of the fluctuating-field closure's numbers (fleos.theory.eos.cnn2_fluctfield):
# a theory job hashes it only when the closure is on (theory.fluctfield_draws > 0), so a
# change of the closure reruns those jobs alone.
FLUCTFIELD_NUMERICS_VERSION = 2
