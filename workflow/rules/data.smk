# Stage 1: the training/test set of one experiment and n (teacher fixed by data.teacher_seed).
# Both the sampler and the theory read this file, so they always see the same draw.


rule make_data:
    input:
        cifar_input,
    output:
        res("data", "{experiment}", "n{n}.npz"),
    log:
        res("logs", "make_data", "{experiment}", "n{n}.log"),
    params:
        exp=lambda wc: exp_cfg(wc.experiment),
    resources:
        runtime=default_resource("runtime"),
        mem_mb=default_resource("mem_mb"),
    conda:
        CPU_ENV
    script:
        "../scripts/make_data.py"
