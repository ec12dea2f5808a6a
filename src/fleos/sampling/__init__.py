"""Langevin sampling of the posterior (Eq. 15, Methods): integrators, learning-rate schedules,
recording, the job driver and its HDF5 / checkpoint files."""
