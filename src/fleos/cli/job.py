"""`fleos job RULE KEY=VALUE ...`: run one job of the Snakemake workflow.

Every rule of workflow/rules/*.smk runs this command with its wildcards, e.g.
``fleos job sample experiment=cnn2 n=32 width=8 chunk=0``. The job reads the run's config,
resolved and validated once by the Snakefile, from the environment variable `CONFIG_ENV`
(JSON), and reads and writes the files the rule declares (fleos.pipeline.run_rule_job).

Why a command and not a rule script: Snakemake reruns a `script:` job whenever the script
file is newer than the job's outputs (a move, a git checkout, an edited import after a
refactor), but a `shell:` job only when the rule's shell text changes. This text names only
the rule and its wildcards, so a refactor of the library reruns nothing; a change of the
numbers reruns a stage through its numerics version (fleos.pipeline.numerics_version).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from fleos.cli.args import InputError

CONFIG_ENV = "FLEOS_WORKFLOW_CONFIG"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `job` subcommand to the `fleos` parser."""
    from fleos.pipeline import JOBS

    rules = "; ".join(f"{r}: {' '.join(f'{w}=...' for w in names)}"
                      for r, (names, _) in JOBS.items())
    p = subparsers.add_parser(
        "job",
        help="run one job of the Snakemake workflow (what the rules run)",
        description=(
            "Run one job of the workflow's rule RULE with its wildcards. The config comes "
            f"from the environment variable {CONFIG_ENV} (JSON), which the Snakefile sets; "
            "run jobs through snakemake, e.g. `snakemake results/data/cnn2/n256.npz`."
        ),
        epilog=f"wildcards per rule: {rules}",
    )
    p.add_argument("rule", choices=list(JOBS), metavar="RULE",
                   help=f"one of {', '.join(JOBS)}")
    p.add_argument("wildcards", nargs="*", metavar="KEY=VALUE",
                   help="the rule's wildcards")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the job; a bad wildcard or config is one line on stderr (exit 2), a failed run
    exit 1."""
    from fleos.pipeline import ConfigError, run_rule_job

    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise InputError(f"environment variable {CONFIG_ENV} is not set: jobs are run by "
                         "the Snakefile, which sets it (snakemake TARGET)")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"environment variable {CONFIG_ENV} is not JSON: {err}") from None
    wildcards = {}
    for item in args.wildcards:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"wildcard {item!r} is not KEY=VALUE")
        wildcards[key] = value
    try:
        run_rule_job(args.rule, config, wildcards)
    except (ConfigError, FileNotFoundError) as err:
        raise InputError(str(err)) from None
    except KeyError as err:
        raise InputError(f"the config has no key {err} that this job needs") from None
    except RuntimeError as err:
        print(f"fleos job {args.rule}: error: {err}", file=sys.stderr)
        return 1
    return 0
