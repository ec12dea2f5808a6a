# Thin Snakemake script: all logic lives in the fleos library (see docs/workflow.md).
import os
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821, SIM115
try:
    import fleos  # noqa: F401
except ImportError:  # conda envs (--sdm conda) carry the dependencies, not fleos itself
    sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821

from fleos.aggregate import theory_cnn3  # noqa: E402

theory_cnn3(
    snakemake.params.exp,  # noqa: F821
    width=snakemake.params.width,  # noqa: F821
    data_path=snakemake.input.data,  # noqa: F821
    aggregate_path=snakemake.input.aggregate,  # noqa: F821
    out_path=snakemake.output[0],  # noqa: F821
)
