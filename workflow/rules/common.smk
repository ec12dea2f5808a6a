# The config, resolved and validated once, and the helpers every rule file uses. All the
# knowledge of the config and of the results layout is in fleos.pipeline (the registry).
import json
import os
import sys

from fleos import pipeline
from fleos.pipeline import FIGURES, ConfigError

# No `configfile:` directive on purpose: Snakemake would deep-merge a --configfile into it,
# leaking laptop keys into paper/smoke runs. config/config.yaml applies only when no
# --configfile is given (plain --config KEY=VALUE overrides still apply on top of it); a
# --configfile without `experiments:` is an error.
SCHEMA = os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")
try:
    _resolved = pipeline.resolve_config(
        config,
        workflow.config_settings.configfiles,
        os.path.join(workflow.basedir, "config", "config.yaml"),
    )
    config.clear()
    config.update(_resolved)
    pipeline.validate_config(config, SCHEMA, root=os.getcwd(), check_paths=False)
except ConfigError as err:
    raise ValueError(f"invalid fleos config: {err}") from None

LAYOUT = pipeline.Layout(config["results"])

# Every rule runs `fleos job RULE WILDCARDS` (fleos.cli.job), a shell text that no refactor
# of the library changes, so a refactor reruns nothing; what a job computes is versioned by
# its `numerics` param (docs/workflow.md, "Which edits rerun what"). The job reads this
# config from the environment (inherited by local jobs; a cluster job's Snakemake parses
# this file again). `fleos` is the conda env's under `--sdm conda`, else the one beside the
# Python running Snakemake (which imports fleos above), whether or not PATH has it.
os.environ.update(FLEOS_WORKFLOW_CONFIG=json.dumps(config))  # set, not read: no `envvars:`
if not any(m.name == "CONDA" for m in workflow.deployment_settings.deployment_method):
    os.environ.update(PATH=os.path.dirname(sys.executable) + os.pathsep + os.getenv("PATH", ""))

EXPERIMENTS = list(config["experiments"])


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    n=r"\d+",
    width=r"\d+",
    chunk=r"\d+",
    fig="|".join(FIGURES),
    key=pipeline.THEORY_KEY,


def out(kind):
    """The Snakemake pattern of one kind of file (fleos.pipeline.PATHS)."""
    return LAYOUT.pattern(kind)


def log(stage, *parts):
    return LAYOUT.log(stage, *parts)


def bench(stage, *parts):
    """Benchmark file of a job (wall time, max RSS): size runtime and mem_mb from these
    (docs/cluster.md)."""
    return os.path.join(LAYOUT.results, "benchmarks", stage, *parts)


def all_figure_targets():
    return [
        p
        for fig in pipeline.configured_figures(config)
        for p in pipeline.figure_outputs(config, fig).values()
    ]


def resource(key, per_experiment=False):
    """A resource of the job (runtime grows with the retry attempt). Sampling jobs read
    experiments.NAME.resources, other jobs default_resources. Resources are not params:
    editing them reruns nothing."""

    def get(wildcards, attempt=1):
        name = wildcards.experiment if per_experiment else None
        return pipeline.resource(config, key, name, attempt)

    return get


# Conda environments (used only with `--sdm conda`; plain runs use the current Python).
# Sampling jobs get the CUDA env when the config says `sampling_env: gpu`.
CPU_ENV = "../../envs/cpu.yaml"
SAMPLE_ENV = {"cpu": CPU_ENV, "gpu": "../../envs/sample-gpu.yaml"}[
    config.get("sampling_env", "cpu")
]


def cifar_input(wildcards):
    """CIFAR-10 folder of an image experiment, checked when its data is actually needed:
    a missing folder stops a real run (naming the key) but only warns in a dry run."""
    e = config["experiments"][wildcards.experiment]
    problem = pipeline.cifar_problem(wildcards.experiment, e, os.getcwd())
    if problem:
        if workflow.dryrun:
            print(f"WARNING (dry run): {problem}", file=sys.stderr)
            return []
        raise ConfigError(problem)
    p = pipeline.cifar_path(e, os.getcwd())
    return [str(p)] if p is not None else []
