"""Langevin sampling of the posterior (Eq. 15, Methods): integrators, learning-rate schedules,
recording, the job driver and its HDF5 / checkpoint files."""

# The version of the numbers a sampling job writes (a param of the workflow's `sample` rule,
# fleos.pipeline.numerics_version). Bump it by hand, in the same change, when a change
# anywhere (an integrator, the potential, the models' forward pass, the recorded observables,
# the random-number streams) alters what an unchanged config samples: every sampling job then
# reruns. A refactor that keeps the numbers bit-identical leaves it alone and reruns nothing.
NUMERICS_VERSION = 1
