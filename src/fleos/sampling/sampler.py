"""Langevin samplers of the Bayesian posterior (paper, Eq. 15 and Methods).

The posterior of a network with outputs f_θ and Gaussian weight priors is p(θ|D) ∝ exp(-U(θ)),

    U(θ) = Σ_μ (f_θ(x_μ) − y_μ)² / (2σ²) + Σ_leaves ‖θ_leaf‖² / (2 v_leaf),

and one full-batch ULA step (one *epoch* in the paper's language) is

    θ ← θ − η P ∇U(θ) + √(2 η P) ξ,   ξ ~ N(0, I),

the paper's dynamics. Three more integrators target the same posterior (`Integrator`,
docs/langevin.md §7): "lm" (Leimkuhler–Matthews: ULA's cost, configurational bias O(η²)),
"baoab" (kinetic Langevin with friction γ and mass P⁻¹: mixes like √κ instead of κ) and "mala"
(Metropolis-adjusted ULA: exact, the referee). Every one costs one gradient per step. Each is
one entry of the registry `INTEGRATORS`: its name mapped to an `IntegratorDef(init, step)`
whose state is a typed pytree (`BAOABState`, `MALAState`; None for "ula" and "lm").

with P an optional constant, positive, per-leaf scalar preconditioner (P = 1: the paper's
plain dynamics). For any constant positive diagonal P the continuous-time limit
dθ = −P ∇U dt + √(2P) dW has exp(−U) as its stationary density, so P changes the speed of each
layer, not the target. The mapping of (η, v_l, σ²) to the paper's learning rate, weight decay
and noise (Eq. 15) is derived in docs/langevin.md.

Conventions (docs/architecture.md):
* every array stays in the sampler dtype (float32 by default): scalars such as η, σ², v_l and P
  are cast to each leaf's dtype before they touch it, because `import fleos` enables float64
  and a float64 scalar would silently promote the whole chain;
* the noise of step t is drawn from `jax.random.fold_in(chain_key, t)` with t the global epoch
  counter `ChainState.step`, so trajectories do not depend on how steps are chunked and a
  resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from fleos.core.diagnostics import effective_sample_size, split_rhat

Array = jax.Array
Params = Any
PotentialFn = Callable[[Params], tuple[Array, Array]]


class ChainState(NamedTuple):
    """State of one chain: parameters (pytree, sampler dtype), the global epoch counter and
    the integrator's own state `extra` (what its `IntegratorDef.init` returns: None for "ula"
    and "lm", `BAOABState`, `MALAState`). `extra=None` with an integrator that keeps a state
    is filled in by `run_steps` before the first step (`init_extra`)."""

    params: Params
    step: Array  # int32 scalar: number of full-batch steps (epochs) taken so far
    extra: Any = None


class StepInfo(NamedTuple):
    """Quantities evaluated at the *pre-step* parameters of a step (free by-products), and the
    Metropolis acceptance probability of the step (1 for the unadjusted integrators)."""

    sse: Array  # Σ_μ (f_μ − y_μ)²
    potential: Array  # U(θ)
    accept_prob: Array | float = 1.0


class Integrator(NamedTuple):
    """Which Langevin integrator a step uses (hashable: a static argument under jit).

    name: a key of the registry `INTEGRATORS` ("ula" | "lm" | "baoab" | "mala").
    friction: γ of the kinetic integrator "baoab", in units of 1/time where one step of
        lr η advances time by h = √(2η) (ignored by the others). γ ≈ 2√λ critically damps
        a mode of preconditioned curvature λ; γ → ∞ turns BAOAB into "lm".

    For every integrator `lr` keeps the meaning of ULA's η: the overdamped limit of BAOAB with
    time step h is LM with η = h²/2, and all four are stable for η λ_max < 2 (λ_max of the
    preconditioned Hessian, `stiffest_curvature`), so schedules and back-offs carry over.
    """

    name: str = "ula"
    friction: float = 1.0


# A change to an integrator (or to the potential, the noise stream) that alters the numbers
# of an unchanged config bumps fleos.sampling.NUMERICS_VERSION, which reruns every sampling job.
ULA = Integrator("ula")


def init_state(params: Params, step: int = 0) -> ChainState:
    """Wrap initial parameters (e.g. a prior draw) into a ChainState at epoch `step`."""
    return ChainState(params=params, step=jnp.asarray(step, dtype=jnp.int32))


class _ById:
    """Hashable static wrapper comparing by identity (apply functions, e.g. bound Flax
    `Module.apply`, need not be hashable, but jit needs hashable static data)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ById) and other.fn is self.fn

    def __hash__(self) -> int:
        return id(self.fn)


@jax.tree_util.register_pytree_node_class
class Potential:
    """U(θ) of Eq. 15 / Methods as a callable pytree: `potential(params) -> (U, sse)`.

    Data (X, y), prior variances and σ² are pytree *leaves*, so a jitted sampler receives them
    as arguments rather than baking them into the compiled program as constants (compiling is
    then independent of the data values, and large X does not bloat the executable); the apply
    function is static. Build it with `make_potential`.
    """

    def __init__(
        self,
        apply_fn: Callable[[Params, Array], Array],
        prior_variances: Params,
        X: Array,
        y: Array,
        sigma2: Any,
        data_blocks: int = 1,
    ) -> None:
        self.apply_fn = apply_fn
        self.prior_variances = prior_variances
        self.X = X
        self.y = y
        self.sigma2 = sigma2
        self.data_blocks = int(data_blocks)

    def __call__(self, params: Params) -> tuple[Array, Array]:
        f = self.apply_fn(params, self.X)
        resid = f - jnp.asarray(self.y, dtype=f.dtype)
        sse = jnp.sum(resid * resid)
        return self._potential(params, sse), sse

    def _potential(self, params: Params, sse: Array) -> Array:
        """U from the data term's sse and the Gaussian prior ‖θ_l‖² / (2 v_l) of each leaf.
        v_l is cast to the leaf dtype (module docstring: a float64 scalar would promote the
        chain)."""
        dtype = sse.dtype
        prior_terms = jax.tree.map(
            lambda p, v: jnp.sum(p * p) / (2 * jnp.asarray(v, dtype=p.dtype)),
            params,
            self.prior_variances,
        )
        prior = sum(jax.tree.leaves(prior_terms), jnp.zeros((), dtype))
        return sse / (2 * jnp.asarray(self.sigma2, dtype=dtype)) + prior.astype(dtype)

    def value_and_grad(self, params: Params) -> tuple[Array, Array, Params]:
        """(U, sse, ∇U) at `params`.

        With `data_blocks` = k > 1 the training set is cut into k equal blocks of rows and
        the data term's value and gradient are accumulated block by block in a `lax.scan`
        (the sum over μ in U is additive). The result is the same up to float rounding; the
        gain is memory locality: at the paper's CNN size the pre-activations of one chain are
        1600 × 20 × 640 floats (82 MB), written and read several times per step, while one
        block's fit in cache (bench/RESULTS.md "Chain layout").
        """
        if self.data_blocks == 1:
            (u, sse), grads = jax.value_and_grad(self, has_aux=True)(params)
            return u, sse, grads
        k = self.data_blocks
        X = self.X.reshape(k, self.X.shape[0] // k, *self.X.shape[1:])
        y = jnp.reshape(jnp.asarray(self.y), (k, -1))

        def block_sse(p: Params, xb: Array, yb: Array) -> Array:
            f = self.apply_fn(p, xb)
            r = f - yb.astype(f.dtype)
            return jnp.sum(r * r)

        def body(carry, block):
            sse_b, g_b = jax.value_and_grad(block_sse)(params, *block)
            return jax.tree.map(jnp.add, carry, (sse_b, g_b)), None

        zero = jax.tree.map(jnp.zeros_like, params)
        dtype = jax.tree.leaves(params)[0].dtype
        (sse, g_sse), _ = jax.lax.scan(body, (jnp.zeros((), dtype), zero), (X, y))
        u, g_prior = jax.value_and_grad(self._potential)(params, sse)
        inv_2s2 = 1 / (2 * jnp.asarray(self.sigma2, dtype=dtype))
        grads = jax.tree.map(lambda gp, gs: gp + (inv_2s2 * gs).astype(gp.dtype), g_prior, g_sse)
        return u, sse, grads

    def tree_flatten(self):  # noqa: D102 - pytree protocol
        return ((self.prior_variances, self.X, self.y, self.sigma2),
                (_ById(self.apply_fn), self.data_blocks))

    @classmethod
    def tree_unflatten(cls, aux: tuple[_ById, int], children):  # noqa: D102 - pytree protocol
        pv, X, y, s2 = children
        return cls(aux[0].fn, pv, X, y, s2, aux[1])


def make_potential(
    apply_fn: Callable[[Params, Array], Array],
    prior_variances: Params,
    X: Array,
    y: Array,
    sigma2: float,
    data_blocks: int = 1,
) -> Potential:
    """The negative log-posterior U(θ) of the Methods section (Eq. 15 at T = 2σ², γ_l = T/v_l).

    U = Σ_μ (f_θ(x_μ) − y_μ)² / (2σ²) + Σ_leaves ‖θ_leaf‖² / (2 v_leaf).

    apply_fn(params, X) -> (n,) outputs; prior_variances: same tree as params, each leaf the
    scalar prior variance v_leaf (e.g. `model.prior_variances()`); X, y: training data, in the
    sampler dtype (the caller converts them: the potential computes in the dtype of f).
    data_blocks: gradients accumulated over this many equal blocks of rows
    (`Potential.value_and_grad`; must divide n; `auto_data_blocks` chooses one).
    Returns a callable `params -> (U, sse)` with sse = Σ_μ (f_μ − y_μ)².
    """
    if not float(sigma2) > 0:
        raise ValueError(f"sigma2 must be positive, got {sigma2!r}")
    n = X.shape[0]
    if not (isinstance(data_blocks, int) and data_blocks >= 1 and n % data_blocks == 0):
        raise ValueError(f"data_blocks must be a positive divisor of the number of training "
                         f"points n={n}, got {data_blocks!r}")
    return Potential(apply_fn, prior_variances, X, y, sigma2, data_blocks)


# Working-set target of one data block: ~1M floats (4 MB in float32) of pre-activations.
# Measured at the paper's CNN size on the 2-core machine (one chain, best of 3 interleaved
# rounds): 1600/k rows per block for k = 1, 8, 16, 25, 50, 100 gave 3.9, 6.5, 8.6, 9.1, 7.7,
# 5.8 chain-steps/s; k = 25 is 64 rows, 0.82M floats (bench/RESULTS.md "Chain layout").
BLOCK_TARGET_ELEMENTS = 1_000_000


def auto_data_blocks(n: int, activations_per_row: int, backend: str, chains: int = 1) -> int:
    """The smallest divisor k of n whose blocks hold at most `BLOCK_TARGET_ELEMENTS`
    pre-activation floats for `chains` vmapped chains; 1 on accelerators (hypothesis, not
    measured here: their bandwidth and parallelism favour one big block) or when everything
    already fits."""
    if backend != "cpu":
        return 1
    need = math.ceil(n * activations_per_row * chains / BLOCK_TARGET_ELEMENTS)
    return next(k for k in range(max(need, 1), n + 1) if n % k == 0)


def auto_chain_batch(n_chains: int, backend: str) -> int:
    """How many chains to vmap together (`run_ensemble`'s `chain_batch`): all on accelerators
    (not yet measured there), one at a time on CPU. On CPU a job of 8
    chains run one at a time delivered 1.01-1.08x the chain-steps/s of a 1-chain job at every
    size measured (n·N·C = 33k, 131k and 20M pre-activation floats per chain), and vmapping
    them in groups 0.69-0.75x at the two small sizes (groups of 8 and 4) and 0.63x at the
    paper's (bench/RESULTS.md "Chain layout"). Vmapped convolutions also become grouped ones
    (Myrtle-5), which XLA:CPU runs ~10x slower per chain."""
    return n_chains if backend != "cpu" else 1


def map_chains(fn: Callable, args: tuple, chain_batch: int | None = None) -> Any:
    """`fn(*args)` for chain-stacked `args` (a leading chain axis on every leaf), `chain_batch`
    chains per call: with b = `chain_batch` smaller than the number of chains, `fn` is called
    from the host on consecutive groups of b chains, one after the other, and the outputs are
    concatenated along the chain axis. `fn` maps chain-stacked arguments to chain-stacked
    outputs (typically a jitted `jax.vmap` of a one-chain function), so every group runs the
    program a job of b chains runs: the same results bit for bit, and a job of 8 chains run
    one at a time makes the 1-chain job's calls 8 times (at the paper's size it
    measures 0.99-1.09x the 1-chain job's chain-steps/s: bench/RESULTS.md "Chain layout"). b
    is lowered to the largest divisor of the number of chains, so that every group has the same
    shapes (one compilation)."""
    n_chains = jax.tree.leaves(args)[0].shape[0]
    if chain_batch is None or chain_batch >= n_chains:
        return fn(*args)
    b = max(d for d in range(1, int(chain_batch) + 1) if n_chains % d == 0)
    outs = [fn(*jax.tree.map(lambda x, i=i: x[i:i + b], args)) for i in range(0, n_chains, b)]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)


def _check_same_tree(params: Params, other: Params, name: str) -> None:
    if jax.tree.structure(params) != jax.tree.structure(other):
        raise ValueError(
            f"{name} must have the same tree structure as params: "
            f"{jax.tree.structure(other)} vs {jax.tree.structure(params)}"
        )


def ula_step(
    potential: PotentialFn,
    state: ChainState,
    chain_key: Array,
    lr: Any,
    precond: Params | None = None,
    integrator: Integrator | None = None,
) -> tuple[ChainState, StepInfo]:
    """One ULA step θ ← θ − η P ∇U(θ) + √(2ηP) ξ (Methods, Eq. 15 in our units; η = `lr`).

    ξ is drawn from `jax.random.fold_in(chain_key, state.step)`, one independent sub-key per
    leaf. `precond` is None (P = 1, the paper's dynamics) or a pytree like params whose leaves
    are positive scalars P_leaf (a constant diagonal preconditioner: same stationary law).
    Returns the new state (step + 1) and the StepInfo (sse, U) at the pre-step parameters.
    `integrator` is unused (the registry's common signature, `IntegratorDef`).
    """
    del integrator
    u, sse, grads = _value_and_grad(potential, state.params)
    leaves, treedef, p_leaves = _leaf_setup(state.params, precond)
    xi = _noise(chain_key, state.step, leaves)
    new_leaves = _euler(leaves, treedef.flatten_up_to(grads), p_leaves, lr, xi)
    new_state = ChainState(treedef.unflatten(new_leaves), state.step + jnp.int32(1),
                           state.extra)
    return new_state, StepInfo(sse=sse, potential=u)


def _leaf_setup(state_params: Params, precond: Params | None):
    leaves, treedef = jax.tree.flatten(state_params)
    if precond is None:
        p_leaves = [None] * len(leaves)
    else:
        _check_same_tree(state_params, precond, "precond")
        p_leaves = treedef.flatten_up_to(precond)
    return leaves, treedef, p_leaves


def _step_size(lr: Any, pc: Any, dt: Any) -> Array:
    """η P_leaf in the leaf's dtype (P = 1 without a preconditioner)."""
    step = jnp.asarray(lr, dtype=dt)
    return step if pc is None else step * jnp.asarray(pc, dtype=dt)


def _euler(leaves: list[Array], grads: list[Array], p_leaves: list[Any], lr: Any,
           xi: list[Array], xi_next: list[Array] | None = None) -> list[Array]:
    """The Euler-Maruyama update θ − ηP∇U + √(2ηP) ξ of each leaf: ULA's step and MALA's
    proposal; LM passes the draws of steps t and t+1 as `xi`, `xi_next` and takes their mean
    (`lm_step`)."""
    out = []
    for i, (p, g, pc) in enumerate(zip(leaves, grads, p_leaves, strict=True)):
        step = _step_size(lr, pc, p.dtype)
        drift = p - step * g.astype(p.dtype)
        if xi_next is None:
            out.append(drift + jnp.sqrt(2 * step) * xi[i])
        else:
            out.append(drift + jnp.sqrt(2 * step) * (xi[i] + xi_next[i]) / 2)
    return out


def _noise(chain_key: Array, step: Array, leaves: list[Array]) -> list[Array]:
    """ξ_t: the standard normal noise of global step t, one independent draw per leaf."""
    keys = jax.random.split(jax.random.fold_in(chain_key, step), len(leaves))
    return [jax.random.normal(k, p.shape, dtype=p.dtype) for k, p in zip(keys, leaves,
                                                                          strict=True)]


def _value_and_grad(potential: PotentialFn, params: Params) -> tuple[Array, Array, Params]:
    if isinstance(potential, Potential):
        return potential.value_and_grad(params)
    (u, sse), grads = jax.value_and_grad(potential, has_aux=True)(params)
    return u, sse, grads


def lm_step(
    potential: PotentialFn,
    state: ChainState,
    chain_key: Array,
    lr: Any,
    precond: Params | None = None,
    integrator: Integrator | None = None,
) -> tuple[ChainState, StepInfo]:
    """One Leimkuhler–Matthews step θ ← θ − ηP∇U(θ) + √(2ηP) (ξ_t + ξ_{t+1})/2.

    The overdamped limit of BAOAB (docs/langevin.md §7): the cost of a ULA step, but the noise
    is the mean of the draws of steps t and t+1 (both regenerated from the step-keyed stream,
    so the chain needs no extra state and resumes bit-identically). Its configurational bias is
    O(η²) instead of ULA's O(η), and zero on a Gaussian posterior. `integrator` is unused.
    """
    del integrator
    u, sse, grads = _value_and_grad(potential, state.params)
    leaves, treedef, p_leaves = _leaf_setup(state.params, precond)
    xi0 = _noise(chain_key, state.step, leaves)
    xi1 = _noise(chain_key, state.step + jnp.int32(1), leaves)
    new = _euler(leaves, treedef.flatten_up_to(grads), p_leaves, lr, xi0, xi1)
    return (ChainState(treedef.unflatten(new), state.step + jnp.int32(1), state.extra),
            StepInfo(sse=sse, potential=u))


class MALAState(NamedTuple):
    """MALA's cache at the current parameters, so that a step costs one gradient."""

    grad: Params  # ∇U
    U: Array
    sse: Array


class BAOABState(NamedTuple):
    """BAOAB's state: the cache of `MALAState` and the velocity u = P p (u ~ N(0, P) at
    equilibrium)."""

    grad: Params
    U: Array
    sse: Array
    u: Params


def no_state(
    potential: PotentialFn,
    params: Params,
    chain_key: Array,
    step: Any = 0,
    precond: Params | None = None,
    integrator: Integrator | None = None,
) -> None:
    """The `init` of an integrator without a state of its own ("ula", "lm")."""
    del potential, params, chain_key, step, precond, integrator


def mala_init(
    potential: PotentialFn,
    params: Params,
    chain_key: Array,
    step: Any = 0,
    precond: Params | None = None,
    integrator: Integrator | None = None,
) -> MALAState:
    """MALA's state at `params`: ∇U, U and sse there."""
    del chain_key, step, precond, integrator
    u, sse, grads = _value_and_grad(potential, params)
    return MALAState(grad=grads, U=u, sse=sse)


def baoab_init(
    potential: PotentialFn,
    params: Params,
    chain_key: Array,
    step: Any = 0,
    precond: Params | None = None,
    integrator: Integrator | None = None,
) -> BAOABState:
    """BAOAB's state at `params`: ∇U, U and sse there, and a velocity u ~ N(0, P) (its
    equilibrium law) drawn from a key of its own, `fold_in(fold_in(chain_key, step), 1 << 30)`,
    apart from the noise stream of the steps."""
    del integrator
    cache = mala_init(potential, params, chain_key, step, precond)
    leaves, treedef, p_leaves = _leaf_setup(params, precond)
    key = jax.random.fold_in(jax.random.fold_in(chain_key, step), 1 << 30)
    xi = _noise(key, 0, leaves)
    velocity = treedef.unflatten(
        [z if pc is None else jnp.sqrt(jnp.asarray(pc, z.dtype)) * z
         for z, pc in zip(xi, p_leaves, strict=True)])
    return BAOABState(grad=cache.grad, U=cache.U, sse=cache.sse, u=velocity)


def baoab_step(
    potential: PotentialFn,
    state: ChainState,
    chain_key: Array,
    lr: Any,
    precond: Params | None = None,
    integrator: Integrator | None = None,
) -> tuple[ChainState, StepInfo]:
    """One BAOAB step of kinetic Langevin dynamics with mass P⁻¹ and friction
    γ = `integrator.friction` (default: `Integrator`'s).

    With velocity u = P p (u ~ N(0, P) at equilibrium) and time step h = √(2η):
    B: u −= (h/2) P∇U(θ);  A: θ += (h/2) u;  O: u ← c u + √(1−c²) P^½ ξ, c = e^{−γh};
    A: θ += (h/2) u;  B: u −= (h/2) P∇U(θ′). The gradient at θ′ is cached in `state.extra`
    and serves the first B of the next step: one gradient per step (Leimkuhler & Matthews
    2013; on a Gaussian posterior its configurational law is exact at any stable h).
    """
    friction = Integrator("baoab").friction if integrator is None else integrator.friction
    extra: BAOABState = state.extra
    if extra is None:
        extra = baoab_init(potential, state.params, chain_key, state.step, precond)
    leaves, treedef, p_leaves = _leaf_setup(state.params, precond)
    u_leaves = treedef.flatten_up_to(extra.u)
    g_leaves = treedef.flatten_up_to(extra.grad)
    xi = _noise(chain_key, state.step, leaves)
    theta_mid, u_mid = [], []
    for p, u, g, pc, z in zip(leaves, u_leaves, g_leaves, p_leaves, xi, strict=True):
        dt = p.dtype
        h = jnp.sqrt(2 * jnp.asarray(lr, dt))
        pd = jnp.ones((), dt) if pc is None else jnp.asarray(pc, dt)
        c = jnp.exp(-jnp.asarray(friction, dt) * h)
        u = u - (h / 2) * pd * g.astype(dt)                      # B
        p = p + (h / 2) * u                                       # A
        u = c * u + jnp.sqrt(1 - c * c) * jnp.sqrt(pd) * z        # O
        theta_mid.append(p + (h / 2) * u)                         # A
        u_mid.append(u)
    new_params = treedef.unflatten(theta_mid)
    u_new, sse_new, g_new = _value_and_grad(potential, new_params)
    u_out = []
    for u, g, pc, p in zip(u_mid, treedef.flatten_up_to(g_new), p_leaves, theta_mid,
                           strict=True):
        dt = p.dtype
        h = jnp.sqrt(2 * jnp.asarray(lr, dt))
        pd = jnp.ones((), dt) if pc is None else jnp.asarray(pc, dt)
        u_out.append(u - (h / 2) * pd * g.astype(dt))             # B
    new_extra = BAOABState(grad=g_new, U=u_new, sse=sse_new, u=treedef.unflatten(u_out))
    info = StepInfo(sse=extra.sse, potential=extra.U)
    return ChainState(new_params, state.step + jnp.int32(1), new_extra), info


def mala_step(
    potential: PotentialFn,
    state: ChainState,
    chain_key: Array,
    lr: Any,
    precond: Params | None = None,
    integrator: Integrator | None = None,
) -> tuple[ChainState, StepInfo]:
    """One Metropolis-adjusted Langevin (MALA) step: the ULA proposal
    θ′ = θ − ηP∇U(θ) + √(2ηP) ξ, accepted with probability
    min(1, exp(U(θ) − U(θ′) + log q(θ|θ′) − log q(θ′|θ))),
    log q(b|a) = −‖b − a + ηP∇U(a)‖²_{P⁻¹} / (4η). Exact for any η (the referee of
    docs/langevin.md §7); U and ∇U at the current point are cached in `state.extra`. The
    uniform of step t comes from its own key, `fold_in(fold_in(chain_key, t), 1 << 29)`.
    The log-ratio is summed in float32 at float32 parameters: at U ~ 10⁴ its rounding error
    is ~10⁻³, far below the O(1) ratios that matter. `integrator` is unused.
    """
    del integrator
    extra: MALAState = state.extra
    if extra is None:
        extra = mala_init(potential, state.params, chain_key, state.step, precond)
    leaves, treedef, p_leaves = _leaf_setup(state.params, precond)
    g_leaves = treedef.flatten_up_to(extra.grad)
    xi = _noise(chain_key, state.step, leaves)
    prop = _euler(leaves, g_leaves, p_leaves, lr, xi)
    u1, sse1, g1 = _value_and_grad(potential, treedef.unflatten(prop))
    g1_leaves = treedef.flatten_up_to(g1)
    dtype = extra.U.dtype
    log_q_fwd = jnp.zeros((), dtype)  # log q(θ′|θ) + const
    log_q_bwd = jnp.zeros((), dtype)  # log q(θ|θ′) + const
    for p, q, g0, gq, pc in zip(leaves, prop, g_leaves, g1_leaves, p_leaves, strict=True):
        step = _step_size(lr, pc, p.dtype)
        fwd = q - p + step * g0.astype(p.dtype)
        bwd = p - q + step * gq.astype(p.dtype)
        log_q_fwd = log_q_fwd - (jnp.sum(fwd * fwd) / (4 * step)).astype(dtype)
        log_q_bwd = log_q_bwd - (jnp.sum(bwd * bwd) / (4 * step)).astype(dtype)
    log_ratio = extra.U - u1 + log_q_bwd - log_q_fwd
    accept_prob = jnp.minimum(1.0, jnp.exp(jnp.minimum(log_ratio, 0.0))).astype(dtype)
    key_u = jax.random.fold_in(jax.random.fold_in(chain_key, state.step), 1 << 29)
    accept = jax.random.uniform(key_u, (), dtype) < accept_prob
    accept = accept & jnp.isfinite(u1)

    def pick(a, b):
        return jnp.where(accept, a, b)

    new_params = jax.tree.map(pick, treedef.unflatten(prop), state.params)
    new_extra = MALAState(grad=jax.tree.map(pick, g1, extra.grad), U=pick(u1, extra.U),
                          sse=pick(sse1, extra.sse))
    info = StepInfo(sse=extra.sse, potential=extra.U, accept_prob=accept_prob)
    return ChainState(new_params, state.step + jnp.int32(1), new_extra), info


class IntegratorDef(NamedTuple):
    """One Langevin integrator, blackjax style: a pair of pure, jittable functions.

    init(potential, params, chain_key, step, precond, integrator) -> its state at `params`
        (any pytree of arrays, typically a NamedTuple; None when it keeps none). Random draws
        come from keys of its own, derived from (chain_key, step), never from the steps'
        noise stream `fold_in(chain_key, t)`.
    step(potential, state, chain_key, lr, precond, integrator) -> (ChainState, StepInfo):
        one step from a `ChainState` whose `extra` is init's state (the signature of
        `ula_step`); `integrator` carries the options (friction).

    A job's checkpoint saves and restores any pytree state leaf by leaf, so a new integrator
    is one module-level step (and init) plus one entry of `INTEGRATORS`.
    """

    init: Callable[..., Any]
    step: Callable[..., tuple[ChainState, StepInfo]]


# The registry: name -> (init, step). fleos.config.INTEGRATORS lists the same names for the
# config's validation (config sits below sampling in the import tiers; tests/test_workflow.py
# checks that the two agree and that the schema's enum is that list).
INTEGRATORS: dict[str, IntegratorDef] = {
    "ula": IntegratorDef(no_state, ula_step),
    "lm": IntegratorDef(no_state, lm_step),
    "baoab": IntegratorDef(baoab_init, baoab_step),
    "mala": IntegratorDef(mala_init, mala_step),
}


def integrator_def(integrator: Integrator) -> IntegratorDef:
    """The registry entry of `integrator`; ValueError naming the known ones otherwise."""
    try:
        return INTEGRATORS[integrator.name]
    except KeyError:
        raise ValueError(f"integrator must be one of {list(INTEGRATORS)}, got "
                         f"{integrator.name!r}") from None


def init_extra(
    potential: PotentialFn,
    params: Params,
    chain_key: Array,
    step: Any = 0,
    *,
    integrator: Integrator = ULA,
    precond: Params | None = None,
) -> Any:
    """The state of `integrator` at `params` (its `IntegratorDef.init`): None for "ula" and
    "lm", `MALAState`, `BAOABState`."""
    return integrator_def(integrator).init(potential, params, chain_key, step, precond,
                                           integrator)


def integrator_step(
    potential: PotentialFn,
    state: ChainState,
    chain_key: Array,
    lr: Any,
    precond: Params | None = None,
    integrator: Integrator = ULA,
) -> tuple[ChainState, StepInfo]:
    """One step of `integrator` (its `IntegratorDef.step`; see `Integrator`)."""
    return integrator_def(integrator).step(potential, state, chain_key, lr, precond,
                                           integrator)


def run_steps(
    potential: PotentialFn,
    state: ChainState,
    chain_key: Array,
    lr: Any,
    n_steps: int,
    *,
    precond: Params | None = None,
    accumulate: Callable[[Any, ChainState, StepInfo], Any] | None = None,
    acc: Any = None,
    integrator: Integrator = ULA,
) -> tuple[ChainState, Any, Array]:
    """`n_steps` (static) steps of `integrator` at a fixed lr in one `lax.scan`; pure, jittable.

    After every step `acc = accumulate(acc, new_state, info)` (if given), where `info` holds
    sse and U at the pre-step parameters. Returns (final state, acc, sse trace of shape
    (n_steps,), entry t = sse before step t of this chunk). Because the noise is keyed by the
    global step, one chunk of 2k steps equals two chunks of k steps exactly. A state without
    the integrator's `extra` gets it from `init_extra` first.
    """
    n_steps = int(n_steps)
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    spec = integrator_def(integrator)
    if state.extra is None:
        state = state._replace(extra=spec.init(potential, state.params, chain_key, state.step,
                                               precond, integrator))

    def body(carry, _):
        st, a = carry
        new, info = spec.step(potential, st, chain_key, lr, precond, integrator)
        if accumulate is not None:
            a = accumulate(a, new, info)
        return (new, a), info.sse

    (state, acc), sse = jax.lax.scan(body, (state, acc), None, length=n_steps)
    return state, acc, sse


def _ensemble(potential, states, chain_keys, lrs, acc, precond, acc_data, n_steps, accumulate,
              integrator):
    fn = accumulate if acc_data is None else accumulate(acc_data)

    def one(st, k, lr, a):
        return run_steps(
            potential, st, k, lr, n_steps, precond=precond, accumulate=fn, acc=a,
            integrator=integrator,
        )

    step_axis = None if jnp.ndim(states.step) == 0 else 0
    return jax.vmap(one, in_axes=(ChainState(0, step_axis, 0), 0, 0, 0))(
        states, chain_keys, lrs, acc)


# Potential objects are pytrees (data passed as arguments); plain callables are static.
_STATIC = ("n_steps", "accumulate", "integrator")
_ensemble_pytree = jax.jit(_ensemble, static_argnames=_STATIC)
_ensemble_static = jax.jit(_ensemble, static_argnames=("potential", *_STATIC))


def run_ensemble(
    potential: PotentialFn,
    states: ChainState,
    chain_keys: Array,
    lrs: Any,
    n_steps: int,
    *,
    precond: Params | None = None,
    accumulate: Callable[..., Any] | None = None,
    acc: Any = None,
    acc_data: Any = None,
    integrator: Integrator = ULA,
    chain_batch: int | None = None,
) -> tuple[ChainState, Any, Array]:
    """`jax.jit(jax.vmap(run_steps))` over a leading chain axis: the one runner of chain
    ensembles (tests, benchmarks and the job driver `fleos.sampling.experiment`).

    states, chain_keys and acc carry a leading chain axis; `states.step` is either per chain
    (chains,) or one scalar shared by all chains (they advance in lockstep): a shared step
    is not mapped, so a `lax.cond` of the accumulator on the step stays a real branch under
    vmap instead of a select that evaluates both sides. `lrs` is a per-chain array of shape
    (chains,) or a scalar (broadcast). `precond` is shared by all chains. `accumulate`
    (static) is `accumulate(acc, state, info)`; with `acc_data` (a pytree shared by all
    chains) it is a factory called inside the compiled program, `accumulate(acc_data)(acc,
    state, info)` (e.g. `Recorder.accumulator`), so those data are runtime arguments and not
    constants baked into the program. `chain_batch`: vmap this many chains per compiled
    call, the groups one after the other (`map_chains`; None = all; `auto_chain_batch`).
    Returns (states with a per-chain step, acc, sse traces of shape (chains, n_steps)).
    Compiled once per (tree structure, shapes, n_steps, accumulate, integrator); pass a
    `Potential` from `make_potential` so that the data are runtime arguments (a plain
    callable is treated as static and recompiles per object).
    """
    n_chains = chain_keys.shape[0]
    lrs = jnp.broadcast_to(jnp.asarray(lrs), (n_chains,))
    fn = _ensemble_pytree if isinstance(potential, Potential) else _ensemble_static
    shared_step = jnp.ndim(states.step) == 0

    def group(st, k, lr, a):
        if shared_step:
            st = st._replace(step=states.step)
        return fn(potential, st, k, lr, a, precond, acc_data, n_steps=int(n_steps),
                  accumulate=accumulate, integrator=integrator)

    mapped = states._replace(step=None) if shared_step else states
    return map_chains(group, (mapped, chain_keys, lrs, acc), chain_batch)


def stiffest_curvature(
    potential: PotentialFn,
    params: Params,
    n_iter: int = 50,
    key: Array | None = None,
    precond: Params | None = None,
) -> float:
    """Largest eigenvalue λ_max of the (preconditioned) Hessian P^½ ∇²U P^½ at `params`.

    Power iteration on exact Hessian-vector products (jvp of grad). ULA is stable only for
    η λ_max < 2, and its stationary variance along that direction is inflated by
    1/(1 − η λ_max/2) (docs/langevin.md); the paper's FCN protocol starts at half the largest
    stable lr, η0 = 1/λ_max. Power iteration converges to the eigenvalue of largest |λ|; near a
    minimum of U the Hessian is positive semi-definite there, so this is λ_max. `precond` as in
    `ula_step` (None: P = 1).
    """
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    if precond is None:
        sqrt_p = jnp.ones_like(flat)
    else:
        _check_same_tree(params, precond, "precond")
        sqrt_p = jax.flatten_util.ravel_pytree(
            jax.tree.map(lambda x, q: jnp.full(x.shape, q, x.dtype) ** 0.5, params, precond)
        )[0]
    key = jax.random.PRNGKey(0) if key is None else key

    def hvp(pot, x0, sp, v):
        def grad_flat(x):
            g = jax.grad(lambda p: pot(p)[0])(unravel(x))
            return jax.flatten_util.ravel_pytree(g)[0]

        return sp * jax.jvp(grad_flat, (x0,), (sp * v,))[1]

    # Pass data and parameters as arguments: closing over them makes XLA constant-fold the
    # whole forward pass at compile time (seconds at the paper's size).
    if isinstance(potential, Potential):
        hvp_j = jax.jit(hvp)
        args = (potential, flat, sqrt_p)
    else:
        hvp_j = jax.jit(lambda x0, sp, v: hvp(potential, x0, sp, v))
        args = (flat, sqrt_p)
    v = jax.random.normal(key, flat.shape, dtype=flat.dtype)
    v = v / jnp.linalg.norm(v)
    lam = 0.0
    for _ in range(int(n_iter)):
        w = hvp_j(*args, v)
        lam = float(jnp.vdot(v, w))
        v = w / jnp.linalg.norm(w)
    return lam


# --------------------------------------------------------------------------------------------
# Discretization check (Methods: "increasing the last reduction of learning rate by an
# additional factor of 2 did not have any appreciable effect").


@dataclass(frozen=True)
class DiscretizationCheck:
    """Per-observable comparison of ensembles run at lr and lr/2 (same Langevin time).

    Each field is a dict name -> array with the observable's shape. `se` is the standard error
    of `diff`, from the pooled variance and the multi-chain effective sample size of each run
    (`fleos.core.diagnostics.effective_sample_size`); `z = diff / se`; `rhat` is the split-R̂ of
    each run (max of the two), which should be close to 1 for `se` to be trusted.
    """

    lr: float
    mean: dict[str, np.ndarray]
    mean_half: dict[str, np.ndarray]
    diff: dict[str, np.ndarray]
    se: dict[str, np.ndarray]
    z: dict[str, np.ndarray]
    ess: dict[str, np.ndarray]
    rhat: dict[str, np.ndarray]

    def max_abs_z(self) -> float:
        """Largest |z| over all observables and components."""
        return float(max(np.max(np.abs(v)) for v in self.z.values()))


def _observable_traces(
    potential, states, keys, lr, precond, obs_fn, n_burn, n_samples, thin, chunks_per_record
) -> dict[str, np.ndarray]:
    """Run `n_burn` steps, then record `obs_fn` every `thin`·chunks_per_record steps.

    All device work is done in chunks of exactly `thin` steps so that one compiled program
    serves burn-in, sampling and both step sizes of `discretization_check`.
    """
    for _ in range(-(-n_burn // thin)):
        states, _, _ = run_ensemble(potential, states, keys, lr, thin, precond=precond)
    rec: dict[str, list[np.ndarray]] = {}
    for _ in range(n_samples):
        for _ in range(chunks_per_record):
            states, _, _ = run_ensemble(potential, states, keys, lr, thin, precond=precond)
        for name, val in obs_fn(states.params).items():
            rec.setdefault(name, []).append(np.asarray(val, dtype=np.float64))
    # (time, chains, ...) -> (chains, time, ...)
    return {k: np.moveaxis(np.stack(v), 0, 1) for k, v in rec.items()}


def _mean_se_ess_rhat(trace: np.ndarray) -> tuple[np.ndarray, ...]:
    """trace (chains, time, ...) -> per-component mean, standard error, ESS and split-R̂."""
    c, t = trace.shape[:2]
    shape = trace.shape[2:]
    flat = trace.reshape(c, t, -1)
    means, ses, esss, rhats = [], [], [], []
    for j in range(flat.shape[2]):
        x = flat[:, :, j]
        ess = effective_sample_size(x)
        means.append(x.mean())
        ses.append(math.sqrt(x.var(ddof=1) / ess))
        esss.append(ess)
        rhats.append(split_rhat(x))
    return tuple(np.asarray(a).reshape(shape) for a in (means, ses, esss, rhats))


def discretization_check(
    potential: PotentialFn,
    init_states: ChainState,
    chain_keys: Array,
    lr: float,
    observables: Callable[[Params], Mapping[str, Array]],
    *,
    n_burn: int,
    n_samples: int,
    thin: int,
    precond: Params | None = None,
) -> DiscretizationCheck:
    """The paper's discretization check: does halving the final lr change any observable?

    Runs the ensemble `init_states` (leading chain axis) at `lr` for `n_burn` steps and then
    records `observables(params) -> {name: array}` every `thin` steps, `n_samples` times; then
    repeats from the same initial states with lr/2, twice the steps and independent noise
    (keys folded with 1), i.e. the same Langevin time. Returns per observable the two means,
    their difference, its standard error (pooled variance / multi-chain ESS, added in
    quadrature for the two independent runs) and z = diff/se. |z| ≲ 3 everywhere means the
    O(lr) ULA bias is below the statistical error at this lr.
    """
    n_burn, n_samples, thin = int(n_burn), int(n_samples), int(thin)
    if n_burn < 0 or n_samples < 4 or thin < 1:
        raise ValueError(
            f"need n_burn >= 0, n_samples >= 4, thin >= 1; got {n_burn}, {n_samples}, {thin}"
        )
    obs_fn = jax.jit(jax.vmap(observables))
    tr = _observable_traces(
        potential, init_states, chain_keys, lr, precond, obs_fn, n_burn, n_samples, thin, 1
    )
    half_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(chain_keys)
    tr_h = _observable_traces(
        potential, init_states, half_keys, lr / 2, precond, obs_fn, 2 * n_burn, n_samples,
        thin, 2,
    )
    out: dict[str, dict[str, np.ndarray]] = {
        k: {} for k in ("mean", "mean_half", "diff", "se", "z", "ess", "rhat")
    }
    for name in tr:
        m1, s1, e1, r1 = _mean_se_ess_rhat(tr[name])
        m2, s2, e2, r2 = _mean_se_ess_rhat(tr_h[name])
        se = np.sqrt(s1**2 + s2**2)
        out["mean"][name] = m1
        out["mean_half"][name] = m2
        out["diff"][name] = m2 - m1
        out["se"][name] = se
        out["z"][name] = (m2 - m1) / se
        out["ess"][name] = np.minimum(e1, e2)
        out["rhat"][name] = np.maximum(r1, r2)
    return DiscretizationCheck(lr=float(lr), **out)


__all__ = [
    "INTEGRATORS",
    "BAOABState",
    "ChainState",
    "Integrator",
    "IntegratorDef",
    "DiscretizationCheck",
    "MALAState",
    "Potential",
    "StepInfo",
    "discretization_check",
    "baoab_init",
    "baoab_step",
    "init_extra",
    "init_state",
    "integrator_def",
    "integrator_step",
    "lm_step",
    "mala_init",
    "mala_step",
    "no_state",
    "make_potential",
    "run_ensemble",
    "run_steps",
    "stiffest_curvature",
    "ula_step",
]
