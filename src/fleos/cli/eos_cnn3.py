"""`fleos eos cnn3`: Fig. 5 predictions of the 3-layer CNN EoS from empirical kernels.

Reads the empirical input-weight covariance Σ (S0 × S0), hidden pre-kernel K2 and post-kernel
Q2 (nN × nN, rows μ·N + j) from the files the workflow itself writes: an aggregate
``results/aggregate/cnn3/n{n}/w{C}.npz`` (keys sigma_mean, K2_mean, Q2_mean) or the sample
files ``results/samples/cnn3/n{n}/w{C}/chunk*.h5`` of one configuration (sigma/mean,
K2/mean, Q2/mean, averaged over all chains); an npz with keys Sigma, K2 [, Q2] also works.
With the training data from `--data` (npz: X, y) it prints, as JSON, the same spectra as the
workflow's Fig. 5 theory file (`fleos.theory.eos.cnn3.fig5_spectra`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from fleos.cli.args import out_file, write_json_output

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
    p.add_argument("--data", required=True, help="npz with X, y (fleos.nets.data format)")
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
    p.add_argument("--out", type=out_file,
                   help="write the JSON to this file instead of stdout")
    p.set_defaults(func=run)


def read_kernels(paths: list[str]) -> dict[str, Any]:
    """Sigma, K2 and (if present) Q2 from an aggregate/plain npz or from sample .h5 files
    (averaged over chains); errors name the file and the missing key."""
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"kernel file {path} not found")
    if all(Path(p).suffix in (".h5", ".hdf5") for p in paths):
        from fleos.analysis.aggregate import load_chunks

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
    from fleos.cli.args import InputError, check_training_data, read_npz
    from fleos.cli.memory import cnn3_terms, require_memory
    from fleos.nets.datasets import load_dataset
    from fleos.theory.runs import cnn3_spectra

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
    shown = " ".join(args.samples)
    for path in args.samples:
        if Path(path).suffix not in (".h5", ".hdf5"):
            read_npz(path, "--samples")
    # The data first: their n sets the size of the kernels, checked before these are read.
    read_npz(args.data, "--data")
    try:
        ds = load_dataset(args.data)
    except ValueError as err:
        raise InputError(f"--data {args.data}: {err}") from None
    check_training_data(np.asarray(ds.X), np.asarray(ds.y), f"--data {args.data}")
    X = np.asarray(ds.X).reshape(len(ds.X), -1)
    if X.shape[1] != args.N * args.S1 * args.S0:
        raise InputError(f"--data {args.data}: X has {X.shape[1]} columns, but --N {args.N} "
                         f"--S1 {args.S1} --S0 {args.S0} need N·S1·S0 = "
                         f"{args.N * args.S1 * args.S0}")
    require_memory(cnn3_terms(len(X), args.N, args.S1, args.S0,
                              f"--data {args.data} (n = {len(X)})"))
    try:
        ker = read_kernels(args.samples)
    except (ValueError, OSError) as err:
        raise InputError(f"--samples {shown}: {err}") from None
    for key, value in ker.items():
        if not np.all(np.isfinite(value)):
            raise InputError(f"--samples {shown}: {key} contains NaN or infinite values")
    if ker["K2"].shape != (len(X) * args.N,) * 2 or ker["Sigma"].shape != (args.S0,) * 2:
        raise InputError(
            f"shapes: Sigma {ker['Sigma'].shape} must be ({args.S0}, {args.S0}) and K2 "
            f"{ker['K2'].shape} must be (n·N, n·N) = ({len(X) * args.N},)*2"
        )
    doc = {"N": args.N, "S1": args.S1, "S0": args.S0, "C1": args.C1, "C2": args.C2,
           "sigma2": args.sigma2, "ridge": args.ridge}
    model = {"N": args.N, "S1": args.S1, "S0": args.S0, "sigma_w2": args.sigma_w2,
             "sigma_v2": args.sigma_v2, "sigma_a2": args.sigma_a2}
    # evaluated as the workflow evaluates it
    doc.update(cnn3_spectra(ds, ker["Sigma"], ker["K2"], ker.get("Q2"), model, args.sigma2,
                            args.C1, args.C2, args.ridge, top_sigma=args.top_sigma,
                            top_q2=args.top_q2))
    write_json_output(doc, args.out)
    return 0
