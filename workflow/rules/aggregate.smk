# Stage 3: pool the seed chunks of one (experiment, n, width) into observables with error bars
# across seeds (each seed's time average is an independent estimate).


rule aggregate:
    input:
        chunks=lambda wc: [
            LAYOUT.path("chunk", experiment=wc.experiment, n=wc.n, width=wc.width, chunk=k)
            for k in range(pipeline.n_chunks(config["experiments"][wc.experiment]))
        ],
        data=out("data"),
    output:
        out("aggregate"),
    log:
        log("aggregate", "{experiment}", "n{n}", "w{width}.log"),
    params:
        config=lambda wc: pipeline.aggregate_params(config, wc.experiment),
        numerics=pipeline.numerics_version("aggregate"),
    resources:
        runtime=resource("runtime"),
        mem_mb=resource("mem_mb"),
    conda:
        CPU_ENV
    shell:
        "fleos job aggregate experiment={wildcards.experiment} n={wildcards.n} "
        "width={wildcards.width} > {log} 2>&1"
