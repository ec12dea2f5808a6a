# Thin Snakemake script: all logic lives in the fleos library (see docs/workflow.md).
import os
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821, SIM115
try:
    import fleos  # noqa: F401
except ImportError:  # conda envs (--sdm conda) carry the dependencies, not fleos itself
    sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821

from fleos.plotting import render_figure  # noqa: E402

render_figure(
    snakemake.params.figure,  # noqa: F821
    {k: list(v) for k, v in snakemake.input.items()},  # noqa: F821
    snakemake.params.config,  # noqa: F821
    png=snakemake.output.png,  # noqa: F821
    pdf=snakemake.output.pdf,  # noqa: F821
    csv_path=snakemake.output.csv,  # noqa: F821
    summary_path=snakemake.output.summary,  # noqa: F821
)
