"""Root finders for the equations of state, with explicit result objects.

Every solver returns a `SolveResult` (in the spirit of scipy.optimize.OptimizeResult): the
solution, whether it converged, how many iterations, the residual norm *recomputed at the
returned point*, and the wall time. Non-convergence is reported, never returned silently.

API (all unknowns are float64 JAX arrays or pytrees of them; they are flattened internally with
`jax.flatten_util.ravel_pytree`, and `SolveResult.x` has the structure of `x0`):

* ``newton_krylov(residual, x0, *, tol, max_iter, ...)``: inexact Newton for ``residual(x) = 0``
  (output of the same size as x). Each step linearizes the residual with exact forward-mode
  derivatives (`jax.linearize`, i.e. exact Jacobian-vector products, no finite differences),
  solves J d = -F with restarted GMRES (`jax.scipy.sparse.linalg.gmres`) to a relative
  accuracy set by the Eisenstat-Walker forcing term, then backtracks on ||F|| (Armijo).
  A step to a point where the residual is not finite (e.g. outside the domain of the
  equations: a non-positive-definite covariance) is treated as a failed trial and shrunk.
  ``linear_solver`` picks the GMRES: ``"batched"`` (default; jax's GMRES, which always builds
  the full ``gmres_restart``-dimensional Krylov space per restart), ``"incremental"`` (jax's,
  with per-iteration convergence checks inside a ``while_loop``), or ``"arnoldi"`` (a host-side
  loop: one linearization per Newton step, then one jitted JVP per Krylov vector, stopping as
  soon as the relative linear residual reaches the forcing term; the number of JVPs is in
  ``SolveResult.matvecs``). ``"arnoldi"`` is the one to use when a JVP is expensive.
  Optional ``merit`` (a potential whose decrease the line search asks for, e.g. a free
  energy) and ``retract`` (the curve the step follows, e.g. one that stays positive definite).
* ``anderson(fixed_point_map, x0, *, tol, max_iter, m, damping)``: Anderson acceleration
  (type II, history ``m``) of ``x = G(x)``; the residual is ``||G(x) - x||``. A non-finite map
  value or a residual blow-up resets the history and halves the proposed step until the map
  is finite; the best iterate is returned.
* ``anneal(solve_at, widths, x0, *, start_width=inf, min_ratio)``: continuation in the width
  (C or N) from large to small, warm-started from the previous solution. When a solve fails
  it inserts the geometric midpoint between the last solved width and the target and retries,
  shrinking the step instead of failing; it gives up on a target (and the widths below it)
  only when the step ratio ``w_prev / w_target`` falls below ``min_ratio`` (or after
  ``max_inserts`` insertions). With ``extrapolate=True`` each start is the linear
  extrapolation in 1/width of the last two solutions. Results are
  returned only at the requested widths, in the requested order; intermediate widths used are
  listed in each result's ``message``.

Compilation: functions take data through ``args`` (``residual(x, *args)``) and are
compiled once per function object, so pass the same (module-level) function on every call.
Solvers are plain Python loops around jitted evaluations; they are not themselves jittable.

Norms: ``tol`` bounds the Euclidean norm of the (flattened) residual as the caller defines it,
so a caller wanting a relative criterion passes a residual already divided by its scale
(e.g. `fleos.theory.eos.cnn2` divides the Eq. 8 residual by ||(S/σ_w²) I||_F).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


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
    matvecs: int = 0  # Jacobian-vector products (counted by newton_krylov's "arnoldi" GMRES)


def _flat_inner(fun: Callable, v: jnp.ndarray, template: Any, args: tuple) -> jnp.ndarray:
    """fun(x, *args) on the flat vector v of x (structure and shapes of `template`), flattened."""
    x = ravel_pytree(template)[1](v)
    return ravel_pytree(fun(x, *args))[0]


# `fun` is static: a solver called repeatedly with the same module-level function (and data in
# `args`) reuses one compiled program instead of recompiling per call.
_flat_eval = jax.jit(_flat_inner, static_argnums=0)


@partial(jax.jit, static_argnums=(0, 5, 6, 7))
def _newton_direction(
    fun: Callable, v: jnp.ndarray, eta: jnp.ndarray, template: Any, args: tuple,
    restart: int, maxiter: int, solve_method: str = "batched",
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """F(v) and the inexact Newton direction d: ||J d + F|| <= eta ||F|| (GMRES)."""
    # One linearization (primal + stored tangent map) serves every GMRES matvec.
    F, jvp = jax.linearize(lambda u: _flat_inner(fun, u, template, args), v)
    d, _ = jax.scipy.sparse.linalg.gmres(
        jvp, -F, tol=eta, atol=0.0, restart=restart, maxiter=maxiter, solve_method=solve_method
    )
    return F, d


@partial(jax.jit, static_argnums=0)
def _linearize(fun: Callable, v: jnp.ndarray, template: Any, args: tuple) -> tuple[Any, Any]:
    """F(v) and its linearization (a `jax.tree_util.Partial`, so it can leave the jit and be
    applied by `_apply_linear`; residuals of the linearization are its leaves)."""
    return jax.linearize(lambda u: _flat_inner(fun, u, template, args), v)


@jax.jit
def _apply_linear(jvp: Any, w: jnp.ndarray) -> jnp.ndarray:
    return jvp(w)


@partial(jax.jit, static_argnums=0)
def _merit_and_slope(
    merit: Callable, v: jnp.ndarray, d: jnp.ndarray, template: Any, args: tuple
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """merit(x) and its directional derivative along d (one forward-mode JVP)."""
    unravel = ravel_pytree(template)[1]
    return jax.jvp(lambda u: merit(unravel(u), *args), (v,), (d,))


@partial(jax.jit, static_argnums=0)
def _retract_eval(
    retract: Callable, v: jnp.ndarray, d: jnp.ndarray, t: jnp.ndarray, template: Any,
    args: tuple,
) -> jnp.ndarray:
    unravel = ravel_pytree(template)[1]
    return ravel_pytree(retract(unravel(v), unravel(d), t, *args))[0]


def _gmres_arnoldi(
    matvec: Callable[[np.ndarray], np.ndarray], b: np.ndarray, rtol: float, restart: int,
    maxiter: int,
) -> tuple[np.ndarray, int, float]:
    """Restarted GMRES from x = 0 for A x = b, stopping as soon as ||b - A x|| <= rtol ||b||.

    Host-side Arnoldi (modified Gram-Schmidt with one re-orthogonalization pass), float64;
    the small least-squares problem is re-solved at each step (its residual is exact in exact
    arithmetic). Returns (x, number of matvecs, relative residual estimate).
    """
    bnorm = float(np.linalg.norm(b))
    x = np.zeros_like(b)
    if bnorm == 0.0:
        return x, 0, 0.0
    nmv = 0
    r = b.copy()
    rel = 1.0
    for _ in range(max(1, maxiter)):
        beta = float(np.linalg.norm(r))
        V = [r / beta]
        H = np.zeros((restart + 1, restart))
        y = np.zeros(0)
        for k in range(restart):
            w = matvec(V[k])
            nmv += 1
            for _pass in range(2):
                for j in range(k + 1):
                    h = float(np.dot(V[j], w))
                    H[j, k] += h
                    w = w - h * V[j]
            hn = float(np.linalg.norm(w))
            H[k + 1, k] = hn
            e1 = np.zeros(k + 2)
            e1[0] = beta
            y, *_ = np.linalg.lstsq(H[: k + 2, : k + 1], e1, rcond=None)
            rel = float(np.linalg.norm(e1 - H[: k + 2, : k + 1] @ y)) / bnorm
            if not math.isfinite(rel) or rel <= rtol or hn <= 1e-14 * beta:
                break
            V.append(w / hn)
        x = x + np.stack(V[: len(y)], axis=1) @ y
        if not math.isfinite(rel) or rel <= rtol:
            break
        r = b - matvec(x)
        nmv += 1
        rel = float(np.linalg.norm(r)) / bnorm
        if rel <= rtol:
            break
    return x, nmv, rel


def _norm(v: jnp.ndarray) -> float:
    """Euclidean norm as a Python float; NaN/inf propagate (callers test `math.isfinite`)."""
    return float(jnp.linalg.norm(v))


# ---------------------------------------------------------------------------------------------
# Newton-Krylov
# ---------------------------------------------------------------------------------------------


def newton_krylov(
    residual: Callable[..., Any],
    x0: Any,
    *,
    args: tuple = (),
    tol: float = 1e-8,
    max_iter: int = 50,
    gmres_restart: int = 30,
    gmres_maxiter: int = 3,
    eta_max: float = 0.5,
    max_backtracks: int = 20,
    armijo: float = 1e-4,
    stall_window: int = 8,
    linear_solver: str = "batched",
    eta0: float | None = None,
    merit: Callable[..., Any] | None = None,
    retract: Callable[..., Any] | None = None,
) -> SolveResult:
    """Solve residual(x) = 0 by inexact Newton-Krylov with exact JAX Jacobian-vector products.

    residual: (x, *args) -> pytree of the same total size as x0 (jit-compatible). Pass data
        through `args` and a function defined once (e.g. at module level): the compiled
        program is cached on the function's identity.
    tol: stop when ||residual(x)||_2 <= tol.
    max_iter: maximum Newton steps (each = one linearization + GMRES + line search).
    gmres_restart, gmres_maxiter: GMRES Krylov dimension and number of restarts.
    eta_max: cap of the Eisenstat-Walker forcing term (relative GMRES tolerance).
    max_backtracks: step halvings in the line search before declaring failure.
    armijo: sufficient-decrease constant: accept t if ||F(x + t d)|| <= (1 - armijo t) ||F(x)||.
    stall_window: stop (not converged, "stalled") if ||F|| has not halved over this many
        Newton steps (creeping far from a root: let the caller, e.g. `anneal`, shrink the
        continuation step instead).
    linear_solver: "batched" | "incremental" (jax GMRES) | "arnoldi" (early-terminating
        host-side GMRES, one jitted JVP per Krylov vector; see the module docstring).
    eta0: forcing term of the first Newton step (default eta_max).
    merit: optional scalar function (x, *args) -> float whose stationary points are the roots
        (e.g. a free energy whose gradient is the residual, up to a change of variables).
        When the Newton direction d descends it (slope < 0, one JVP), the line search
        accepts a step with Armijo decrease of the merit or of ||F||; otherwise of ||F||.
        A norm of the residual can rise on the way to a root of a strongly nonlinear
        problem (a soft mode with saturation) and then forces tiny steps; a potential
        does not.
    retract: optional curve (x, d, t, *args) -> x(t) with x(0) = x and x'(0) = d, along
        which the line search moves (default the straight line x + t d); e.g. a curve that
        keeps a covariance positive definite. Any curve tangent to d keeps Newton's local
        quadratic convergence when it deviates from the line by O(t²|d|²).
    """
    if linear_solver not in ("batched", "incremental", "arnoldi"):
        raise ValueError(
            f"newton_krylov: linear_solver must be 'batched', 'incremental' or 'arnoldi', "
            f"got {linear_solver!r}"
        )
    t0 = time.perf_counter()
    v, unravel = ravel_pytree(x0)
    args = tuple(args)

    def f(u: jnp.ndarray) -> jnp.ndarray:
        return _flat_eval(residual, u, x0, args)

    F = f(v)
    if F.shape != v.shape:
        raise ValueError(f"newton_krylov: residual has {F.size} components but x has {v.size}")
    fn = _norm(F)
    history = [fn]
    if not math.isfinite(fn):
        return SolveResult(unravel(v), False, 0, fn, time.perf_counter() - t0,
                           "residual not finite at x0", tuple(history))
    eta = eta_max if eta0 is None else float(eta0)
    message = f"max_iter={max_iter} reached"
    it = 0
    matvecs = 0
    for it in range(1, max_iter + 1):
        if fn <= tol:
            it -= 1
            message = "converged"
            break
        if linear_solver == "arnoldi":
            _, jvp = _linearize(residual, v, x0, args)

            def matvec(w: np.ndarray, jvp: Any = jvp, dt: Any = v.dtype) -> np.ndarray:
                return np.asarray(_apply_linear(jvp, jnp.asarray(w, dtype=dt)))

            d_np, nmv, _ = _gmres_arnoldi(matvec, -np.asarray(F), eta, gmres_restart,
                                          gmres_maxiter)
            matvecs += nmv
            d = jnp.asarray(d_np, dtype=v.dtype)
            del jvp, matvec
        else:
            _, d = _newton_direction(residual, v, jnp.asarray(eta, dtype=v.dtype), x0, args,
                                     gmres_restart, gmres_maxiter, linear_solver)
        if not bool(jnp.all(jnp.isfinite(d))):
            message = "GMRES returned a non-finite direction"
            break
        use_merit: bool | None = None if merit is not None else False  # decided on demand
        m0 = slope = math.nan
        t, accepted = 1.0, False
        for _ in range(max_backtracks + 1):
            if retract is None:
                v_try = v + t * d
            else:
                v_try = _retract_eval(retract, v, d, jnp.asarray(t, dtype=v.dtype), x0, args)
            F_try = f(v_try)
            fn_try = _norm(F_try)
            # Either sufficient decrease counts: of ||F|| (near the root the merit's change
            # drops below its rounding error) or of the merit (far from it).
            ok = math.isfinite(fn_try) and fn_try <= (1.0 - armijo * t) * fn
            if not ok and math.isfinite(fn_try) and use_merit is None:
                # Only now pay for the merit's value and slope along d (one JVP).
                m0_j, slope_j = _merit_and_slope(merit, v, d, x0, args)
                m0, slope = float(m0_j), float(slope_j)
                use_merit = math.isfinite(m0) and slope < 0.0
            if not ok and math.isfinite(fn_try) and use_merit:
                m_try = float(_flat_eval(merit, v_try, x0, args)[0])  # scalar, flattened
                ok = m_try <= m0 + armijo * t * slope
            if ok:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            message = f"line search failed after {max_backtracks} halvings (stalled)"
            break
        # Eisenstat-Walker choice 2, safeguarded: solve the linear system only as accurately
        # as the nonlinear residual warrants.
        ratio = fn_try / fn
        eta_new = 0.9 * ratio**2
        if 0.9 * eta**2 > 0.1:
            eta_new = max(eta_new, 0.9 * eta**2)
        eta = float(min(eta_max, max(eta_new, 0.5 * tol / fn_try if fn_try > 0 else 0.0)))
        v, F, fn = v_try, F_try, fn_try
        history.append(fn)
        if fn > tol and len(history) > stall_window and fn > 0.5 * history[-1 - stall_window]:
            message = f"stalled: residual not halved in {stall_window} Newton steps"
            break
    else:
        if fn <= tol:
            message = "converged"
    # The residual reported is the one evaluated at the returned v (F was computed at v).
    return SolveResult(
        x=unravel(v),
        converged=bool(fn <= tol),
        iterations=it,
        residual=fn,
        seconds=time.perf_counter() - t0,
        message=message,
        history=tuple(history),
        matvecs=matvecs,
    )


# ---------------------------------------------------------------------------------------------
# Anderson acceleration
# ---------------------------------------------------------------------------------------------


def anderson(
    fixed_point_map: Callable[..., Any],
    x0: Any,
    *,
    args: tuple = (),
    tol: float = 1e-8,
    max_iter: int = 100,
    m: int = 5,
    damping: float = 1.0,
    blowup: float = 1e3,
    max_halvings: int = 30,
    stall_window: int = 25,
) -> SolveResult:
    """Solve x = G(x) by Anderson acceleration (type II) with safeguards.

    fixed_point_map: G, (x, *args) -> pytree with x0's structure (jit-compatible; pass data
        through `args` and a function defined once, see `newton_krylov`).
    tol: stop when ||G(x) - x||_2 <= tol, evaluated at the returned x.
    max_iter: maximum evaluations of G.
    m: history length (m = 0 is damped plain iteration).
    damping: mixing β in x_{k+1} = x_k + β g_k - (ΔX + β ΔG) γ.
    blowup: treat a step whose residual exceeds `blowup` × the best one like a non-finite one.
    max_halvings: on a non-finite map value, halve the proposed step this many times before
        giving up.
    stall_window: stop (not converged, "stalled") if the best residual has not halved over
        this many evaluations, so that a hopeless solve fails fast (see `anneal`).
    """
    t0 = time.perf_counter()
    v, unravel = ravel_pytree(x0)
    args = tuple(args)

    def gres(u: jnp.ndarray) -> jnp.ndarray:
        return _flat_eval(fixed_point_map, u, x0, args) - u

    g = gres(v)
    gn = _norm(g)
    history = [gn]
    if not math.isfinite(gn):
        return SolveResult(unravel(v), False, 0, gn, time.perf_counter() - t0,
                           "fixed-point map not finite at x0", tuple(history))
    best_v, best_n = v, gn
    dX: list[np.ndarray] = []
    dG: list[np.ndarray] = []
    message = f"max_iter={max_iter} reached"
    it = 0
    while True:
        if best_n <= tol:
            message = "converged"
            break
        if it >= max_iter:
            break
        if len(history) > stall_window and min(history[-stall_window:]) > 0.5 * min(
            history[:-stall_window]
        ):
            message = f"stalled: residual not halved in {stall_window} evaluations"
            break
        vk, gk = np.asarray(v), np.asarray(g)
        if dX:
            # Least squares on the residual differences (small: m columns), in float64.
            DG = np.stack(dG, axis=1)
            DX = np.stack(dX, axis=1)
            gamma = np.linalg.lstsq(DG, gk, rcond=1e-12)[0]
            v_new = vk + damping * gk - (DX + damping * DG) @ gamma
        else:
            v_new = vk + damping * gk
        v_new = jnp.asarray(v_new)
        g_new = gres(v_new)
        it += 1
        gn_new = _norm(g_new)
        if not math.isfinite(gn_new) or gn_new > blowup * best_n:
            # Unsafe extrapolation (e.g. it left the domain of the map): drop the history and
            # backtrack along the proposed step from the current point until the map is finite
            # and has not blown up.
            dX.clear()
            dG.clear()
            v_cur = jnp.asarray(v)
            step = v_new - v_cur
            ok = False
            for _ in range(max_halvings):
                step = 0.5 * step
                v_new = v_cur + step
                g_new = gres(v_new)
                it += 1
                gn_new = _norm(g_new)
                if math.isfinite(gn_new) and gn_new <= blowup * best_n:
                    ok = True
                    break
            if not ok:
                message = "fixed-point map not finite along the step (stalled)"
                history.append(gn_new)
                break
        history.append(gn_new)
        dX.append(np.asarray(v_new) - np.asarray(v))
        dG.append(np.asarray(g_new) - np.asarray(g))
        if len(dX) > m:
            dX.pop(0)
            dG.pop(0)
        if m == 0:
            dX.clear()
            dG.clear()
        v, g = v_new, g_new
        if gn_new < best_n:
            best_v, best_n = v_new, gn_new
    return SolveResult(
        x=unravel(best_v),
        converged=bool(best_n <= tol),
        iterations=it,
        residual=best_n,  # ||G(x) - x|| evaluated at the returned x
        seconds=time.perf_counter() - t0,
        message=message,
        history=tuple(history),
    )


# ---------------------------------------------------------------------------------------------
# Annealing in the width
# ---------------------------------------------------------------------------------------------


def _midpoint(w_from: float, w_to: float) -> float:
    """Geometric midpoint of two widths; from w = inf (the GP limit) the midpoint is 2 w_to."""
    if math.isinf(w_from):
        return 2.0 * w_to
    return math.sqrt(w_from * w_to)


def progress_printer(emit: Callable[[str], None], label: str = "width"
                     ) -> Callable[[float, SolveResult], None]:
    """A `progress` callback for `anneal` and the sweeps: one line per solve, e.g.
    ``C=640 converged residual=3.1e-09 iterations=7 (2.3 s)``, passed to `emit`."""
    def show(width: float, res: SolveResult) -> None:
        state = "converged" if res.converged else f"NOT converged ({res.message})"
        emit(f"{label}={width:g} {state} residual={res.residual:.3g} "
             f"iterations={res.iterations} ({res.seconds:.1f} s)")

    return show


def anneal(
    solve_at: Callable[[float, Any], SolveResult],
    widths: Sequence[float],
    x0: Any,
    *,
    start_width: float = math.inf,
    min_ratio: float = 1.01,
    extrapolate: bool = False,
    max_inserts: int = 12,
    progress: Callable[[float, SolveResult], None] | None = None,
) -> list[SolveResult]:
    """Continuation from large to small width with adaptive step insertion.

    solve_at(width, x_start) -> SolveResult: one solve at `width` warm-started at x_start.
    widths: target widths (any order; solved from largest to smallest).
    x0: the solution at `start_width` (default inf: the GP limit).
    min_ratio: smallest allowed step ratio w_prev / w_target (> 1). If a solve fails at a
        step with ratio below it, the annealing stops; that width and all smaller ones are
        reported with converged=False and an explanatory message.
    max_inserts: most intermediate widths inserted on the way to one target (bounds the work
        when the start is the GP limit, where the midpoint 2·w never reaches min_ratio).
    extrapolate: warm-start each solve from the linear extrapolation, in the coupling 1/width,
        of the last two solutions (x must then be a pytree of arrays that may be combined
        linearly). If the solve from the extrapolated point fails, it is retried from the
        last solution itself before any step is inserted.

    progress: called as progress(width, result) after every solve, intermediate widths and
        retries included (e.g. `progress_printer`: one log line per solve with its residual).

    Returns one SolveResult per requested width, in the order of `widths`. The `seconds` of
    a result include the intermediate solves needed to reach it.
    """
    if progress is not None:
        inner = solve_at

        def solve_at(w: float, x: Any) -> SolveResult:
            res = inner(w, x)
            progress(w, res)
            return res

    if min_ratio <= 1.0:
        raise ValueError(f"anneal: min_ratio must be > 1, got {min_ratio}")
    for w in widths:
        if not (w > 0):
            raise ValueError(f"anneal: widths must be positive, got {w}")
        if w > start_width:
            raise ValueError(f"anneal: width {w} exceeds start_width {start_width}")
    order = sorted(range(len(widths)), key=lambda k: -widths[k])
    results: list[SolveResult | None] = [None] * len(widths)
    w_prev, x_prev = start_width, x0
    w_older: float | None = None
    x_older: Any = None
    stopped: str | None = None
    last_failed: SolveResult | None = None
    for k in order:
        target = widths[k]
        if stopped is not None:
            assert last_failed is not None
            results[k] = replace(
                last_failed, x=last_failed.x, converged=False, iterations=0, seconds=0.0,
                message=f"not attempted: {stopped}", history=(),
            )
            continue
        if target == w_prev:
            # Same width as the previous solution: re-solve (cheap, warm) for an honest result.
            pass
        t0 = time.perf_counter()
        inserted: list[float] = []
        iterations = 0
        matvecs = 0
        while True:
            w_try = target
            # Halve the step (geometrically) until a solve succeeds or the ratio is too small.
            while True:
                res = None
                if extrapolate and w_older is not None:
                    g_older, g_prev, g_try = 1.0 / w_older, 1.0 / w_prev, 1.0 / w_try
                    c = (g_try - g_prev) / (g_prev - g_older)
                    x_start = jax.tree_util.tree_map(
                        lambda a, b, c=c: a + c * (a - b), x_prev, x_older
                    )
                    res = solve_at(w_try, x_start)
                    iterations += res.iterations
                    matvecs += res.matvecs
                if res is None or not res.converged:
                    res = solve_at(w_try, x_prev)
                    iterations += res.iterations
                    matvecs += res.matvecs
                if res.converged:
                    break
                last_failed = res
                if w_prev / w_try < min_ratio or w_prev == w_try:
                    stopped = (
                        f"annealing stalled between width {w_prev:g} and {w_try:g} "
                        f"(step ratio below {min_ratio}); last solver message: {res.message}"
                    )
                    break
                w_mid = _midpoint(w_prev, w_try)
                if len(inserted) >= max_inserts:
                    stopped = (
                        f"annealing gave up after {max_inserts} inserted widths between "
                        f"{w_prev:g} and {target:g}; last solver message: {res.message}"
                    )
                    break
                if w_prev / w_mid < min_ratio:
                    stopped = (
                        f"annealing stalled between width {w_prev:g} and {w_try:g} "
                        f"(next step ratio {w_prev / w_mid:.4g} below {min_ratio}); "
                        f"last solver message: {res.message}"
                    )
                    break
                inserted.append(w_mid)
                w_try = w_mid
            if stopped is not None:
                break
            if w_try != w_prev:
                w_older, x_older = w_prev, x_prev
            w_prev, x_prev = w_try, res.x
            if w_try == target:
                break
        seconds = time.perf_counter() - t0
        extra = f"; intermediate widths {[float(f'{w:.6g}') for w in inserted]}" if inserted \
            else ""
        if stopped is not None:
            assert last_failed is not None
            results[k] = replace(last_failed, iterations=iterations, seconds=seconds,
                                 message=stopped + extra, matvecs=matvecs)
        else:
            results[k] = replace(res, iterations=iterations, seconds=seconds,
                                 message=res.message + extra, matvecs=matvecs)
    return [r for r in results if r is not None]
