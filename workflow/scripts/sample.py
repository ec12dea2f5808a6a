# Thin Snakemake script: all logic lives in the fleos library (see docs/workflow.md).
import os
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821, SIM115
try:
    import fleos  # noqa: F401
except ImportError:  # conda envs (--sdm conda) carry the dependencies, not fleos itself
    sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from fleos.aggregate import engine_config  # noqa: E402
from fleos.config import ExperimentConfig, JobSpec  # noqa: E402
from fleos.experiment import run_job  # noqa: E402

name = snakemake.wildcards.experiment  # noqa: F821
run_job(
    ExperimentConfig.from_dict(name, engine_config(snakemake.params.exp)),  # noqa: F821
    JobSpec(
        name,
        int(snakemake.wildcards.n),  # noqa: F821
        int(snakemake.wildcards.width),  # noqa: F821
        tuple(snakemake.params.seeds),  # noqa: F821
    ),
    data_path=snakemake.input.data,  # noqa: F821
    out_path=snakemake.output[0],  # noqa: F821
    checkpoint_path=snakemake.params.checkpoint,  # noqa: F821
)
