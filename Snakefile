# fleos: from seeds to every figure of Seroussi, Naveh & Ringel, Nat. Commun. 14, 908 (2023).
#
# Data flow, rule by rule (= `snakemake --rulegraph`, rendered in docs/rulegraph.svg):
#
#   make_data ─┬─► sample ─► aggregate ─┬───────────► figure ─► all
#              ├──────────────►┘        ▼              ▲ ▲
#              ├──────────────────────► theory ────────┘ │
#              └─────────────────────────────────────────┘
#
# One folder per stage under results/. theory: the cnn2 and fcn3 EoS sweeps read the data,
# the cnn3 predictions (Fig. 5) the data and the aggregate, fls.json (Fig. 2c) neither (it
# draws its own inputs).
# figure writes figures/{fig}.{png,pdf} and tables/{fig}.csv; the registry that says which
# experiment, theory and figure belong together is fleos.pipeline (docs/architecture.md).
# Targets: all (default), fig2a, fig2b, fig2c, fig3, fig4, fig5, fig6.
# Config: config/config.yaml (laptop) unless --configfile is given (config/paper.yaml,
# config/smoke.yaml); see docs/workflow.md.

import os

from snakemake.utils import min_version

min_version("9.0")

# Every job imports fleos: one BLAS thread beside XLA's pool, since two jobs share the cores
# (fleos/__init__.py, bench/RESULTS.md "BLAS threads"). Inherited by local and SLURM jobs.
os.environ.setdefault("FLEOS_BLAS_THREADS", "1")
# The conda environments (envs/*.yaml, `--sdm conda`) install this checkout as fleos with
# `pip -e ${FLEOS_ROOT}`: conda runs pip from a copy of the env file under the conda prefix,
# so only an absolute path names the checkout.
os.environ.update(FLEOS_ROOT=workflow.basedir)  # set, not read: no `envvars:` needed


include: "workflow/rules/common.smk"


# The landing page of `snakemake --report`: one verdict line per figure.
report: "workflow/report/workflow.rst"


# Cheap rules run in the Snakemake process itself, not as one SLURM job each (seconds of work
# against a queue wait and a job start-up of tens of seconds): the target, the data draws
# and the figures (the per-figure target rules are local where figures.smk defines them).
# Sampling, aggregation and theory go to the cluster.
localrules:
    all,
    make_data,
    figure,


rule all:
    input:
        all_figure_targets(),
    default_target: True


include: "workflow/rules/data.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/theory.smk"
include: "workflow/rules/figures.smk"
