# Stage 3: pool the seed chunks of one (experiment, n, width) into observables with error bars
# across seeds (each seed's time average is an independent estimate).


rule aggregate:
    input:
        chunks=chunk_files,
        data=res("data", "{experiment}", "n{n}.npz"),
    output:
        res("aggregate", "{experiment}", "n{n}", "w{width}.npz"),
    log:
        res("logs", "aggregate", "{experiment}", "n{n}", "w{width}.log"),
    params:
        exp=lambda wc: exp_cfg(wc.experiment),
        name=lambda wc: wc.experiment,
        width=lambda wc: int(wc.width),
    resources:
        runtime=default_resource("runtime"),
        mem_mb=default_resource("mem_mb"),
    conda:
        CPU_ENV
    script:
        "../scripts/aggregate.py"
