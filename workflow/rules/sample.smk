# Stage 2: Langevin sampling (Eq. 15, Methods). One job = one chunk of seeds of one
# (experiment, n, width), run as a vmapped ensemble; fan-out experiment × n × width × chunk.
# GPU-ready: resources come from experiments.NAME.resources (gpu, runtime, mem_mb); the SLURM
# profile maps `gpu` to a GPU request. Runtime is multiplied by the attempt number, so a retry
# gets more time, and the job resumes from its checkpoint (kept outside the declared outputs).


rule sample:
    input:
        data=out("data"),
    output:
        out("chunk"),
    log:
        log("sample", "{experiment}", "n{n}", "w{width}", "chunk{chunk}.log"),
    benchmark:
        bench("sample", "{experiment}", "n{n}", "w{width}", "chunk{chunk}.tsv")
    params:
        # model, data, σ², the whole sampler block and this chunk's seeds: nothing else
        # (not resources, theory or other experiments) reruns a finished sampling job
        config=lambda wc: pipeline.sampling_params(config, wc.experiment, int(wc.chunk)),
        # bumped by hand when the numbers change (a refactor keeps it: reruns nothing)
        numerics=pipeline.numerics_version("sample"),
    threads: resource("threads", per_experiment=True)
    resources:
        runtime=resource("runtime", per_experiment=True),
        mem_mb=resource("mem_mb", per_experiment=True),
        gpu=resource("gpu", per_experiment=True),
    conda:
        SAMPLE_ENV
    shell:
        "fleos job sample experiment={wildcards.experiment} n={wildcards.n} "
        "width={wildcards.width} chunk={wildcards.chunk} > {log} 2>&1"
