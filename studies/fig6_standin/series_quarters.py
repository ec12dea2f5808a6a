"""Fig. 6's stand-in: the gated projection series of each chain, quarter by quarter of the
sampling window. Run by hand from the repository root after a Fig. 6 run, e.g.

    .venv/bin/python studies/fig6_standin/series_quarters.py --results results/fig6_standin_long

The aggregate gates each series `<layer>_proj<i>_sq` (the channel mean of the squared projection
of the recorded pre-activations on the i-th eigenvector of the chain-averaged probe kernel,
`fleos.analysis.aggregate`). A series that fails R̂ or the drift gate can do so by a trend
shared by the chains (not yet stationary) or by rare long excursions of single chains (a slow
mode): the quarter means tell the two apart. Prints, per series, each chain's four quarter
means, their mean over chains with its SE (across chains), and the integrated autocorrelation
time of each chain's series in steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fleos.analysis.aggregate import load_chunks
from fleos.core.diagnostics import integrated_autocorr_time
from fleos.core.observables import project_on_eigenvectors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", required=True, help="the run's results folder")
    p.add_argument("--experiment", default="myrtle5")
    args = p.parse_args()
    files = sorted(Path(args.results, "samples", args.experiment).glob("n*/w*/chunk*.h5"))
    if not files:
        raise SystemExit(f"--results: no sample files under {args.results}/samples/"
                         f"{args.experiment}")
    s = load_chunks(files)
    mask = np.asarray(s["snapshots/sampling"], bool)
    if not (mask == mask[0]).all():
        raise SystemExit("the chains' sampling windows differ: this study reads one window")
    window = mask[0]
    epochs = np.asarray(s["snapshots/epoch"])[window]
    step = float(np.median(np.diff(epochs)))
    print(f"{args.results}: {len(s['seeds'])} chains, {window.sum()} snapshots in the window, "
          f"every {step:g} steps\n")
    layers = sorted({k.split("/")[1] for k in s if k.startswith("probe/")})
    for layer in layers:
        K = np.asarray(s[f"probe/{layer}/mean"], np.float64).mean(0)
        H = np.moveaxis(np.asarray(s[f"snapshots/{layer}"], np.float64), 2, -1)
        for i, proj in project_on_eigenvectors(H, K, (0, 9)).items():
            x = (proj ** 2).mean(axis=2)[:, window]          # (chains, T): the gated series
            q = np.stack([a.mean(axis=1) for a in np.array_split(x, 4, axis=1)], axis=1)
            tau = [integrated_autocorr_time(row) * step for row in x]
            print(f"### {layer}_proj{i + 1}_sq\n")
            print("| chain | quarter 1 | quarter 2 | quarter 3 | quarter 4 | τ_int (steps) |")
            print("|---|---|---|---|---|---|")
            for c, (row, t) in enumerate(zip(q, tau, strict=True)):
                print(f"| {c} | " + " | ".join(f"{v:.4g}" for v in row) + f" | {t:.0f} |")
            m, se = q.mean(axis=0), q.std(axis=0, ddof=1) / np.sqrt(len(q))
            print("| mean ± SE | " + " | ".join(f"{a:.4g} ± {b:.2g}" for a, b in zip(m, se,
                                                                                    strict=True))
                  + f" | median {np.median(tau):.0f} |\n")


if __name__ == "__main__":
    main()
