# Stage 5: one rule per paper figure; each writes results/figures/FIG.{png,pdf} and the
# agreement table results/tables/FIG.csv. The rule name is the target: `snakemake fig3`.
# Inputs are resolved lazily, so a figure whose experiment is not configured fails only when
# asked for, with the missing key named.


rule fig2a:
    # 3-layer FCN (MF): QQ plot and histograms of the most strongly fluctuating first-layer weight mode
    input:
        aggregate=lambda wc: fig_inputs('fig2a')['aggregate'],
        data=lambda wc: fig_inputs('fig2a')['data'],
    output:
        png=report(
            res("figures", "fig2a.png"),
            caption="../report/fig2a.rst",
            category="Figures",
            labels={"figure": "fig2a"},
        ),
        pdf=res("figures", "fig2a.pdf"),
        csv=report(
            res("tables", "fig2a.csv"),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "fig2a"},
        ),
        summary=res("tables", "fig2a_summary.rst"),
    log:
        res("logs", "figures", "fig2a.log"),
    params:
        figure="fig2a",
        config=config,
    resources:
        runtime=default_resource("runtime"),
        mem_mb=default_resource("mem_mb"),
    conda:
        CPU_ENV
    script:
        "../scripts/figure.py"


rule fig2b:
    # 3-layer FCN (MF): train MSE, top Σ eigenvalue and α over their GP values vs width
    input:
        aggregate=lambda wc: fig_inputs('fig2b')['aggregate'],
        theory=lambda wc: fig_inputs('fig2b')['theory'],
        data=lambda wc: fig_inputs('fig2b')['data'],
    output:
        png=report(
            res("figures", "fig2b.png"),
            caption="../report/fig2b.rst",
            category="Figures",
            labels={"figure": "fig2b"},
        ),
        pdf=res("figures", "fig2b.pdf"),
        csv=report(
            res("tables", "fig2b.csv"),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "fig2b"},
        ),
        summary=res("tables", "fig2b_summary.rst"),
    log:
        res("logs", "figures", "fig2b.log"),
    params:
        figure="fig2b",
        config=config,
    resources:
        runtime=default_resource("runtime"),
        mem_mb=default_resource("mem_mb"),
    conda:
        CPU_ENV
    script:
        "../scripts/figure.py"


rule fig2c:
    # width at which χ = 1 vs n (Eq. 6): FCN standard, FCN MF, CNN
    input:
        theory=lambda wc: fig_inputs('fig2c')['theory'],
    output:
        png=report(
            res("figures", "fig2c.png"),
            caption="../report/fig2c.rst",
            category="Figures",
            labels={"figure": "fig2c"},
        ),
        pdf=res("figures", "fig2c.pdf"),
        csv=report(
            res("tables", "fig2c.csv"),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "fig2c"},
        ),
        summary=res("tables", "fig2c_summary.rst"),
    log:
        res("logs", "figures", "fig2c.log"),
    params:
        figure="fig2c",
        config=config,
    resources:
        runtime=default_resource("runtime"),
        mem_mb=default_resource("mem_mb"),
    conda:
        CPU_ENV
    script:
        "../scripts/figure.py"


rule fig3:
    # 2-layer CNN: test α/α_GP vs C (experiment, Eq. 9, EoS), train inset; w·w*/|w*| histograms
    input:
        aggregate=lambda wc: fig_inputs('fig3')['aggregate'],
        theory=lambda wc: fig_inputs('fig3')['theory'],
        data=lambda wc: fig_inputs('fig3')['data'],
    output:
        png=report(
            res("figures", "fig3.png"),
            caption="../report/fig3.rst",
            category="Figures",
            labels={"figure": "fig3"},
        ),
        pdf=res("figures", "fig3.pdf"),
        csv=report(
            res("tables", "fig3.csv"),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "fig3"},
        ),
        summary=res("tables", "fig3_summary.rst"),
    log:
        res("logs", "figures", "fig3.log"),
    params:
        figure="fig3",
        config=config,
    resources:
        runtime=default_resource("runtime"),
        mem_mb=default_resource("mem_mb"),
    conda:
        CPU_ENV
    script:
        "../scripts/figure.py"


rule fig4:
    # 3-layer CNN: input-weight and hidden pre-activation overlaps, teacher vs random
    input:
        aggregate=lambda wc: fig_inputs('fig4')['aggregate'],
        data=lambda wc: fig_inputs('fig4')['data'],
    output:
        png=report(
            res("figures", "fig4.png"),
            caption="../report/fig4.rst",
            category="Figures",
            labels={"figure": "fig4"},
        ),
        pdf=res("figures", "fig4.pdf"),
        csv=report(
            res("tables", "fig4.csv"),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "fig4"},
        ),
        summary=res("tables", "fig4_summary.rst"),
    log:
        res("logs", "figures", "fig4.log"),
    params:
        figure="fig4",
        config=config,
    resources:
        runtime=default_resource("runtime"),
        mem_mb=default_resource("mem_mb"),
    conda:
        CPU_ENV
    script:
        "../scripts/figure.py"


rule fig5:
    # 3-layer CNN: spectra of Σ and Q^(2): empirical, EoS-predicted, GP
    input:
        aggregate=lambda wc: fig_inputs('fig5')['aggregate'],
        theory=lambda wc: fig_inputs('fig5')['theory'],
        data=lambda wc: fig_inputs('fig5')['data'],
    output:
        png=report(
            res("figures", "fig5.png"),
            caption="../report/fig5.rst",
            category="Figures",
            labels={"figure": "fig5"},
        ),
        pdf=res("figures", "fig5.pdf"),
        csv=report(
            res("tables", "fig5.csv"),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "fig5"},
        ),
        summary=res("tables", "fig5_summary.rst"),
    log:
        res("logs", "figures", "fig5.log"),
    params:
        figure="fig5",
        config=config,
    resources:
        runtime=default_resource("runtime"),
        mem_mb=default_resource("mem_mb"),
    conda:
        CPU_ENV
    script:
        "../scripts/figure.py"


rule fig6:
    # Myrtle-5: layer-2/4 pre-activations on kernel eigenvectors 1 and 10, trained vs untrained
    input:
        aggregate=lambda wc: fig_inputs('fig6')['aggregate'],
        data=lambda wc: fig_inputs('fig6')['data'],
    output:
        png=report(
            res("figures", "fig6.png"),
            caption="../report/fig6.rst",
            category="Figures",
            labels={"figure": "fig6"},
        ),
        pdf=res("figures", "fig6.pdf"),
        csv=report(
            res("tables", "fig6.csv"),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "fig6"},
        ),
        summary=res("tables", "fig6_summary.rst"),
    log:
        res("logs", "figures", "fig6.log"),
    params:
        figure="fig6",
        config=config,
    resources:
        runtime=default_resource("runtime"),
        mem_mb=default_resource("mem_mb"),
    conda:
        CPU_ENV
    script:
        "../scripts/figure.py"
