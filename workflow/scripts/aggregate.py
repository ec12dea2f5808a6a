# Thin Snakemake script: all logic lives in the fleos library (see docs/workflow.md).
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821, SIM115

from fleos.analysis.aggregate import aggregate_experiment  # noqa: E402

name = snakemake.wildcards.experiment  # noqa: F821
aggregate_experiment(
    name,
    snakemake.config["experiments"][name],  # noqa: F821
    chunk_paths=list(snakemake.input.chunks),  # noqa: F821
    data_path=snakemake.input.data,  # noqa: F821
    out_path=snakemake.output[0],  # noqa: F821
)
