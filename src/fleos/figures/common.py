"""What the figure tables share: reading the workflow's files, the equilibration columns, the
number format of the summaries. Pure functions of files and rows; no matplotlib.

Inputs are the workflow's files: aggregate ``.npz`` (fleos.analysis.aggregate.aggregate_experiment),
theory JSON (fleos.theory.runs), data ``.npz`` (fleos.nets.datasets.save_dataset).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fleos.analysis.aggregate import load_aggregate, unpack_fit
from fleos.core.diagnostics import EquilibriumGates
from fleos.core.files import read_json

Inputs = Mapping[str, Sequence[str]]
Row = dict[str, Any]
# The series (fleos.analysis.aggregate.equilibration_series) behind each headline observable.
SERIES_SIGMA = ("w_teacher_sq", "w_random_sq")  # Σ along the teacher and random directions
SERIES_CNN3 = ("w_teacher_sq", "w_random_sq", "h2_teacher_sq", "h2_random_sq", "loss")
# Prior draws are independent exact draws: nothing to equilibrate.
PRIOR_EQ = {"rhat": math.nan, "ess": math.nan, "drift_se": math.nan, "n_backoffs": math.nan,
            "eq_series": "independent prior draws", "failed_gates": "", "equilibrated": True}
# What identifies a point in a table (rows sharing these share their equilibration record).
ID_KEYS = ("n", "C", "width", "quantity", "layer", "eigenvector", "state")


def nan(v: Any) -> float:
    """A JSON number, with null (NaN or inf when written) read back as NaN."""
    return math.nan if v is None else float(v)


def optional(agg: Mapping[str, Any] | None, key: str) -> float:
    """A scalar of an aggregate that only some runs record (e.g. the Rao-Blackwellized
    ``alpha_train_rb``), NaN where absent."""
    return float(agg[key]) if agg is not None and key in agg else math.nan


def fmt(v: Any) -> str:
    """A number with 4 significant digits for the summaries; anything else as is."""
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


def agg_index(paths: Sequence[str]) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    """{(n, width): aggregate} from aggregate file paths."""
    out = {}
    for p in paths:
        a = load_aggregate(p)
        out[(int(a["n"]), int(a["width"]))] = a
    return out


def theory_index(paths: Sequence[str]) -> dict[int, dict[str, Any]]:
    """{n: theory record} from the theory JSON files of a width sweep."""
    return {int(d["n"]): d for d in (read_json(p) for p in paths)}


def fit_row(prefix: str, agg: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The Gaussian fit ``<prefix>_fit`` of an aggregate as a dict (FIT_FIELDS)."""
    return unpack_fit(agg[f"{prefix}_fit"])


def not_eq(eq: Mapping[str, Any]) -> bool:
    """True only for a point measured and flagged (None = not measurable is not flagged)."""
    return eq.get("equilibrated") is False


def columns(rows: Sequence[Mapping[str, Any]], first: Sequence[str] = ()) -> list[str]:
    """The CSV header: the `first` columns, then the other keys of the first row in order."""
    if not rows:
        return list(first)
    return list(first) + [c for c in rows[0] if c not in first]


def eq_lines(rows: Sequence[Mapping[str, Any]],
             gates: EquilibriumGates | None = None) -> list[str]:
    """Summary sentences on equilibration: the flagged points, by name and numbers, or the
    worst diagnostics when none is flagged; points without a measurement are named too."""
    gates = gates or EquilibriumGates()
    points: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        if "equilibrated" in r and r.get("eq_series") != PRIOR_EQ["eq_series"]:
            points.setdefault(", ".join(f"{k} = {r[k]}" for k in ID_KEYS if k in r), r)
    if not points:
        return []

    def nums(r: Mapping[str, Any]) -> str:
        failed = f"fails {r['failed_gates']}; " if r.get("failed_gates") else ""
        return (f"{failed}R̂ {fmt(r['rhat'])}, drift {fmt(r['drift_se'])} SE, bulk ESS "
                f"{fmt(r['ess'])}, back-offs {fmt(r['n_backoffs'])}; series {r['eq_series']}")

    bad = {i: r for i, r in points.items() if r["equilibrated"] is False}
    unknown = [i for i, r in points.items() if r["equilibrated"] is None]
    measured = [r for r in points.values() if r["equilibrated"] is not None]
    lines = []
    if bad:
        lines.append(f"NOT EQUILIBRATED (drawn hollow; gates {gates.describe()}): "
                     + "; ".join(f"{i} ({nums(r)})" for i, r in bad.items()) + ".")
    elif measured:
        worst = max(measured, key=lambda r: r["rhat"])
        lines.append(f"Equilibration: every measured point passes the gates "
                     f"({gates.describe()}); the largest R̂ is at "
                     f"{next(i for i, r in points.items() if r is worst)} ({nums(worst)}).")
    if unknown:
        lines.append("Equilibration not measurable (fewer than 8 sampling points common to "
                     "all seeds) at: " + "; ".join(unknown) + ".")
    return lines
