"""Equations of state, one module per architecture: `cnn2` (Eq. 8), `cnn2_analytic` (Eq. 9),
`fcn` (Eq. 5), `cnn3` (Eq. 5 applied to the 3-layer CNN of Eq. 14)."""
