"""The equations of state (Eqs. 5, 8, 9) and their solvers, the feature-learning scale (Eq. 6),
and the per-configuration theory runs."""
