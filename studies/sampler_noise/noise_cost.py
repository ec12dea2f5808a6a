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
3. the laptop CNN3 job's BAOAB step (`run_steps`, one chain, built by `experiment.job_setup`)
   with its noise drawn as the sampler draws it, flat per leaf, flat per leaf behind an
   optimization barrier, in one flat draw for all leaves, and with no noise at all (not a
   sampler: the cost floor); each variant's parameters after the timed steps compared bit for
   bit with the sampler's.
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


def cnn3_step(data: str, steps: int, rounds: int = 5) -> None:
    n = int(np.load(data)["X"].shape[0])
    exp = experiment_from_file("config/config.yaml", "cnn3",
                               ["experiments.cnn3.sampler.schedule.burn_in=0"])
    with tempfile.TemporaryDirectory() as out_dir:
        su = ex.job_setup(exp, JobSpec("cnn3", n, 32, (0,)), data, Path(out_dir) / "unused.h5")
    start = S.ChainState(su.params0, jnp.int32(0), su.extra0)
    lr = jnp.asarray(su.sched.lr(su.sched.init()), su.dtype)
    print("## 3. The laptop CNN3 job's BAOAB step (one chain, µs per step)\n")
    print(f"leaves {[tuple(a.shape[1:]) for a in jax.tree.leaves(su.params0)]}; "
          f"{rounds} timed rounds, interleaved, every other one in reverse order; median\n")
    original = S._noise
    variants = [("as sampled (threefry per leaf, leaf shape)", original),
                ("flat per leaf, reshaped", _noise_flat),
                ("flat per leaf, optimization barrier", _noise_flat_barrier),
                ("one flat draw for all leaves", _noise_one_draw),
                ("none (not a sampler: the floor)", _noise_zero)]
    programs, finals = {}, {}
    try:
        for name, fn in variants:
            S._noise = fn  # read by baoab_step when traced: each program is traced with its own

            def run(st, key):
                return S.run_steps(su.potential, st, key, lr, steps, precond=su.precond,
                                   integrator=su.integrator)[0].params

            programs[name] = jax.jit(jax.vmap(run, in_axes=(S.ChainState(0, None, 0), 0)))
            finals[name] = jax.block_until_ready(programs[name](start, su.keys))  # compiles
    finally:
        S._noise = original
    times: dict[str, list[float]] = {name: [] for name in programs}
    for r in range(rounds):
        for name in (list(programs) if r % 2 == 0 else list(programs)[::-1]):
            t0 = time.perf_counter()
            jax.block_until_ready(programs[name](start, su.keys))
            times[name].append(time.perf_counter() - t0)
    ref = jax.tree.leaves(finals[variants[0][0]])
    print(f"| noise | µs per step | parameters after {steps} steps bit-identical to the "
          "sampler's |")
    print("|---|---|---|")
    for name in programs:
        same = all(np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(ref, jax.tree.leaves(finals[name]), strict=True))
        print(f"| {name} | {1e6 * statistics.median(times[name]) / steps:.0f} | "
              f"{'yes' if same else 'no'} |")
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
