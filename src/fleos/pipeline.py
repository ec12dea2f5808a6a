"""The workflow's registry and its view of the config (docs/architecture.md, "Registry").

The only module that knows the layout of the workflow config (``config/*.yaml``) and of the
results folder. The Snakemake rules (workflow/rules/*.smk) ask it for

* the registry: which experiment names exist, the architecture each must use, the theory
  each gets, and which figures read which experiment (`EXPERIMENTS`, `THEORIES`, `FIGURES`);
* the config, resolved (`resolve_config`) and validated once (`validate_config`: the JSON
  schema, the cross-key checks and the engines' own typed checks, fleos.config);
* file paths (`PATHS`, `Layout`), target lists and the inputs of each job;
* each job's params: a canonical hash of exactly the sub-config its output depends on
  (`sampling_params`, ...), so an edit that cannot change a finished output never reruns it;
* the theory stage's dispatch (`run_theory`).

The equations the jobs solve are cited where they run (fleos.analysis.aggregate,
fleos.theory.eos.*).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TheorySpec:
    """One kind of theory job: one JSON per n (`per_width` False) or per (n, width)."""

    per_width: bool
    inputs: tuple[str, ...]  # files of the same (experiment, n[, width]) it reads
    summary: str


@dataclass(frozen=True)
class ExperimentKind:
    """An entry name allowed under ``experiments:``: its architecture and its theory (a key
    of `THEORIES`, or None). The figures it feeds are those of `FIGURES` naming it."""

    arch: str
    theory: str | None
    summary: str


@dataclass(frozen=True)
class FigureSpec:
    """A paper figure: the experiment (or ``fls``) it draws and the stages it reads."""

    source: str
    inputs: tuple[str, ...]  # subset of ("aggregate", "data", "theory")
    summary: str


THEORIES: dict[str, TheorySpec] = {
    "sweep": TheorySpec(False, ("data",),
                        "EoS annealed over the widths from the GP solution (Eq. 8/9; Eq. 5)"),
    "kernels": TheorySpec(True, ("data", "aggregate"),
                          "Σ and Q^(2) predicted from the empirical kernels (Eq. 5, last lines)"),
}

EXPERIMENTS: dict[str, ExperimentKind] = {
    "fcn3": ExperimentKind("fcn", "sweep", "3-layer FCN, mean-field scaling (Eq. 1)"),
    "cnn2": ExperimentKind("cnn2", "sweep", "2-layer CNN (Eq. 7)"),
    "cnn3": ExperimentKind("cnn3", "kernels", "3-layer CNN (Eq. 14)"),
    "myrtle5": ExperimentKind("myrtle5", None, "Myrtle-5, ReLU"),
}

# ``fls`` is the theory-only block of Fig. 2c (fleos.theory.fls), not an experiment.
FLS = "fls"

FIGURES: dict[str, FigureSpec] = {
    "fig2a": FigureSpec("fcn3", ("aggregate", "data"),
                        "3-layer FCN (MF): QQ plot of the top first-layer weight mode"),
    "fig2b": FigureSpec("fcn3", ("aggregate", "data", "theory"),
                        "3-layer FCN (MF): train MSE, top Σ eigenvalue, α over GP vs width"),
    "fig2c": FigureSpec(FLS, ("theory",), "width at which χ = 1 vs n (Eq. 6, theory only)"),
    "fig3": FigureSpec("cnn2", ("aggregate", "data", "theory"),
                       "2-layer CNN: α/α_GP vs C (experiment, Eq. 8, Eq. 9); weight overlaps"),
    "fig4": FigureSpec("cnn3", ("aggregate", "data"),
                       "3-layer CNN: weight and pre-activation overlaps, before/after"),
    "fig5": FigureSpec("cnn3", ("aggregate", "data", "theory"),
                       "3-layer CNN: spectra of Σ and Q^(2), empirical / EoS / GP"),
    "fig6": FigureSpec("myrtle5", ("aggregate", "data"),
                       "Myrtle-5: pre-activations on kernel eigenvectors, trained vs untrained"),
}


def figures_of(experiment: str) -> tuple[str, ...]:
    """The figures that read `experiment` (or ``fls``)."""
    return tuple(f for f, spec in FIGURES.items() if spec.source == experiment)


class ConfigError(ValueError):
    """A configuration value that is wrong (alone or with others); the message names the key."""


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

# Every path under the results folder, as a Snakemake pattern ({wildcards}).
PATHS: dict[str, str] = {
    "data": "data/{experiment}/n{n}.npz",
    "chunk": "samples/{experiment}/n{n}/w{width}/chunk{chunk}.h5",
    "checkpoint": "checkpoints/{experiment}/n{n}/w{width}/chunk{chunk}.ckpt",
    "aggregate": "aggregate/{experiment}/n{n}/w{width}.npz",
    "theory": "theory/{key}.json",
    "png": "figures/{fig}.png",
    "pdf": "figures/{fig}.pdf",
    "csv": "tables/{fig}.csv",
    "summary": "tables/{fig}_summary.rst",
}
FIGURE_OUTPUTS = ("png", "pdf", "csv", "summary")
# Theory keys: 'fls', '{experiment}/n{n}' (sweep) or '{experiment}/n{n}/w{width}' (kernels).
THEORY_KEY = r"fls|[a-z0-9]+/n\d+(/w\d+)?"
_THEORY_KEY = re.compile(r"(?P<experiment>[a-z0-9]+)/n(?P<n>\d+)(?:/w(?P<width>\d+))?")


@dataclass(frozen=True)
class Layout:
    """Paths of one results folder (`PATHS` under `results`)."""

    results: str

    def pattern(self, kind: str) -> str:
        return os.path.join(self.results, PATHS[kind])

    def path(self, kind: str, **wildcards: Any) -> str:
        return self.pattern(kind).format(**wildcards)

    def log(self, stage: str, *parts: str) -> str:
        return os.path.join(self.results, "logs", stage, *parts)


def n_chunks(exp: Mapping[str, Any]) -> int:
    """Number of sampling jobs per (n, width): ceil(seeds / seeds_per_job)."""
    return math.ceil(exp["seeds"] / exp["seeds_per_job"])


def chunk_seeds(exp: Mapping[str, Any], chunk: int) -> list[int]:
    """Seed indices of one chunk: [k·spj, min((k+1)·spj, seeds))."""
    spj = exp["seeds_per_job"]
    if not 0 <= chunk < n_chunks(exp):
        raise ConfigError(f"chunk {chunk} out of range [0, {n_chunks(exp)})")
    return list(range(chunk * spj, min((chunk + 1) * spj, exp["seeds"])))


def parse_theory_key(key: str) -> tuple[str, int, int | None]:
    """('cnn2', 32, None) for 'cnn2/n32'; ('cnn3', 16, 8) for 'cnn3/n16/w8'."""
    m = _THEORY_KEY.fullmatch(key)
    if m is None:
        raise ConfigError(f"theory key {key!r} is not 'fls', 'EXPERIMENT/nN' or "
                          f"'EXPERIMENT/nN/wW'")
    w = m["width"]
    return m["experiment"], int(m["n"]), None if w is None else int(w)


def theory_keys(config: Mapping[str, Any], experiment: str) -> list[str]:
    """The theory jobs of `experiment` (or 'fls'), as keys of `PATHS['theory']`."""
    if experiment == FLS:
        return [FLS]
    exp = config["experiments"][experiment]
    kind = EXPERIMENTS[experiment].theory
    if kind is None:
        return []
    if THEORIES[kind].per_width:
        return [f"{experiment}/n{n}/w{w}" for n in exp["data"]["n"] for w in exp["widths"]]
    return [f"{experiment}/n{n}" for n in exp["data"]["n"]]


def theory_inputs(config: Mapping[str, Any], key: str) -> dict[str, str]:
    """Input files of the theory job `key`, by the names of `TheorySpec.inputs`."""
    if key == FLS:
        return {}
    name, n, width = parse_theory_key(key)
    kind = EXPERIMENTS[name].theory
    if kind is None or THEORIES[kind].per_width != (width is not None):
        raise ConfigError(f"theory key {key!r}: experiment {name!r} has no such theory job")
    lay = Layout(config["results"])
    return {i: lay.path(i, experiment=name, n=n, width=width) for i in THEORIES[kind].inputs}


def stage_files(config: Mapping[str, Any], experiment: str, stage: str) -> list[str]:
    """Every file of one stage ('data', 'aggregate' or 'theory') of `experiment`."""
    lay = Layout(config["results"])
    if stage == "theory":
        return [lay.path("theory", key=k) for k in theory_keys(config, experiment)]
    exp = config["experiments"][experiment]
    if stage == "data":
        return [lay.path("data", experiment=experiment, n=n) for n in exp["data"]["n"]]
    return [lay.path("aggregate", experiment=experiment, n=n, width=w)
            for n in exp["data"]["n"] for w in exp["widths"]]


def figure_inputs(config: Mapping[str, Any], fig: str) -> dict[str, list[str]]:
    """Input files of figure `fig`; raises naming the config key it lacks."""
    source = figure_source(config, fig)
    return {stage: stage_files(config, source, stage) for stage in FIGURES[fig].inputs}


def figure_outputs(config: Mapping[str, Any], fig: str) -> dict[str, str]:
    lay = Layout(config["results"])
    return {k: lay.path(k, fig=fig) for k in FIGURE_OUTPUTS}


def figure_source(config: Mapping[str, Any], fig: str) -> str:
    """The experiment (or 'fls') figure `fig` needs; raises naming the missing key."""
    if fig not in FIGURES:
        raise ConfigError(f"unknown figure {fig!r}; allowed: {', '.join(FIGURES)}")
    need = FIGURES[fig].source
    ok = need in config if need == FLS else need in config.get("experiments", {})
    if not ok:
        where = FLS if need == FLS else f"experiments.{need}"
        raise ConfigError(f"{fig} needs config key {where!r}, which this config lacks")
    return need


def configured_figures(config: Mapping[str, Any]) -> list[str]:
    """Figures whose source is configured (the `all` target)."""
    have = set(config.get("experiments", {})) | ({FLS} if FLS in config else set())
    return [f for f, spec in FIGURES.items() if spec.source in have]


# ----------------------------------------------------------------------------------------------
# Params: what each job's output depends on, hashed canonically
# ----------------------------------------------------------------------------------------------


def _canonical(obj: Any) -> Any:
    """Plain JSON data with integral floats as ints (YAML reads 1.0e5 as a float and 100000
    as an int; both mean the same step count, so they must hash the same)."""
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float) and math.isfinite(obj) and obj == int(obj):
        return int(obj)
    return obj


def canonical_hash(obj: Any) -> str:
    """SHA-256 of the sorted-keys JSON of `obj`: independent of key order and YAML spelling."""
    text = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _model_data(exp: Mapping[str, Any]) -> dict[str, Any]:
    # data.n lists every training-set size; a job's own n is in its path, so adding an n
    # must not rerun the jobs of the others.
    return {"arch": exp["arch"], "model": exp["model"],
            "data": {k: v for k, v in exp["data"].items() if k != "n"}}


def data_params(config: Mapping[str, Any], experiment: str) -> str:
    """make_data: the architecture (teacher), model and data keys."""
    return canonical_hash(_model_data(config["experiments"][experiment]))


def aggregate_params(config: Mapping[str, Any], experiment: str) -> str:
    """aggregate: what sampling depends on except the seeds (the chunk files carry those)."""
    exp = config["experiments"][experiment]
    return canonical_hash({**_model_data(exp), "sigma2": exp["sigma2"],
                           "sampler": exp["sampler"]})


def sampling_params(config: Mapping[str, Any], experiment: str, chunk: int) -> str:
    """sample: model, data, σ², the whole sampler block (new sampler keys are included
    automatically), the job's own seeds and, for an architecture that has one, its entry of
    `fleos.sampling.ARCH_NUMERICS_VERSIONS`; not resources, theory, widths, other n or other
    experiments."""
    from fleos.sampling import ARCH_NUMERICS_VERSIONS

    exp = config["experiments"][experiment]
    doc = {**_model_data(exp), "sigma2": exp["sigma2"], "sampler": exp["sampler"],
           "seeds": chunk_seeds(exp, chunk)}
    if exp["arch"] in ARCH_NUMERICS_VERSIONS:
        # only an architecture with its own version hashes it: the others keep their hashes
        doc["arch_numerics"] = ARCH_NUMERICS_VERSIONS[exp["arch"]]
    return canonical_hash(doc)


def theory_params(config: Mapping[str, Any], key: str) -> str:
    """theory: the fls block (Fig. 2c), or model, data, σ², the theory options with their
    defaults filled in (so that a new or changed default reruns the theory, and spelling out a
    default does not; the fluctuating-field closure's keys and its own numerics version only
    when it is on) and (for a sweep over widths) the widths."""
    from fleos.config import theory_options

    if key == FLS:
        return canonical_hash(config[FLS])
    name, _, width = parse_theory_key(key)
    exp = config["experiments"][name]
    th = theory_options(exp["arch"], exp.get("theory"))
    if th.get("fluctfield_draws") == 0:
        # an optional theory that is off changes no number: its keys stay out of the hash, so
        # that a config without it keeps the hash it had before the option existed
        th = {k: v for k, v in th.items() if not k.startswith("fluctfield_")}
    elif "fluctfield_draws" in th:
        from fleos.theory import FLUCTFIELD_NUMERICS_VERSION

        th["fluctfield_numerics"] = FLUCTFIELD_NUMERICS_VERSION
    doc = {**_model_data(exp), "sigma2": exp["sigma2"], "theory": th}
    if width is None:
        doc["widths"] = exp["widths"]
    return canonical_hash(doc)


def figure_params(config: Mapping[str, Any], fig: str) -> str:
    """figure: the block of its source (without resources), its ``figures.FIG`` options and,
    for a sampled figure, the equilibrium ``gates``.

    The figure functions read their experiment entry freely (captions, labels, widths), so
    all of it counts, except resources, which change no output."""
    source = figure_source(config, fig)
    if source == FLS:
        return canonical_hash({"source": config[FLS],
                               "figure": config.get("figures", {}).get(fig, {})})
    from dataclasses import asdict

    from fleos.core.diagnostics import EquilibriumGates

    block = {k: v for k, v in config["experiments"][source].items() if k != "resources"}
    # The gates decide which points are drawn hollow; hashed with defaults filled in, so
    # spelling a default out reruns nothing.
    return canonical_hash({"source": block,
                           "figure": config.get("figures", {}).get(fig, {}),
                           "gates": asdict(EquilibriumGates.from_config(config))})


# ----------------------------------------------------------------------------------------------
# Resources (not params: they change no output)
# ----------------------------------------------------------------------------------------------

DEFAULT_RESOURCES: dict[str, int] = {"runtime": 30, "mem_mb": 4000, "gpu": 0, "threads": 1}


def resource(config: Mapping[str, Any], key: str, experiment: str | None = None,
             attempt: int = 1) -> int:
    """`key` of the experiment's sampling jobs (``experiments.NAME.resources``), else of
    ``default_resources``, else `DEFAULT_RESOURCES`; runtime grows with the retry attempt."""
    value = {**DEFAULT_RESOURCES, **config.get("default_resources", {})}[key]
    if experiment is not None:
        value = config["experiments"][experiment].get("resources", {}).get(key, value)
    return value * attempt if key == "runtime" else value


# ----------------------------------------------------------------------------------------------
# Config: resolved once, validated once
# ----------------------------------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated recursively with `override` (--config overrides on the default)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config(config: Mapping[str, Any], configfiles: Sequence[str | os.PathLike],
                   default_file: str | os.PathLike) -> dict[str, Any]:
    """The run's config: `config` itself when it lists experiments; without any config file,
    `default_file` under the --config overrides; a config file without ``experiments:`` is an
    error (it is never filled in from the default, whose results would land in its folder)."""
    if "experiments" in config:
        return dict(config)
    if configfiles:
        names = ", ".join(str(p) for p in configfiles)
        raise ConfigError(f"config file {names}: key 'experiments' is missing; list the "
                          f"experiments to run (see {Path(default_file).name})")
    import yaml

    with open(default_file) as fh:
        return deep_merge(yaml.safe_load(fh), config)


def cifar_path(exp: Mapping[str, Any], root: str | os.PathLike = ".") -> Path | None:
    """The CIFAR-10 folder an experiment reads (model.dataset: cifar10), else None."""
    model = exp.get("model", {})
    if model.get("dataset") != "cifar10":
        return None
    path = model.get("cifar_path") or ""
    return Path(path) if os.path.isabs(path) else Path(root) / path


def cifar_problem(name: str, exp: Mapping[str, Any], root: str | os.PathLike = ".") -> str | None:
    """Why the CIFAR-10 data of experiment `name` is unusable (naming the key), or None."""
    key = f"experiments.{name}.model"
    model = exp.get("model", {})
    if model.get("dataset") != "cifar10":
        return None
    if not model.get("cifar_path"):
        return f"{key}.cifar_path is required when {key}.dataset is 'cifar10'"
    p = cifar_path(exp, root)
    if p is None or not p.exists():
        return (f"{key}.cifar_path = {model['cifar_path']!r} does not exist (CIFAR-10 for "
                f"{name}); extract cifar-10-batches-py there (https://www.cs.toronto.edu/"
                f"~kriz/cifar.html) or use {key}.dataset: digits")
    return None


def schema_errors(config: Mapping[str, Any], schema_path: str | os.PathLike) -> list[str]:
    """All JSON-schema violations of `config`, each as 'config key a.b.c: message'."""
    import jsonschema
    import yaml

    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        out.append(f"config key {where}: {err.message}")
    return out


# Images available to the Myrtle-5 experiment: (train pool, test pool); None = one shared pool
# from which train and test are drawn disjointly (the digits stand-in, fleos.nets.data).
IMAGE_POOLS: dict[str, tuple[int, int | None]] = {
    "cifar10": (50_000, 10_000),
    "digits": (1797, None),
}


def _check_image_counts(key: str, dataset: str, data: Mapping[str, Any]) -> None:
    """n (every value) and n_test must fit in the images the dataset has."""
    if dataset not in IMAGE_POOLS:
        return  # the schema / fleos.nets.models name an unknown dataset
    n_max, n_test = max(data["n"]), data.get("n_test", 0)
    train_pool, test_pool = IMAGE_POOLS[dataset]
    if test_pool is None and n_max + n_test > train_pool:
        raise ConfigError(
            f"{key}.data.n = {n_max} plus {key}.data.n_test = {n_test} exceeds the {train_pool} "
            f"images of the {dataset!r} data set"
        )
    if test_pool is not None and (n_max > train_pool or n_test > test_pool):
        raise ConfigError(
            f"{key}.data.n = {n_max} / n_test = {n_test} exceed the {dataset!r} data set "
            f"({train_pool} training, {test_pool} test images)"
        )


def check_config(
    config: Mapping[str, Any], root: str | os.PathLike = ".", check_paths: bool = True
) -> None:
    """Cross-key checks after schema validation; raises ConfigError naming the key.

    `root` is the folder relative paths (CIFAR-10) are resolved against; check_paths=False
    skips the file-existence checks (the workflow does them lazily, when the data is needed,
    so that a dry run of the paper config works on a machine without CIFAR-10).
    """
    for name, exp in config.get("experiments", {}).items():
        key = f"experiments.{name}"
        want = EXPERIMENTS[name].arch
        if exp["arch"] != want:
            raise ConfigError(f"{key}.arch = {exp['arch']!r}: experiment {name!r} needs {want!r}")
        if exp["seeds"] < 2:
            raise ConfigError(
                f"{key}.seeds = {exp['seeds']}: error bars across seeds need at least 2 seeds"
            )
        s = exp["sampler"]
        burn = s["schedule"].get("burn_in", 0)
        if burn >= s["steps"]:
            raise ConfigError(
                f"{key}.sampler.schedule.burn_in = {burn} must be below "
                f"{key}.sampler.steps = {s['steps']} (no equilibrium samples would remain)"
            )
        for sub in ("record_every", "snapshot_every"):
            if sub in s and s[sub] > s["steps"] - burn:
                raise ConfigError(
                    f"{key}.sampler.{sub} = {s[sub]} exceeds the {s['steps'] - burn} "
                    f"post-burn-in steps: no sample would be recorded"
                )
        if s["schedule"]["kind"] == "constant" and "lr" not in s["schedule"]:
            raise ConfigError(f"{key}.sampler.schedule.lr is required for kind 'constant'")
        data = exp["data"]
        if check_paths:
            problem = cifar_problem(name, exp, root)
            if problem:
                raise ConfigError(problem)
        if exp["arch"] == "myrtle5":
            _check_image_counts(key, exp["model"].get("dataset", "cifar10"), data)
        elif "teacher_seed" not in data:
            raise ConfigError(
                f"{key}.data.teacher_seed is required: the teacher draw is fixed and reported"
            )


def validate_config(
    config: Mapping[str, Any], schema_path: str | os.PathLike, root: str | os.PathLike = ".",
    check_paths: bool = True,
) -> None:
    """The one validation of a workflow config; raises ConfigError naming the key.

    In order: ``experiments`` present and named as in `EXPERIMENTS`; the JSON schema (each
    value; unknown keys anywhere refused); the cross-key checks of `check_config`; then the
    engines' typed configs (fleos.config.ExperimentConfig, with the theory options, and
    fleos.nets.models.validate_model_cfg), so nothing is left to fail inside a job.
    """
    exps = config.get("experiments")
    if not isinstance(exps, Mapping) or not exps:
        raise ConfigError("config key 'experiments' is missing or empty: list at least one of "
                          + ", ".join(EXPERIMENTS))
    unknown = sorted(set(exps) - set(EXPERIMENTS))
    if unknown:  # before the schema, whose message would not list the allowed names
        raise ConfigError(
            f"experiments.{unknown[0]}: unknown experiment name {unknown[0]!r}; allowed: "
            + ", ".join(EXPERIMENTS)
        )
    errors = schema_errors(config, schema_path)
    if errors:
        raise ConfigError("; ".join(errors))
    check_config(config, root, check_paths)
    from fleos.config import ExperimentConfig
    from fleos.core.diagnostics import EquilibriumGates
    from fleos.nets.models import validate_model_cfg

    try:
        EquilibriumGates.from_config(config)
    except ValueError as err:
        raise ConfigError(str(err)) from None

    for name, exp in exps.items():
        try:
            ExperimentConfig.from_dict(name, exp)  # its messages name the full key
        except ValueError as err:
            raise ConfigError(str(err)) from None
        try:
            validate_model_cfg(exp["arch"], exp["model"])
        except ValueError as err:
            raise ConfigError(f"experiments.{name}.model: {err}") from None


# ----------------------------------------------------------------------------------------------
# The theory stage
# ----------------------------------------------------------------------------------------------


def run_theory(key: str, config: Mapping[str, Any], inputs: Mapping[str, str],
               out_path: str | os.PathLike) -> dict[str, Any]:
    """Run theory job `key` (see `theory_keys`) on its `theory_inputs` into `out_path`."""
    from fleos.analysis.aggregate import load_aggregate
    from fleos.theory import runs

    if key == FLS:
        return runs.theory_fls(config[FLS], out_path=out_path)
    name, _, width = parse_theory_key(key)
    exp = config["experiments"][name]
    if EXPERIMENTS[name].theory == "sweep":
        return runs.theory_sweep(name, exp, data_path=inputs["data"], out_path=out_path)
    return runs.theory_cnn3(exp, width=width, data_path=inputs["data"],
                            kernels=load_aggregate(inputs["aggregate"]), out_path=out_path)


# ----------------------------------------------------------------------------------------------
# The jobs of the rules (`fleos job RULE KEY=VALUE ...`, fleos.cli.job)
# ----------------------------------------------------------------------------------------------


def numerics_version(rule: str) -> int:
    """The numerics version of the engine that computes `rule`'s numbers (a rule param).

    Snakemake never sees the library code a job runs (the rules' shell text names only the
    rule and its wildcards), so a refactor reruns nothing; a change that alters the numbers a
    stage writes for an unchanged config bumps that engine's ``NUMERICS_VERSION`` by hand,
    which reruns every job of the stage: ``make_data`` fleos.nets, ``sample``
    fleos.sampling, ``aggregate`` fleos.analysis, ``theory`` fleos.theory."""
    from fleos import analysis, nets, sampling, theory

    engines = {"make_data": nets, "sample": sampling, "aggregate": analysis, "theory": theory}
    return engines[rule].NUMERICS_VERSION


def code_digest(package: str) -> str:
    """SHA-256 of the Python sources of `package` (e.g. ``fleos.figures``): the figure rule's
    code param, so that an edit of a figure's code redraws the figures (seconds of work); the
    costly stages are versioned by hand instead (`numerics_version`)."""
    import importlib

    root = Path(importlib.import_module(package).__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _make_data(config: Mapping[str, Any], experiment: str, n: str) -> None:
    from fleos.nets.data import make_dataset
    from fleos.nets.datasets import save_dataset

    exp = config["experiments"][experiment]
    data = exp["data"]
    save_dataset(
        make_dataset(exp["arch"], exp["model"], int(n), int(data["n_test"]),
                     int(data.get("teacher_seed", 0)),  # unused by image data (myrtle5)
                     int(data["data_seed"])),
        Layout(config["results"]).path("data", experiment=experiment, n=n),
    )


def _sample(config: Mapping[str, Any], experiment: str, n: str, width: str, chunk: str) -> None:
    from fleos.config import ExperimentConfig, JobSpec
    from fleos.sampling.experiment import run_job

    exp = config["experiments"][experiment]
    lay = Layout(config["results"])
    wc = {"experiment": experiment, "n": n, "width": width, "chunk": chunk}
    run_job(
        ExperimentConfig.from_dict(experiment, exp),
        JobSpec(experiment, int(n), int(width), tuple(chunk_seeds(exp, int(chunk)))),
        data_path=lay.path("data", **wc),
        out_path=lay.path("chunk", **wc),
        # outside the declared outputs, so Snakemake keeps it when a job fails (resume on retry)
        checkpoint_path=lay.path("checkpoint", **wc),
    )


def _aggregate(config: Mapping[str, Any], experiment: str, n: str, width: str) -> None:
    from fleos.analysis.aggregate import aggregate_experiment

    exp = config["experiments"][experiment]
    lay = Layout(config["results"])
    wc = {"experiment": experiment, "n": n, "width": width}
    aggregate_experiment(
        experiment, exp,
        chunk_paths=[lay.path("chunk", **wc, chunk=k) for k in range(n_chunks(exp))],
        data_path=lay.path("data", **wc),
        out_path=lay.path("aggregate", **wc),
    )


def _theory(config: Mapping[str, Any], key: str) -> None:
    run_theory(key, config, theory_inputs(config, key),
               Layout(config["results"]).path("theory", key=key))


def _figure(config: Mapping[str, Any], fig: str) -> None:
    from fleos.figures.render import render_figure

    out = figure_outputs(config, fig)
    render_figure(fig, figure_inputs(config, fig), config, png=out["png"], pdf=out["pdf"],
                  csv_path=out["csv"], summary_path=out["summary"])


# rule -> (its wildcards, the job); each job reads and writes the files its rule declares
# (the same `Layout` paths and `*_inputs` functions the rule files call).
JOBS: dict[str, tuple[tuple[str, ...], Any]] = {
    "make_data": (("experiment", "n"), _make_data),
    "sample": (("experiment", "n", "width", "chunk"), _sample),
    "aggregate": (("experiment", "n", "width"), _aggregate),
    "theory": (("key",), _theory),
    "figure": (("fig",), _figure),
}


def run_rule_job(rule: str, config: Mapping[str, Any], wildcards: Mapping[str, str]) -> None:
    """Run one job of `rule` with `wildcards` (exactly the rule's, as strings)."""
    if rule not in JOBS:
        raise ConfigError(f"unknown rule {rule!r}; allowed: {', '.join(JOBS)}")
    names, job = JOBS[rule]
    if sorted(wildcards) != sorted(names):
        raise ConfigError(f"rule {rule} takes the wildcards {', '.join(names)}, got "
                          f"{', '.join(wildcards) or 'none'}")
    job(config, **wildcards)


# ----------------------------------------------------------------------------------------------
# config/README.md: every key of the schema, its default and its meaning
# ----------------------------------------------------------------------------------------------

SCHEMA_FILE = "workflow/schemas/config.schema.yaml"


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """`node` with its ``$ref`` (``#/$defs/NAME``) filled in; its own keys win."""
    if "$ref" not in node:
        return dict(node)
    target = _resolve(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _value(v: Any) -> str:
    return f"`{json.dumps(v, ensure_ascii=False)}`"


def _kind(node: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    """The allowed values of a schema node in words."""
    node = _resolve(node, defs)
    if "enum" in node:
        return "one of " + ", ".join(_value(v) for v in node["enum"])
    if "const" in node:
        return _value(node["const"])
    if "oneOf" in node:
        return " or ".join(_kind(alt, defs) for alt in node["oneOf"])
    types = node.get("type", "any")
    types = types if isinstance(types, list) else [types]
    words = []
    for t in types:
        if t == "array":
            items = node.get("items")
            words.append("list" + (f" of {_kind(items, defs)}" if items else ""))
            continue
        word = {"object": "mapping", "null": "`null`"}.get(t, t)
        bounds = [f"≥ {node['minimum']}" if "minimum" in node else "",
                  f"> {node['exclusiveMinimum']}" if "exclusiveMinimum" in node else "",
                  f"≤ {node['maximum']}" if "maximum" in node else "",
                  f"< {node['exclusiveMaximum']}" if "exclusiveMaximum" in node else ""]
        word = " ".join([word, ", ".join(b for b in bounds if b)]).strip()
        if "multipleOf" in node:
            word += f", multiple of {node['multipleOf']}"
        words.append(word)
    return " or ".join(words)


def _default(node: Mapping[str, Any], required: bool) -> str:
    if "default" in node:
        return _value(node["default"])
    if "x-defaults" in node:  # one default per architecture (the code's tables)
        return "; ".join(f"{arch}: {_value(v)}" for arch, v in node["x-defaults"].items())
    return "required" if required else "—"


def _schema_rows(node: Mapping[str, Any], path: str, defs: Mapping[str, Any], required: bool,
                 seen: dict[str, str]) -> list[tuple[str, str, str, str]]:
    full = _resolve(node, defs)
    meaning = " ".join(str(full.get("description", "")).split())
    props = full.get("properties", {})
    refs = {p.get("$ref") for p in props.values()}
    shared = len(props) > 1 and len(refs) == 1 and None not in refs  # e.g. experiments.NAME
    ref = node.get("$ref")
    if props and ref in seen:
        meaning = (meaning + ("; " if meaning else "") + f"keys as under `{seen[ref]}`")
        props = {}
    elif props and ref:
        seen[ref] = path
    kind = "mapping" if full.get("type") == "object" else _kind(full, defs)
    rows = [(path, kind, _default(full, required), meaning)]
    need = set(full.get("required", ()))
    if shared:
        names = ", ".join(f"`{k}`" for k in props)
        for name, sub in props.items():
            rows.append((f"{path}.{name}", "mapping", "—",
                         " ".join(str(sub.get("description", "")).split())))
        rows += _schema_rows({"$ref": next(iter(refs))}, f"{path}.NAME", defs, False, seen)[1:]
        rows.insert(1, (f"{path}.NAME", "mapping", "—", f"NAME is one of {names}"))
        return rows
    for key, sub in props.items():
        rows += _schema_rows(sub, f"{path}.{key}", defs, key in need, seen)
    return rows


def config_readme(schema_path: str | os.PathLike = SCHEMA_FILE) -> str:
    """The text of config/README.md (the Snakemake workflow catalog's convention): every key
    of the workflow config, from the JSON schema, with its allowed values, default and
    meaning. ``make config/README.md`` writes it; a test checks the committed file."""
    import yaml

    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    defs = schema.get("$defs", {})
    out = [
        "# Configuration",
        "",
        f"<!-- Generated from {SCHEMA_FILE} by `make config/README.md` "
        "(fleos.pipeline.config_readme): edit the schema, not this file. -->",
        "",
        " ".join(str(schema.get("description", "")).split()),
        "",
        "Shipped configs: `config/config.yaml` (laptop scale, used when no `--configfile` is "
        "given), `config/paper.yaml` (the paper's scale), `config/smoke.yaml` (tiny, for "
        "tests) and the studies beside them. Run one with "
        "`snakemake --cores 2 --configfile config/NAME.yaml`; override single keys with "
        "`--config KEY=VALUE`. \"required\": the key has no default; \"—\": absent means off "
        "or not used; a default per architecture is listed as `arch: value`.",
    ]
    need = set(schema.get("required", ()))
    seen: dict[str, str] = {}
    for key, node in schema.get("properties", {}).items():
        out += ["", f"## `{key}`", "", "| key | allowed values | default | meaning |",
                "|---|---|---|---|"]
        for row in _schema_rows(node, key, defs, key in need, seen):
            out.append("| " + " | ".join([f"`{row[0]}`", *(c.replace("|", "\\|") for c in
                                                             row[1:])]) + " |")
    return "\n".join(out) + "\n"
