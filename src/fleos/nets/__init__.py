"""The networks of Eqs. 1, 7, 14 and Myrtle-5 with their priors, and their training data
(teachers, Gaussian inputs, image subsets)."""

# The version of the data files the workflow's `make_data` rule writes (its param,
# fleos.pipeline.numerics_version). Bump it by hand when a change alters the data an unchanged
# config draws (inputs, teacher, image subset): every data file, and so everything downstream,
# is then remade. A refactor leaves it alone.
NUMERICS_VERSION = 1
