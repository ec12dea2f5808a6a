"""`fleos eos cnn3`: Fig. 5 predictions of the 3-layer CNN EoS from empirical kernels.

Reads the empirical input-weight covariance Σ (S0 × S0), hidden pre-kernel K2 and post-kernel
Q2 (nN × nN, rows μ·N + j) from the files the workflow itself writes: an aggregate
``results/aggregate/cnn3/n{n}/w{C}.npz`` (keys sigma_mean, K2_mean, Q2_mean) or the sample
files ``results/samples/cnn3/n{n}/w{C}/chunk*.h5`` of one configuration (sigma/mean,
K2/mean, Q2/mean, averaged over all chains); an npz with keys Sigma, K2 [, Q2] also works.
With the training data from `--data` (npz: X, y) it prints, as JSON, the same spectra as the
workflow's Fig. 5 theory file (`fleos.eos.cnn3.fig5_spectra`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

# Accepted names of each kernel, in lookup order: aggregate npz, sample file, plain npz.
_NAMES = {"Sigma": ("sigma_mean", "sigma/mean", "Sigma"), "K2": ("K2_mean", "K2/mean", "K2"),
          "Q2": ("Q2_mean", "Q2/mean", "Q2")}


def register(arch_subparsers: argparse._SubParsersAction) -> None:
    p = arch_subparsers.add_parser(
        "cnn3",
        help="3-layer CNN: Σ and Q2 predicted from empirical kernels (Fig. 5)",
        description="Evaluate Eq. 5 for the 3-layer CNN (Eq. 14) at empirical Σ, K2 and Q2.",
    )
    p.add_argument("--samples", required=True, nargs="+",
                   help="the workflow's aggregate .npz of one (n, C), or its sample chunk "
                        ".h5 files (all chains averaged), or an npz with Sigma, K2[, Q2]")
    p.add_argument("--data", required=True, help="npz with X, y (fleos.data format)")
    p.add_argument("--N", type=int, required=True)
    p.add_argument("--S1", type=int, required=True)
    p.add_argument("--S0", type=int, required=True)
    p.add_argument("--C1", type=float, required=True)
    p.add_argument("--C2", type=float, required=True)
    p.add_argument("--sigma2", type=float, required=True)
    p.add_argument("--sigma-w2", type=float, default=2.0)
    p.add_argument("--sigma-v2", type=float, default=2.0)
    p.add_argument("--sigma-a2", type=float, default=2.0)
    p.add_argument("--ridge", type=float, default=0.0)
    p.add_argument("--top-sigma", type=int, default=50)
    p.add_argument("--top-q2", type=int, default=100)
    p.add_argument("--json", action="store_true", help="print JSON (the default output)")
    p.add_argument("--out", help="write the JSON to this file instead of stdout")
    p.set_defaults(func=run)


def read_kernels(paths: list[str]) -> dict[str, Any]:
    """Sigma, K2 and (if present) Q2 from an aggregate/plain npz or from sample .h5 files
    (averaged over chains); errors name the file and the missing key."""
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"kernel file {path} not found")
    if all(Path(p).suffix in (".h5", ".hdf5") for p in paths):
        from fleos.aggregate import load_chunks

        raw = {k: np.asarray(v, np.float64).mean(axis=0) for k, v in load_chunks(paths).items()
               if k in ("sigma/mean", "K2/mean", "Q2/mean")}
    elif len(paths) == 1:
        with np.load(paths[0], allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    else:
        raise ValueError(f"--samples: give one .npz or only .h5 sample files, got {paths}")
    out = {}
    for key, names in _NAMES.items():
        found = next((raw[n] for n in names if n in raw), None)
        if found is not None:
            out[key] = np.asarray(found, np.float64)
        elif key != "Q2":
            raise ValueError(f"kernel file {paths[0]} lacks {key!r} (looked for "
                             f"{', '.join(names)})")
    return out


def run(args: argparse.Namespace) -> int:
    import fleos  # noqa: F401
    from fleos.data import load_dataset
    from fleos.eos import cnn3

    ker = read_kernels(args.samples)
    ds = load_dataset(args.data)
    X = np.asarray(ds.X).reshape(len(ds.X), -1)
    if ker["K2"].shape != (len(X) * args.N,) * 2 or ker["Sigma"].shape != (args.S0,) * 2:
        raise ValueError(
            f"shapes: Sigma {ker['Sigma'].shape} must be ({args.S0}, {args.S0}) and K2 "
            f"{ker['K2'].shape} must be (n·N, n·N) = ({len(X) * args.N},)*2"
        )
    doc = {"N": args.N, "S1": args.S1, "S0": args.S0, "C1": args.C1, "C2": args.C2,
           "sigma2": args.sigma2, "ridge": args.ridge}
    doc.update(cnn3.fig5_spectra(
        X, ds.y, ker["Sigma"], ker["K2"], ker.get("Q2"), args.C1, args.C2, N=args.N,
        S1=args.S1, S0=args.S0, sigma2=args.sigma2, sigma_w2=args.sigma_w2,
        sigma_v2=args.sigma_v2, sigma_a2=args.sigma_a2, ridge=args.ridge,
        top_sigma=args.top_sigma, top_q2=args.top_q2))
    text = json.dumps(doc, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0
