"""Foundations every engine builds on: activation kernels (Eqs. 5, 8), GP inference (Eq. 5,
line 1), observables and sampling diagnostics. Imports nothing else from fleos."""
