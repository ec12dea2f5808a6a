# Stage 5: every paper figure from one rule over {fig}; fleos.pipeline.FIGURES says which
# experiment and which stages each reads. Writes results/figures/FIG.{png,pdf}, the agreement
# table results/tables/FIG.csv and its summary in sentences (the report caption includes it).
# Inputs are resolved lazily, so a figure whose experiment is not configured fails only when
# asked for, with the missing key named.


rule figure:
    input:
        unpack(lambda wc: pipeline.figure_inputs(config, wc.fig)),
    output:
        png=report(
            out("png"),
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{fig}"},
        ),
        pdf=out("pdf"),
        csv=report(
            out("csv"),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{fig}"},
        ),
        summary=out("summary"),
    log:
        log("figures", "{fig}.log"),
    params:
        config=lambda wc: pipeline.figure_params(config, wc.fig),
        # the figure code itself: editing it redraws every figure (seconds)
        code=pipeline.code_digest("fleos.figures"),
    resources:
        runtime=resource("runtime"),
        mem_mb=resource("mem_mb"),
    conda:
        CPU_ENV
    shell:
        "fleos job figure fig={wildcards.fig} > {log} 2>&1"


# The targets `snakemake fig2a` ... `snakemake fig6`: one named rule per figure that only asks
# for the generic rule's outputs (nothing to run, nothing to rerun).
for _fig in FIGURES:

    rule:
        name:
            _fig
        input:
            lambda wc, fig=_fig: pipeline.figure_outputs(config, fig).values(),
        localrule: True
