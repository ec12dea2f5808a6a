"""The sign of K_f⁻¹ in the FCN's output field, decided on the paper-scale Fig. 2b experiment
(docs/derivations/fcn.md, "The sign of the field"). Run by hand from the repository root:

    .venv/bin/python studies/fcn_sign/fcn_sign.py \
        --data results/paper_cpu_fcn/data/fcn3/n1024.npz \
        --table docs/results/paper_cpu_fcn/fig2b.csv --out studies/fcn_sign/fcn_sign.csv

`--data` is the workflow's data file of config/paper_cpu_fcn.yaml (`snakemake --configfile
config/paper_cpu_fcn.yaml results/paper_cpu_fcn/data/fcn3/n1024.npz` makes it in seconds);
`--table` is that run's committed Fig. 2b table (the experiment, its SE and its gates).
Eq. 5 (A = εεᵀ − K_f⁻¹, `field_sign=-1`) and the same equation with A = εεᵀ + K_f⁻¹ (the
authors' FCN notebook) are each annealed over the table's widths from the GP point, and scored
against the experiment: z = (experiment − theory)/SE(experiment), the theories being
deterministic. One row per (width, quantity, sign), with the row's gates and the largest
relative block of the solved equation's own paper-form residual, and `log_det_share`: the norm
of the K_f⁻¹ part of the output field's trace term over that of its εεᵀ part, at that solution.
"""

from __future__ import annotations

import csv
import os
import sys
import time

import jax.numpy as jnp
import numpy as np
import yaml

import fleos  # noqa: F401  (float64)
from fleos.cli.args import Parser, out_file
from fleos.core.linalg import spd_inverse
from fleos.nets.datasets import load_dataset
from fleos.theory.eos.fcn import (
    FCNProblem,
    _post_kernels,
    fcn_observables,
    paper_form_residual,
    sweep_fcn,
    trace_term,
)
from fleos.theory.runs import fcn_problem

QUANTITIES = {"sigma_top": lambda o: o["sigma_eigs"][0], "alpha_train": lambda o: o["alpha_train"],
              "mse_train_norm": lambda o: o["train_mse"]}


def log_det_share(problem: FCNProblem, x: dict, width: float) -> float:
    """‖Tr{K_f⁻¹ ∂Q_f/∂K}‖ / ‖Tr{εεᵀ ∂Q_f/∂K}‖ (Frobenius, K the last pre-kernel) at x: how
    much of the output field's pull on the network the sign of K_f⁻¹ can change."""
    sL2 = problem.readout_var(width)
    _, Qf = _post_kernels(problem, x, sL2)
    Kf_inv = spd_inverse(Qf + problem.sigma2 * jnp.eye(problem.n))
    eps = Kf_inv @ problem.y
    K_last = x["K"][-1]
    data = trace_term(jnp.outer(eps, eps), K_last, sL2, problem.activation)
    log_det = trace_term(Kf_inv, K_last, sL2, problem.activation)
    return float(jnp.linalg.norm(log_det) / jnp.linalg.norm(data))


def main(argv: list[str] | None = None) -> int:
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the workflow's fcn3 data file (.npz)")
    ap.add_argument("--table", required=True, help="the committed fig2b.csv of that run")
    ap.add_argument("--config", default="config/paper_cpu_fcn.yaml")
    ap.add_argument("--out", type=out_file, required=True)
    args = ap.parse_args(argv)
    for flag, path in (("--data", args.data), ("--table", args.table), ("--config", args.config)):
        if not os.path.isfile(path):
            ap.error(f"{flag} {path}: no such file")
    with open(args.config) as fh:
        exp = yaml.safe_load(fh)["experiments"]["fcn3"]
    with open(args.table, newline="") as fh:
        table = [r for r in csv.DictReader(fh) if r["quantity"] in QUANTITIES]
    widths = sorted({int(r["width"]) for r in table}, reverse=True)
    problem = fcn_problem(load_dataset(args.data), exp["model"], exp["sigma2"], 0.0)
    theory: dict[tuple[int, float], dict] = {}
    for sign in (-1.0, 1.0):
        t0 = time.perf_counter()
        results = sweep_fcn(problem, [float(w) for w in widths], tol=1e-8, max_iter=100,
                            field_sign=sign)
        for w, res in zip(widths, results, strict=True):
            obs = fcn_observables(problem, res.x, w)
            obs["converged"] = bool(res.converged)
            obs["residual"] = paper_form_residual(problem, res.x, w, field_sign=sign)
            obs["log_det_share"] = log_det_share(problem, res.x, w)
            theory[(w, sign)] = obs
        print(f"field_sign {sign:+.0f}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rows = []
    for r in table:
        w, exp_v, se = int(r["width"]), float(r["exp"]), float(r["exp_se"])
        for sign in (-1.0, 1.0):
            obs = theory[(w, sign)]
            th = float(QUANTITIES[r["quantity"]](obs))
            rows.append({
                "width": w, "quantity": r["quantity"], "field_sign": int(sign),
                "exp": exp_v, "exp_se": se, "theory": th,
                "pct": 100 * (exp_v / th - 1), "z": (exp_v - th) / se,
                "theory_converged": obs["converged"], "theory_residual": obs["residual"],
                "log_det_share": obs["log_det_share"],
                "equilibrated": r["equilibrated"], "failed_gates": r["failed_gates"],
            })
    with open(args.out, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    for row in rows:
        print(f"N={row['width']:5d} {row['quantity']:15s} s={row['field_sign']:+d} "
              f"exp {row['exp']:.6g} ± {row['exp_se']:.2g}  theory {row['theory']:.6g}  "
              f"{row['pct']:+7.2f} %  {row['z']:+8.1f} SE  eq={row['equilibrated']}")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    raise SystemExit(main())
