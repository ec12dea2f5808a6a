"""Pool sampling jobs into observables with error bars across seeds.

The workflow's aggregation stage (docs/workflow.md) as library functions; the Snakemake rule
script is one call. The theory per configuration is `fleos.theory.runs`.

Statistics. Each seed is an independent Langevin chain and each sample file stores per-seed
*time averages* (docs/hdf5-layout.md). Time samples within a chain are correlated, so error
bars are computed ACROSS SEEDS only:

* observables linear in the posterior mean f̄ (α train/test, Eq. 9 and the 3-layer FCN
  section) are computed per seed and averaged, SE = std(ddof=1)/√m over the m seeds;
* non-linear functionals of posterior means (the normalized train MSE, eigenvalues of Σ,
  K^(2), Q^(2)) are computed from the seed-pooled mean, with a delete-one jackknife SE over
  seeds (`jackknife`); a per-seed estimate would be biased by each chain's finite-time noise;
* Gaussian fits of snapshot projections use `fleos.core.observables.gaussian_fit` with the seed as
  group, so their SEs are also across seeds.

Equilibration. The same files hold per-seed time series (thinned snapshots of weight and
pre-activation projections, the training loss). For each headline observable a scalar series
per seed (`equilibration_series`) gets the rank-normalized split-R̂ across seeds, the bulk ESS
and the drift between the first and second half of the sampling window in SE
(fleos.core.diagnostics); a point that fails any of the `EquilibriumGates` (R̂, bulk ESS,
drift; config key ``gates``), or whose chains did not all run at one step size over their
windows (`step_size_record`, `one_step_size_failures`), is "not equilibrated"
(`equilibration_summary`). The lr back-offs of all chunks are counted (`n_backoffs`).

Output: one ``.npz`` per (experiment, n, width) (flat keys, documented in `aggregate_job`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fleos.analysis.correlations import MIN_CHAINS, preactivation_correlations
from fleos.config import WORKFLOW_ONLY_KEYS
from fleos.core import gp
from fleos.core.diagnostics import EquilibriumGates
from fleos.core.observables import GaussianFit, gaussian_fit, top_eigh

# Keys of `resources` that the sampling job itself reads (fleos.config.ExperimentConfig).
DEVICE_KEYS = ("gpu", "allow_cpu")
# Sample-file datasets without a leading chain axis (not concatenated across chunks).
_NON_CHAIN = ("snapshots/epoch", "loss/epoch", "snapshots/directions",
              "snapshots/teacher_direction")
# Values kept per histogram in the aggregate file (a uniform subsample beyond that).
MAX_HIST_VALUES = 200_000
FIT_FIELDS = ("mean", "var", "mean_se", "var_se", "ks", "excess_kurtosis", "count", "groups",
              "excess_kurtosis_se")
# Equilibration record of one series, stored as ``eq_<series>`` = [rhat, ess, drift, drift_se].
EQ_FIELDS = ("rhat", "ess", "drift", "drift_se")


def engine_config(exp: Mapping[str, Any]) -> dict[str, Any]:
    """The experiment entry without the workflow-only keys (theory, resources, label), i.e.
    what `fleos.config.ExperimentConfig.from_dict` accepts; of `resources` only the device
    request (gpu, allow_cpu) stays, which the sampling job checks against what JAX sees."""
    out = {k: v for k, v in exp.items() if k not in WORKFLOW_ONLY_KEYS}
    device = {k: v for k, v in (exp.get("resources") or {}).items() if k in DEVICE_KEYS}
    if device:
        out["resources"] = device
    return out


# ---------------------------------------------------------------------------------------------
# Statistics across seeds
# ---------------------------------------------------------------------------------------------


def mean_se(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error (std ddof=1 / √m) over independent seeds along `axis`."""
    v = np.asarray(values, dtype=np.float64)
    m = v.shape[axis]
    if m < 2:
        raise ValueError(f"an error bar across seeds needs >= 2 seeds, got {m}")
    return v.mean(axis=axis), v.std(axis=axis, ddof=1) / math.sqrt(m)


def jackknife(
    stat: Callable[[np.ndarray], np.ndarray], per_seed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Delete-one jackknife over seeds of a statistic of the seed-pooled mean.

    per_seed: (m, ...) per-seed time averages; stat(pooled_mean) -> array. Returns
    (stat(mean over all seeds), SE) with SE² = (m−1)/m Σ_i (θ_(i) − θ̄)², θ_(i) the statistic
    with seed i left out.
    """
    x = np.asarray(per_seed, dtype=np.float64)
    m = x.shape[0]
    if m < 2:
        raise ValueError(f"a jackknife across seeds needs >= 2 seeds, got {m}")
    full = np.asarray(stat(x.mean(axis=0)), dtype=np.float64)
    total = x.sum(axis=0)
    loo = np.stack([np.asarray(stat((total - x[i]) / (m - 1)), np.float64) for i in range(m)])
    se = np.sqrt((m - 1) / m * np.sum((loo - loo.mean(axis=0)) ** 2, axis=0))
    return full, se


def alpha_per_seed(f_mean: np.ndarray, y: np.ndarray, sigma2: float) -> np.ndarray:
    """α = (y − f̄)·y/(σ² y·y) for each seed's time-averaged f̄ (rows of f_mean)."""
    y = np.asarray(y, dtype=np.float64)
    return (y[None, :] - f_mean) @ y / (sigma2 * (y @ y))


def normalized_mse(f_mean: np.ndarray, y: np.ndarray, sigma2: float) -> float:
    """Σ(f̄ − y)²/(σ² Σ y²) at the pooled posterior mean (fleos.core.gp.normalized_mse, in numpy)."""
    y = np.asarray(y, dtype=np.float64)
    return float(np.sum((f_mean - y) ** 2) / (sigma2 * (y @ y)))


def fit_record(prefix: str, fit: GaussianFit) -> dict[str, np.ndarray]:
    """Flat npz entries ``{prefix}_fit`` = [mean, var, mean_se, var_se, ks, kurtosis, count,
    groups, kurtosis_se] (FIT_FIELDS order)."""
    return {f"{prefix}_fit": np.array([getattr(fit, f) for f in FIT_FIELDS], np.float64)}


def unpack_fit(arr: np.ndarray) -> dict[str, float]:
    """Inverse of `fit_record`: a dict keyed by FIT_FIELDS."""
    return {f: float(v) for f, v in zip(FIT_FIELDS, np.asarray(arr), strict=True)}


# ---------------------------------------------------------------------------------------------
# Reading sample files
# ---------------------------------------------------------------------------------------------


# Per-chain datasets a job writes only when one of its chains reached the state they record:
# the top input-weight modes need full snapshots from the `final` stage of the spike schedule.
_MAY_LACK = ("top_modes/",)


def _missing_rows(flat: Mapping[str, Any], like: np.ndarray) -> np.ndarray:
    """Rows for the chains of a file that lacks a `_MAY_LACK` dataset shaped like `like`."""
    like = np.asarray(like)
    shape = (len(np.atleast_1d(flat["seeds"])), *like.shape[1:])
    if np.issubdtype(like.dtype, np.integer):
        return np.full(shape, -1, like.dtype)
    return np.full(shape, np.nan)


def load_chunks(paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Read the seed-chunk files of one (experiment, n, width) and join them along the chain
    axis. Returns flat keys ('f_train/mean', 'snapshots/w_teacher', ...) plus 'config' (of
    the first file). Files must agree on n, width and config; seeds must not repeat."""
    from fleos.sampling.io import flatten_tree, read_samples

    if not paths:
        raise ValueError("load_chunks: no sample files given")
    parts = [read_samples(p) for p in paths]
    first = parts[0]
    for p, part in zip(paths, parts, strict=True):
        for key in ("n", "width"):
            if int(part["attrs"][key]) != int(first["attrs"][key]):
                raise ValueError(f"sample file {p}: {key}={part['attrs'][key]} differs from "
                                 f"{paths[0]} ({first['attrs'][key]})")
    # Everything but the file's attributes and config, with nested groups as 'a/b' keys.
    flats = [flatten_tree({k: v for k, v in p.items() if k not in ('attrs', 'config')})
             for p in parts]
    out: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for f in flats for k in f))    # every file's, in first-seen order
    for key in keys:
        vals = [f[key] for f in flats if key in f]
        chain = (key not in _NON_CHAIN and not key.startswith("backoffs/")
                 and not key.endswith("/rhat"))
        if chain and len(vals) != len(flats) and key.startswith(_MAY_LACK):
            # A job may legitimately lack these (no chain reached the state they record): its
            # chains get NaN (-1 for integers), so that each row stays with its own chain.
            vals = [f[key] if key in f else _missing_rows(f, vals[0]) for f in flats]
        elif chain and len(vals) != len(flats):
            # One file's chains would otherwise stand for all of them: refuse, naming the file.
            missing = next(p for p, f in zip(paths, flats, strict=True) if key not in f)
            raise ValueError(f"sample file {missing}: lacks {key!r}, which "
                             f"{len(vals)} of the {len(flats)} files of this point hold")
        if chain:
            out[key] = np.concatenate([np.atleast_1d(v) for v in vals], axis=0)
        elif key.startswith("backoffs/"):
            # Event lists (one row per back-off): every chunk's events count. Their `chain`
            # column stays the index within its own file; `seed` identifies the chain.
            out[key] = np.concatenate([np.atleast_1d(v) for v in vals], axis=0)
        else:
            out[key] = vals[0]
    seeds = out["seeds"]
    if len(set(seeds.tolist())) != len(seeds):
        raise ValueError(f"load_chunks: repeated seeds {sorted(seeds.tolist())} across {paths}")
    out["config"] = first["config"]
    out["n"] = int(first["attrs"]["n"])
    out["width"] = int(first["attrs"]["width"])
    return out


def _sampling_values(snap: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of snapshots (chains, T, ...) taken in the sampling stage, flattened, with the
    chain index of each value (the group of `gaussian_fit`)."""
    vals, groups = [], []
    for c in range(snap.shape[0]):
        v = np.asarray(snap[c][mask[c]], np.float64).ravel()
        vals.append(v)
        groups.append(np.full(v.size, c))
    return np.concatenate(vals), np.concatenate(groups)


def _subsample(x: np.ndarray, seed: int = 0) -> np.ndarray:
    if x.size <= MAX_HIST_VALUES:
        return x
    idx = np.random.default_rng(seed).choice(x.size, MAX_HIST_VALUES, replace=False)
    return x[np.sort(idx)]


# ---------------------------------------------------------------------------------------------
# Equilibration evidence from the per-seed time series
# ---------------------------------------------------------------------------------------------


# The recorder's snapshot projections that carry an all-channel mean square `<p>_msq`.
SNAPSHOT_PROJECTIONS = ("w_teacher", "w_random", "h2_teacher", "h2_random")


def _common_tail(x: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """(chains, T, ...) -> (chains, t, ...): each chain's last t sampling points, t the
    smallest number any chain has (R̂ and ESS need equal lengths; the tail is the most
    equilibrated part). None if t < 8 (too short for a half drift)."""
    lens = mask.sum(axis=1)
    t = int(lens.min()) if len(lens) else 0
    if t < 8:
        return None
    return np.stack([np.asarray(x[c], np.float64)[mask[c]][-t:] for c in range(x.shape[0])])


def _loss_mask(samples: Mapping[str, Any]) -> np.ndarray | None:
    """(chains, T_loss) mask of the loss epochs inside each chain's sampling window, from the
    sampling snapshots: from the first to the last epoch of a sampling snapshot."""
    if "snapshots/sampling" not in samples or "loss/epoch" not in samples:
        return None
    smask = np.asarray(samples["snapshots/sampling"], bool)
    sep = np.asarray(samples["snapshots/epoch"])
    lep = np.asarray(samples["loss/epoch"])
    out = np.zeros((smask.shape[0], lep.size), bool)
    for c in range(smask.shape[0]):
        if smask[c].any():
            e = sep[smask[c]]
            out[c] = (lep >= e.min()) & (lep <= e.max())
    return out


def equilibration_series(samples: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Scalar series (chains, t) per headline observable, from the stored time series:

    * ``loss``: the training SSE Σ_μ (f(x_μ) − y_μ)² (train MSE and α, Figs. 2b, 3);
    * ``<p>_sq`` for the snapshot projections p = w_teacher, w_random, h2_teacher, h2_random:
      the channel (and direction) mean of the squared overlap, i.e. the second moment that
      the figures' variances and Σ / K^(2) along the teacher measure (Figs. 3, 4, 5), over all
      channels (the recorder's ``<p>_msq``, invariant under permuting channels); sample files
      without it fall back to the recorded subset of ``snapshot_channels`` channels, whose
      series also follows which channels specialize (docs/workflow.md "Equilibrium gates");
    * ``mode1_sq``: the same along each chain's top Σ mode v₁ (Fig. 2a): v₁ᵀΣ̂(θ)v₁, the mean
      of (w·v₁)² over ALL channels, at every snapshot (the recorder's ``snapshots/sigma``);
      sample files without it fall back to the kept full snapshots of the recorded channels
      (the last `full_snapshots`: too few points for the ESS gate, and a subset series).
    Only sampling-stage points; each chain's last t points, t common to all chains."""
    out: dict[str, np.ndarray] = {}
    mask = (np.asarray(samples["snapshots/sampling"], bool)
            if "snapshots/sampling" in samples else None)
    lmask = _loss_mask(samples)
    if lmask is not None:
        x = _common_tail(np.asarray(samples["loss/sse"], np.float64), lmask)
        if x is not None:
            out["loss"] = x
    for key in SNAPSHOT_PROJECTIONS:
        if mask is None:
            break
        if f"snapshots/{key}_msq" in samples:
            sq = np.asarray(samples[f"snapshots/{key}_msq"], np.float64)
        elif f"snapshots/{key}" in samples:
            v = np.asarray(samples[f"snapshots/{key}"], np.float64)
            sq = (v ** 2).reshape(v.shape[0], v.shape[1], -1).mean(axis=2)
        else:
            continue
        x = _common_tail(sq, mask)
        if x is not None:
            out[f"{key}_sq"] = x
    v1 = (np.asarray(samples["top_modes/eigvecs"], np.float64)[..., 0]  # (chains, d)
          if "top_modes/eigvecs" in samples else None)
    sig = samples.get("snapshots/sigma")  # (chains, T, d, d)
    # Chunks written before the recorder kept Σ̂ per snapshot lack it; joined with newer ones
    # the key covers fewer chains than the eigenvectors: then the fallback below, for all.
    if (mask is not None and sig is not None and v1 is not None
            and np.shape(sig)[0] == v1.shape[0] == mask.shape[0]):
        # one chain at a time: float64 copies of all chains' Σ̂ would be chains × T × d²
        sq = np.stack([np.einsum("tij,i,j->t", np.asarray(sig[c], np.float64), v1[c], v1[c])
                       for c in range(v1.shape[0])])
        x = _common_tail(sq, mask & np.isfinite(sq))
        if x is not None:
            out["mode1_sq"] = x
    elif "top_modes/proj" in samples:
        proj = np.asarray(samples["top_modes/proj"], np.float64)[..., 0]  # (chains, K, C)
        sq = (proj ** 2).mean(axis=2)
        x = _common_tail(sq, np.isfinite(sq))
        if x is not None:
            out["mode1_sq"] = x
    return out


def equilibration_record(x: np.ndarray) -> np.ndarray:
    """[rhat, ess, drift, drift_se] (EQ_FIELDS) of a (chains, draws) series:
    `fleos.core.diagnostics.rhat_rank`, `ess_bulk` and `half_drift`; NaN where undefined."""
    from fleos.core.diagnostics import ess_bulk, half_drift, rhat_rank

    try:
        drift, drift_se = half_drift(x)
        return np.array([rhat_rank(x), ess_bulk(x), drift, drift_se], np.float64)
    except ValueError:  # too short or non-finite (a diverged chain's NaN)
        return np.full(len(EQ_FIELDS), np.nan)


def equilibration_summary(agg: Mapping[str, np.ndarray], series: Sequence[str],
                          gates: EquilibriumGates | None = None) -> dict[str, Any]:
    """Worst case over the named series of an aggregate: the largest R̂, the smallest bulk
    ESS, the drift (in SE) of largest magnitude, the back-off count, which series had a
    record (``eq_series``), ``failed_gates`` (the labels of the `EquilibriumGates` that the
    worst case fails and of `one_step_size_failures`, ';'-joined, '' if none) and
    ``equilibrated`` (True iff none fails).
    With no record at all the diagnostics are NaN, ``failed_gates`` says so and
    ``equilibrated`` is None (not measurable, e.g. too few sampling snapshots), or False when
    the chains are known not to share one step size."""
    gates = gates or EquilibriumGates()
    one_law = one_step_size_failures(agg)
    recs = {s: np.asarray(agg[f"eq_{s}"], np.float64) for s in series if f"eq_{s}" in agg}
    recs = {s: r for s, r in recs.items() if np.all(np.isfinite(r[[0, 3]]))}
    nb = agg.get("n_backoffs")
    out: dict[str, Any] = {"rhat": math.nan, "ess": math.nan, "drift_se": math.nan,
                           "n_backoffs": float(nb) if nb is not None else math.nan,
                           "eq_series": ";".join(recs),
                           "failed_gates": ";".join(["not measurable", *one_law]),
                           # known to fail even where R̂, ESS and drift cannot be measured
                           "equilibrated": False if one_law else None}
    if recs:
        r = np.stack(list(recs.values()))
        out["rhat"] = float(r[:, 0].max())
        out["ess"] = float(r[:, 1].min())
        out["drift_se"] = float(r[np.argmax(np.abs(r[:, 3])), 3])
        failed = gates.failed(out["rhat"], out["ess"], out["drift_se"]) + one_law
        out["failed_gates"] = ";".join(failed)
        out["equilibrated"] = not failed
    return out


def one_step_size_failures(agg: Mapping[str, np.ndarray]) -> list[str]:
    """The chains of a point sample one stationary law only if they all ran at one step size
    over their sampling windows (`step_size_record`): labels ``eta changed in window`` (a
    back-off inside a window) and ``eta differs across chains`` (back-off scales differ by
    more than 1e-9); [] if neither, or if the aggregate does not say (files without a
    back-off list)."""
    rec = np.asarray(agg.get("step_size", [np.nan, np.nan]), np.float64)
    out = []
    if np.isfinite(rec[0]) and rec[0] > 0:
        out.append("eta changed in window")
    if np.isfinite(rec[1]) and rec[1] > 1e-9:
        out.append("eta differs across chains")
    return out


# ---------------------------------------------------------------------------------------------
# Aggregation of one (experiment, n, width)
# ---------------------------------------------------------------------------------------------


def aggregate_job(
    name: str, exp: Mapping[str, Any], samples: Mapping[str, Any], data: Any
) -> dict[str, np.ndarray]:
    """Observables with error bars across seeds for one (experiment, n, width).

    samples: the output of `load_chunks`; data: the `fleos.nets.datasets.Dataset` the chains saw.
    Keys of the result (all numpy arrays):
      seeds, count; alpha_{train,test}_seeds, alpha_{train,test}, alpha_{train,test}_se;
      mse_train_norm, mse_train_norm_se (jackknife), f_train_mean, f_test_mean;
      with Rao-Blackwellized outputs (recording.Recorder.rao_blackwell): the same with suffix
      ``_rb`` (alpha_{train,test}_rb[_se|_seeds], mse_train_norm_rb[_se]), and with ``Qf``:
      alpha_train_meankernel[_se] and mse_train_norm_meankernel[_se], train α and MSE of the
      GP whose kernel is the sampled mean post-kernel ⟨Q⟩ (jackknife over seeds);
      sigma_mean, sigma_eigs, sigma_eigs_se (if Σ was recorded);
      {w_teacher,w_random,h2_teacher,h2_random}_values / _fit (snapshot projections of the
      recorded channels; w_random: the first random direction); <p>_msq_all = [mean, SE
      across seeds] of each seed's window mean of the recorder's ``<p>_msq``, the
      projection's second moment over ALL channels (w_random: and over all the random
      directions) — its variance, as the posterior is odd in each channel's weights so the
      mean is 0 — which, unlike the fit, does not depend on whether a rare specialised
      channel is among the recorded ones;
      w_random_var_dirs (fitted variance per random direction);
      mode1_values, mode1_fit, mode1_eigval (Fig. 2a, most strongly fluctuating mode);
      K2_mean, Q2_mean, K2_eigs(_se), Q2_eigs(_se) (3-layer CNN);
      probe_<layer>_mean and <layer>_proj<i>_values/_fit (Myrtle-5);
      iat_max, rhat_max (worst chain diagnostics of the snapshot series, as stored);
      eq_<series> = [rhat, ess, drift, drift_se] per `equilibration_series` (and the
      Myrtle-5 ``<layer>_proj<i>_sq``); n_backoffs (lr back-offs, all chunks); lr_final
      (each chain's η at the end); step_size = [back-offs inside the sampling windows, spread
      of the chains' back-off scales] (`step_size_record`).
    """
    sigma2 = float(exp["sigma2"])
    y, y_test = np.asarray(data.y, np.float64), np.asarray(data.y_test, np.float64)
    out: dict[str, np.ndarray] = {
        "seeds": np.asarray(samples["seeds"]),
        "count": np.asarray(samples["count"]),
        "n": np.array(samples["n"]),
        "width": np.array(samples["width"]),
        "sigma2": np.array(sigma2),
    }
    if np.any(np.asarray(samples["count"]) == 0):
        bad = np.asarray(samples["seeds"])[np.asarray(samples["count"]) == 0]
        raise ValueError(f"{name}: seeds {bad.tolist()} recorded no equilibrium sample "
                         "(burn-in/schedule never reached the sampling stage)")
    f_tr = np.asarray(samples["f_train/mean"], np.float64)
    f_te = np.asarray(samples["f_test/mean"], np.float64)
    for split, f, yy in (("train", f_tr, y), ("test", f_te, y_test)):
        a = alpha_per_seed(f, yy, sigma2)
        out[f"alpha_{split}_seeds"] = a
        out[f"alpha_{split}"], out[f"alpha_{split}_se"] = (np.array(v) for v in mean_se(a))
    out["mse_train_norm"], out["mse_train_norm_se"] = jackknife(
        lambda fm: np.array(normalized_mse(fm, y, sigma2)), f_tr)
    out["mse_test_norm"], out["mse_test_norm_se"] = jackknife(
        lambda fm: np.array(normalized_mse(fm, y_test, sigma2)), f_te)
    out["f_train_mean"], out["f_test_mean"] = f_tr.mean(0), f_te.mean(0)
    if "f_train_rb/mean" in samples:
        f_tr_rb = np.asarray(samples["f_train_rb/mean"], np.float64)
        rb_count = np.asarray(samples["rb_count"])
        if f_tr_rb.shape[0] != len(out["seeds"]) or np.any(rb_count == 0):
            raise ValueError(f"{name}: Rao-Blackwellized means missing for some seeds (chunks "
                             f"written with different sampler.rao_blackwell_every, or no sample "
                             f"in the sampling stage): rb_count {rb_count.tolist()}")
        f_te_rb = np.asarray(samples["f_test_rb/mean"], np.float64)
        for split, f, yy in (("train", f_tr_rb, y), ("test", f_te_rb, y_test)):
            a = alpha_per_seed(f, yy, sigma2)
            out[f"alpha_{split}_rb_seeds"] = a
            out[f"alpha_{split}_rb"], out[f"alpha_{split}_rb_se"] = (
                np.array(v) for v in mean_se(a))
        out["mse_train_norm_rb"], out["mse_train_norm_rb_se"] = jackknife(
            lambda fm: np.array(normalized_mse(fm, y, sigma2)), f_tr_rb)
        out["rb_count"] = rb_count
    if "Qf/mean" in samples:
        Qf = np.asarray(samples["Qf/mean"], np.float64)

        def gp_at(q: np.ndarray) -> np.ndarray:  # the GP's train mean at kernel q
            return np.asarray(gp.gp_train_mean(gp.gp_fit(q, y, sigma2), y))

        out["alpha_train_meankernel"], out["alpha_train_meankernel_se"] = jackknife(
            lambda q: alpha_per_seed(gp_at(q)[None], y, sigma2)[0], Qf)
        out["mse_train_norm_meankernel"], out["mse_train_norm_meankernel_se"] = jackknife(
            lambda q: np.array(normalized_mse(gp_at(q), y, sigma2)), Qf)

    if "sigma/mean" in samples:
        sig = np.asarray(samples["sigma/mean"], np.float64)
        out["sigma_mean"] = sig.mean(0)
        out["sigma_eigs"], out["sigma_eigs_se"] = jackknife(lambda s: top_eigh(s)[0], sig)
        out["sigma_top_seeds"] = np.array([top_eigh(s, 1)[0][0] for s in sig])

    mask = np.asarray(samples.get("snapshots/sampling", None)) if "snapshots/sampling" in \
        samples else None
    for key in ("w_teacher", "h2_teacher", "h2_random"):
        snap_key = f"snapshots/{key}"
        if snap_key in samples and mask is not None:
            v, g = _sampling_values(samples[snap_key], mask)
            out[f"{key}_values"] = _subsample(v)
            out.update(fit_record(key, gaussian_fit(v, g)))
    for key in SNAPSHOT_PROJECTIONS:
        if f"snapshots/{key}_msq" in samples and mask is not None and mask.any(axis=1).all():
            msq = np.asarray(samples[f"snapshots/{key}_msq"], np.float64)
            per_seed = np.array([msq[c][mask[c]].mean() for c in range(msq.shape[0])])
            out[f"{key}_msq_all"] = np.array(mean_se(per_seed), np.float64)
    if "snapshots/w_random" in samples and mask is not None:
        wr = np.asarray(samples["snapshots/w_random"])  # (chains, T, C, R)
        R = wr.shape[-1]
        variances = []
        for r in range(R):
            v, g = _sampling_values(wr[..., r], mask)
            fit = gaussian_fit(v, g)
            variances.append(fit.var)
            if r == 0:  # the histogram of Figs. 3-4 shows one random direction
                out["w_random_values"] = _subsample(v)
                out.update(fit_record("w_random", fit))
        out["w_random_var_dirs"] = np.asarray(variances)

    if "top_modes/proj" in samples:
        proj = np.asarray(samples["top_modes/proj"], np.float64)  # (chains, K, C, k)
        vals, groups = [], []
        for c in range(proj.shape[0]):
            v = proj[c, :, :, 0].ravel()
            v = v[np.isfinite(v)]
            vals.append(v)
            groups.append(np.full(v.size, c))
        v, g = np.concatenate(vals), np.concatenate(groups)
        if v.size >= 3:
            out["mode1_values"] = _subsample(v)
            # The mode's sign is arbitrary per chain; the fit is of the pooled projections.
            out.update(fit_record("mode1", gaussian_fit(v, g if len(set(g)) > 1 else None)))
        out["mode1_eigval"] = np.asarray(samples["top_modes/eigvals"], np.float64)[:, 0]

    for kname in ("K2", "Q2"):
        if f"{kname}/mean" in samples:
            K = np.asarray(samples[f"{kname}/mean"], np.float64)
            out[f"{kname}_mean"] = K.mean(0)
            out[f"{kname}_eigs"], out[f"{kname}_eigs_se"] = jackknife(
                lambda k: top_eigh(k, min(100, k.shape[0]))[0], K)

    series: dict[str, np.ndarray] = {}  # Myrtle-5 projection series (equilibration below)
    windows: dict[str, np.ndarray] = {}  # Myrtle-5 pre-activations in the sampling window
    probes = sorted({k.split("/")[1] for k in samples if k.startswith("probe/")})
    for layer in probes:
        Kp = np.asarray(samples[f"probe/{layer}/mean"], np.float64)
        out[f"probe_{layer}_mean"] = Kp.mean(0)
        if f"snapshots/{layer}" in samples and mask is not None:
            from fleos.core.observables import project_on_eigenvectors

            H = np.asarray(samples[f"snapshots/{layer}"], np.float64)  # (chains, T, P, c)
            tail = _common_tail(H, mask)
            if tail is not None:
                windows[layer] = tail
            H = np.moveaxis(H, 2, -1)  # (chains, T, c, P)
            idx = tuple(i for i in (0, 9) if i < Kp.shape[-1])
            proj = project_on_eigenvectors(H, out[f"probe_{layer}_mean"], idx)
            for i, p in proj.items():
                v, g = _sampling_values(p, mask)
                out[f"{layer}_proj{i + 1}_values"] = _subsample(v)
                out.update(fit_record(f"{layer}_proj{i + 1}", gaussian_fit(v, g)))
                x = _common_tail((p ** 2).mean(axis=2), mask)  # channel mean of p²
                if x is not None:
                    series[f"{layer}_proj{i + 1}_sq"] = x

    if len(windows) == len(probes) and probes and len(out["seeds"]) >= MIN_CHAINS:
        for family, stats in preactivation_correlations(windows).items():
            for stat, v in stats.items():
                out[f"corr_{family.replace('~', '_x_')}_{stat}"] = np.array(v)

    iat = [np.nanmax(v) for k, v in samples.items()
           if k.startswith("diagnostics/") and k.endswith("/iat") and np.size(v)
           and np.any(np.isfinite(v))]
    rhat = [np.nanmax(v) for k, v in samples.items()
            if k.startswith("diagnostics/") and k.endswith("/rhat") and np.size(v)
            and np.any(np.isfinite(v))]
    out["iat_max"] = np.array(max(iat) if iat else np.nan)
    out["rhat_max"] = np.array(max(rhat) if rhat else np.nan)
    series.update(equilibration_series(samples))
    for sname, x in series.items():
        out[f"eq_{sname}"] = equilibration_record(x)
    out["n_backoffs"] = (np.array(np.size(samples["backoffs/epoch"]))
                         if "backoffs/epoch" in samples else np.array(np.nan))
    if "lr/final" in samples:
        out["lr_final"] = np.asarray(samples["lr/final"], np.float64)
    out["step_size"] = step_size_record(samples)
    return out


def backoff_schedule(samples: Mapping[str, Any]) -> dict[int, list[tuple[int, float]]]:
    """Each chain's back-offs as (epoch from which the new η holds, new η / old η), by seed.

    A back-off rolls its chain back to the last rollback point and goes on from there at the
    lower η (fleos.sampling.experiment), so its factor holds from ``rollback_to`` on. Empty
    lists for chains without back-offs; {} when the files carry no back-off list."""
    if "backoffs/seed" not in samples or "seeds" not in samples:
        return {}
    out: dict[int, list[tuple[int, float]]] = {int(s): [] for s in np.asarray(samples["seeds"])}
    for seed, r, old, new in zip(*(np.atleast_1d(samples[f"backoffs/{k}"])
                                   for k in ("seed", "rollback_to", "old_lr", "new_lr")),
                                 strict=True):
        out.setdefault(int(seed), []).append((int(r), float(new) / float(old)))
    return out


def step_size_record(samples: Mapping[str, Any]) -> np.ndarray:
    """[back-offs inside the windows, spread of the back-off scales] of a point's chains.

    A back-off falls inside a chain's sampling window when the epoch from which its lower η
    holds lies strictly between the chain's first and last sampling snapshots: the window then
    holds draws at two step sizes (all but the first snapshot at the new η when it equals the
    first). The back-off scale of a chain is the product of the factors of its back-offs that
    hold from before its window; the spread is max/min − 1 over the chains whose window
    started (0 when they all ran at the schedule's own η). The schedule itself is common to
    all chains (a `fixed` schedule's milestones included), except the `spike` schedule,
    which sets η per chain by design and is not judged here. [NaN, NaN] without a back-off
    list or sampling snapshots."""
    backoffs = backoff_schedule(samples)
    if not backoffs or "snapshots/sampling" not in samples:
        return np.full(2, np.nan)
    epochs = np.asarray(samples["snapshots/epoch"])
    inside, scales = 0, []
    for seed, row in zip(np.asarray(samples["seeds"]),
                         np.asarray(samples["snapshots/sampling"], bool), strict=True):
        if not row.any():
            continue  # this chain never sampled: nothing of it is in the point
        start, end = int(epochs[np.argmax(row)]), int(epochs[len(row) - 1 - np.argmax(row[::-1])])
        events = backoffs.get(int(seed), [])
        inside += sum(start < r < end for r, _ in events)
        scales.append(float(np.prod([f for r, f in events if r <= start])))
    spread = max(scales) / min(scales) - 1 if scales else np.nan
    return np.array([inside, spread], np.float64)


def prior_overlaps(
    exp: Mapping[str, Any], width: int, data: Any, draws: int, seed: int = 12345
) -> dict[str, np.ndarray]:
    """Projections of PRIOR draws (the untrained networks, 'before training'): the same
    quantities as the sampled snapshots, for Fig. 4 insets (w·w*, w·w_r, h2 overlaps) and
    Fig. 6 (Myrtle-5 pre-activations). Uses the model's own prior (fleos.nets.models)."""
    import jax
    import jax.numpy as jnp

    from fleos.core.observables import overlap
    from fleos.nets.models import build_model

    model = build_model(exp["arch"], exp["model"], width, param_dtype=jnp.float64)
    out: dict[str, list[np.ndarray]] = {}
    teacher = getattr(data, "teacher", {}) or {}
    X = jnp.asarray(data.X)
    for k in range(draws):
        params = model.init_prior(jax.random.fold_in(jax.random.PRNGKey(seed), k), jnp.float64)
        W = np.asarray(model.input_weights(params))
        if "teacher_w" in teacher:
            out.setdefault("w_teacher", []).append(overlap(W, teacher["teacher_w"]))
        if "teacher_w_random" in teacher:
            out.setdefault("w_random", []).append(overlap(W, teacher["teacher_w_random"]))
        if exp["arch"] == "cnn3":
            h2 = np.asarray(model.preactivations(params, X)["h2"])  # (n, N, C2)
            for key, name in (("teacher_h2_train", "h2_teacher"),
                              ("teacher_h2_random_train", "h2_random")):
                if key in teacher:
                    t = np.asarray(teacher[key], np.float64)
                    t = t / np.linalg.norm(t)
                    out.setdefault(name, []).append(np.einsum("mjc,mj->c", h2, t))
    return {k: np.stack(v) for k, v in out.items()}


def aggregate_experiment(
    name: str,
    exp: Mapping[str, Any],
    chunk_paths: Sequence[str | os.PathLike],
    data_path: str | os.PathLike,
    out_path: str | os.PathLike,
) -> dict[str, np.ndarray]:
    """Aggregate the chunk files of one (experiment, n, width) into `out_path` (.npz).

    Adds prior-draw projections (``prior_*``) where a figure compares with the untrained
    network (Figs. 4, 6), and the experiment's teacher_seed."""
    from fleos.nets.datasets import load_dataset

    samples = load_chunks(chunk_paths)
    data = load_dataset(data_path)
    out = aggregate_job(name, exp, samples, data)
    width = int(samples["width"])
    if exp["arch"] == "cnn3":
        # Prior draws are independent: 32 (or one per seed, if more) give histograms as
        # smooth as the trained ones at laptop scale for the price of 32 forward passes.
        draws = max(32, len(out["seeds"]))
        for k, v in prior_overlaps(exp, width, data, draws=draws).items():
            out[f"prior_{k}_values"] = v.ravel()
            out.update(fit_record(f"prior_{k}", gaussian_fit(v.ravel())))
    if exp["arch"] == "myrtle5":
        out.update(_myrtle_prior(exp, width, data, samples, out))
    out["teacher_seed"] = np.array(exp["data"].get("teacher_seed", -1))
    _save_npz(out_path, out)
    return out


def _myrtle_prior(exp: Mapping[str, Any], width: int, data: Any, samples: Mapping[str, Any],
                  agg: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Untrained Myrtle-5 pre-activations on the probe batch, projected on the same (trained)
    kernel eigenvectors as the trained ones, for Fig. 6."""
    import jax
    import jax.numpy as jnp

    from fleos.core.observables import project_on_eigenvectors
    from fleos.nets.models import MYRTLE_PROBE_LAYERS, build_model

    cfg = samples["config"]["sampler"]
    P, nch = int(cfg.get("probe_size", 64)), int(cfg.get("probe_channels", 4))
    model = build_model("myrtle5", exp["model"], width, param_dtype=jnp.float32)
    probe = jnp.asarray(np.asarray(data.X)[:P], jnp.float32)
    out: dict[str, np.ndarray] = {}
    draws = max(64, len(agg["seeds"]))  # independent prior draws (forward passes only)
    per_layer: dict[str, list[np.ndarray]] = {}
    for k in range(draws):
        params = model.init_prior(jax.random.fold_in(jax.random.PRNGKey(4321), k), jnp.float32)
        pre = model.preactivations(params, probe)
        for layer in MYRTLE_PROBE_LAYERS:
            h = np.asarray(pre[layer], np.float64)
            h = h.mean(axis=tuple(range(1, h.ndim - 1))) if h.ndim > 2 else h  # (P, C)
            per_layer.setdefault(layer, []).append(h[:, :nch].T)  # (c, P)
    for layer, hs in per_layer.items():
        K = agg.get(f"probe_{layer}_mean")
        if K is None:
            continue
        H = np.stack(hs)  # (draws, c, P)
        idx = tuple(i for i in (0, 9) if i < K.shape[-1])
        for i, p in project_on_eigenvectors(H, K, idx).items():
            v, g = p.ravel(), np.repeat(np.arange(H.shape[0]), H.shape[1])
            out[f"prior_{layer}_proj{i + 1}_values"] = v
            out.update(fit_record(f"prior_{layer}_proj{i + 1}", gaussian_fit(v, g)))
    return out


def _save_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> None:
    """Atomic .npz write (temporary file + rename) so a reader never sees a partial file."""
    from fleos.core.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})


def load_aggregate(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an aggregate .npz into a dict (errors name the file)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"aggregate file {path} is unreadable: {err}") from err
