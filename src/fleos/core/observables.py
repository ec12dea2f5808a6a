"""Observables of equilibrium samples: Gaussian fits, QQ data, KS distance, projections.

The paper's normality checks (Fig. 2a QQ plot, Figs. 3-4 and 6 histograms with "fits to a
Gaussian") and the kernel spectra of Fig. 5. Error bars here are ACROSS INDEPENDENT GROUPS
(seeds, i.e. independent Langevin chains): samples within one chain are time-correlated, so a
naive i.i.d. standard error over all samples would be too small. Pass ``groups`` (the seed of
each value) to get honest standard errors; without it the i.i.d. formula is used and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class GaussianFit:
    """Moment fit N(mean, var) of a sample, with standard errors.

    mean, var: the pooled sample mean and variance (ddof = 1).
    mean_se, var_se: standard errors; across groups (seeds) when the fit was given groups
        (SE of the mean over groups of the per-group estimates, divided by sqrt(#groups)),
        else the i.i.d. formulas sqrt(var/m) and var·sqrt(2/(m-1)).
    count: number of values; groups: number of independent groups (0 if none given).
    ks: Kolmogorov-Smirnov distance between the standardized sample and N(0, 1) (a shape
        measure; its p-value would assume i.i.d. values and is not reported).
    excess_kurtosis: 0 for a Gaussian.
    excess_kurtosis_se: its standard error: with groups, the jackknife over groups (the pooled
        estimate recomputed with each group left out), which sees a heavy tail that lives in one
        group; without, the i.i.d. large-sample formula (≈ sqrt(24/count)).
    """

    mean: float
    var: float
    mean_se: float
    var_se: float
    count: int
    groups: int
    ks: float
    excess_kurtosis: float
    excess_kurtosis_se: float

    def pdf(self, x: np.ndarray) -> np.ndarray:
        """Density of the fitted Gaussian at x (the dashed lines of Figs. 3, 4, 6)."""
        return stats.norm.pdf(x, loc=self.mean, scale=np.sqrt(self.var))


def gaussian_fit(x: np.ndarray, groups: np.ndarray | None = None) -> GaussianFit:
    """Fit a Gaussian by moments to the values x (any shape, flattened).

    groups: same shape as x, the independent group (seed) of each value; the SEs are then the
    scatter of the per-group means/variances across groups (needs >= 2 groups).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x)] if groups is None else x
    m = x.size
    if m < 3:
        raise ValueError(f"gaussian_fit needs at least 3 values, got {m}")
    mean = float(np.mean(x))
    var = float(np.var(x, ddof=1))
    if groups is not None:
        g = np.asarray(groups).ravel()
        if g.shape != x.shape:
            raise ValueError(f"groups has {g.size} entries for {x.size} values")
        labels = np.unique(g)
        if labels.size < 2:
            raise ValueError("gaussian_fit with groups needs at least 2 groups for an SE")
        gm = np.array([np.mean(x[g == lab]) for lab in labels])
        gv = np.array([np.var(x[g == lab], ddof=1) for lab in labels])
        k = labels.size
        mean_se = float(np.std(gm, ddof=1) / np.sqrt(k))
        var_se = float(np.std(gv, ddof=1) / np.sqrt(k))
        n_groups = int(k)
    else:
        mean_se = float(np.sqrt(var / m))
        var_se = float(var * np.sqrt(2.0 / (m - 1)))
        n_groups = 0
    z = (x - mean) / np.sqrt(var) if var > 0 else np.zeros_like(x)
    ks = float(stats.kstest(z, "norm").statistic) if var > 0 else float("nan")
    kurt = _excess_kurtosis(x)
    if groups is not None:
        loo = np.array([_excess_kurtosis(x[g != lab]) for lab in labels])
        kurt_se = float(np.sqrt((k - 1) / k * np.sum((loo - loo.mean()) ** 2)))
    elif m > 3:  # the G2 formula needs four values; three have a kurtosis but no SE of it
        kurt_se = float(np.sqrt(24.0 * m * (m - 1) ** 2 / ((m - 3) * (m - 2) * (m + 3) * (m + 5))))
    else:
        kurt_se = float("nan")
    return GaussianFit(mean, var, mean_se, var_se, m, n_groups, ks, kurt, kurt_se)


def _excess_kurtosis(x: np.ndarray) -> float:
    """The sample excess kurtosis (bias-corrected G2; NaN for a constant sample)."""
    return (float(stats.kurtosis(x, fisher=True, bias=False)) if np.var(x) > 0
            else float("nan"))


def qq_points(x: np.ndarray, num: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """QQ-plot data of the standardized sample against N(0, 1) (Fig. 2a).

    Returns (theoretical, empirical) quantiles at `num` probabilities (k - 0.5)/num; a
    Gaussian sample falls on the diagonal.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size < 3:
        raise ValueError(f"qq_points needs at least 3 values, got {x.size}")
    sd = np.std(x, ddof=1)
    z = (x - np.mean(x)) / (sd if sd > 0 else 1.0)
    p = (np.arange(1, num + 1) - 0.5) / num
    return stats.norm.ppf(p), np.quantile(z, p)


def top_eigh(M: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix; top k."""
    M = np.asarray(M, dtype=np.float64)
    w, V = np.linalg.eigh(0.5 * (M + M.T))
    order = np.argsort(w)[::-1]
    w, V = w[order], V[:, order]
    if k is not None:
        w, V = w[:k], V[:, :k]
    return w, V


def project_on_eigenvectors(
    H: np.ndarray, K: np.ndarray, indices: tuple[int, ...] = (0, 9)
) -> dict[int, np.ndarray]:
    """Project pre-activations on eigenvectors of a kernel (Fig. 6).

    H: (..., P) pre-activations over the P points the kernel K (P × P) is defined on, e.g.
    (samples, channels, P). Returns {i: H @ v_i} for the eigenvectors v_i of K ordered by
    decreasing eigenvalue (i = 0 is the leading one, i = 9 the 10th). The sign of v_i is fixed
    so that its largest-magnitude entry is positive (eigenvectors are defined up to sign).
    """
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"kernel must be square, got shape {K.shape}")
    if H.shape[-1] != K.shape[0]:
        raise ValueError(f"pre-activations have {H.shape[-1]} points, kernel {K.shape[0]}")
    if max(indices) >= K.shape[0]:
        raise ValueError(f"eigenvector index {max(indices)} >= kernel size {K.shape[0]}")
    _, V = top_eigh(K)
    out = {}
    for i in indices:
        v = V[:, i]
        v = v * np.sign(v[np.argmax(np.abs(v))])
        out[i] = np.asarray(H, dtype=np.float64) @ v
    return out


def overlap(W: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """w · u/|u| for rows w of W (..., d) and a direction u (d,) (Figs. 3 right, 4)."""
    u = np.asarray(direction, dtype=np.float64).ravel()
    return np.asarray(W, dtype=np.float64) @ (u / np.linalg.norm(u))
