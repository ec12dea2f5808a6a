"""Where the 2-layer CNN's sampled train α departs from the EoS: a measured decomposition.

Input: a finished workflow run whose cnn2 experiment recorded the Rao-Blackwellized outputs
and the mean kernel (`sampler.rao_blackwell_every` > 0, kernel `Qf`; the laptop config does).
For every sampled (n, C), train (and test) α four ways (docs/langevin.md §9):

* EoS:         the GP at the EoS kernel Q_f(Σ_EoS) (Eq. 8), from the theory file;
* Gauss(Σ̂):    the GP at the Gaussian-channel kernel Q_f(Σ̂) of the *sampled* Σ̂: the EoS's
               kernel formula with the experiment's input-weight covariance;
* ⟨Q⟩:         the GP at the sampled mean post-kernel (aggregate `alpha_train_meankernel`);
* RB:          the Rao-Blackwellized experiment, the average of α(Q) over the samples;

so that RB − EoS = (Gauss(Σ̂) − EoS) [Σ] + (⟨Q⟩ − Gauss(Σ̂)) [channel statistics beyond
Gaussian] + (RB − ⟨Q⟩) [kernel fluctuations, ≥ 0 by Jensen: train α is convex in Q]. SEs:
jackknife/seed spread from the aggregate (RB, ⟨Q⟩, sampled); the Gauss(Σ̂) column uses the
seed-pooled Σ̂ (no SE).

`decompose` is the arithmetic of one point (pure); `decompose_run` reads a results folder;
`markdown_table` prints the table docs/figures.md quotes. `fleos train-alpha` is the command
line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: The aggregate keys a point needs (the experiment's estimates and their SEs).
AGGREGATE_KEYS = ("sigma_mean", "alpha_train_meankernel", "alpha_train_rb", "alpha_train",
                  "alpha_test_rb", "alpha_test")

#: One row of the decomposition: the four train-α columns, the three terms they differ by, and
#: test α three ways. `*_se` columns are the aggregate's error bars.
COLUMNS = (
    "n", "C",
    "alpha_train_eos", "alpha_train_gauss", "alpha_train_meankernel",
    "alpha_train_meankernel_se", "alpha_train_rb", "alpha_train_rb_se", "alpha_train",
    "alpha_train_se",
    "sigma_term", "channel_term", "fluctuation_term", "fluctuation_term_times_C",
    "alpha_test_eos", "alpha_test_gauss", "alpha_test_rb", "alpha_test_rb_se", "alpha_test",
    "alpha_test_se",
)


def decompose(problem: Any, C: int, theory_row: Mapping[str, Any],
              aggregate: Mapping[str, Any], n: int | None = None) -> dict[str, float]:
    """The decomposition at one (n, C).

    problem: the `fleos.theory.eos.cnn2.CNN2Problem` of the run's data (`cnn2_problem`);
    theory_row: the theory file's row at C (``alpha_train_eos``, ``alpha_test_eos``);
    aggregate: the aggregate's arrays (`AGGREGATE_KEYS` and their ``_se``). Returns the
    `COLUMNS` as floats (n and C as given). The Gauss(Σ̂) columns are `cnn2_observables` at
    the aggregate's ``sigma_mean``; the three terms are differences of the columns.
    """
    from fleos.theory.eos.cnn2 import cnn2_observables

    needed = ["sigma_mean"] + [k + se for k in AGGREGATE_KEYS[1:] for se in ("", "_se")]
    missing = [k for k in needed if k not in aggregate]
    if missing:
        raise KeyError(f"no {', '.join(missing)} (the Rao-Blackwellized outputs and the kernel "
                       "Qf must be recorded: sampler.rao_blackwell_every > 0, kernels: "
                       "[sigma, Qf])")
    gauss = cnn2_observables(problem, np.asarray(aggregate["sigma_mean"]))

    def val(key: str) -> float:
        return float(aggregate[key])

    row: dict[str, float] = {
        "n": float(problem.y.shape[0] if n is None else n), "C": float(C),
        "alpha_train_eos": float(theory_row["alpha_train_eos"]),
        "alpha_train_gauss": float(gauss["alpha_train"]),
        "alpha_test_eos": float(theory_row["alpha_test_eos"]),
        "alpha_test_gauss": float("nan" if gauss["alpha_test"] is None
                                  else gauss["alpha_test"]),
    }
    for key in ("alpha_train_meankernel", "alpha_train_rb", "alpha_train", "alpha_test_rb",
                "alpha_test"):
        row[key] = val(key)
        row[key + "_se"] = val(key + "_se")
    row["sigma_term"] = row["alpha_train_gauss"] - row["alpha_train_eos"]
    row["channel_term"] = row["alpha_train_meankernel"] - row["alpha_train_gauss"]
    row["fluctuation_term"] = row["alpha_train_rb"] - row["alpha_train_meankernel"]
    row["fluctuation_term_times_C"] = row["fluctuation_term"] * C
    return {k: row[k] for k in COLUMNS}


class ResultsError(Exception):
    """A results file is missing or lacks what the decomposition needs; names the file."""


def _results_file(path: Path) -> Path:
    if not path.is_file():
        raise ResultsError(f"{path} does not exist (run the workflow's target for it first)")
    return path


def decompose_run(results: str | Path, config: Mapping[str, Any],
                  experiment: str = "cnn2") -> list[dict[str, float]]:
    """`decompose` at every sampled (n, C) of `experiment` (a cnn2 entry of the config
    mapping `config`) in the results folder `results`: its data, theory and aggregate files.

    Raises KeyError (no such experiment), ValueError (the experiment's entry is invalid or not
    a cnn2) or `ResultsError` (a results file is missing or incomplete)."""
    from fleos.config import ExperimentConfig
    from fleos.nets.datasets import load_dataset
    from fleos.theory.runs import cnn2_problem

    exps = config.get("experiments") or {}
    if experiment not in exps:
        raise KeyError(f"experiment {experiment!r} not in the config (has {sorted(exps)})")
    exp = ExperimentConfig.from_dict(experiment, exps[experiment])
    if exp.arch != "cnn2":
        raise ValueError(f"experiment {experiment!r} is a {exp.arch}; the decomposition is the "
                         "2-layer CNN's (arch cnn2)")
    res = Path(results)
    rows = []
    for n in exp.ns:
        data = _results_file(res / "data" / experiment / f"n{n}.npz")
        try:
            ds = load_dataset(data)
        except ValueError as err:
            raise ResultsError(str(err)) from None
        problem = cnn2_problem(ds, exp.model, exp.sigma2)
        theory_path = _results_file(res / "theory" / experiment / f"n{n}.json")
        try:
            by_C = {int(r["C"]): r for r in json.loads(theory_path.read_text())["rows"]}
        except (ValueError, KeyError, TypeError) as err:
            raise ResultsError(f"{theory_path}: not a theory file with rows ({err})") from None
        for C in exp.widths:
            path = _results_file(res / "aggregate" / experiment / f"n{n}" / f"w{C}.npz")
            if C not in by_C:
                raise ResultsError(f"{theory_path}: no row at C = {C}")
            with np.load(path) as a:
                agg = {k: a[k] for k in a.files}
            try:
                rows.append(decompose(problem, C, by_C[C], agg, n=n))
            except KeyError as err:
                raise ResultsError(f"{path}: {err.args[0]}") from None
    return rows


def markdown_table(rows: Sequence[Mapping[str, float]]) -> str:
    """The rows as the Markdown table docs/figures.md quotes (4 decimals, value ± SE)."""

    def pm(r: Mapping[str, float], key: str) -> str:
        return f"{r[key]:.4f} ± {r[key + '_se']:.4f}"

    lines = ["| n | C | train α: EoS | Gauss(Σ̂) | ⟨Q⟩ | RB | sampled | test α: EoS | Gauss(Σ̂) "
             "| RB | sampled |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {int(r['n'])} | {int(r['C'])} | {r['alpha_train_eos']:.4f} "
            f"| {r['alpha_train_gauss']:.4f} | {pm(r, 'alpha_train_meankernel')} "
            f"| {pm(r, 'alpha_train_rb')} | {pm(r, 'alpha_train')} | {r['alpha_test_eos']:.4f} "
            f"| {r['alpha_test_gauss']:.4f} | {pm(r, 'alpha_test_rb')} | {pm(r, 'alpha_test')} |")
    return "\n".join(lines)
