"""How stiff does the paper-size CNN3 posterior get along a BAOAB trajectory from the prior?
(Figs. 4/5 at the paper's settings; the stability bound ηλ_max < 2 of docs/langevin.md §3.)
Run by hand from the repository root, on one core:

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
    taskset -c 1 .venv/bin/python studies/cnn3_stability/cnn3_stability.py \\
        --eta 1e-6 --steps 1000 --every 25 --out studies/cnn3_stability/cnn3_stability.csv

The problem is built exactly as a workflow job of `--config` builds it: the data by
`fleos.nets.data.make_dataset` (the workflow's data rule), the model, potential (Eq. 15 /
Methods), preconditioner, integrator and the seed's prior draw by the job driver's own set-up
(`fleos.sampling.experiment._set_up`), for one seed. The chain then runs BAOAB (the config's
friction) at the step size `--eta` (from `--switch-step` on `--eta2`, if given: a burn-in
at a small η, then a larger one), and every `--every` steps the largest eigenvalue
λ_max of the preconditioned Hessian P^½ ∇²U P^½ is re-estimated at the current parameters
(`stiffest_curvature`, power iteration, `--n-iter` Hessian-vector products, as the job's own
check does). One row per estimate: step, the η of the steps before it, Langevin time t (each
step adds √(2η)), train MSE (at the parameters before the chunk's last step, and its mean over
the chunk), λ_max, 2/λ_max, η·λ_max, and the wall time per step (the first chunk's includes
the compilation) and per estimate.
The power iteration returns the eigenvalue of largest magnitude, with its sign: a negative
value is a direction of negative curvature dominating, which a row says.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fleos  # noqa: F401  (float64 where asked; the sampler stays in its dtype)
from fleos.cli.args import Parser, nonneg_int, out_file, positive_float, positive_int
from fleos.config import ExperimentConfig, JobSpec, load_config_file
from fleos.nets.data import make_dataset
from fleos.nets.datasets import save_dataset
from fleos.sampling.experiment import _set_up
from fleos.sampling.sampler import ChainState, run_ensemble, stiffest_curvature


def main(argv: list[str] | None = None) -> int:
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/paper_cpu_cnn3.yaml")
    ap.add_argument("--experiment", default="cnn3")
    ap.add_argument("--seed", type=nonneg_int, default=0, help="the job seed (prior draw, noise)")
    ap.add_argument("--eta", type=positive_float, default=1e-6, help="BAOAB step size η")
    ap.add_argument("--eta2", type=positive_float, default=None,
                    help="the step size from --switch-step on (default: --eta throughout)")
    ap.add_argument("--switch-step", type=positive_int, default=None,
                    help="the step at which --eta2 takes over (a multiple of --every)")
    ap.add_argument("--steps", type=positive_int, default=1000)
    ap.add_argument("--every", type=positive_int, default=25, help="steps between λ_max estimates")
    ap.add_argument("--n-iter", type=positive_int, default=20, help="power iterations per estimate")
    ap.add_argument("--width", type=positive_int, default=None,
                    help="override the config's (first) width, for a quick smoke run")
    ap.add_argument("--n", type=positive_int, default=None,
                    help="override the config's (first) n, for a quick smoke run")
    ap.add_argument("--out", type=out_file, required=True)
    args = ap.parse_args(argv)
    if (args.eta2 is None) != (args.switch_step is None):
        ap.error("--eta2 and --switch-step go together")
    if args.switch_step is not None and args.switch_step % args.every:
        ap.error(f"--switch-step must be a multiple of --every ({args.every}), "
                 f"got {args.switch_step}")

    try:
        doc = load_config_file(args.config)
        exp_d = doc["experiments"][args.experiment]
    except (FileNotFoundError, ValueError) as e:
        ap.error(str(e))
    except KeyError:
        ap.error(f"--experiment: {args.config} has no experiments.{args.experiment}")
    n = args.n or int(exp_d["data"]["n"][0])
    width = args.width or int(exp_d["widths"][0])
    if args.n is not None:
        exp_d = {**exp_d, "data": {**exp_d["data"], "n": [n]}}
    if args.width is not None:
        exp_d = {**exp_d, "widths": [width]}
    exp = ExperimentConfig.from_dict(args.experiment, exp_d)
    job = JobSpec(args.experiment, n, width, (args.seed,))
    data = exp_d["data"]

    def emit(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "data.npz"
        save_dataset(make_dataset(exp.arch, exp_d["model"], n, int(data["n_test"]),
                                  int(data.get("teacher_seed", 0)), int(data["data_seed"])),
                     data_path)
        su = _set_up(exp, job, data_path, Path(tmp) / "unused.h5", None, emit)

    emit(f"load average at start: {os.getloadavg()}; integrator {su.integrator}, "
         f"preconditioner {su.sc.preconditioner}, dtype {su.dtype}, eta {args.eta:g}")
    chains = ChainState(su.params0, jnp.int32(0), su.extra0)

    def eta_at(step: int) -> float:
        return args.eta if args.switch_step is None or step < args.switch_step else args.eta2

    t_now = 0.0  # Langevin time: each step of size η advances it by √(2η)

    def curvature(params) -> tuple[float, float]:
        t0 = time.perf_counter()
        lam = stiffest_curvature(su.potential, jax.tree.map(lambda a: a[0], params),
                                 n_iter=args.n_iter, precond=su.precond)
        return lam, time.perf_counter() - t0

    def row(step: int, sse: np.ndarray | None, lam: float, t_step: float, t_lam: float) -> dict:
        eta = eta_at(step - 1) if step else eta_at(0)
        return {"step": step, "eta": eta, "time": t_now,
                "train_mse": (float(sse[-1]) / n if sse is not None else float("nan")),
                "train_mse_chunk_mean": (float(np.mean(sse)) / n if sse is not None
                                         else float("nan")),
                "lambda_max": lam, "two_over_lambda": 2 / lam if lam > 0 else float("nan"),
                "eta_lambda": eta * lam, "negative_curvature": lam < 0,
                "s_per_step": t_step, "s_per_estimate": t_lam}

    fh = open(args.out, "w", newline="")  # written row by row: a cut-short run keeps its rows
    wr: csv.DictWriter | None = None

    def write(r: dict) -> None:
        nonlocal wr
        if wr is None:
            wr = csv.DictWriter(fh, fieldnames=list(r))
            wr.writeheader()
        wr.writerow(r)
        fh.flush()

    lam, t_lam = curvature(chains.params)
    write(row(0, None, lam, float("nan"), t_lam))
    emit(f"step 0: lambda_max {lam:.4g} ({t_lam:.1f} s)")
    step = 0
    while step < args.steps:
        k = min(args.every, args.steps - step)
        t0 = time.perf_counter()
        # One step counter shared by the chain(s), as in the job driver: one compilation.
        chains = ChainState(chains.params, jnp.int32(step), chains.extra)
        eta = eta_at(step)
        chains, _, sse = run_ensemble(su.potential, chains, su.keys,
                                      jnp.asarray([eta], su.dtype), k, precond=su.precond,
                                      integrator=su.integrator, chain_batch=1)
        sse = np.asarray(sse)[0]
        t_step = (time.perf_counter() - t0) / k
        step += k
        t_now += k * math.sqrt(2 * eta)
        if not np.all(np.isfinite(sse)):
            emit(f"step {step}: non-finite loss, stopping")
            write(row(step, sse, float("nan"), t_step, float("nan")))
            break
        lam, t_lam = curvature(chains.params)
        write(row(step, sse, lam, t_step, t_lam))
        emit(f"step {step}: train_mse {sse[-1] / n:.4g} lambda_max {lam:.4g} "
             f"eta*lambda {eta * lam:.3g} ({t_step * 1e3:.0f} ms/step, "
             f"{t_lam:.1f} s/estimate)")
    emit(f"load average at end: {os.getloadavg()}")
    fh.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
