"""Langevin sampler throughput for the 2-layer CNN of Eq. 7, and the float32 matmul peak.

Run by hand (never in CI):

    .venv/bin/python bench/bench_sampler.py [--paper-steps 200] [--laptop-steps 5000]

Prints a Markdown table for bench/RESULTS.md: steps/s (one step = one full-batch ULA epoch of
`fleos.sampler`, value-and-grad of U plus the noise) for 1 chain and an ensemble of 8 vmapped
chains, at the paper's size (n=1600, S=64, N=20, C=640) and the laptop size (n=256, S=16, N=8,
C=64), with the achieved FLOP/s next to the measured float32 matmul peak.

FLOP count per chain and step (matmuls of forward + backward only; elementwise erf, noise and
reductions are not counted, so the achieved figure is a lower bound on the work done):
    forward  h = x_i · w_c           2 n N S C
             f = Σ a_ic erf(h_ic)     2 n N C
    backward ∂U/∂w = Σ δh_ic x_i      2 n N S C
             ∂U/∂a = Σ δf erf(h)      2 n N C
    total    4 n N C (S + 1)
Also reports λ_max of the Hessian of U at a prior draw (`fleos.sampler.stiffest_curvature`),
i.e. the largest stable lr 2/λ_max for that data and width.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import fleos  # noqa: F401 - enables x64 (the sampler must stay float32 regardless)
from fleos.nets.models import build_model
from fleos.sampling.sampler import ChainState, make_potential, run_ensemble, stiffest_curvature

SIZES = {
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


def bench_sampler(size: str, n_chains: int, steps: int, chunk: int, lr: float) -> dict:
    pot, states, keys, p, _ = setup(size, n_chains)
    t_compile = _timed(
        lambda: jax.block_until_ready(run_ensemble(pot, states, keys, lr, chunk))
    )
    n_chunks = max(1, steps // chunk)
    st, sse = states, None

    def go():
        nonlocal st, sse
        for _ in range(n_chunks):
            st, _, sse = run_ensemble(pot, st, keys, lr, chunk)
        jax.block_until_ready(st)

    wall = _timed(go)
    total = n_chunks * chunk
    sps = total / wall
    finite = bool(np.all(np.isfinite(np.asarray(sse))))
    return {
        "size": size, "chains": n_chains, "steps": total, "wall_s": wall,
        "compile_s": t_compile, "steps_per_s": sps, "chain_steps_per_s": sps * n_chains,
        "gflops": flops_per_step(p["n"], p["S"], p["N"], p["C"]) * n_chains * sps / 1e9,
        "finite": finite,
    }


def curvature(size: str, C: int | None = None, prior_precond: bool = False) -> float:
    """λ_max of ∇²U (or of P^½∇²U P^½ with P = prior variances) at a prior draw."""
    pot, states, _, _, model = setup(size, 1, C=C)
    params = jax.tree.map(lambda a: a[0], states.params)
    precond = model.prior_variances() if prior_precond else None
    return stiffest_curvature(pot, params, n_iter=30, precond=precond)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laptop-steps", type=int, default=5000)
    ap.add_argument("--paper-steps", type=int, default=200)
    ap.add_argument("--skip-paper", action="store_true")
    args = ap.parse_args()

    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__}, "
          f"device {jax.devices()[0].device_kind}")
    print(f"loadavg before: {open('/proc/loadavg').read().split()[:3]}")
    peak = matmul_peak()
    print("\n| matmul m×m×m (float32) | GFLOP/s (best of 5) |\n|---|---|")
    for m, g in peak.items():
        print(f"| {m} | {g:.1f} |")
    best_peak = max(peak.values())

    rows = []
    for size, steps, chunk in (
        ("laptop", args.laptop_steps, 1000),
        ("paper", args.paper_steps, 50),
    ):
        if size == "paper" and args.skip_paper:
            continue
        lam = curvature(size)
        lr = 0.5 / lam  # well inside the stability limit 2/λ_max
        for chains in (1, 8):
            s = steps if chains == 1 else max(chunk, steps // 4)
            r = bench_sampler(size, chains, s, min(chunk, s), lr)
            r["lam_max"], r["lr"] = lam, lr
            rows.append(r)
            print(f"  done {size} x{chains}: {r['steps_per_s']:.1f} steps/s", flush=True)

    print("\n| size | chains | steps timed | compile + 1st chunk, s | steps/s | chain-steps/s "
          "| GFLOP/s | % of peak | λ_max(U) at prior | lr used |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['chains']} | {r['steps']} | {r['compile_s']:.1f} "
              f"| {r['steps_per_s']:.1f} | {r['chain_steps_per_s']:.1f} | {r['gflops']:.2f} "
              f"| {100 * r['gflops'] / best_peak:.0f} % | {r['lam_max']:.3g} "
              f"| {r['lr']:.2g} |")
        assert r["finite"], f"non-finite loss in {r}"
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
