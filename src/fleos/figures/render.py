"""Render a figure: its table, drawing, CSV and report summary (the workflow's figure rule).

Every figure module (``fleos.figures.<name>``, `figure_module`) has `table(inputs, config)
-> rows`, `draw(rows, inputs, config) -> Figure` and `summary(rows) -> lines`, and may set
`FIRST_COLUMNS`, the leading columns of its CSV (the other keys of the first row follow in
order). Which figures exist, and which files each reads, is the registry
`fleos.pipeline.FIGURES`; here a figure is found by its module's name.
"""

from __future__ import annotations

import csv
import importlib
import math
import os
import pkgutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fleos.core.diagnostics import EquilibriumGates
from fleos.core.files import atomic_path
from fleos.figures.common import ID_KEYS, PRIOR_EQ, Inputs, columns, eq_lines

Table = tuple[list[str], list[dict[str, Any]]]

# The figure modules of this package: fig2a, ..., fig6 (any module named fig*).
FIGURE_MODULES: tuple[str, ...] = tuple(sorted(
    m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("fig")
))


def figure_module(fig_name: str) -> ModuleType:
    """The module ``fleos.figures.<fig_name>`` of figure `fig_name`; an unknown name raises
    ValueError naming the figures there are."""
    if fig_name not in FIGURE_MODULES:
        raise ValueError(f"unknown figure {fig_name!r}; allowed: {list(FIGURE_MODULES)}")
    return importlib.import_module(f"fleos.figures.{fig_name}")


def figure_table(fig_name: str, inputs: Inputs, config: Mapping[str, Any]) -> Table:
    """(CSV columns, rows) of figure `fig_name`, without drawing."""
    module = figure_module(fig_name)
    rows = module.table(inputs, config)
    return columns(rows, getattr(module, "FIRST_COLUMNS", ())), rows


def summarize(fig_name: str, rows: Sequence[Mapping[str, Any]],
              config: Mapping[str, Any] | None = None) -> str:
    """The agreement of a figure in a few sentences of reStructuredText (report captions):
    the figure's own `summary`, then the equilibration of its points under the config's
    `EquilibriumGates`."""
    if not rows:
        return "No rows: nothing to compare."
    lines = figure_module(fig_name).summary(rows) if fig_name in FIGURE_MODULES else []
    lines.extend(eq_lines(rows, EquilibriumGates.from_config(config)))
    # the verdict first: the report's landing page includes this file's first line only
    lines.insert(0, verdict(fig_name, rows))
    return "\n".join(f"* {line}" for line in lines) + "\n"


def _num(v: Any) -> float:
    """`v` as a float; NaN for anything that is not a number (None, text, a missing value)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
        return math.nan
    return float(v)


def verdict(fig_name: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """The figure's verdict in one line: for a figure whose module sets `AGREEMENT`, the
    largest deviation of experiment from theory in % and in SE of the experiment (over the
    rows where both are finite and the theory converged); for the shape figures, the
    largest KS distance and |excess kurtosis|; then how many sampled points pass the
    equilibrium gates."""
    known = rows and fig_name in FIGURE_MODULES
    spec = getattr(figure_module(fig_name), "AGREEMENT", None) if known else None
    parts = []
    if spec:
        exp, se, th = spec["exp"], spec["se"], spec["theory"]
        pts = [(_num(r.get(exp)), _num(r.get(se)), _num(r.get(th))) for r in rows
               if all(r.get(k) == v for k, v in spec.get("rows", {}).items())
               and r.get("eos_converged", True) is not False]
        pts = [p for p in pts if all(np.isfinite(p))]
        if pts:
            pct = max(abs(e / t - 1) * 100 for e, _, t in pts if t != 0)
            sig = max(abs(e - t) / s for e, s, t in pts if s > 0)
            what = f"{spec['what']}, {len(pts)} point{'s' if len(pts) > 1 else ''}"
            parts.append(f"experiment vs EoS ({what}): largest "
                         f"deviation {pct:.3g} %, {sig:.3g} SE")
        else:
            parts.append(f"experiment vs EoS ({spec['what']}): no point with both")
    elif any(np.isfinite(_num(r.get("ks"))) for r in rows):
        ks = [v for v in (_num(r.get("ks")) for r in rows) if np.isfinite(v)]
        kurt = [abs(v) for v in (_num(r.get("excess_kurtosis")) for r in rows)
                if np.isfinite(v)]
        parts.append("Gaussianity (no EoS): largest KS distance "
                     f"{max(ks):.3g}" + (f", largest absolute excess kurtosis {max(kurt):.3g}"
                                         if kurt else ""))
    else:
        parts.append("theory only")
    points = {tuple(r.get(k) for k in ID_KEYS): r.get("equilibrated") for r in rows
              if "equilibrated" in r and r.get("eq_series") != PRIOR_EQ["eq_series"]}
    measured = [v for v in points.values() if v is not None]
    if points:
        parts.append(f"{sum(v is True for v in measured)} of {len(points)} sampled points "
                     "equilibrated" + ("" if len(measured) == len(points)
                                       else f" ({len(points) - len(measured)} unmeasured)"))
    return f"**{fig_name}**: " + "; ".join(parts) + "."


def write_table(path: str | os.PathLike, columns: Sequence[str],
                rows: Sequence[Mapping[str, Any]]) -> None:
    """CSV with a header row; floats with 6 significant digits, NaN written as 'nan'."""

    def fmt(v: Any) -> Any:
        if isinstance(v, (float, np.floating)):
            return f"{float(v):.6g}"
        return v

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: fmt(v) for k, v in r.items()})


def render_figure(
    fig_name: str,
    inputs: Inputs,
    config: Mapping[str, Any],
    png: str | os.PathLike,
    pdf: str | os.PathLike,
    csv_path: str | os.PathLike,
    summary_path: str | os.PathLike | None = None,
) -> Table:
    """Draw figure `fig_name` from the workflow files and write PNG, PDF, the CSV table and
    (if asked) an rst summary of the agreement, included in the report caption."""
    from fleos.figures.style import plt

    cols, rows = figure_table(fig_name, inputs, config)
    fig = figure_module(fig_name).draw(rows, inputs, config)
    for p in (png, pdf):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=150)
    fig.savefig(pdf)
    plt.close(fig)
    write_table(csv_path, cols, rows)
    if summary_path is not None:
        with atomic_path(summary_path) as tmp:
            Path(tmp).write_text(summarize(fig_name, rows, config))
    return cols, rows
