# Stage 4: the theory, one JSON per job; the registry (fleos.pipeline.EXPERIMENTS, THEORIES)
# says which jobs an experiment has and what each reads:
#   theory/{experiment}/n{n}.json          sweep over the widths from the data (cnn2: Eq. 8/9,
#                                          fcn3: Eq. 5), annealed downward from the GP
#   theory/{experiment}/n{n}/w{width}.json from the data and the aggregate (cnn3, Fig. 5)
#   theory/fls.json                        Fig. 2c (Eq. 6), makes its own data
# Non-convergence is recorded in the JSON (and then in the figure and table), never dropped.


rule theory:
    input:
        unpack(lambda wc: pipeline.theory_inputs(config, wc.key)),
    output:
        out("theory"),
    log:
        log("theory", "{key}.log"),
    benchmark:
        bench("theory", "{key}.tsv")
    params:
        config=lambda wc: pipeline.theory_params(config, wc.key),
        numerics=pipeline.numerics_version("theory"),
    resources:
        runtime=resource("runtime"),
        mem_mb=resource("mem_mb"),
    conda:
        CPU_ENV
    shell:
        "fleos job theory key={wildcards.key} > {log} 2>&1"
