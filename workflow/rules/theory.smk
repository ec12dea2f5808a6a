# Stage 4: the equations of state. One JSON per configuration; non-convergence is recorded in
# the JSON (and then in the figure and table), never dropped.


rule theory_sweep:
    # Eq. 8/9 (2-layer CNN) and Eq. 5 (3-layer FCN): one sweep over the widths per n, annealed
    # downward in width from the GP solution.
    input:
        data=res("data", "{experiment}", "n{n}.npz"),
    output:
        res("theory", "{experiment}", "n{n}.json"),
    log:
        res("logs", "theory", "{experiment}", "n{n}.log"),
    benchmark:
        res("benchmarks", "theory", "{experiment}", "n{n}.tsv")
    wildcard_constraints:
        experiment="cnn2|fcn3",
    params:
        exp=lambda wc: exp_cfg(wc.experiment),
        name=lambda wc: wc.experiment,
    resources:
        runtime=default_resource("runtime"),
        mem_mb=default_resource("mem_mb"),
    conda:
        CPU_ENV
    script:
        "../scripts/theory.py"


rule theory_cnn3:
    # Fig. 5: Σ and Q^(2) predicted (Eq. 5, last lines) from the empirical kernels.
    input:
        data=res("data", "cnn3", "n{n}.npz"),
        aggregate=res("aggregate", "cnn3", "n{n}", "w{width}.npz"),
    output:
        res("theory", "cnn3", "n{n}", "w{width}.json"),
    log:
        res("logs", "theory", "cnn3", "n{n}", "w{width}.log"),
    benchmark:
        res("benchmarks", "theory", "cnn3", "n{n}", "w{width}.tsv")
    params:
        exp=lambda wc: exp_cfg("cnn3"),
        width=lambda wc: int(wc.width),
    resources:
        runtime=default_resource("runtime"),
        mem_mb=default_resource("mem_mb"),
    conda:
        CPU_ENV
    script:
        "../scripts/theory_cnn3.py"


rule theory_fls:
    # Fig. 2c: the width (channels) at which the feature-learning scale χ = 1 (Eq. 6), vs n.
    output:
        res("theory", "fls.json"),
    log:
        res("logs", "theory", "fls.log"),
    benchmark:
        res("benchmarks", "theory", "fls.tsv")
    params:
        fls=config.get("fls", {}),
    resources:
        runtime=default_resource("runtime"),
        mem_mb=default_resource("mem_mb"),
    conda:
        CPU_ENV
    script:
        "../scripts/theory_fls.py"
