"""What the sampler's Gaussian noise costs on this CPU, and what would make it cheaper.

Run by hand from the repository root, on one core with the workflow's flags:

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
    taskset -c 1 .venv/bin/python studies/sampler_noise/noise_cost.py \\
        --cnn3-data results/data/cnn3/n100.npz > studies/sampler_noise/noise_cost.md

Three measurements (µs per draw or per step, median of 5 timed calls after one compiling
call; every draw is summed in full so that XLA cannot drop unused numbers):

1. jax's generators: threefry (the default, ours), `rbg`, `unsafe_rbg`; raw bits against
   normals.
2. threefry over a leaf's own shape against the same numbers drawn flat and reshaped (the values
   are identical; checked here), for the laptop and paper CNN3 and FCN leaves.
3. the laptop CNN3 job's BAOAB step (`run_ensemble`, one chain) with its noise drawn as now,
   flat per leaf, flat per leaf behind an optimization barrier, in one flat draw for all leaves
   (a different random stream), and with no noise at all (not a sampler: the cost floor).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fleos  # noqa: F401 - x64 on, as in every fleos process
from fleos.config import JobSpec, experiment_from_file
from fleos.sampling import experiment as ex
from fleos.sampling import sampler as S


def _median_us(fn, per: int, reps: int = 5) -> float:
    jax.block_until_ready(fn())
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(ts) / per


def _draw_loop(draw, steps: int, impl: str = "threefry2x32"):
    """jit(vmap over 1 chain) of `steps` draws `draw(key_t)` (key_t: the step's key of the
    generator `impl`), each summed in full."""
    def loop(key):
        def body(c, t):
            return c + sum(z.astype(jnp.float32).sum()
                           for z in draw(jax.random.fold_in(key, t))), None
        return jax.lax.scan(body, jnp.zeros((), jnp.float32), jnp.arange(steps))[0]
    f = jax.jit(jax.vmap(loop))
    keys = jax.random.split(jax.random.key(0, impl=impl), 1)
    return lambda: f(keys)


def generators(steps: int) -> None:
    print("## 1. jax's generators (µs per draw of n float32 numbers)\n")
    print("| n | threefry bits | threefry normal | rbg normal | unsafe_rbg normal |")
    print("|---|---|---|---|---|")
    for n in (18_560, 1_100_000):
        reps = steps if n < 10**5 else max(steps // 20, 10)
        row = [_median_us(_draw_loop(lambda k, n=n: [jax.random.bits(k, (n,), jnp.uint32)],
                                     reps), reps)]
        for impl in ("threefry2x32", "rbg", "unsafe_rbg"):
            row.append(_median_us(_draw_loop(
                lambda k, n=n: [jax.random.normal(k, (n,), jnp.float32)], reps, impl), reps))
        print(f"| {n} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    print()


def shapes(steps: int) -> None:
    print("## 2. One leaf: threefry over its shape against the same numbers drawn flat\n")
    print("| leaf shape | values equal | shaped, µs | flat, µs |")
    print("|---|---|---|---|")
    for shape in [(32, 32, 6), (32, 10), (32, 2), (16, 128), (128, 128), (100, 100, 30),
                  (1000, 128)]:
        size = math.prod(shape)
        reps = steps if size < 10**5 else max(steps // 20, 10)
        k = jax.random.key(7)
        equal = all(bool(jnp.array_equal(jax.random.normal(k, shape, dt),
                                         jax.random.normal(k, (size,), dt).reshape(shape)))
                    for dt in (jnp.float32, jnp.float64))
        shaped = _median_us(_draw_loop(
            lambda k, s=shape: [jax.random.normal(k, s, jnp.float32)], reps), reps)
        flat = _median_us(_draw_loop(
            lambda k, n=size: [jax.random.normal(k, (n,), jnp.float32)], reps), reps)
        print(f"| {shape} | {equal} | {shaped:.1f} | {flat:.1f} |")
    print()


def _noise_flat(chain_key, step, leaves):
    keys = jax.random.split(jax.random.fold_in(chain_key, step), len(leaves))
    return [jax.random.normal(k, (p.size,), p.dtype).reshape(p.shape)
            for k, p in zip(keys, leaves, strict=True)]


def _noise_flat_barrier(chain_key, step, leaves):
    keys = jax.random.split(jax.random.fold_in(chain_key, step), len(leaves))
    flat = jax.lax.optimization_barrier(
        [jax.random.normal(k, (p.size,), p.dtype) for k, p in zip(keys, leaves, strict=True)])
    return [z.reshape(p.shape) for z, p in zip(flat, leaves, strict=True)]


def _noise_one_draw(chain_key, step, leaves):
    z = jax.random.normal(jax.random.fold_in(chain_key, step), (sum(p.size for p in leaves),),
                          leaves[0].dtype)
    out, i = [], 0
    for p in leaves:
        out.append(z[i:i + p.size].reshape(p.shape))
        i += p.size
    return out


def _noise_zero(chain_key, step, leaves):
    del chain_key, step
    return [jnp.zeros_like(p) for p in leaves]


def cnn3_step(data: str, steps: int) -> None:
    n = int(np.load(data)["X"].shape[0])
    exp = experiment_from_file("config/config.yaml", "cnn3",
                               ["experiments.cnn3.sampler.schedule.burn_in=0"])
    su = ex._set_up(exp, JobSpec("cnn3", n, 32, (0,)), data,
                    Path(tempfile.mkdtemp()) / "unused.h5", None, emit=lambda s: None)
    start = S.ChainState(su.params0, jnp.int32(0), su.extra0)
    lrs = jnp.full((1,), su.sched.lr(su.sched.init()), su.dtype)
    print("## 3. The laptop CNN3 job's BAOAB step (one chain, µs per step)\n")
    print(f"leaves {[tuple(a.shape[1:]) for a in jax.tree.leaves(su.params0)]}\n")
    print("| noise | µs per step | same stream |")
    print("|---|---|---|")
    original = S._noise
    variants = [("as sampled (threefry per leaf, leaf shape)", original, "yes"),
                ("flat per leaf, reshaped", _noise_flat, "yes"),
                ("flat per leaf, optimization barrier", _noise_flat_barrier, "yes"),
                ("one flat draw for all leaves", _noise_one_draw, "no"),
                ("none (not a sampler: the floor)", _noise_zero, "no")]
    try:
        for name, fn, same in variants:
            S._noise = fn  # read at trace time by baoab_step; each variant retraces
            S._ensemble_pytree.clear_cache()
            us = _median_us(lambda: S.run_ensemble(
                su.potential, start, su.keys, lrs, steps, precond=su.precond,
                integrator=su.integrator, chain_batch=1), steps)
            print(f"| {name} | {us:.0f} | {same} |")
    finally:
        S._noise = original
        S._ensemble_pytree.clear_cache()
    print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cnn3-data", required=True, help="the laptop CNN3 data file (n = 100)")
    p.add_argument("--steps", type=int, default=1000)
    args = p.parse_args()
    print(f"# Noise cost: jax {jax.__version__} on {jax.default_backend()}\n")
    generators(args.steps)
    shapes(args.steps)
    cnn3_step(args.cnn3_data, args.steps)


if __name__ == "__main__":
    main()
