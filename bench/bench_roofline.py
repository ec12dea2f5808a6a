"""Where a paper-size 2-layer-CNN step spends its time: GEMMs against element-wise work.

Run by hand (never in CI):

    .venv/bin/python bench/bench_roofline.py [--rows 64] [--reps 20]

One data block of the paper's Fig. 3 network (`rows` training points, S = 64, N = 20,
C = 640; 64 rows is the block `sampler.data_blocks: auto` picks at n = 1600 on CPU), float32,
timed in one process, best of `reps` rounds that interleave the parts:

* gemm:  the two matrix products of a step, h = P W (forward) and Pᵀ δh (∂U/∂w), alone;
* elem:  the element-wise and reduction work on the same pre-activations, alone: erf(h),
         f = Σ a erf(h), the residual, δh = r a erf'(h) and ∂U/∂a = Σ r erf(h);
* full:  `jax.value_and_grad` of the block's data term, as the sampler computes it;
* by hand: the same value and gradient written out (forward GEMM, erf and erf', backward
         GEMM), checked against `full` in the same run: what a hand-written gradient of the
         2-layer CNN would buy.

The same cores do both parts, so a step's matmul FLOP rate is at most the GEMMs' own rate ×
t_gemm / (t_gemm + t_elem): the bound printed at the end, which caps the "% of GEMM peak" of
bench/RESULTS.md ("Chain layout") for erf networks on this CPU whatever the layout.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

import fleos  # noqa: F401
from fleos.core.kernels import patches

S, N, C = 64, 20, 640
SIGMA2 = 0.1


def _best(calls: dict, reps: int) -> dict:
    """Best-of-`reps` seconds of each `name: (fn, *args)`, the calls interleaved round by round
    (a load change on a shared machine then hits every part, not one)."""
    for fn, *a in calls.values():
        jax.block_until_ready(fn(*a))  # compile
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(reps):
        for name, (fn, *a) in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*a))
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    rows = args.rows
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    X = jax.random.normal(k[0], (rows, N * S), jnp.float32)
    y = jax.random.normal(k[1], (rows,), jnp.float32)
    w = jax.random.normal(k[2], (C, S), jnp.float32) * (2.0 / S) ** 0.5
    a = jax.random.normal(k[3], (N, C), jnp.float32) * (2.0 / (N * C)) ** 0.5
    P = patches(X, N, S).reshape(rows * N, S)  # (rows·N, S)
    h = (P @ w.T).reshape(rows, N, C)

    @jax.jit
    def gemm(P, w, G):
        return P @ w.T, P.T @ G

    @jax.jit
    def elem(h, a, y):
        phi = erf(h)
        f = jnp.einsum("bic,ic->b", phi, a)
        r = (f - y) / SIGMA2
        dh = r[:, None, None] * a * (2 / jnp.sqrt(jnp.pi)) * jnp.exp(-h * h)
        da = jnp.einsum("b,bic->ic", r, phi)
        return dh, da, r

    def data_term(params, X, y):
        hh = jnp.einsum("bis,cs->bic", patches(X, N, S), params["w"])
        f = jnp.einsum("bic,ic->b", erf(hh), params["a"])
        return jnp.sum((f - y) ** 2) / (2 * SIGMA2)

    full = jax.jit(jax.value_and_grad(data_term))

    @jax.jit
    def by_hand(params, X, y):
        """The same value and gradient written out: gemm's forward product, elem's
        element-wise work and gemm's backward product in one program (no autodiff)."""
        Pb = patches(X, N, S).reshape(-1, S)
        dh, da, r = elem((Pb @ params["w"].T).reshape(-1, N, C), params["a"], y)
        return 0.5 * SIGMA2 * jnp.sum(r * r), {"a": da, "w": dh.reshape(-1, C).T @ Pb}

    peak_m = 2048
    A = jax.random.normal(k[4], (peak_m, peak_m), jnp.float32)
    mm = jax.jit(jnp.dot)

    G = h.reshape(rows * N, C)
    params = {"w": w, "a": a}
    t = _best({"peak": (mm, A, A), "gemm": (gemm, P, w, G), "elem": (elem, h, a, y),
               "full": (full, params, X, y), "hand": (by_hand, params, X, y)}, args.reps)
    t_peak, t_gemm, t_elem, t_full, t_hand = (t[k] for k in ("peak", "gemm", "elem", "full",
                                                             "hand"))
    (u_ref, g_ref), (u_hand, g_hand) = full(params, X, y), by_hand(params, X, y)
    rel = max(float(jnp.max(jnp.abs(g_hand[k] - g_ref[k])) / jnp.max(jnp.abs(g_ref[k])))
              for k in ("w", "a"))

    peak = 2 * peak_m**3 / t_peak / 1e9
    gemm_flops = 2 * 2 * rows * N * S * C  # the two products
    elements = rows * N * C
    print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"load average {os.getloadavg()[0]:.2f}, jax {jax.__version__} "
          f"{jax.default_backend()}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"# block: {rows} rows x N = {N} x C = {C} = {elements / 1e6:.2f} M pre-activations, "
          f"S = {S}; best of {args.reps}")
    print()
    print("| part | ms per block | ns per pre-activation | GFLOP/s (matmul FLOPs) | % of peak |")
    print("|---|---|---|---|---|")
    print(f"| GEMM peak ({peak_m}³) | - | - | {peak:.1f} | 100 % |")
    for name, t in (("gemm (h = P W, Pᵀ δh)", t_gemm), ("elem (erf, erf', reductions)", t_elem),
                    ("full value_and_grad", t_full), ("by-hand value and gradient", t_hand)):
        gf = gemm_flops / t / 1e9
        pct = f"{100 * gf / peak:.0f} %" if name != "elem (erf, erf', reductions)" else "-"
        gfs = f"{gf:.1f}" if name != "elem (erf, erf', reductions)" else "-"
        print(f"| {name} | {1e3 * t:.2f} | {1e9 * t / elements:.2f} | {gfs} | {pct} |")
    bound = gemm_flops / (t_gemm + t_elem) / 1e9
    print()
    print(f"By hand against autodiff: {t_full / t_hand:.2f}x faster; value differs by "
          f"{abs(float(u_hand - u_ref)) / abs(float(u_ref)):.1e} (relative), gradient by "
          f"{rel:.1e} (max abs / max |grad|), float32.")
    print()
    print(f"Bound with no overlap: t_gemm / (t_gemm + t_elem) = "
          f"{t_gemm / (t_gemm + t_elem):.2f}; matmul FLOP/s at most {bound:.1f} GFLOP/s = "
          f"{100 * bound / peak:.0f} % of the peak.")


if __name__ == "__main__":
    main()
