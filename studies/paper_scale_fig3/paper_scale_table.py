"""studies/paper_scale_fig3/paper_scale_fig3.csv from a finished paper-scale Fig. 3 run.

    .venv/bin/python studies/paper_scale_fig3/paper_scale_table.py --results results/paper_cpu \
        --config config/paper_cpu.yaml --out studies/paper_scale_fig3/paper_scale_fig3.csv

Takes the rows of the workflow's own table (results/.../tables/fig3.csv, the columns of every
fig3.csv) and adds, per (n, C): ``wall_seconds``, the summed wall time of its sampling jobs from
their Snakemake benchmark files (the jobs of one C ran one or two at a time, so this is the
sampling cost, not the elapsed time of the run), ``sampling_jobs`` and ``integrator`` (with
η and γ), plus the pass/fail of the agreement criterion: |experiment − EoS| ≤ 2 SE + 2 % of the
EoS value, for test α and for the top Σ eigenvalue, against Eq. 8 and (``*_matched``) against
the moment-matched EoS (SE: the experiment's and the theory's Monte Carlo SE in quadrature).

With `--partial`, the rows come from the points sampled so far (the run's aggregates and theory
files, through the workflow's own `fleos.figures.fig3.table`), for a run that is still going:

    .venv/bin/python studies/paper_scale_fig3/paper_scale_table.py --partial \
        --results results/paper_cpu_gates --config config/paper_cpu_gates.yaml \
        --out /tmp/fig3_partial.csv

A table made before the workflow's fig3 table carried a theory column (``matched_kish_ess``,
the Kish effective sample size of the moment-matched EoS's importance weights, out of its
samples) gets it from the run's theory files, without the run's other results:

    .venv/bin/python studies/paper_scale_fig3/paper_scale_table.py \
        --refresh studies/paper_scale_fig3/paper_scale_fig3.csv \
        --theory studies/paper_scale_fig3/theory/cnn2

A table written under looser gates gets its ``equilibrated`` and ``failed_gates`` columns
recomputed from its own ``rhat``, ``ess`` and ``drift_se`` with the workflow's default gates
(`fleos.core.diagnostics.EquilibriumGates`: R̂ ≤ 1.01, bulk ESS ≥ 400, drift ≤ 3 SE):

    .venv/bin/python studies/paper_scale_fig3/paper_scale_table.py \
        --regate studies/paper_scale_fig3/paper_scale_fig3*.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import yaml

from fleos.core.diagnostics import EquilibriumGates
from fleos.figures.render import write_table


def within(exp: float, se: float, eos: float) -> bool:
    return abs(exp - eos) <= 2 * se + 0.02 * abs(eos)


#: theory columns that a table written before the workflow's fig3 table carried them lacks
REFRESHED = ("matched_kish_ess",)


def write(path: Path, rows: list[dict]) -> None:
    write_table(path, list(rows[0]), rows)          # atomic, as the workflow's tables
    print(f"wrote {path}: {len(rows)} rows")


def refresh(table: Path, theory: Path) -> None:
    """Add the REFRESHED columns to `table` from the theory files theory/n{n}.json."""
    if not table.is_file():
        raise SystemExit(f"--refresh: {table} does not exist")
    with table.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        src = theory / f"n{r['n']}.json"
        if not src.is_file():
            raise SystemExit(f"--theory: {src} does not exist")
        by_C = {float(t["C"]): t for t in json.loads(src.read_text())["rows"]}
        t = by_C.get(float(r["C"]))
        if t is None:
            raise SystemExit(f"--theory: {src} has no row at C = {r['C']}")
        for k in REFRESHED:
            r[k] = f"{float(t.get(k, 'nan')):.1f}"
    write(table, rows)


def regate(table: Path) -> None:
    """Recompute `table`'s equilibrated and failed_gates columns with the default gates."""
    if not table.is_file():
        raise SystemExit(f"--regate: {table} does not exist")
    with table.open() as f:
        rows = list(csv.DictReader(f))
    gates = EquilibriumGates()
    for r in rows:
        failed = gates.failed(*(float(r[k] or "nan") for k in ("rhat", "ess", "drift_se")))
        r["equilibrated"], r["failed_gates"] = str(not failed), ";".join(failed)
    write(table, rows)


def partial_rows(res: Path, config: dict) -> list[dict]:
    """The workflow's fig3 table rows (as the strings its CSV holds) of the points that have
    an aggregate, from the theory files present."""
    from fleos.figures import fig3

    inputs = {"aggregate": sorted(str(p) for p in (res / "aggregate" / "cnn2").glob("n*/w*.npz")),
              "theory": sorted(str(p) for p in (res / "theory" / "cnn2").glob("n*.json"))}
    if not inputs["aggregate"] or not inputs["theory"]:
        raise SystemExit(f"--results: no cnn2 aggregates or theory files under {res}")
    rows = [r for r in fig3.table(inputs, config) if r["n_seeds"] > 0]
    return [{k: (f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in r.items()}
            for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", help="the run's results folder")
    ap.add_argument("--config", help="the run's config file")
    ap.add_argument("--out")
    ap.add_argument("--refresh", type=Path, help="a table to add the newer theory columns to")
    ap.add_argument("--theory", type=Path, help="with --refresh: the run's theory/cnn2 folder")
    ap.add_argument("--partial", action="store_true",
                    help="rows from the points sampled so far, not the run's tables/fig3.csv")
    ap.add_argument("--regate", type=Path, nargs="+",
                    help="tables whose gate columns to recompute with the default gates")
    args = ap.parse_args()
    if args.regate:
        for table in args.regate:
            regate(table)
        return
    if args.refresh:
        if not args.theory:
            ap.error("--refresh needs --theory")
        refresh(args.refresh, args.theory)
        return
    if not (args.results and args.config and args.out):
        ap.error("--results, --config and --out are required (or --refresh and --theory)")
    res = Path(args.results)
    config = yaml.safe_load(Path(args.config).read_text())
    if args.partial:
        rows = partial_rows(res, config)
    else:
        table = res / "tables" / "fig3.csv"
        if not table.is_file():
            raise SystemExit(f"--results: {table} does not exist (run the fig3 target first, "
                             f"or use --partial)")
        with table.open() as f:
            rows = list(csv.DictReader(f))
    exp = config["experiments"]["cnn2"]
    sc = exp["sampler"]
    integrator = (f"{sc.get('integrator', 'ula')} lr={sc['schedule'].get('lr')} "
                  f"friction={sc.get('friction', 1.0)} steps={sc['steps']} "
                  f"burn_in={sc['schedule'].get('burn_in')}")
    for r in rows:
        bench = sorted((res / "benchmarks" / "sample" / "cnn2" / f"n{r['n']}" /
                        f"w{r['C']}").glob("chunk*.tsv"))
        walls = []
        for b in bench:
            with b.open() as f:
                walls.append(float(next(csv.DictReader(f, delimiter="\t"))["s"]))
        r["wall_seconds"] = f"{sum(walls):.1f}" if walls else "nan"
        r["sampling_jobs"] = str(len(walls))
        r["integrator"] = integrator
        for q in ("alpha_test", "sigma_top"):
            for theory, suffix in (("eos", ""), ("matched", "_matched")):
                # the moment-matched EoS carries a Monte Carlo SE of its top Σ eigenvalue,
                # added in quadrature to the experiment's
                exp, se, th, th_se = (float(r.get(k, "nan") or "nan") for k in (
                    f"{q}_exp", f"{q}_exp_se", f"{q}_{theory}", f"{q}_{theory}_mc_se"))
                se = math.hypot(se, th_se) if math.isfinite(th_se) else se
                solved = r.get(f"{theory}_converged", "True") == "True"
                ok = solved and all(math.isfinite(v) for v in (exp, se, th)) and within(
                    exp, se, th)
                r[f"{q}_within_2se_2pct{suffix}"] = str(ok)
    write(Path(args.out), rows)


if __name__ == "__main__":
    main()
