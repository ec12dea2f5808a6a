"""Fig. 6's stand-in: how much of the posterior cross-channel correlation is the common scale
of a layer's pre-activations? Run by hand from the repository root, after
`snakemake --cores 1 --configfile=config/fig6_standin.yaml fig6`:

    .venv/bin/python studies/fig6_standin/scale_check.py --results results/fig6_standin

Reads the sampled snapshots (the sampling window, common length per chain) and prints, per
chain, the SD and largest |value| of the layer-2 pre-activations and the chain's mean
cross-channel correlation; then `fleos.analysis.correlations` on the raw pre-activations (the
workflow's numbers) and on the pre-activations divided, snapshot by snapshot, by the layer's
root mean square over inputs and channels. A ReLU network can trade scale between consecutive
layers (positive homogeneity), a slow direction that moves every channel of a layer together;
the normalisation removes that common scale (and adds a small negative correlation of its own:
the normalised values share one sum of squares).

Last, the hypothesis tested on the same chains. First each layer's scale as a series of its own,
s_l(t) = log of the mean square of the recorded pre-activations (all probe inputs, the recorded
channels) at snapshot t, with the gates' diagnostics (rank-normalised R̂, bulk ESS, half-window
drift in SE) beside those of the series the workflow gates (`eq_*` of the run's aggregate). A
scale series that mixes as slowly as the failing projections, and carries their between-chain
spread, supports the hypothesis; one that mixes fast refutes it. Then the deciding one: the
gated series (the channel mean of the squared projection on the top eigenvector of the
layer's mean probe kernel) recomputed from the raw and from the scale-normalised
pre-activations. If the scale is what they fail on, the normalised series passes R̂.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np

from fleos.analysis.aggregate import EQ_FIELDS, equilibration_record
from fleos.analysis.correlations import preactivation_correlations
from fleos.core.observables import project_on_eigenvectors

LAYERS = ("layer2", "layer4")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, required=True)
    args = ap.parse_args()
    files = sorted((args.results / "samples" / "myrtle5").glob("n*/w*/chunk*.h5"))
    if not files:
        raise SystemExit(f"--results: no myrtle5 chunk files under {args.results}/samples")
    per_layer: dict[str, list[np.ndarray]] = {layer: [] for layer in LAYERS}
    for f in files:
        with h5py.File(f, "r") as h:
            window = np.asarray(h["snapshots/sampling"])
            for layer in LAYERS:
                snaps = np.asarray(h[f"snapshots/{layer}"], np.float64)
                per_layer[layer] += [s[m] for s, m in zip(snaps, window, strict=True)]
    t = min(len(a) for a in per_layer["layer2"])
    H = {layer: np.stack([a[-t:] for a in arrs]) for layer, arrs in per_layer.items()}
    print("| chain | SD of layer-2 pre-activations | largest abs value |")
    print("|---|---|---|")
    for k, h in enumerate(H["layer2"]):
        print(f"| {k} | {h.std():.2f} | {np.abs(h).max():.1f} |")
    normalised = {layer: h / np.sqrt((h**2).mean(axis=(2, 3), keepdims=True))
                  for layer, h in H.items()}
    print("\n| pre-activations | pairs | mean ± SE | RMS | null RMS | excess mean square ± SE |")
    print("|---|---|---|---|---|---|")
    for label, data in (("raw", H), ("scale-normalised", normalised)):
        for family, s in preactivation_correlations(data).items():
            print(f"| {label} | {family} | {s['mean']:.3f} ± {s['mean_se']:.3f} | "
                  f"{s['rms']:.3f} | {s['null_rms']:.3f} | {s['excess_ms']:.4f} ± "
                  f"{s['excess_ms_se']:.4f} |")
    print("\n| series | R̂ | bulk ESS | drift (SE) | between-chain SD / within-chain SD |")
    print("|---|---|---|---|---|")
    for layer, h in H.items():
        scale = np.log((h**2).mean(axis=(2, 3)))                     # (chains, snapshots)
        rhat, ess, _, drift_se = equilibration_record(scale)
        spread = scale.mean(axis=1).std(ddof=1) / scale.std(axis=1, ddof=1).mean()
        print(f"| log scale of {layer} | {rhat:.3f} | {ess:.0f} | {drift_se:+.2f} | "
              f"{spread:.2f} |")
    aggs = sorted((args.results / "aggregate" / "myrtle5").glob("n*/w*.npz"))
    if aggs:
        with np.load(aggs[0]) as a:
            kernels = {layer: a[f"probe_{layer}_mean"] for layer in H}
        for label, data in (("raw", H), ("scale-normalised", normalised)):
            for layer, h in data.items():
                proj = project_on_eigenvectors(np.moveaxis(h, 2, -1), kernels[layer], (0,))[0]
                rhat, ess, _, drift_se = equilibration_record((proj**2).mean(axis=2))
                print(f"| top projection of {layer}, {label} | {rhat:.3f} | {ess:.0f} | "
                      f"{drift_se:+.2f} | |")
    for agg in aggs:
        with np.load(agg) as a:
            for key in sorted(k for k in a.files if k.startswith("eq_")):
                rec = dict(zip(EQ_FIELDS, a[key], strict=True))
                print(f"| {key[3:]} (gated) | {rec['rhat']:.3f} | {rec['ess']:.0f} | "
                      f"{rec['drift_se']:+.2f} | |")


if __name__ == "__main__":
    main()
