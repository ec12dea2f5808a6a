"""Equilibrium per second: τ_int, ESS/s and bias of the slow observables, per sampler setting.

Run by hand (never in CI), one architecture and size per call, e.g.

    .venv/bin/python bench/bench_mixing.py --arch cnn2 --size laptop \
        --settings ula:1e-3 lm:1e-3 baoab:2e-3:1 mala:1e-3 --chains 4 --burn 1000 --steps 4000

Every setting starts the same `--chains` prior draws (seeds 0..chains-1) on the same data and
runs `--burn` + `--steps` full-batch steps with the prior preconditioner, recording every
`--thin` steps:

* ``q_teacher``: the channel mean of (w_c·ŵ*)² over its prior value σ_w²/fan-in (the
  feature-learning mode, top-Σ direction; Figs. 2b/3);
* ``q_h2`` (cnn3): the channel mean of (Σ_{μ,j} h2_{c'j}(x_μ) t̂_{μj})² (Fig. 4's hidden mode);
* ``mse``: the train MSE Σ(f − y)²/n;
* ``alpha``: the instantaneous train α = (y − f)·y / (σ² y·y), whose time average is α of the
  posterior-mean f.

Per setting and observable: the mean and its Monte Carlo standard error (multi-chain
`ess_mean`), rank-normalized R̂, τ_int = (chains × recorded draws × thin) / ESS in steps, ESS/s
of sampling wall time, and the bias against the referee setting (`--referee`, default the
first MALA setting, else the last one) with the SE of the difference. Output: a Markdown table
(stdout) for bench/RESULTS.md; `--json` writes the numbers.

Settings are ``name:lr[:friction]`` with name in ula | lm | baoab | mala (docs/langevin.md §7).
Sizes: ``laptop`` = config/config.yaml's experiment, ``paper`` = config/paper_cpu.yaml's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml

import fleos
from fleos.config import ExperimentConfig
from fleos.core.diagnostics import ess_mean, rhat_rank
from fleos.nets.data import make_dataset
from fleos.nets.models import build_model
from fleos.sampling.experiment import chain_keys, chain_layout
from fleos.sampling.recording import Recorder
from fleos.sampling.sampler import (
    ChainState,
    Integrator,
    init_extra,
    make_potential,
    run_ensemble,
)

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"laptop": ROOT / "config" / "config.yaml", "paper": ROOT / "config" / "paper_cpu.yaml"}
EXPERIMENT = {"cnn2": "cnn2", "fcn": "fcn3", "cnn3": "cnn3"}


def parse_setting(text: str) -> tuple[str, Integrator, float]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in ("ula", "lm", "baoab", "mala"):
        raise SystemExit(f"--settings: {text!r} is not name:lr[:friction] "
                         f"(name ula | lm | baoab | mala)")
    friction = float(parts[2]) if len(parts) == 3 else 1.0
    return text, Integrator(parts[0], friction), float(parts[1])


def build(arch: str, size: str, width: int | None, n_chains: int, n: int | None = None):
    cfg = yaml.safe_load(CONFIGS[size].read_text())["experiments"][EXPERIMENT[arch]]
    exp = ExperimentConfig.from_dict(EXPERIMENT[arch], {k: v for k, v in cfg.items()
                                                        if k not in ("theory", "resources")})
    n = n or exp.data["n"][0]
    width = width or exp.widths[0]
    ds = make_dataset(exp.arch, exp.model, n, exp.data.get("n_test", 100),
                      exp.data.get("teacher_seed", 0), exp.data["data_seed"])
    dtype = jnp.float32
    model = build_model(exp.arch, exp.model, width, param_dtype=dtype)

    def apply_fn(p, x):
        return model.forward(p, x)[0]

    X, y = jnp.asarray(ds.X, dtype), jnp.asarray(ds.y, dtype)
    init_keys, keys = chain_keys(tuple(range(n_chains)), n, width)
    params0 = jax.vmap(lambda k: model.init_prior(k, dtype))(init_keys)
    # The chain layout a job of this config would use on this backend (docs/langevin.md §8).
    chain_batch, blocks = chain_layout(exp.sampler, model, params0, X, n_chains,
                                       jax.default_backend())
    pot = make_potential(apply_fn, model.prior_variances(), X, y, exp.sigma2,
                         data_blocks=blocks)
    precond = model.prior_variances()
    rec = Recorder(arch=exp.arch, apply_fn=apply_fn, input_weights=model.input_weights,
                   preactivations=model.preactivations, record_every=1,
                   model_cfg=dict(exp.model), snapshot_channels=None)
    W0 = model.input_weights(jax.tree.map(lambda a: a[0], params0))
    data = rec.make_data(np.asarray(ds.X), np.asarray(ds.X_test), ds.teacher, W0.shape[-1],
                         1, 0, dtype)
    # prior variance of w·ŵ* for a unit ŵ*: the input leaf's prior variance (isotropic)
    v_in = float(np.mean(np.asarray(jax.vmap(lambda k: model.input_weights(
        model.init_prior(k, jnp.float64)))(jax.random.split(jax.random.PRNGKey(99), 64))) ** 2))
    yy = float(jnp.vdot(y, y))

    def observables(p):
        snap = rec.snapshot(p, data)
        f = apply_fn(p, X)
        out = {"q_teacher": jnp.mean(snap["w_teacher"] ** 2) / v_in,
               "mse": jnp.mean((f - y) ** 2),
               "alpha": jnp.vdot(y - f, y) / (exp.sigma2 * yy)}
        if "h2_teacher" in snap:
            out["q_h2"] = jnp.mean(snap["h2_teacher"] ** 2)
        return out

    meta = {"arch": arch, "size": size, "n": n, "width": width, "sigma2": exp.sigma2,
            "model": dict(exp.model), "chains": n_chains, "chain_batch": chain_batch,
            "data_blocks": blocks}
    return pot, precond, params0, keys, jax.jit(jax.vmap(observables)), meta, chain_batch


def run_setting(pot, precond, params0, keys, obs_fn, integ: Integrator, lr: float,
                burn: int, steps: int, thin: int, chain_batch: int | None = None) -> dict:
    n_chains = keys.shape[0]
    extra = jax.vmap(lambda p, k: init_extra(pot, p, k, 0, integrator=integ,
                                             precond=precond))(params0, keys)
    st = ChainState(params0, jnp.zeros((n_chains,), jnp.int32), extra)
    # compile once (a thin-step chunk), untimed; then burn-in and sampling in thin-step chunks
    t0 = time.perf_counter()
    jax.block_until_ready(run_ensemble(pot, st, keys, lr, thin, precond=precond,
                                       integrator=integ, chain_batch=chain_batch))
    t_compile = time.perf_counter() - t0
    for _ in range(burn // thin):
        st, _, _ = run_ensemble(pot, st, keys, lr, thin, precond=precond, integrator=integ,
                                chain_batch=chain_batch)
    jax.block_until_ready(st)
    rec: dict[str, list] = {}
    t0 = time.perf_counter()
    for _ in range(steps // thin):
        st, _, _ = run_ensemble(pot, st, keys, lr, thin, precond=precond, integrator=integ,
                                chain_batch=chain_batch)
        for k, v in obs_fn(st.params).items():
            rec.setdefault(k, []).append(v)
    jax.block_until_ready(st)
    wall = time.perf_counter() - t0
    traces = {k: np.asarray(jnp.stack(v, axis=1), np.float64) for k, v in rec.items()}
    finite = all(np.all(np.isfinite(t)) for t in traces.values())
    return {"traces": traces, "wall_s": wall, "compile_s": t_compile, "finite": finite,
            "chain_steps_per_s": n_chains * steps / wall}


def summarize(res: dict, thin: int) -> dict:
    out = {}
    for name, tr in res["traces"].items():
        c, t = tr.shape
        if not np.all(np.isfinite(tr)):
            out[name] = {"mean": float("nan")}
            continue
        ess = ess_mean(tr)
        out[name] = {"mean": float(tr.mean()), "se": float(tr.std(ddof=1) / np.sqrt(ess)),
                     "ess": float(ess), "rhat": float(rhat_rank(tr)),
                     "tau_steps": float(c * t * thin / ess),
                     "ess_per_s": float(ess / res["wall_s"])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=sorted(EXPERIMENT), default="cnn2")
    ap.add_argument("--size", choices=sorted(CONFIGS), default="laptop")
    ap.add_argument("--width", type=int, help="C or N (default: the config's first width)")
    ap.add_argument("--n", type=int, help="training points (default: the config's first n)")
    ap.add_argument("--settings", nargs="+", default=["ula:1e-3", "lm:1e-3", "baoab:1e-3:1"])
    ap.add_argument("--referee", help="the setting whose means define 'bias' (default: the "
                                      "first mala setting, else the last setting)")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--burn", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--thin", type=int, default=10)
    ap.add_argument("--json", help="write all numbers to this JSON file")
    args = ap.parse_args()
    fleos.limit_blas_threads()
    settings = [parse_setting(s) for s in args.settings]
    pot, precond, params0, keys, obs_fn, meta, chain_batch = build(
        args.arch, args.size, args.width, args.chains, args.n)
    results = {}
    for label, integ, lr in settings:
        res = run_setting(pot, precond, params0, keys, obs_fn, integ, lr, args.burn,
                          args.steps, args.thin, chain_batch)
        results[label] = {"summary": summarize(res, args.thin), "wall_s": res["wall_s"],
                          "compile_s": res["compile_s"], "finite": res["finite"],
                          "chain_steps_per_s": res["chain_steps_per_s"]}
        print(f"# {label}: {res['chain_steps_per_s']:.1f} chain-steps/s, finite "
              f"{res['finite']}", flush=True)
    referee = args.referee or next((s[0] for s in settings if s[1].name == "mala"),
                                   settings[-1][0])
    base = settings[0][0]
    ref = results[referee]["summary"]
    print(f"\n{meta}; {args.chains} chains, burn-in {args.burn}, {args.steps} steps, thin "
          f"{args.thin}; referee {referee}; baseline {base}; "
          f"{datetime.date.today()}, {platform.node()}, load {os.getloadavg()[0]:.1f}\n")
    # "× baseline (steps)" = τ_int(baseline) / τ_int: ESS per gradient, which does not depend
    # on the machine's load (every integrator costs one gradient per step); "× baseline (s)"
    # is the same per second of this run's wall time.
    print("| setting | observable | mean ± SE | R̂ | τ_int (steps) | ESS/s | × baseline (steps) "
          "| × baseline (s) | bias vs referee (SE) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r in results.items():
        for obs, s in r["summary"].items():
            if not np.isfinite(s["mean"]):
                print(f"| {label} | {obs} | diverged | | | | | | |")
                continue
            b = results[base]["summary"][obs]
            gain = s["ess_per_s"] / b["ess_per_s"] if "ess_per_s" in b else float("nan")
            bias = s["mean"] - ref[obs]["mean"]
            bse = np.hypot(s["se"], ref[obs]["se"])
            btxt = "—" if label == referee else f"{bias:+.4g} ({bias / bse:+.1f})"
            gain_steps = b["tau_steps"] / s["tau_steps"] if "tau_steps" in b else float("nan")
            print(f"| {label} | {obs} | {s['mean']:.4g} ± {s['se']:.2g} | {s['rhat']:.3f} | "
                  f"{s['tau_steps']:.0f} | {s['ess_per_s']:.2f} | {gain_steps:.1f} | {gain:.1f} "
                  f"| {btxt} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "args": vars(args),
                                               "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
