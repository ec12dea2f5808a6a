"""Where a sampling job's step spends its time: the gradient, the integrator, the recording,
the job driver.

Run by hand (never in CI), on one pinned core with the workflow's flags, e.g.

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
    taskset -c 1 .venv/bin/python bench/bench_step_breakdown.py \\
        --config config/config.yaml --experiment cnn2 --width 128 \\
        --data results/data/cnn2/n256.npz --steps 2000 --rounds 5

It builds the job exactly as `fleos sample` does (`fleos.sampling.experiment`, one chain by
default, `--chains` for more; `experiment.job_setup`) and times, in chain-steps/s, five
programs:

- ``gradient``: `Potential.value_and_grad` of U in a `lax.scan` (each step moves θ by a tiny
  multiple of the gradient so that the loop cannot be hoisted): the arithmetic floor;
- ``noise``: the integrator's Gaussian draws alone (`sampler._noise`, one threefry draw per
  parameter leaf and step, in a `lax.scan`), the part of the next row that is not arithmetic
  on the parameters;
- ``integrator``: the job's integrator (e.g. BAOAB: gradient, noise, momentum) for all the
  steps in one `run_ensemble` call, no recording;
- ``recording``: the same with the job's recorder accumulating in the sampling window
  (kernel sums every `record_every` steps, Rao-Blackwell sums every `rao_blackwell_every`);
- ``driver``: the job's own step loop (`experiment._sample`): one compiled call per chunk up
  to the next snapshot, schedule boundary or checkpoint, the host's copies, finiteness
  checks, schedule updates and snapshots, in-memory rollback points. No disk checkpoint and
  no output file.

Apart from ``noise``, the differences between consecutive rows are the cost of each layer.
Every program is compiled and run once before the timed rounds; rounds are interleaved, every
other one in reverse order, and the table gives the best and the median round. The driver row
runs with the burn-in set to 0 so that every step is in the sampling window, like the
recording row.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fleos  # noqa: F401 - enables x64 (the sampler stays in its configured dtype)
from fleos.config import JobSpec, experiment_from_file
from fleos.sampling import experiment as ex
from fleos.sampling.sampler import ChainState, _noise, run_ensemble

#: the timed programs, in the table's order (`_programs` builds them)
PROGRAMS = ("gradient", "noise", "integrator", "recording", "driver")


def _setup(args: argparse.Namespace, out_dir: str) -> ex._Setup:
    overrides = [f"experiments.{args.experiment}.sampler.steps={args.steps}", *args.overrides]
    exp = experiment_from_file(args.config, args.experiment, overrides)
    job = JobSpec(args.experiment, args.n, args.width, tuple(range(args.chains)))
    return ex.job_setup(exp, job, args.data, Path(out_dir) / "unused.h5")


def _programs(su: ex._Setup, steps: int) -> dict[str, Callable[[], None]]:
    """name -> a function that runs `steps` steps of every chain and blocks until done."""
    lr = su.sched.lr(su.sched.init())
    n_chains = len(su.job.seeds)
    lrs = jnp.full((n_chains,), lr, su.dtype)
    start = ChainState(su.params0, jnp.int32(0), su.extra0)
    acc_on = dict(su.acc0, sampling=jnp.ones((n_chains,), bool))
    pot = su.potential

    def gradient_loop(params):
        def body(p, _):
            _, sse, g = pot.value_and_grad(p)
            return jax.tree.map(lambda a, b: a - 1e-9 * b, p, g), sse
        return jax.lax.scan(body, params, None, length=steps)

    grad_run = jax.jit(jax.vmap(gradient_loop))

    def gradient():
        jax.block_until_ready(grad_run(su.params0))

    def noise_loop(key, params):
        leaves = jax.tree.leaves(params)

        def body(c, t):
            return c + sum(z.sum() for z in _noise(key, t, leaves)), None
        return jax.lax.scan(body, jnp.zeros((), su.dtype), jnp.arange(steps))[0]

    noise_run = jax.jit(jax.vmap(noise_loop))

    def noise():
        jax.block_until_ready(noise_run(su.keys, su.params0))

    def integrator():
        jax.block_until_ready(run_ensemble(
            pot, start, su.keys, lrs, steps, precond=su.precond, integrator=su.integrator,
            chain_batch=su.chain_batch))

    def recording():
        jax.block_until_ready(run_ensemble(
            pot, start, su.keys, lrs, steps, precond=su.precond,
            accumulate=su.recorder.accumulator, acc=acc_on, acc_data=su.rec_data,
            integrator=su.integrator, chain_batch=su.chain_batch))

    def driver():
        reporter = ex._Progress(su, enabled=False, every=1e9, step0=0)
        st = ex._sample(su, ex._initial_state(su), reporter)
        jax.block_until_ready(st.params)

    return {"gradient": gradient, "noise": noise, "integrator": integrator, "recording": recording,
            "driver": driver}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--experiment", default="cnn2")
    p.add_argument("--n", type=int, default=None, help="default: the data file's n")
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--data", required=True, help="the job's data file (make_data's npz)")
    p.add_argument("--chains", type=int, default=1)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="extra config override KEY=VALUE (repeatable)")
    p.add_argument("--programs", default=",".join(PROGRAMS),
                   help="comma-separated subset of the programs to time (default: all five)")
    args = p.parse_args()
    if args.n is None:
        args.n = int(np.load(args.data)["X"].shape[0])
    wanted = args.programs.split(",")
    if unknown := sorted(set(wanted) - set(PROGRAMS)):
        raise SystemExit(f"--programs: unknown {', '.join(unknown)} (choose from "
                         f"{', '.join(PROGRAMS)})")
    # every step in the sampling window: a burn-in of 0, or a `fixed` schedule's window from 0
    kind = experiment_from_file(args.config, args.experiment, args.overrides).sampler.schedule[
        "kind"]
    key = f"experiments.{args.experiment}.sampler.schedule"
    window = ([f"{key}.sample_start=0", f"{key}.sample_end={args.steps}"] if kind == "fixed"
              else [f"{key}.burn_in=0"])
    args.overrides = [*window, *args.overrides]
    with tempfile.TemporaryDirectory() as out_dir:
        su = _setup(args, out_dir)
        _time_programs(args, su)


def _time_programs(args: argparse.Namespace, su: ex._Setup) -> None:
    wanted = args.programs.split(",")
    progs = {k: v for k, v in _programs(su, args.steps).items() if k in wanted}
    t_compile = {}
    for name, fn in progs.items():
        t0 = time.perf_counter()
        fn()
        t_compile[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in progs}
    order = list(progs)
    for r in range(args.rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            progs[name]()
            times[name].append(time.perf_counter() - t0)
    n_chains = len(su.job.seeds)
    load = os.getloadavg()
    print(f"\n{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"jax {jax.__version__} {jax.default_backend()}, load {load[0]:.2f} {load[1]:.2f}; "
          f"{args.experiment} n={args.n} width={args.width}, {n_chains} chain(s), "
          f"{args.steps} steps, {args.rounds} rounds; XLA_FLAGS "
          f"{os.environ.get('XLA_FLAGS', '(unset)')!r}; layout {su.chain_batch} chain(s) "
          f"vmapped, data blocks {su.potential.data_blocks}; record_every "
          f"{su.sc.record_every}, snapshot_every {su.sc.snapshot_every}, "
          f"rao_blackwell_every {su.sc.rao_blackwell_every}, kernels {list(su.exp.kernels)}\n")
    print("| program | chain-steps/s (best round) | median round | µs per chain-step (median) "
          "| first call (compile + run), s |")
    print("|---|---|---|---|---|")
    for name in progs:
        best, med = min(times[name]), statistics.median(times[name])
        cs = args.steps * n_chains
        print(f"| {name} | {cs / best:.0f} | {cs / med:.0f} | {1e6 * med / cs:.0f} | "
              f"{t_compile[name]:.1f} |")


if __name__ == "__main__":
    main()
