"""Myrtle-5's 3×3 convolution on CPU, inside and outside a `lax.scan`: XLA's convolution against
the nine shifted GEMMs (`conv_impl="taps"`, what `auto` picks on CPU).

The sampler runs its steps in a `lax.scan`. This times one `value_and_grad` of the training SSE
of `fleos.nets.models.Myrtle5`, for 1 and 4 vmapped chains, once called step by step from Python
and once as the body of a scan (each step moves the weights by a tiny multiple of the gradient so
that the loop cannot be hoisted). Rounds alternate between the implementations. Run with the
workflow's XLA flags on one core, e.g.

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        taskset -c 1 .venv/bin/python bench/bench_conv_in_scan.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

import fleos  # noqa: F401 - enables x64; the benchmark stays in float32
from fleos.nets.models import Myrtle5


def _loss_and_grad(model: Myrtle5, X: jax.Array, y: jax.Array):
    def sse(params):
        out, _ = model.forward(params, X)
        return 0.5 * jnp.sum((out - y) ** 2)
    return jax.value_and_grad(sse)


def _programs(model: Myrtle5, X, y, chains: int, steps: int):
    vg = _loss_and_grad(model, X, y)
    keys = jax.random.split(jax.random.key(0), chains)
    params = jax.vmap(lambda k: model.init_prior(k, jnp.float32))(keys)

    def loop(p):
        def body(q, _):
            loss, g = vg(q)
            return jax.tree.map(lambda a, b: a - 1e-9 * b, q, g), loss
        return jax.lax.scan(body, p, None, length=steps)

    scan_run = jax.jit(jax.vmap(loop))
    step_run = jax.jit(jax.vmap(vg))

    def in_scan():
        jax.block_until_ready(scan_run(params))

    def stepwise():
        out = None
        for _ in range(steps):
            out = step_run(params)
        jax.block_until_ready(out)

    return {"in scan": in_scan, "step by step": stepwise}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=32, help="training images (default: the stand-in's)")
    p.add_argument("--hw", type=int, default=8, help="image height = width (8: the digits)")
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--width", type=int, default=16, help="channels C")
    p.add_argument("--chains", type=int, nargs="+", default=[1, 4])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    X = jax.random.normal(jax.random.key(1), (args.n, args.hw, args.hw, args.in_channels),
                          jnp.float32)
    y = jnp.zeros((args.n,), jnp.float32)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
          f"jax {jax.__version__} {jax.default_backend()}, load "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg()[:2])}; Myrtle-5 n={args.n}, "
          f"{args.hw}×{args.hw}×{args.in_channels}, C={args.width}, {args.steps} steps, "
          f"{args.rounds} interleaved rounds; XLA_FLAGS {os.environ.get('XLA_FLAGS', '')!r}\n")
    print("| chains | program | conv | ms per step (median round) | best round |")
    print("|---|---|---|---|---|")
    for chains in args.chains:
        progs = {impl: _programs(Myrtle5(width=args.width, in_channels=args.in_channels,
                                         conv_impl=impl), X, y, chains, args.steps)
                 for impl in ("xla", "taps")}
        for impl in progs:                    # compile outside the timed rounds
            for fn in progs[impl].values():
                fn()
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for impl, fns in progs.items():
                for name, fn in fns.items():
                    t0 = time.perf_counter()
                    fn()
                    times.setdefault((name, impl), []).append(
                        (time.perf_counter() - t0) / args.steps * 1e3)
        for (name, impl), ts in sorted(times.items()):
            print(f"| {chains} | {name} | {impl} | {statistics.median(ts):.2f} | {min(ts):.2f} |")


if __name__ == "__main__":
    main()
