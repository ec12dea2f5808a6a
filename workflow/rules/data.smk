# Stage 1: the training/test set of one experiment and n (teacher fixed by data.teacher_seed).
# Both the sampler and the theory read this file, so they always see the same draw.


rule make_data:
    input:
        cifar_input,
    output:
        out("data"),
    log:
        log("make_data", "{experiment}", "n{n}.log"),
    params:
        # what the file depends on (arch, model, data without n); see fleos.pipeline
        config=lambda wc: pipeline.data_params(config, wc.experiment),
        numerics=pipeline.numerics_version("make_data"),
    resources:
        runtime=resource("runtime"),
        mem_mb=resource("mem_mb"),
    conda:
        CPU_ENV
    shell:
        "fleos job make_data experiment={wildcards.experiment} n={wildcards.n} > {log} 2>&1"
