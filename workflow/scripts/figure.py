# Thin Snakemake script: all logic lives in the fleos library (see docs/workflow.md).
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821, SIM115

from fleos.figures.render import render_figure  # noqa: E402

render_figure(
    snakemake.wildcards.fig,  # noqa: F821
    {k: list(v) for k, v in snakemake.input.items()},  # noqa: F821
    snakemake.config,  # noqa: F821
    png=snakemake.output.png,  # noqa: F821
    pdf=snakemake.output.pdf,  # noqa: F821
    csv_path=snakemake.output.csv,  # noqa: F821
    summary_path=snakemake.output.summary,  # noqa: F821
)
