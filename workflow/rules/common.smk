# Configuration, validation and target helpers shared by every rule file.
import os
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

sys.path.insert(0, os.path.join(workflow.basedir, "workflow", "scripts"))
from wfconfig import (  # noqa: E402
    FIGURES,
    ConfigError,
    cifar_path,
    cifar_problem,
    validate_config,
    chunk_seeds,
    configured_figures,
    deep_merge,
    n_chunks,
    require_input,
)

# No `configfile:` directive on purpose: Snakemake would deep-merge a --configfile into it,
# leaking laptop keys into paper/smoke runs. The default applies only when no experiments
# were given; plain --config KEY=VALUE overrides still apply on top of it.
DEFAULT_CONFIG = os.path.join(workflow.basedir, "config", "config.yaml")
if "experiments" not in config:
    with open(DEFAULT_CONFIG) as fh:
        _merged = deep_merge(yaml.safe_load(fh), config)
    config.clear()
    config.update(_merged)

SCHEMA = os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")
try:
    # Our own pass first: its messages name the offending key ('experiments.cnn2.sigma2').
    validate_config(config, SCHEMA, root=os.getcwd(), check_paths=False)
except ConfigError as err:
    raise ValueError(f"invalid fleos config: {err}") from None
validate(config, "../schemas/config.schema.yaml")

RESULTS = config["results"]
EXPERIMENTS = list(config["experiments"])


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    n=r"\d+",
    width=r"\d+",
    chunk=r"\d+",
    fig="|".join(FIGURES),


def res(*parts):
    """A path under the results folder."""
    return os.path.join(RESULTS, *[str(p) for p in parts])


def exp_cfg(name):
    return config["experiments"][name]


def data_file(experiment, n):
    return res("data", experiment, f"n{n}.npz")


def chunk_file(experiment, n, width, chunk):
    return res("samples", experiment, f"n{n}", f"w{width}", f"chunk{chunk}.h5")


def chunk_files(wildcards):
    """All seed-chunk files of one (experiment, n, width): input of the aggregation."""
    e = exp_cfg(wildcards.experiment)
    return [
        chunk_file(wildcards.experiment, wildcards.n, wildcards.width, k)
        for k in range(n_chunks(e))
    ]


def aggregate_file(experiment, n, width):
    return res("aggregate", experiment, f"n{n}", f"w{width}.npz")


def aggregate_files(experiment):
    e = exp_cfg(experiment)
    return [aggregate_file(experiment, n, w) for n in e["data"]["n"] for w in e["widths"]]


def theory_files(experiment):
    e = exp_cfg(experiment)
    return [res("theory", experiment, f"n{n}.json") for n in e["data"]["n"]]


def data_files(experiment):
    e = exp_cfg(experiment)
    return [data_file(experiment, n) for n in e["data"]["n"]]


def figure_outputs(fig):
    return {
        "png": res("figures", f"{fig}.png"),
        "pdf": res("figures", f"{fig}.pdf"),
        "csv": res("tables", f"{fig}.csv"),
    }


def all_figure_targets():
    out = []
    for fig in configured_figures(config):
        out.extend(figure_outputs(fig).values())
    return out


def log_file(rule_name, *parts):
    return res("logs", rule_name, *parts)


# Resources: per experiment (config experiments.NAME.resources), else default_resources.
_DEFAULT_RES = {"runtime": 30, "mem_mb": 4000, "gpu": 0, "threads": 1}
_DEFAULT_RES.update(config.get("default_resources", {}))


def exp_resource(key):
    """Resource `key` of the job's experiment; runtime grows with the retry attempt."""

    def get(wildcards, attempt=1):
        e = exp_cfg(wildcards.experiment) if hasattr(wildcards, "experiment") else {}
        value = e.get("resources", {}).get(key, _DEFAULT_RES[key])
        return value * attempt if key == "runtime" else value

    return get


def default_resource(key):
    def get(wildcards, attempt=1):
        value = _DEFAULT_RES[key]
        return value * attempt if key == "runtime" else value

    return get


def exp_threads(wildcards):
    return exp_cfg(wildcards.experiment).get("resources", {}).get("threads", _DEFAULT_RES["threads"])


def fig_inputs(fig):
    need = require_input(config, fig)
    if need == "fls":
        return {"theory": [res("theory", "fls.json")]}
    out = {"aggregate": aggregate_files(need), "data": data_files(need)}
    if fig in ("fig2b", "fig3"):
        out["theory"] = theory_files(need)
    if fig == "fig5":
        e = exp_cfg(need)
        out["theory"] = [
            res("theory", need, f"n{n}", f"w{w}.json") for n in e["data"]["n"] for w in e["widths"]
        ]
    return out


# Conda environments (used only with `--sdm conda`; plain runs use the current Python).
# Sampling jobs get the CUDA env when the config says `sampling_env: gpu`.
CPU_ENV = "../../envs/cpu.yaml"
SAMPLE_ENV = {"cpu": CPU_ENV, "gpu": "../../envs/sample-gpu.yaml"}[
    config.get("sampling_env", "cpu")
]


# Deep validation by the engines themselves (sampler keys, schedules, model keys), so that a
# bad value stops the run before any job starts, with the key named.
try:
    import fleos  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(workflow.basedir, "src"))
from fleos.aggregate import engine_config  # noqa: E402
from fleos.config import ExperimentConfig  # noqa: E402
from fleos.models import validate_model_cfg  # noqa: E402

for _name, _exp in config["experiments"].items():
    try:
        ExperimentConfig.from_dict(_name, engine_config(_exp))
        validate_model_cfg(_exp["arch"], _exp["model"])
    except ValueError as err:
        raise ValueError(f"invalid fleos config: experiments.{_name}: {err}") from None


def cifar_input(wildcards):
    """CIFAR-10 folder of an image experiment, checked when its data is actually needed:
    a missing folder stops a real run (naming the key) but only warns in a dry run."""
    e = exp_cfg(wildcards.experiment)
    problem = cifar_problem(wildcards.experiment, e, os.getcwd())
    if problem:
        if workflow.dryrun:
            print(f"WARNING (dry run): {problem}", file=sys.stderr)
            return []
        raise ConfigError(problem)
    p = cifar_path(e, os.getcwd())
    return [str(p)] if p is not None else []
