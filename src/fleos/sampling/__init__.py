"""Langevin sampling of the posterior (Eq. 15, Methods): integrators, learning-rate schedules,
recording, the job driver and its HDF5 / checkpoint files."""

# The version of the numbers a sampling job writes (a param of the workflow's `sample` rule,
# fleos.pipeline.numerics_version). Bump it by hand, in the same change, when a change
# anywhere (an integrator, the potential, the models' forward pass, the recorded observables,
# the random-number streams) alters what an unchanged config samples: every sampling job then
# reruns. A refactor that keeps the numbers bit-identical leaves it alone and reruns nothing.
NUMERICS_VERSION = 1

# Per architecture, for a change that alters one architecture's samples only: its sampling
# jobs hash their entry (fleos.pipeline.sampling_params) and a checkpoint written under another
# entry is not resumed (fleos.sampling.experiment), so only that architecture's jobs rerun.
# myrtle5 2: the 3×3 convolution as nine shifted GEMMs on CPU (fleos.nets.models._conv3x3).
ARCH_NUMERICS_VERSIONS: dict[str, int] = {"myrtle5": 2}
