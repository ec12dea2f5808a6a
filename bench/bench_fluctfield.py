"""Benchmark: the two n²-per-channel products of the fluctuating-field closure
(`fleos.theory.eos.cnn2_fluctfield`) at a paper-scale Fig. 3 point, float64 against the float32
that the module uses, side by side in one process:
- the candidates' tilt F_A(w) = (σ_a²/2NC) Σ_i φ_iᵀ A φ_i: float64 `cnn2_matched.channel_log_tilt`
  against the module's float32 `_tilt_f32` (ms per candidate, and the largest difference in
  log ω beside the spread of the tilts);
- one set's finite-C kernel, its Cholesky and inverse, ε and train α: F Fᵀ in float64 against
  the module's float32 product (s per set, and the differences in α and in the field).

Run by hand (never in CI) from the repository root:
    .venv/bin/python bench/bench_fluctfield.py [--n 1600] [--C 640] [--candidates 10240]
        [--rounds 2]

The field is Eq. 8's A(Σ) at that C (the closure's starting field); the problem is
config/paper_cpu.yaml's (S = 64, N = 20, erf, σ² = 0.1, σ_w² = σ_a² = 2, teacher_seed 0,
data_seed 1). Rounds alternate float64 and float32; the first call of each compiles and is not
timed.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import fleos  # noqa: F401 - float64
from fleos.core.kernels import cnn2_channel_features as features
from fleos.nets.data import make_dataset
from fleos.theory.eos.cnn2 import CNN2Problem, solve_cnn2
from fleos.theory.eos.cnn2_fluctfield import POOL_BATCH, _tilt_f32, proposal_covariance
from fleos.theory.eos.cnn2_matched import channel_log_tilt, field_of

MODEL = {"S": 64, "N": 20, "activation": "erf", "sigma_w2": 2.0, "sigma_a2": 2.0}


def timed(fn, *args) -> tuple[float, object]:
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1600)
    ap.add_argument("--C", type=int, default=640)
    ap.add_argument("--candidates", type=int, default=40 * POOL_BATCH)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if args.n <= 0 or args.C <= 0 or args.rounds < 1:
        ap.error("--n, --C and --rounds must be positive")
    if args.candidates < POOL_BATCH or args.candidates % POOL_BATCH:
        ap.error(f"--candidates must be a positive multiple of {POOL_BATCH}")
    n, C = args.n, args.C
    ds = make_dataset("cnn2", MODEL, n=n, n_test=1000, teacher_seed=0, data_seed=1)
    pr = CNN2Problem.from_arrays(ds.X, ds.y, 20, 64, ds.X_test, ds.y_test, sigma2=0.1,
                                 sigma_a2=2.0, sigma_w2=2.0)
    Sigma = solve_cnn2(pr, float(C), tol=1e-8, max_iter=200).x
    A = field_of(pr, Sigma)
    rng = np.random.default_rng(0)
    L = np.linalg.cholesky(np.asarray(proposal_covariance(pr, Sigma)))
    w = jnp.asarray(rng.standard_normal((args.candidates, pr.S)) @ L.T)
    W = w[:C]
    coef = pr.sigma_a2 / (2.0 * pr.N * C)
    zeros, P32, A32 = jnp.zeros(n), pr.P.astype(jnp.float32), A.astype(jnp.float32)
    batches = w.reshape(-1, POOL_BATCH, pr.S)

    @jax.jit
    def tilt64(w):
        return jax.lax.map(lambda b: channel_log_tilt(pr.P, b, zeros, -A, coef, "erf"),
                           w).reshape(-1)

    @jax.jit
    def tilt32(w):
        return jax.lax.map(lambda b: _tilt_f32(P32, b, A32, jnp.asarray(coef), "erf"),
                           w).reshape(-1)

    eye, c = jnp.eye(n), pr.sigma_a2 / (pr.N * C)

    def finish(FFt):
        chol = jnp.linalg.cholesky(c * FFt + pr.sigma2 * eye)
        K_inv = jax.scipy.linalg.cho_solve((chol, True), eye)
        v = K_inv @ pr.y
        return jnp.outer(v, v) - K_inv, v @ pr.y / (pr.y @ pr.y)

    @jax.jit
    def kernel64(W):
        F = features(pr.P, W, "erf")
        return finish(F @ F.T)

    @jax.jit
    def kernel32(W):
        F = features(P32, W.astype(jnp.float32), "erf")
        return finish((F @ F.T).astype(jnp.float64))

    for fn, x in ((tilt64, batches), (tilt32, batches), (kernel64, W), (kernel32, W)):
        jax.block_until_ready(fn(x))                               # compile
    times: dict[str, list[float]] = {"tilt64": [], "tilt32": [], "kernel64": [],
                                     "kernel32": []}
    for _ in range(args.rounds):
        for name, fn, x in (("tilt64", tilt64, batches), ("tilt32", tilt32, batches),
                            ("kernel64", kernel64, W), ("kernel32", kernel32, W)):
            dt, out = timed(fn, x)
            times[name].append(dt)
    t64, t32 = np.asarray(tilt64(batches)), np.asarray(tilt32(batches))
    (A64, a64), (A32k, a32) = kernel64(W), kernel32(W)
    d = t32 - t64
    print(f"n = {n}, C = {C}, {args.candidates} candidates; load average "
          f"{os.getloadavg()[0]:.1f}; best of {args.rounds} rounds\n")
    print("| product | float64 | float32 | speed-up | float32 − float64 |")
    print("|---|---|---|---|---|")
    m64 = min(times["tilt64"]) / args.candidates * 1e3
    m32 = min(times["tilt32"]) / args.candidates * 1e3
    print(f"| tilt, ms per candidate | {m64:.3f} | {m32:.3f} | {m64 / m32:.1f}× | log ω: "
          f"{np.abs(d - d.mean()).max():.1e} (tilts' spread {t64.std():.2f}) |")
    k64, k32 = min(times["kernel64"]), min(times["kernel32"])
    rel = float(jnp.linalg.norm(A64 - A32k) / jnp.linalg.norm(A64))
    print(f"| kernel, Cholesky, inverse: s per set | {k64:.3f} | {k32:.3f} | {k64 / k32:.1f}× | "
          f"train α: {float(a32 - a64):.1e}; field: {rel:.1e} relative |")


if __name__ == "__main__":
    main()
