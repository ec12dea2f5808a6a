"""Langevin sampler throughput for the 2-layer CNN of Eq. 7, and the float32 matmul peak.

Run by hand (never in CI):

    .venv/bin/python bench/bench_sampler.py [--paper-steps 80] [--laptop-steps 5000]
        [--rounds 3] [--layouts vmap,map,auto] [--skip-laptop] [--small-steps 0] [--curvature]

Prints Markdown tables for bench/RESULTS.md: chain-steps/s (one step = one full-batch BAOAB
epoch of `fleos.sampling.sampler`, value-and-grad of U plus the noise, prior preconditioner) for 1
chain and a job of 8 chains, at the paper's size (n=1600, S=64, N=20, C=640) and the laptop
size (n=256, S=16, N=8, C=64) and, with --small-steps, a small size (n=128, C=32: the
per-chain working set of the laptop FCN and CNN3 jobs), each in three layouts: "vmap" (all
chains vmapped, one data block), "map" (one chain at a time) and "auto"
(`sampler.chain_batch/data_blocks: auto`), with the achieved FLOP/s next to the
float32 matmul peak measured in the same run. Settings are timed in interleaved rounds, every
other round in reverse order.

FLOP count per chain and step (matmuls of forward + backward only; elementwise erf, noise and
reductions are not counted, so the achieved figure is a lower bound on the work done):
    forward  h = x_i · w_c           2 n N S C
             f = Σ a_ic erf(h_ic)     2 n N C
    backward ∂U/∂w = Σ δh_ic x_i      2 n N S C
             ∂U/∂a = Σ δf erf(h)      2 n N C
    total    4 n N C (S + 1)
With --curvature also reports λ_max of the Hessian of U at a prior draw
(`fleos.sampling.sampler.stiffest_curvature`), i.e. the largest stable lr 2/λ_max for that
data and width.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import fleos  # noqa: F401 - enables x64 (the sampler must stay float32 regardless)
from fleos.nets.models import build_model
from fleos.sampling.sampler import (
    ChainState,
    Integrator,
    auto_chain_batch,
    auto_data_blocks,
    make_potential,
    run_ensemble,
    stiffest_curvature,
)

SIZES = {
    "small": dict(n=128, S=16, N=8, C=32),  # ~ the laptop FCN/CNN3 jobs' 10⁴-10⁵ floats/chain
    "laptop": dict(n=256, S=16, N=8, C=64),
    "paper": dict(n=1600, S=64, N=20, C=640),
}
SIGMA2 = 0.1


def matmul_peak(sizes=(1024, 2048, 4096), reps: int = 5) -> dict[int, float]:
    """Best-of-`reps` float32 GFLOP/s of a jitted square matmul (2 m³ flops)."""
    out = {}
    for m in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (m, m), jnp.float32)
        b = jax.random.normal(jax.random.PRNGKey(1), (m, m), jnp.float32)
        f = jax.jit(jnp.dot)
        f(a, b).block_until_ready()
        best = min(
            _timed(lambda f=f, a=a, b=b: f(a, b).block_until_ready()) for _ in range(reps)
        )
        out[m] = 2 * m**3 / best / 1e9
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def flops_per_step(n: int, S: int, N: int, C: int) -> float:
    return 4.0 * n * N * C * (S + 1)


def setup(size: str, n_chains: int, seed: int = 0, C: int | None = None):
    p = dict(SIZES[size])
    if C is not None:
        p["C"] = C
    model = build_model(
        "cnn2", {"S": p["S"], "N": p["N"], "sigma_w2": 2.0, "sigma_a2": 2.0}, p["C"],
        param_dtype=jnp.float32,
    )
    kx, kt, kp = jax.random.split(jax.random.PRNGKey(seed), 3)
    X = jax.random.normal(kx, (p["n"], p["N"] * p["S"]), jnp.float32)
    # Linear teacher of the paper (Fig. 3): y = Σ_i a*_i (w*·x_i)
    ka, kw = jax.random.split(kt)
    a_star = jax.random.normal(ka, (p["N"],), jnp.float32) / np.sqrt(p["N"])
    w_star = jax.random.normal(kw, (p["S"],), jnp.float32) / np.sqrt(p["S"])
    y = X.reshape(p["n"], p["N"], p["S"]) @ w_star @ a_star

    def apply_fn(params, x):
        return model.forward(params, x)[0]

    pot = make_potential(apply_fn, model.prior_variances(), X, y, SIGMA2)
    params = jax.vmap(lambda k: model.init_prior(k, jnp.float32))(
        jax.random.split(kp, n_chains)
    )
    states = ChainState(params, jnp.zeros((n_chains,), jnp.int32))
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), n_chains)
    return pot, states, keys, p, model


LAYOUTS = ("vmap", "map", "auto")


def layout_of(layout: str, size: str, n_chains: int) -> tuple[int | None, int]:
    """(chain_batch, data_blocks): "vmap" = all chains vmapped, one data block (the layout
    without chain groups or data blocks); "map" = one chain at a time, auto data blocks; "auto" =
    `fleos.sampling.sampler.auto_chain_batch` / `auto_data_blocks` for this backend (what
    `sampler.chain_batch/data_blocks: auto` picks in a job)."""
    if layout == "vmap":
        return None, 1
    p = SIZES[size]
    per_row = p["N"] * p["C"]
    backend = jax.default_backend()
    b = 1 if layout == "map" else auto_chain_batch(n_chains, backend)
    return b, auto_data_blocks(p["n"], per_row, backend, chains=b)


def bench_sampler(size: str, chain_counts=(1, 8), steps: int = 1000, chunk: int = 1000,
                  lr: float | None = None, rounds: int = 3,
                  layouts: tuple[str, ...] = LAYOUTS) -> list[dict]:
    """chain-steps/s of every (chains, layout) at one size, timed in interleaved rounds (the
    best and the median round are reported, so a load spike on a shared machine hits one
    round, not one setting)."""
    cases = []
    for n_chains in chain_counts:
        pot, states, keys, p, model = setup(size, n_chains)
        if lr is None:
            lam = stiffest_curvature(pot, jax.tree.map(lambda a: a[0], states.params),
                                     n_iter=30, precond=model.prior_variances())
            lr = 0.5 / lam  # well inside the stability limit 2/λ_max (prior precond.)
        precond = model.prior_variances()
        for layout in layouts:
            chain_batch, blocks = layout_of(layout, size, n_chains)
            pot_l = make_potential(pot.apply_fn, pot.prior_variances, pot.X, pot.y, SIGMA2,
                                   data_blocks=blocks)
            s = max(1, steps // n_chains)  # the same chain-steps in every setting
            k = min(chunk, s)

            run = functools.partial(run_ensemble, pot_l, chain_keys=keys, lrs=lr, n_steps=k,
                                    precond=precond, integrator=Integrator("baoab", 1.0),
                                    chain_batch=chain_batch)
            # Prior draws carry no BAOAB force yet: the first call computes it (one extra
            # gradient per chain) with a program of its own. Time only from the second call on,
            # as in a job of thousands of steps; otherwise the 8-chain job, whose 10 steps per
            # chain are one call, pays that gradient on 10 steps and the 1-chain job on 80.
            t0 = time.perf_counter()
            warm, _, _ = jax.block_until_ready(run(states))
            jax.block_until_ready(run(warm))  # compiles the program the timed calls run
            t_compile = time.perf_counter() - t0
            cases.append({"size": size, "chains": n_chains, "layout": layout,
                          "chain_batch": chain_batch or n_chains, "data_blocks": blocks,
                          "run": run, "state": warm, "k": k, "n_chunks": max(1, s // k),
                          "compile_s": t_compile, "times": [], "finite": True,
                          "flop": flops_per_step(p["n"], p["S"], p["N"], p["C"])})
    for r in range(rounds):
        # every other round in reverse order: a setting that always runs right after another
        # (e.g. after the slow all-vmapped 8-chain job) would carry that position's bias
        for c in cases if r % 2 == 0 else cases[::-1]:
            def go(c=c):
                st = c["state"]
                for _ in range(c["n_chunks"]):
                    st, _, sse = c["run"](st)
                jax.block_until_ready(st)
                c["finite"] &= bool(np.all(np.isfinite(np.asarray(sse))))
            c["times"].append(_timed(go))
    rows = []
    for c in cases:
        total = c["n_chunks"] * c["k"]
        sps = total / min(c["times"])
        rows.append({k: c[k] for k in ("size", "chains", "layout", "chain_batch", "data_blocks",
                                       "compile_s", "finite")}
                    | {"steps": total, "steps_per_s": sps, "chain_steps_per_s": sps * c["chains"],
                       "chain_steps_per_s_median": total * c["chains"] / np.median(c["times"]),
                       "round_rates": total * c["chains"] / np.asarray(c["times"]),
                       "gflops": c["flop"] * c["chains"] * sps / 1e9})
    return rows


def curvature(size: str, C: int | None = None, prior_precond: bool = False) -> float:
    """λ_max of ∇²U (or of P^½∇²U P^½ with P = prior variances) at a prior draw."""
    pot, states, _, _, model = setup(size, 1, C=C)
    params = jax.tree.map(lambda a: a[0], states.params)
    precond = model.prior_variances() if prior_precond else None
    return stiffest_curvature(pot, params, n_iter=30, precond=precond)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laptop-steps", type=int, default=5000)
    ap.add_argument("--small-steps", type=int, default=0, help="chain-steps per setting at "
                    "the small size (n=128, C=32); 0 skips it")
    ap.add_argument("--paper-steps", type=int, default=80, help="chain-steps per setting at "
                    "paper size; 80 = 10-step calls for both jobs (see the loop below)")
    ap.add_argument("--skip-paper", action="store_true")
    ap.add_argument("--skip-laptop", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best "
                    "of)")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated subset of "
                    f"{LAYOUTS} (default: all)")
    ap.add_argument("--curvature", action="store_true", help="also tabulate λ_max (slow)")
    args = ap.parse_args()
    layouts = tuple(args.layouts.split(","))
    if not layouts or any(x not in LAYOUTS for x in layouts):
        ap.error(f"--layouts: each must be one of {LAYOUTS}, got {args.layouts!r}")

    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__}, "
          f"device {jax.devices()[0].device_kind}")
    print(f"loadavg before: {open('/proc/loadavg').read().split()[:3]}")
    print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '(unset: XLA default thread pool)')}")
    peak = matmul_peak()
    print("\n| matmul m×m×m (float32) | GFLOP/s (best of 5) |\n|---|---|")
    for m, g in peak.items():
        print(f"| {m} | {g:.1f} |")
    best_peak = max(peak.values())

    rows = []
    for size, steps, chunk in (
        ("small", args.small_steps, 1000),
        ("laptop", args.laptop_steps, 1000),
        ("paper", args.paper_steps, 10),  # 10-step calls: the 8-chain job (10 steps per chain) and
        # the 1-chain job then run the same compiled program the same number of times
    ):
        if ((size == "paper" and args.skip_paper) or (size == "laptop" and args.skip_laptop)
                or (size == "small" and not steps)):
            continue
        rows += bench_sampler(size, (1, 8), steps, chunk, rounds=args.rounds, layouts=layouts)
        print(f"  done {size}", flush=True)

    print("\n| size | chains | layout (chains vmapped × data blocks) | steps timed "
          "| compile + 2 chunks, s | chain-steps/s (best round) | median round | GFLOP/s (best) "
          "| % of peak |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['chains']} | {r['layout']} ({r['chain_batch']} × "
              f"{r['data_blocks']}) | {r['steps']} | {r['compile_s']:.1f} "
              f"| {r['chain_steps_per_s']:.1f} | {r['chain_steps_per_s_median']:.1f} "
              f"| {r['gflops']:.1f} "
              f"| {100 * r['gflops'] / best_peak:.0f} % |")
        assert r["finite"], f"non-finite loss in {r}"
    print("\nPaired by round (both timed in the same round, so a load change hits both): "
          "chain-steps/s of the 8-chain job / the 1-chain job, same size and layout.\n\n"
          "| size | layout | median ratio | min–max over rounds |\n|---|---|---|---|")
    for r8 in (r for r in rows if r["chains"] == 8):
        r1 = next(r for r in rows if r["chains"] == 1 and r["size"] == r8["size"]
                  and r["layout"] == r8["layout"])
        q = r8["round_rates"] / r1["round_rates"]
        print(f"| {r8['size']} | {r8['layout']} | {np.median(q):.2f} "
              f"| {q.min():.2f}–{q.max():.2f} |")
    if not args.curvature:
        print(f"\nloadavg after: {open('/proc/loadavg').read().split()[:3]}")
        return
    print("\n| size | C | λ_max(∇²U) | 2/λ_max | λ_max with P = prior variances | 2/λ_max (P) |"
          "\n|---|---|---|---|---|---|")
    for size, widths in (("laptop", (16, 64, 256)), ("paper", (640,))):
        if size == "paper" and args.skip_paper:
            continue
        for C in widths:
            lam, lam_p = curvature(size, C), curvature(size, C, prior_precond=True)
            print(f"| {size} | {C} | {lam:.3g} | {2 / lam:.2g} | {lam_p:.3g} | {2 / lam_p:.2g} |")
    print(f"\nloadavg after: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
