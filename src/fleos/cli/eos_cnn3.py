"""`fleos eos cnn3`: Fig. 5 predictions of the 3-layer CNN EoS from empirical kernels.

Reads the empirical input-weight covariance Σ (S0 × S0) and hidden pre-kernel K2 (nN × nN,
rows μ·N + j), optionally the empirical post-kernel Q2, from an .npz or .h5 file (`--samples`,
datasets named Sigma, K2 [, Q2]), the training data from `--data` (npz: X, y), and prints the
top spectra of Σ (empirical, predicted by Eq. 5's last line, GP) and of Q2 (empirical,
predicted from K2 by Eq. 5's second line, GP) as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def register(arch_subparsers: argparse._SubParsersAction) -> None:
    p = arch_subparsers.add_parser(
        "cnn3",
        help="3-layer CNN: Σ and Q2 predicted from empirical kernels (Fig. 5)",
        description="Evaluate Eq. 5 for the 3-layer CNN (Eq. 14) at empirical Σ and K2.",
    )
    p.add_argument("--samples", required=True,
                   help="npz or h5 file with datasets Sigma, K2 (and optionally Q2)")
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


def read_kernels(path: str) -> dict[str, Any]:
    """Sigma, K2 and optional Q2 arrays from an npz or HDF5 file; errors name file and key."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"kernel file {p} not found")
    if p.suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(p, "r") as f:
            out = {k: np.asarray(f[k]) for k in ("Sigma", "K2", "Q2") if k in f}
    else:
        with np.load(p, allow_pickle=False) as z:
            out = {k: z[k] for k in ("Sigma", "K2", "Q2") if k in z.files}
    for key in ("Sigma", "K2"):
        if key not in out:
            raise ValueError(f"kernel file {p} lacks dataset {key!r} (needs Sigma, K2)")
    return out


def run(args: argparse.Namespace) -> int:
    import fleos  # noqa: F401
    from fleos.cli import InputError, check_training_data, read_npz
    from fleos.data import load_dataset
    from fleos.eos import cnn3

    # Input validation: one line naming the argument or file, exit 2 (fleos.cli).
    limits = {"> 0": ("C1", "C2", "sigma2", "sigma_w2", "sigma_v2", "sigma_a2"),
              ">= 0": ("ridge",), ">= 1": ("N", "S1", "S0", "top_sigma", "top_q2")}
    for need, names in limits.items():
        for name in names:
            v = getattr(args, name)
            ok = {"> 0": v > 0, ">= 0": v >= 0, ">= 1": v >= 1}[need] and np.isfinite(v)
            if not ok:
                flag = "--" + name.replace("_", "-")
                raise InputError(f"argument {flag}: must be {need}, got {v}")
    if Path(args.samples).suffix not in (".h5", ".hdf5"):
        read_npz(args.samples, "--samples")
    try:
        ker = read_kernels(args.samples)
    except (ValueError, OSError) as err:
        raise InputError(f"--samples {args.samples}: {err}") from None
    for key, value in ker.items():
        if not np.all(np.isfinite(value)):
            raise InputError(f"--samples {args.samples}: {key} contains NaN or infinite values")
    read_npz(args.data, "--data")
    try:
        ds = load_dataset(args.data)
    except ValueError as err:
        raise InputError(f"--data {args.data}: {err}") from None
    check_training_data(np.asarray(ds.X), np.asarray(ds.y), f"--data {args.data}")
    geom = {"N": args.N, "S1": args.S1, "S0": args.S0}
    X = np.asarray(ds.X).reshape(len(ds.X), -1)
    if X.shape[1] != args.N * args.S1 * args.S0:
        raise InputError(f"--data {args.data}: X has {X.shape[1]} columns, but --N {args.N} "
                         f"--S1 {args.S1} --S0 {args.S0} need N·S1·S0 = "
                         f"{args.N * args.S1 * args.S0}")
    if ker["K2"].shape != (len(X) * args.N,) * 2 or ker["Sigma"].shape != (args.S0,) * 2:
        raise InputError(
            f"shapes: Sigma {ker['Sigma'].shape} must be ({args.S0}, {args.S0}) and K2 "
            f"{ker['K2'].shape} must be (n·N, n·N) = ({len(X) * args.N},)*2"
        )
    Sig_gp, Q2_gp = cnn3.gp_kernels(X, sigma_w2=args.sigma_w2, sigma_v2=args.sigma_v2, **geom)
    Sp = cnn3.predict_sigma(X, ker["Sigma"], ker["K2"], args.C1, args.C2,
                            sigma_w2=args.sigma_w2, sigma_v2=args.sigma_v2, ridge=args.ridge,
                            **geom)
    Qp = cnn3.predict_q2(ker["K2"], ds.y, args.sigma2, args.C2, N=args.N,
                         sigma_a2=args.sigma_a2, ridge=args.ridge)
    ks, kq = args.top_sigma, args.top_q2
    doc = {
        "geometry": geom, "C1": args.C1, "C2": args.C2, "sigma2": args.sigma2,
        "ridge": args.ridge,
        "sigma": {"empirical": cnn3.top_eigs(ker["Sigma"], ks), "predicted": cnn3.top_eigs(Sp, ks),
                  "gp": cnn3.top_eigs(Sig_gp, ks)},
        "q2": {"empirical": cnn3.top_eigs(ker["Q2"], kq) if "Q2" in ker else None,
               "predicted": cnn3.top_eigs(Qp, kq), "gp": cnn3.top_eigs(Q2_gp, kq)},
    }
    text = json.dumps(doc, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0
