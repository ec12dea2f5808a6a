"""Aggregation of sampled chains across seeds into observables with error bars."""

# The version of the numbers the workflow's `aggregate` rule writes (its param,
# fleos.pipeline.numerics_version). Bump it by hand when a change alters the aggregate of
# unchanged chunk files (an estimator, an error bar, a diagnostic): every aggregation, the
# cnn3 theory and the figures then rerun, no sampling. A refactor leaves it alone.
NUMERICS_VERSION = 6
