# Thin Snakemake script: all logic lives in the fleos library (see docs/workflow.md).
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821, SIM115

from fleos.pipeline import run_theory  # noqa: E402

run_theory(
    snakemake.wildcards.key,  # noqa: F821
    snakemake.config,  # noqa: F821
    dict(snakemake.input.items()),  # noqa: F821
    snakemake.output[0],  # noqa: F821
)
