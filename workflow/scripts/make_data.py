# Thin Snakemake script: all logic lives in the fleos library (see docs/workflow.md).
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821, SIM115

from fleos.nets.data import make_dataset  # noqa: E402
from fleos.nets.datasets import save_dataset  # noqa: E402

exp = snakemake.config["experiments"][snakemake.wildcards.experiment]  # noqa: F821
data = exp["data"]
save_dataset(
    make_dataset(
        exp["arch"],
        exp["model"],
        int(snakemake.wildcards.n),  # noqa: F821
        int(data["n_test"]),
        int(data.get("teacher_seed", 0)),  # unused by image data (myrtle5)
        int(data["data_seed"]),
    ),
    snakemake.output[0],  # noqa: F821
)
