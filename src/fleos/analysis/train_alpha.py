"""Where the 2-layer CNN's sampled train α departs from the EoS: a measured decomposition.

Run by hand on a finished workflow run whose cnn2 experiment recorded the Rao-Blackwellized
outputs and the mean kernel (`sampler.rao_blackwell_every` > 0, kernel `Qf`; the laptop
config does):

    .venv/bin/python bench/train_alpha_decomposition.py [--results results] [--config
        config/config.yaml] [--experiment cnn2]

For every sampled (n, C) it prints train (and test) α four ways (docs/langevin.md §9):

* EoS:         the GP at the EoS kernel Q_f(Σ_EoS) (Eq. 8), from the theory file;
* Gauss(Σ̂):    the GP at the Gaussian-channel kernel Q_f(Σ̂) of the *sampled* Σ̂: the EoS's
               kernel formula with the experiment's input-weight covariance;
* ⟨Q⟩:         the GP at the sampled mean post-kernel (aggregate `alpha_train_meankernel`);
* RB:          the Rao-Blackwellized experiment, the average of α(Q) over the samples;

so that RB − EoS = (Gauss(Σ̂) − EoS) [Σ] + (⟨Q⟩ − Gauss(Σ̂)) [channel statistics beyond
Gaussian] + (RB − ⟨Q⟩) [kernel fluctuations, ≥ 0 by Jensen]. SEs: jackknife/seed spread
from the aggregate (RB, ⟨Q⟩); the Gauss(Σ̂) column uses the seed-pooled Σ̂ (no SE).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import yaml

import fleos  # noqa: F401 - float64
from fleos.nets.datasets import load_dataset
from fleos.theory.eos.cnn2 import cnn2_observables
from fleos.theory.runs import cnn2_problem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--experiment", default="cnn2")
    args = ap.parse_args()
    exp = yaml.safe_load(Path(args.config).read_text())["experiments"][args.experiment]
    res = Path(args.results)
    print("| n | C | train α: EoS | Gauss(Σ̂) | ⟨Q⟩ | RB | sampled | test α: EoS | Gauss(Σ̂) "
          "| RB | sampled |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in exp["data"]["n"]:
        ds = load_dataset(res / "data" / args.experiment / f"n{n}.npz")
        problem = cnn2_problem(ds, exp["model"], float(exp["sigma2"]))
        theory = json.loads((res / "theory" / args.experiment / f"n{n}.json").read_text())
        rows = {int(r["C"]): r for r in theory["rows"]}
        for C in exp["widths"]:
            path = res / "aggregate" / args.experiment / f"n{n}" / f"w{C}.npz"
            a = np.load(path)
            if "alpha_train_meankernel" not in a:
                raise SystemExit(f"{path}: no Rao-Blackwellized outputs / Qf recorded "
                                 "(sampler.rao_blackwell_every, kernels: [sigma, Qf])")
            gauss = cnn2_observables(problem, jnp.asarray(a["sigma_mean"]))
            r = rows[C]

            def pm(key: str, a=a) -> str:
                return f"{float(a[key]):.4f} ± {float(a[key + '_se']):.4f}"

            print(f"| {n} | {C} | {r['alpha_train_eos']:.4f} | {gauss['alpha_train']:.4f} "
                  f"| {pm('alpha_train_meankernel')} | {pm('alpha_train_rb')} "
                  f"| {pm('alpha_train')} | {r['alpha_test_eos']:.4f} "
                  f"| {gauss['alpha_test']:.4f} | {pm('alpha_test_rb')} | {pm('alpha_test')} |")


if __name__ == "__main__":
    main()
