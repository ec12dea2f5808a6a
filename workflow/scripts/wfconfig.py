"""Workflow configuration: loading, cross-key checks and target lists (plain Python).

Imported by workflow/rules/common.smk after the JSON-schema validation
(workflow/schemas/config.schema.yaml), and by tests/test_workflow.py. The schema checks each
value on its own; the checks here need several keys at once. Every error names the key.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Which configured experiment (or theory block) each figure needs.
FIGURE_INPUTS: dict[str, str] = {
    "fig2a": "fcn3",
    "fig2b": "fcn3",
    "fig2c": "fls",
    "fig3": "cnn2",
    "fig4": "cnn3",
    "fig5": "cnn3",
    "fig6": "myrtle5",
}
FIGURES: tuple[str, ...] = tuple(FIGURE_INPUTS)

# The architecture each experiment name must use (the figures assume it).
EXPERIMENT_ARCH: dict[str, str] = {
    "fcn3": "fcn",
    "cnn2": "cnn2",
    "cnn3": "cnn3",
    "myrtle5": "myrtle5",
}


class ConfigError(ValueError):
    """A configuration value that is wrong in combination with others; names the key."""


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated recursively with `override` (used for --config overrides on the default)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def n_chunks(exp: Mapping[str, Any]) -> int:
    """Number of sampling jobs per (n, width): ceil(seeds / seeds_per_job)."""
    return math.ceil(exp["seeds"] / exp["seeds_per_job"])


def chunk_seeds(exp: Mapping[str, Any], chunk: int) -> list[int]:
    """Seed indices of one chunk: [k·spj, min((k+1)·spj, seeds))."""
    spj = exp["seeds_per_job"]
    if not 0 <= chunk < n_chunks(exp):
        raise ConfigError(f"chunk {chunk} out of range [0, {n_chunks(exp)})")
    return list(range(chunk * spj, min((chunk + 1) * spj, exp["seeds"])))


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


def check_config(
    config: Mapping[str, Any], root: str | os.PathLike = ".", check_paths: bool = True
) -> None:
    """Cross-key checks after schema validation; raises ConfigError naming the key.

    `root` is the folder relative paths (CIFAR-10) are resolved against; check_paths=False
    skips the file-existence checks (the workflow does them lazily, when the data is needed,
    so that a dry run of the paper config works on a machine without CIFAR-10).
    """
    exps = config.get("experiments", {})
    for name, exp in exps.items():
        key = f"experiments.{name}"
        want = EXPERIMENT_ARCH.get(name)
        if want is not None and exp["arch"] != want:
            raise ConfigError(f"{key}.arch = {exp['arch']!r}: experiment {name!r} needs {want!r}")
        if exp["seeds_per_job"] > exp["seeds"]:
            raise ConfigError(
                f"{key}.seeds_per_job = {exp['seeds_per_job']} exceeds {key}.seeds = "
                f"{exp['seeds']}"
            )
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
        kind = s["schedule"]["kind"]
        if kind == "constant" and "lr" not in s["schedule"]:
            raise ConfigError(f"{key}.sampler.schedule.lr is required for kind 'constant'")
        data = exp["data"]
        if check_paths:
            problem = cifar_problem(name, exp, root)
            if problem:
                raise ConfigError(problem)
        if exp["arch"] == "myrtle5":
            _check_image_counts(key, exp["model"].get("dataset", "cifar10"), data)
        if exp["arch"] != "myrtle5" and "teacher_seed" not in data:
            raise ConfigError(
                f"{key}.data.teacher_seed is required: the teacher draw is fixed and reported"
            )
        if name == "cnn2":
            m = exp["model"]
            for k in ("S", "N"):
                if k not in m:
                    raise ConfigError(f"{key}.model.{k} is required for the 2-layer CNN (Eq. 7)")
        if name == "cnn3":
            m = exp["model"]
            for k in ("S0", "S1", "N"):
                if k not in m:
                    raise ConfigError(f"{key}.model.{k} is required for the 3-layer CNN (Eq. 14)")
        if name != "cnn2" and "C_grid" in exp.get("theory", {}):
            raise ConfigError(
                f"{key}.theory.C_grid: theory-only widths are drawn for Fig. 3 (cnn2) only"
            )
        res = exp.get("resources", {})
        if res.get("threads", 1) < 1:
            raise ConfigError(f"{key}.resources.threads must be >= 1")


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
# from which train and test are drawn disjointly (the digits stand-in, fleos.data).
IMAGE_POOLS: dict[str, tuple[int, int | None]] = {
    "cifar10": (50_000, 10_000),
    "digits": (1797, None),
}


def _check_image_counts(key: str, dataset: str, data: Mapping[str, Any]) -> None:
    """n (every value) and n_test must fit in the images the dataset has."""
    if dataset not in IMAGE_POOLS:
        return  # the schema / fleos.models name an unknown dataset
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


def validate_config(
    config: Mapping[str, Any], schema_path: str | os.PathLike, root: str | os.PathLike = ".",
    check_paths: bool = True,
) -> None:
    """Schema check (messages name the key), then the cross-key checks of `check_config`."""
    unknown = sorted(set(config.get("experiments") or {}) - set(EXPERIMENT_ARCH))
    if unknown:  # before the schema, whose message would not list the allowed names
        raise ConfigError(
            f"experiments.{unknown[0]}: unknown experiment name {unknown[0]!r}; allowed: "
            + ", ".join(EXPERIMENT_ARCH)
        )
    errors = schema_errors(config, schema_path)
    if errors:
        raise ConfigError("; ".join(errors))
    check_config(config, root, check_paths)


def configured_figures(config: Mapping[str, Any]) -> list[str]:
    """Figures whose inputs are configured (the `all` target)."""
    have = set(config.get("experiments", {}))
    if "fls" in config:
        have.add("fls")
    return [f for f in FIGURES if FIGURE_INPUTS[f] in have]


def require_input(config: Mapping[str, Any], figure: str) -> str:
    """The experiment (or 'fls') a figure needs; raises naming the missing key."""
    need = FIGURE_INPUTS[figure]
    ok = need in config if need == "fls" else need in config.get("experiments", {})
    if not ok:
        where = "fls" if need == "fls" else f"experiments.{need}"
        raise ConfigError(f"{figure} needs config key {where!r}, which this config lacks")
    return need
