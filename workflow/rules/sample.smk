# Stage 2: Langevin sampling (Eq. 15, Methods). One job = one chunk of seeds of one
# (experiment, n, width), run as a vmapped ensemble; fan-out experiment × n × width × chunk.
# GPU-ready: resources come from experiments.NAME.resources (gpu, runtime, mem_mb); the SLURM
# profile maps `gpu` to a GPU request. Runtime is multiplied by the attempt number, so a retry
# gets more time, and the job resumes from its checkpoint (kept outside the declared outputs).


rule sample:
    input:
        data=res("data", "{experiment}", "n{n}.npz"),
    output:
        res("samples", "{experiment}", "n{n}", "w{width}", "chunk{chunk}.h5"),
    log:
        res("logs", "sample", "{experiment}", "n{n}", "w{width}", "chunk{chunk}.log"),
    benchmark:
        res("benchmarks", "sample", "{experiment}", "n{n}", "w{width}", "chunk{chunk}.tsv")
    params:
        exp=lambda wc: exp_cfg(wc.experiment),
        seeds=lambda wc: chunk_seeds(exp_cfg(wc.experiment), int(wc.chunk)),
        checkpoint=lambda wc: res(
            "checkpoints", wc.experiment, f"n{wc.n}", f"w{wc.width}", f"chunk{wc.chunk}.ckpt"
        ),
    threads: exp_threads
    resources:
        runtime=exp_resource("runtime"),
        mem_mb=exp_resource("mem_mb"),
        gpu=exp_resource("gpu"),
    conda:
        SAMPLE_ENV
    script:
        "../scripts/sample.py"
