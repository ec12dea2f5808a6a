# Thin Snakemake script: all logic lives in the fleos library (see docs/workflow.md).
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821, SIM115

from fleos.config import ExperimentConfig, JobSpec  # noqa: E402
from fleos.pipeline import Layout, chunk_seeds  # noqa: E402
from fleos.sampling.experiment import run_job  # noqa: E402

cfg, wc = snakemake.config, snakemake.wildcards  # noqa: F821
exp = cfg["experiments"][wc.experiment]
run_job(
    ExperimentConfig.from_dict(wc.experiment, exp),
    JobSpec(wc.experiment, int(wc.n), int(wc.width), tuple(chunk_seeds(exp, int(wc.chunk)))),
    data_path=snakemake.input.data,  # noqa: F821
    out_path=snakemake.output[0],  # noqa: F821
    # outside the declared outputs, so Snakemake keeps it when a job fails (resume on retry)
    checkpoint_path=Layout(cfg["results"]).path("checkpoint", **dict(wc.items())),
)
