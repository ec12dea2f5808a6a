"""Collect a finished run into a small folder that can be committed beside the docs.

A paper-scale run leaves gigabytes under its results folder (samples, checkpoints, aggregates).
What a reader needs is small: the workflow's own tables and summaries, its figures, and what
the run cost. `collect_run` copies exactly those, unchanged, and adds

* ``jobs.csv``: one row per sampling job (experiment, n, width, chunk) with its wall time,
  CPU time and CPU use (%) from Snakemake's benchmark file, and the sampler settings that made
  it (integrator, lr, steps, burn-in, seeds);
* ``RUN.md``: the config, the command, the machine (cores, model), the summed sampling cost,
  the equilibrium gates the tables were judged by, and the caller's notes (e.g. the system
  load during the run, which no benchmark file records).

Intermediate arrays (samples, aggregates, theory JSON) stay out: the tables carry every number
the figures show. `fleos collect` is the command line.
"""

from __future__ import annotations

import csv
import os
import platform
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fleos.core.diagnostics import EquilibriumGates
from fleos.core.files import atomic_path

JOB_COLUMNS = ("experiment", "n", "width", "chunk", "seeds", "wall_s", "cpu_s", "cpu_percent",
               "max_rss_mb", "integrator", "lr", "steps", "burn_in")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _benchmark_row(path: Path) -> dict[str, str]:
    with path.open() as fh:
        return next(csv.DictReader(fh, delimiter="\t"))


def sampling_jobs(results: Path, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per sampling job of the run (JOB_COLUMNS), from the benchmark files
    ``benchmarks/sample/{experiment}/n{n}/w{width}/chunk{k}.tsv`` the workflow writes."""
    rows = []
    for name, exp in sorted(config["experiments"].items()):
        sc = exp.get("sampler", {})
        sched = sc.get("schedule", {})
        per_job = int(exp.get("seeds_per_job", exp.get("seeds", 1)))
        for tsv in sorted((results / "benchmarks" / "sample" / name).glob("n*/w*/chunk*.tsv")):
            b = _benchmark_row(tsv)
            rows.append({
                "experiment": name, "n": int(tsv.parent.parent.name[1:]),
                "width": int(tsv.parent.name[1:]), "chunk": int(tsv.stem[5:]),
                "seeds": per_job, "wall_s": float(b["s"]),
                "cpu_s": float(b.get("cpu_time", "nan") or "nan"),
                # Snakemake's "mean_load" is the job's own CPU use in %, not the system load
                "cpu_percent": float(b.get("mean_load", "nan") or "nan"),
                "max_rss_mb": float(b.get("max_rss", "nan") or "nan"),
                "integrator": sc.get("integrator", "ula"), "lr": sched.get("lr"),
                "steps": sc.get("steps"), "burn_in": sched.get("burn_in"),
            })
    return rows


def collect_run(results: str | os.PathLike, config_path: str | os.PathLike,
                out: str | os.PathLike, command: str | None = None,
                notes: Sequence[str] = ()) -> list[Path]:
    """Copy a finished run's tables, summaries and PNG figures from `results` into `out`,
    write ``jobs.csv`` and ``RUN.md`` there; returns the files written. Raises
    FileNotFoundError naming the folder if the run has no tables yet."""
    results, out = Path(results), Path(out)
    tables = sorted((results / "tables").glob("fig*"))
    if not tables:
        raise FileNotFoundError(f"{results / 'tables'}: no fig* tables (has the run finished?)")
    config = yaml.safe_load(Path(config_path).read_text())
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for src in [*tables, *sorted((results / "figures").glob("fig*.png"))]:
        with atomic_path(out / src.name) as tmp:
            shutil.copyfile(src, tmp)
        written.append(out / src.name)
    jobs = sampling_jobs(results, config)
    lines = [",".join(JOB_COLUMNS)]
    lines += [",".join(str(j[c]) for c in JOB_COLUMNS) for j in jobs]
    texts = {"jobs.csv": "\n".join(lines) + "\n",
             "RUN.md": run_notes(config_path, config, jobs, command, notes)}
    for name, text in texts.items():
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
        written.append(out / name)
    return written


def run_notes(config_path: str | os.PathLike, config: Mapping[str, Any],
              jobs: Sequence[Mapping[str, Any]], command: str | None,
              notes: Sequence[str] = ()) -> str:
    """The RUN.md text: what ran, where, what it cost, and the caller's notes."""
    wall = sum(j["wall_s"] for j in jobs)
    cpu = sum(j["cpu_s"] for j in jobs if j["cpu_s"] == j["cpu_s"])
    use = [j["cpu_percent"] for j in jobs if j["cpu_percent"] == j["cpu_percent"]]
    return "\n".join([
        f"# Run of `{config_path}`",
        "",
        f"- command: `{command or 'snakemake --configfile=' + str(config_path)}`",
        f"- machine: {os.cpu_count()} cores, {_cpu_model()}",
        f"- sampling: {len(jobs)} jobs, {wall / 60:.1f} min wall summed over jobs "
        f"({cpu / 60:.1f} min CPU, {min(use, default=float('nan')):.0f}–"
        f"{max(use, default=float('nan')):.0f} % CPU per job; Snakemake benchmark files, "
        "one row each in jobs.csv)",
        f"- equilibrium gates of the tables: {EquilibriumGates.from_config(config).describe()}",
        *(f"- {line}" for line in notes),
        "",
        "The tables (`fig*.csv`, `fig*_summary.rst`) and figures (`fig*.png`) are the "
        "workflow's own files, copied unchanged.",
        "",
    ])


__all__ = ["JOB_COLUMNS", "collect_run", "run_notes", "sampling_jobs"]
