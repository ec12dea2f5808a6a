"""`fleos sample`: run one sampling job (experiment × n × width × seed chunk) to an HDF5 file.

Thin wrapper around `fleos.sampling.experiment.run_job`; the configuration is the workflow's YAML
(docs/architecture.md, "Configuration"), validated by `fleos.config.ExperimentConfig`.
"""

from __future__ import annotations

import argparse
import sys

from fleos.cli.args import nonneg_int, positive_float, positive_int

EPILOG = """\
examples:
  fleos sample --config config/config.yaml --experiment cnn2 --n 256 --width 64 \\
      --seeds 0 1 2 3 --data results/data/cnn2/n256.npz \\
      --out results/samples/cnn2/n256/w64/chunk0.h5 --checkpoint chunk0.ckpt
  fleos sample ... --set experiments.cnn2.sampler.steps=2000 --set experiments.cnn2.sigma2=0.05

A configuration or data error is bad input (exit 2); a diverged chain (after the configured
lr back-offs), an incompatible checkpoint or a GPU config without a GPU is a failed run
(exit 1); the reason goes to stderr on one line. The output file appears only when the job
completes (atomic write).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `sample` subcommand to the `fleos` parser."""
    p = subparsers.add_parser(
        "sample",
        help="run Langevin chains for one (experiment, n, width, seeds) job into an HDF5 file",
        description=(
            "Sample the Bayesian posterior of Eq. 15 (Seroussi, Naveh & Ringel 2023) with "
            "full-batch Langevin dynamics, one vmapped chain per seed, recording online "
            "kernel sums and thinned snapshots (layout: docs/hdf5-layout.md). Checkpoints "
            "every sampler.checkpoint_every epochs and resumes from --checkpoint if present."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="FILE",
                   help="YAML config file holding an 'experiments' mapping")
    p.add_argument("--experiment", required=True, metavar="NAME",
                   help="name of the experiment under 'experiments' (e.g. cnn2, fcn3)")
    p.add_argument("--n", required=True, type=positive_int, metavar="N",
                   help="training-set size; must equal the number of rows of --data")
    p.add_argument("--width", required=True, type=positive_int, metavar="W",
                   help="network width: N for the FCN, channels C for the CNNs")
    p.add_argument("--seeds", required=True, type=nonneg_int, nargs="+", metavar="SEED",
                   help="seeds of the chains of this job (one vmapped chain per seed)")
    p.add_argument("--data", required=True, metavar="DATA.npz",
                   help="dataset written by the workflow's make_data step (X, y, X_test, "
                        "y_test, teacher_*)")
    p.add_argument("--out", required=True, metavar="OUT.h5",
                   help="output HDF5 sample file (written atomically at the end)")
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="checkpoint file: written every sampler.checkpoint_every epochs, "
                        "resumed from if present and of the same configuration, deleted at "
                        "the end (default: no disk checkpoint)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override a config value before validation, e.g. "
                        "experiments.cnn2.sampler.steps=2000 (VALUE parsed as YAML; "
                        "repeatable)")
    p.add_argument("--progress-every", type=positive_float, default=30.0, metavar="SECONDS",
                   help="seconds between progress lines on stderr (default 30)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the config and run the job; errors go to stderr on one line (exit 2 for bad
    input, 1 for a failed run)."""
    from fleos.config import JobSpec, experiment_from_file
    from fleos.sampling.experiment import run_job

    try:
        exp = experiment_from_file(args.config, args.experiment, args.overrides)
        job = JobSpec(experiment=exp.name, n=args.n, width=args.width,
                      seeds=tuple(args.seeds))
        run_job(exp, job, args.data, args.out, checkpoint_path=args.checkpoint,
                progress=not args.quiet, progress_every=args.progress_every)
    except (ValueError, FileNotFoundError) as e:
        print(f"fleos sample: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"fleos sample: error: {e}", file=sys.stderr)
        return 1
    return 0
