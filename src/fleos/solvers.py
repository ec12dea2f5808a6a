"""Root finders for the equations of state, with explicit result objects.

Every solver returns a `SolveResult` (in the spirit of scipy.optimize.OptimizeResult): the
solution, whether it converged, how many iterations, the residual norm *recomputed at the
returned point*, and the wall time. Non-convergence is reported, never returned silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SolveResult:
    """Outcome of one EoS solve.

    x: the solution (array or pytree of arrays).
    converged: True only if `residual <= tol` at the returned x.
    iterations: nonlinear iterations used.
    residual: norm of the EoS residual evaluated at the returned x (not a solver estimate).
    seconds: wall time of the solve.
    message: human-readable reason for stopping.
    history: residual norm per iteration.
    """

    x: Any
    converged: bool
    iterations: int
    residual: float
    seconds: float
    message: str = ""
    history: tuple[float, ...] = field(default_factory=tuple)
