"""Render a figure: its table, drawing, CSV and report summary (the workflow's figure rule).

Every figure module (`FIGURES`) has `table(inputs, config) -> rows`, `draw(rows, inputs,
config) -> Figure` and `summary(rows) -> lines`, and may set `FIRST_COLUMNS`, the leading
columns of its CSV (the other keys of the first row follow in order).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fleos.figures import fig2a, fig2b, fig2c, fig3, fig4, fig5, fig6
from fleos.figures.common import Inputs, columns, eq_lines
from fleos.sampling.io import atomic_path

FIGURES: dict[str, ModuleType] = {
    "fig2a": fig2a, "fig2b": fig2b, "fig2c": fig2c, "fig3": fig3, "fig4": fig4,
    "fig5": fig5, "fig6": fig6,
}
Table = tuple[list[str], list[dict[str, Any]]]


def figure_table(fig_name: str, inputs: Inputs, config: Mapping[str, Any]) -> Table:
    """(CSV columns, rows) of figure `fig_name`, without drawing."""
    if fig_name not in FIGURES:
        raise ValueError(f"unknown figure {fig_name!r}; allowed: {sorted(FIGURES)}")
    module = FIGURES[fig_name]
    rows = module.table(inputs, config)
    return columns(rows, getattr(module, "FIRST_COLUMNS", ())), rows


def summarize(fig_name: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """The agreement of a figure in a few sentences of reStructuredText (report captions):
    the figure's own `summary`, then the equilibration of its points."""
    if not rows:
        return "No rows: nothing to compare."
    lines = FIGURES[fig_name].summary(rows) if fig_name in FIGURES else []
    lines.extend(eq_lines(rows))
    return "\n".join(f"* {line}" for line in lines) + "\n"


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
    fig = FIGURES[fig_name].draw(rows, inputs, config)
    for p in (png, pdf):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=150)
    fig.savefig(pdf)
    plt.close(fig)
    write_table(csv_path, cols, rows)
    if summary_path is not None:
        with atomic_path(summary_path) as tmp:
            Path(tmp).write_text(summarize(fig_name, rows))
    return cols, rows
