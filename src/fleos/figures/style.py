"""What the drawings share: colours, the markers of a non-converged EoS point and of a point
that is not equilibrated, histograms with their Gaussian fits, error-bar points.

Every figure marks every EoS point that did not converge with an open grey cross, never
joined to the converged curve, and draws a point whose equilibration evidence
(`fleos.analysis.aggregate.equilibration_summary`) flags it hollow (a histogram: dotted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display: also on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fleos.figures.common import not_eq  # noqa: E402

__all__ = ["BLUE", "GREEN", "GREY", "HOLLOW_LABEL", "NONCONV", "RED", "hist2d_inset",
           "hist_with_fit", "hollow_legend", "plt", "points"]
BLUE, GREEN, RED, GREY = "tab:blue", "tab:green", "tab:red", "0.5"
NONCONV = {"marker": "x", "color": "0.4", "linestyle": "none", "markersize": 7}
HOLLOW_LABEL = "hollow: fails an equilibrium gate (column failed_gates)"


def hist_with_fit(ax: Any, values: np.ndarray, fit: Mapping[str, float], color: str,
                  label: str, bins: int = 60, style: str = "step",
                  eq: Mapping[str, Any] | None = None) -> None:
    """Histogram (density) of values and the dashed Gaussian moment fit (Figs. 3, 4, 6).
    A flagged `eq` (equilibration_summary) draws hollow dots / a dotted outline and says
    "not equilibrated" in the label."""
    bad = eq is not None and not_eq(eq)
    if bad:
        label = f"{label} (not equilibrated)"
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    lo, hi = np.quantile(values, [0.0005, 0.9995])
    edges = np.linspace(lo, hi, bins + 1)
    h, e = np.histogram(values, bins=edges, density=True)
    centers = 0.5 * (e[1:] + e[:-1])
    lab = f"{label}: var {fit['var']:.3g}±{fit['var_se']:.2g}"
    if style == "dots":
        ax.plot(centers, h, "o", color=color, markersize=3, label=lab,
                markerfacecolor="white" if bad else color)
    else:
        ax.stairs(h, e, color=color, label=lab, linestyle=":" if bad else "-")
    xs = np.linspace(lo, hi, 300)
    sd = math.sqrt(max(fit["var"], 1e-300))
    ax.plot(xs, np.exp(-0.5 * ((xs - fit["mean"]) / sd) ** 2) / (sd * math.sqrt(2 * math.pi)),
            "--", color=color, linewidth=1)


def points(ax: Any, x: Sequence[float], y: Sequence[float], yerr: Sequence[float] | None,
           eqs: Sequence[Mapping[str, Any]], color: str, label: str | None = None,
           **kw: Any) -> bool:
    """Error-bar points, filled when equilibrated and hollow when flagged. Returns whether
    any point was hollow (the caller then adds HOLLOW_LABEL to the legend)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    bad = np.array([not_eq(e) for e in eqs], bool)
    kw = {"capsize": 3, **kw}
    ax.errorbar(x, y, yerr=yerr, fmt="o", color=color, label=label, **kw)
    if bad.any():  # white faces over the flagged points
        ax.plot(x[bad], y[bad], "o", color=color, markerfacecolor="white",
                markersize=kw.get("markersize", 6), zorder=5)
    return bool(bad.any())


def hollow_legend(ax: Any) -> None:
    """The legend entry of a hollow (not equilibrated) point."""
    ax.plot([], [], "o", color="k", markerfacecolor="white", label=HOLLOW_LABEL)


def hist2d_inset(ax: Any, x: np.ndarray, y: np.ndarray, title: str, rect: list[float]) -> None:
    """An inset with the 2-D histogram of paired values (Fig. 4: teacher vs random overlap)."""
    ins = ax.inset_axes(rect)
    m = min(x.size, y.size)
    if m:
        ins.hist2d(x[:m], y[:m], bins=30, cmap="Blues")
    ins.set_title(title, fontsize=7)
    ins.tick_params(labelsize=5)
