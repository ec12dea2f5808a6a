"""The equations of state (Eqs. 5, 8, 9) and their solvers, the feature-learning scale (Eq. 6),
and the per-configuration theory runs."""

# The version of the numbers a theory job writes (a param of the workflow's `theory` rule,
# fleos.pipeline.numerics_version). Bump it by hand when a change alters what an unchanged
# config's EoS, Eq. 9 or FLS results are (beyond the solver tolerance): every theory job then
# reruns (about 40 min of cnn2 sweeps at the paper's scale). A refactor leaves it alone.
NUMERICS_VERSION = 1
