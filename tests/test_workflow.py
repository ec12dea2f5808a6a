"""The Snakemake workflow: the registry, config validation, params, dry runs, lint, and an
end-to-end smoke run followed by dry runs of edited configs (what reruns what).

Dry runs start `snakemake` as a subprocess (a few seconds each: it imports fleos to validate
the experiments). The end-to-end run of config/smoke.yaml copies the workflow to a temporary
folder and runs every rule once for the whole module; the tests that use it are marked slow.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fleos import config as fconfig
from fleos import pipeline as wf

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
FIGURES = ("fig2a", "fig2b", "fig2c", "fig3", "fig4", "fig5", "fig6")
FIG3_COLUMNS = [
    "n", "C", "alpha_test_exp", "alpha_test_exp_se", "alpha_test_eos",
    "alpha_test_eq9_printed", "alpha_test_eq9_corrected", "alpha_test_gp", "alpha_train_exp",
    "alpha_train_exp_se", "alpha_train_eos", "alpha_train_eq9_printed",
    "alpha_train_eq9_corrected", "alpha_train_gp",
]


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


def _snakemake(args: list[str], cwd: Path = ROOT, timeout: int = 300):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


# ---------------------------------------------------------------------------------------------
# Schema and cross-key checks (no subprocess)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "config").glob("*.yaml")))
def test_shipped_configs_are_valid(name):
    cfg = _load(name)
    # Paths (CIFAR-10 of the paper config) are checked lazily by the workflow, not here.
    wf.validate_config(cfg, SCHEMA, root=ROOT, check_paths=False)
    if name in ("config.yaml", "paper.yaml", "smoke.yaml"):
        assert wf.configured_figures(cfg) == list(FIGURES), "this config draws every figure"


def _mutate(path: str, value):
    def f(cfg):
        node = cfg
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return f


BAD = [
    # (mutation, text the error must contain)
    (_mutate("experiments.cnn2.sigma2", -0.1), "experiments.cnn2.sigma2"),
    (_mutate("experiments.cnn2.sigma2", 0), "experiments.cnn2.sigma2"),
    (_mutate("experiments.cnn2.widths", [0, 8]), "experiments.cnn2.widths.0"),
    (_mutate("experiments.cnn2.widths", []), "experiments.cnn2.widths"),
    (_mutate("experiments.cnn2.data.n_test", 0), "experiments.cnn2.data.n_test"),
    (_mutate("experiments.resnet", {"arch": "cnn2"}),
     "unknown experiment name 'resnet'; allowed: fcn3, cnn2, cnn3, myrtle5"),
    (_mutate("experiments.cnn2.arch", "resnet"), "experiments.cnn2.arch"),
    (_mutate("experiments.cnn2.model.Sx", 3), "'Sx' was unexpected"),
    (_mutate("experiments.cnn2.model.sigma_w2", -2.0), "experiments.cnn2.model.sigma_w2"),
    (_mutate("experiments.cnn2.seeds", 0), "experiments.cnn2.seeds"),
    (_mutate("experiments.cnn2.sampler.steps", 0), "experiments.cnn2.sampler.steps"),
    (_mutate("experiments.fcn3.model.scaling", "mf"), "experiments.fcn3.model.scaling"),
    (_mutate("bogus", 1), "'bogus' was unexpected"),
    # cross-key checks (wfconfig.check_config)
    (_mutate("experiments.cnn2.seeds_per_job", 99), "experiments.cnn2.seeds_per_job"),
    (_mutate("experiments.cnn2.seeds", 1), "experiments.cnn2.seeds"),
    (_mutate("experiments.cnn2.sampler.schedule.burn_in", 10**9),
     "experiments.cnn2.sampler.schedule.burn_in"),
    (_mutate("experiments.cnn2.arch", "cnn3"), "experiments.cnn2.arch"),
    (_mutate("experiments.cnn2.data.teacher_seed", None), "experiments.cnn2.data.teacher_seed"),
    (_mutate("experiments.fcn3.theory.C_grid", [4]),
     "experiments.fcn3.theory has unknown key(s) ['C_grid']"),
    (_mutate("experiments.cnn2.theory.C_grid", [0]), "experiments.cnn2.theory.C_grid"),
    # unknown keys anywhere, bad enums, non-finite σ²
    (_mutate("experiments.cnn2.theory.tolerance", 1e-6), "'tolerance' was unexpected"),
    (_mutate("experiments.cnn2.theory.method", "bogus"), "experiments.cnn2.theory.method"),
    (_mutate("experiments.cnn3.theory", {"tol": 1e-6}),
     "experiments.cnn3.theory has unknown key(s) ['tol']"),
    (_mutate("experiments.cnn2.sampler.record_evry", 3), "'record_evry' was unexpected"),
    (_mutate("experiments.cnn2.sampler.schedule.warmup", 3),
     "experiments.cnn2.sampler.schedule is invalid"),
    (_mutate("experiments.cnn2.resources", {"gpus": 1}), "'gpus' was unexpected"),
    (_mutate("figures", {"fig3": {"hist_widht": 8}}), "'hist_widht' was unexpected"),
    (_mutate("fls.cnn2", {"C": 3}), "'C' was unexpected"),
    (_mutate("experiments.cnn2.sigma2", float("inf")), "experiments.cnn2.sigma2 must be finite"),
    (_mutate("experiments.cnn2.sigma2", float("nan")), "experiments.cnn2.sigma2 must be > 0"),
    (lambda cfg: cfg.pop("experiments"), "config key 'experiments' is missing"),
]


@pytest.mark.parametrize("mutate,needle", BAD)
def test_schema_rejects_bad_config_naming_the_key(mutate, needle):
    cfg = copy.deepcopy(_load("smoke.yaml"))
    mutate(cfg)
    if needle.endswith("teacher_seed"):
        del cfg["experiments"]["cnn2"]["data"]["teacher_seed"]
    with pytest.raises(wf.ConfigError) as err:
        wf.validate_config(cfg, SCHEMA, root=ROOT)
    assert needle in str(err.value)


def test_missing_cifar_path_is_named(tmp_path):
    cfg = copy.deepcopy(_load("smoke.yaml"))
    cfg["experiments"]["myrtle5"]["model"].update(dataset="cifar10",
                                                  cifar_path="no/such/folder")
    with pytest.raises(wf.ConfigError, match=r"experiments\.myrtle5\.model\.cifar_path"):
        wf.validate_config(cfg, SCHEMA, root=tmp_path)
    (tmp_path / "no" / "such" / "folder").mkdir(parents=True)
    wf.validate_config(cfg, SCHEMA, root=tmp_path)  # present: accepted


def test_chunks_cover_seeds_once():
    exp = {"seeds": 10, "seeds_per_job": 4}
    assert wf.n_chunks(exp) == 3
    got = [s for k in range(3) for s in wf.chunk_seeds(exp, k)]
    assert got == list(range(10))
    with pytest.raises(wf.ConfigError):
        wf.chunk_seeds(exp, 3)


def test_registry_and_schema_agree():
    """Every name the registry knows is in the schema and the reverse; the enums of the
    schema are those the engines accept."""
    schema = yaml.safe_load(SCHEMA.read_text())
    defs = schema["$defs"]
    assert list(schema["properties"]["experiments"]["properties"]) == list(wf.EXPERIMENTS)
    assert set(defs["experiment"]["properties"]["arch"]["enum"]) == set(fconfig.ARCHS)
    assert {k.arch for k in wf.EXPERIMENTS.values()} <= set(fconfig.ARCHS)
    assert list(schema["properties"]["figures"]["properties"]) == list(wf.FIGURES)
    for fig, spec in wf.FIGURES.items():
        assert spec.source in (*wf.EXPERIMENTS, wf.FLS), fig
        assert set(spec.inputs) <= {"aggregate", "data", "theory"}, fig
        if "theory" in spec.inputs and spec.source != wf.FLS:
            assert wf.EXPERIMENTS[spec.source].theory is not None, fig
    for name, kind in wf.EXPERIMENTS.items():
        assert wf.figures_of(name), f"experiment {name} feeds no figure"
        assert kind.theory is None or kind.theory in wf.THEORIES, name
    assert wf.figures_of(wf.FLS) == ("fig2c",)
    assert {k for d in fconfig.THEORY_DEFAULTS.values() for k in d} == set(
        defs["theory"]["properties"])
    assert defs["theory"]["properties"]["method"]["enum"] == list(fconfig.THEORY_METHODS)
    from fleos.theory.eos import cnn2, cnn2_analytic, fcn

    assert set(fconfig.THEORY_METHODS) == set(cnn2.METHODS) == set(fcn.SOLVERS)
    assert set(fconfig.Q_TRAIN_MODES) == set(cnn2_analytic.Q_TRAIN_MODES)
    from fleos.theory.eos import cnn2_matched

    assert fconfig.MATCHED_BATCH == cnn2_matched.BATCH
    from fleos.theory.eos import cnn2_fluctfield

    assert fconfig.FLUCTFIELD_BATCH == cnn2_fluctfield.DRAW_BATCH
    assert fconfig.THEORY_DEFAULTS["cnn2"]["matched_samples"] == cnn2_matched.DEFAULT_SAMPLES
    # today's sampler keys; a new SamplerConfig field needs its line in the schema
    assert set(defs["sampler"]["properties"]) == {
        f.name for f in dataclasses.fields(fconfig.SamplerConfig)}
    for name in ("sampler", "theory", "data", "model", "experiment", "resources", "fls"):
        assert defs[name].get("additionalProperties") is False, name


def test_schema_enums_are_the_codes_lists():
    """Each list of allowed values that the schema spells out is the one the code defines (in
    the same order, so error messages and the schema read alike); the sampler implements
    exactly the integrators the config allows."""
    from fleos.core.kernels import ACTIVATIONS
    from fleos.core.schedules import SCHEDULE_KINDS
    from fleos.nets import models
    from fleos.nets.datasets import IMAGE_DATASETS
    from fleos.sampling import sampler
    from fleos.theory import fls

    defs = yaml.safe_load(SCHEMA.read_text())["$defs"]
    samp, model = defs["sampler"]["properties"], defs["model"]["properties"]
    assert samp["integrator"]["enum"] == list(fconfig.INTEGRATORS)
    assert tuple(sampler.INTEGRATORS) == fconfig.INTEGRATORS  # the registry's names
    assert defs["schedule"]["properties"]["kind"]["enum"] == list(SCHEDULE_KINDS)
    assert fconfig.SCHEDULE_KINDS is SCHEDULE_KINDS
    assert samp["dtype"]["enum"] == list(fconfig.DTYPES)
    assert samp["preconditioner"]["enum"] == list(fconfig.PRECONDITIONERS)
    assert samp["kernels"]["items"]["enum"] == list(fconfig.KERNEL_NAMES)
    assert samp["probe_spatial"]["enum"] == list(fconfig.PROBE_SPATIAL)
    assert model["activation"]["enum"] == list(ACTIVATIONS)
    assert model["scaling"]["enum"] == list(models.SCALINGS)
    assert model["dataset"]["enum"] == list(IMAGE_DATASETS)
    assert set(model) == {k for arch in models.ARCHS for k in
                          (*models._REQUIRED[arch], *models._OPTIONAL[arch])}
    assert defs["experiment"]["properties"]["arch"]["enum"] == list(fconfig.ARCHS)
    assert fconfig.ARCHS == models.ARCHS
    assert defs["fls"]["properties"]["archs"]["items"]["enum"] == list(fls.ARCHS)
    assert set(defs["fls_overrides"]["properties"]) == {k for d in fls.DEFAULTS.values()
                                                       for k in d}
    # The sampler runs every integrator the config allows (two steps of a 2-weight model).
    import jax
    import jax.numpy as jnp

    pot = sampler.make_potential(lambda p, x: x @ p["w"], {"w": 1.0}, jnp.ones((3, 2)),
                                 jnp.zeros(3), 1.0)
    for name in fconfig.INTEGRATORS:
        st, _, sse = sampler.run_steps(pot, sampler.init_state({"w": jnp.zeros(2)}),
                                       jax.random.key(0), 1e-3, 2,
                                       integrator=sampler.Integrator(name))
        assert int(st.step) == 2 and sse.shape == (2,), name


def test_theory_defaults_in_one_place():
    got = fconfig.theory_options("cnn2", {"tol": 1e-6})
    assert got == {**fconfig.THEORY_DEFAULTS["cnn2"], "tol": 1e-6}
    assert fconfig.theory_options("fcn", None) == fconfig.THEORY_DEFAULTS["fcn"]
    with pytest.raises(ValueError, match=r"x\.method must be one of \['anderson'"):
        fconfig.theory_options("fcn", {"method": "bogus"}, "x")


def test_config_without_experiments_is_an_error(tmp_path):
    default = ROOT / "config" / "config.yaml"
    with pytest.raises(wf.ConfigError, match=r"mine\.yaml: key 'experiments' is missing"):
        wf.resolve_config({"results": "r"}, [tmp_path / "mine.yaml"], default)
    # no config file at all: the laptop default, under the --config overrides
    got = wf.resolve_config({"results": "elsewhere"}, [], default)
    assert got["results"] == "elsewhere" and "cnn2" in got["experiments"]
    smoke = _load("smoke.yaml")
    assert wf.resolve_config(smoke, [ROOT / "config" / "smoke.yaml"], default) == smoke


def _reordered(obj):
    """The same mapping with every key order reversed."""
    if isinstance(obj, dict):
        return {k: _reordered(obj[k]) for k in reversed(list(obj))}
    return obj


def test_params_hash_exactly_what_a_job_depends_on(monkeypatch):
    cfg = _load("smoke.yaml")

    def params(c):
        return {
            "data": wf.data_params(c, "cnn2"),
            "sample": wf.sampling_params(c, "cnn2", 0),
            "aggregate": wf.aggregate_params(c, "cnn2"),
            "theory": wf.theory_params(c, "cnn2/n32"),
            "fig3": wf.figure_params(c, "fig3"),
            "fig2c": wf.figure_params(c, "fig2c"),
            "fls": wf.theory_params(c, "fls"),
        }

    base = params(cfg)

    def changed(path, value):
        c = copy.deepcopy(cfg)
        _mutate(path, value)(c)
        new = params(c)
        return {k for k in base if new[k] != base[k]}

    assert params(_reordered(cfg)) == base
    assert changed("experiments.cnn2.resources", {"runtime": 99, "mem_mb": 1}) == set()
    assert changed("default_resources.runtime", 99) == set()
    assert changed("experiments.fcn3.sampler.steps", 700) == set()
    assert changed("experiments.cnn2.theory.tol", 1e-7) == {"theory", "fig3"}
    # the theory hashes its options with the defaults filled in: spelling one out changes
    # nothing (the figure hashes the block as written, so it reruns, cheaply)
    assert changed("experiments.cnn2.theory.matched_samples", 4096) == {"fig3"}
    assert changed("experiments.cnn2.theory.matched_samples", 0) == {"theory", "fig3"}
    # an optional theory that is off is not in the hash (a config without it keeps its
    # theory jobs); switched on, it is, seed included
    assert changed("experiments.cnn2.theory.fluctfield_seed", 3) == {"fig3"}
    assert changed("experiments.cnn2.theory.fluctfield_draws", 256) == {"theory", "fig3"}
    assert changed("experiments.cnn2.theory.fluctfield_window", 4) == {"fig3"}
    on = _mutated(cfg, "experiments.cnn2.theory.fluctfield_draws", 256)
    for key, value in (("fluctfield_seed", 3), ("fluctfield_window", 4),
                       ("fluctfield_max_iter", 30)):
        assert wf.theory_params(on, "cnn2/n32") != wf.theory_params(
            _mutated(on, f"experiments.cnn2.theory.{key}", value), "cnn2/n32"), key
    # the closure's own numerics version: in the hash of a theory job that runs it, only
    import fleos.theory
    before_on, before_off = wf.theory_params(on, "cnn2/n32"), wf.theory_params(cfg, "cnn2/n32")
    monkeypatch.setattr(fleos.theory, "FLUCTFIELD_NUMERICS_VERSION",
                        fleos.theory.FLUCTFIELD_NUMERICS_VERSION + 1)
    assert wf.theory_params(on, "cnn2/n32") != before_on
    assert wf.theory_params(cfg, "cnn2/n32") == before_off
    assert changed("experiments.cnn2.sampler.steps", 700) == {"sample", "aggregate", "fig3"}
    # a sampler key the schema does not know yet counts too (the whole block is hashed)
    assert changed("experiments.cnn2.sampler.friction", 1.0) == {"sample", "aggregate", "fig3"}
    assert changed("experiments.cnn2.sampler.steps", 600.0) == set()  # YAML 600.0 == 600
    assert changed("experiments.cnn2.widths", [8, 32, 64]) == {"theory", "fig3"}
    assert changed("experiments.cnn2.data.n", [32, 64]) == {"fig3"}
    assert changed("experiments.cnn2.sigma2", 0.2) == {"sample", "aggregate", "theory", "fig3"}
    assert changed("experiments.cnn2.data.teacher_seed", 3) == set(base) - {"fig2c", "fls"}
    assert changed("figures", {"fig3": {"hist_width": 8}}) == {"fig3"}
    assert changed("fls.n", [16, 32]) == {"fls", "fig2c"}
    assert wf.sampling_params(cfg, "cnn2", 0) != wf.sampling_params(
        _mutated(cfg, "experiments.cnn2.seeds_per_job", 1), "cnn2", 0)


def test_an_architecture_numerics_version_reruns_that_architecture_only(monkeypatch):
    import fleos.sampling

    cfg = _load("config.yaml")
    before = {x: wf.sampling_params(cfg, x, 0) for x in ("cnn2", "myrtle5")}
    versions = dict(fleos.sampling.ARCH_NUMERICS_VERSIONS)
    versions["myrtle5"] = versions.get("myrtle5", 1) + 1
    monkeypatch.setattr(fleos.sampling, "ARCH_NUMERICS_VERSIONS", versions)
    assert wf.sampling_params(cfg, "myrtle5", 0) != before["myrtle5"]
    assert wf.sampling_params(cfg, "cnn2", 0) == before["cnn2"]


def _mutated(cfg, path, value):
    c = copy.deepcopy(cfg)
    _mutate(path, value)(c)
    return c


def test_deep_merge_overrides_leaves_only():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert wf.deep_merge(base, {"a": {"c": [3]}}) == {"a": {"b": 1, "c": [3]}, "d": 1}
    assert base["a"]["c"] == [1, 2]


# ---------------------------------------------------------------------------------------------
# Dry runs and lint (subprocess)
# ---------------------------------------------------------------------------------------------


def _jobs(output: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run plans, from its per-job blocks."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if m:
            wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            jobs.append((m[1], wc[1] if wc else ""))
    return jobs


@pytest.mark.parametrize("configfile", [None, "config/paper.yaml", "config/smoke.yaml"])
def test_dry_run(configfile):
    args = ["-n", "--forceall"] + (["--configfile", configfile] if configfile else [])
    r = _snakemake(args)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = _jobs(r.stdout + r.stderr)
    for fig in FIGURES:
        assert ("figure", f"fig={fig}") in jobs, f"{fig} missing from the dry-run plan"
    assert "sample" in {rule for rule, _ in jobs}
    assert ("theory", "key=fls") in jobs


def test_dry_run_paper_with_slurm_profile():
    profile = ROOT / "profiles" / "slurm" / "config.yaml"
    if not profile.is_file():
        pytest.skip("profiles/slurm/config.yaml not written yet (engineer F)")
    r = _snakemake(["-n", "-F", "--profile", "profiles/slurm", "--configfile",
                    "config/paper.yaml"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sample" in r.stdout + r.stderr


def test_dry_run_single_figure_target():
    r = _snakemake(["fig3", "-n", "-F", "--configfile", "config/smoke.yaml"])
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    jobs = _jobs(out)
    assert ("fig3", "") in jobs and ("figure", "fig=fig3") in jobs
    assert [j for j in jobs if j[0] == "figure"] == [("figure", "fig=fig3")]
    assert "myrtle5" not in out


def test_figure_target_names_the_missing_experiment(tmp_path):
    cfg = _load("smoke.yaml")
    del cfg["experiments"]["cnn3"]
    path = tmp_path / "no_cnn3.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = _snakemake(["fig5", "-n", f"--configfile={path}"])
    assert r.returncode != 0 and "fig5 needs config key 'experiments.cnn3'" in r.stdout + r.stderr


def test_configfile_without_experiments_stops_snakemake(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("results: somewhere\n")
    r = _snakemake(["-n", f"--configfile={path}"])
    assert r.returncode != 0
    assert "empty.yaml: key 'experiments' is missing" in r.stdout + r.stderr


def test_bad_config_stops_snakemake_naming_the_key(tmp_path):
    cfg = _load("smoke.yaml")
    cfg["experiments"]["cnn2"]["seeds_per_job"] = 7  # > seeds = 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    r = _snakemake(["-n", "--configfile", str(bad)])
    assert r.returncode != 0
    assert "experiments.cnn2.seeds_per_job" in r.stdout + r.stderr


def _edges(dot: str) -> set[tuple[str, str]]:
    labels = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', dot, re.M))
    return {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M)}


def test_rendered_rulegraph_is_current():
    """docs/rulegraph.{dot,svg} (and the Snakefile's diagram, drawn from it) show the rules'
    real dependencies: the same edges as `snakemake --rulegraph` now."""
    r = _snakemake(["--rulegraph", "-F", "--configfile=config/smoke.yaml"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert _edges(r.stdout) == _edges((ROOT / "docs" / "rulegraph.dot").read_text())
    assert ("aggregate", "theory") in _edges(r.stdout)  # cnn3's theory reads the aggregate


def test_lint_clean():
    r = _snakemake(["--lint"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Congratulations" in r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# End to end: the smoke config, every rule, in a temporary copy of the workflow
# ---------------------------------------------------------------------------------------------


def _check_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows, f"{path} has no rows"
    return rows


def _finite(v: str) -> bool:
    try:
        return math.isfinite(float(v))
    except ValueError:
        return False


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A finished run of config/smoke.yaml in a temporary copy of the workflow (its folder)."""
    root = tmp_path_factory.mktemp("smoke")
    for item in ("Snakefile", "workflow", "config", "profiles", "envs"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / item)
    r = _snakemake(["all", "--cores", "2", "--configfile", "config/smoke.yaml"], cwd=root,
                   timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return root


@pytest.mark.slow
def test_smoke_end_to_end(smoke_run):
    tmp_path = smoke_run
    res = tmp_path / "results" / "smoke"
    for fig in FIGURES:
        png, pdf = res / "figures" / f"{fig}.png", res / "figures" / f"{fig}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
        assert pdf.read_bytes()[:5] == b"%PDF-", f"{pdf} is not a PDF"
        rows = _check_csv(res / "tables" / f"{fig}.csv")
        # every table has at least one numeric column that is finite in every row
        numeric = [k for k in rows[0] if all(_finite(r[k]) for r in rows)]
        assert numeric, f"{fig}.csv has no fully finite numeric column"
    rows = _check_csv(res / "tables" / "fig3.csv")
    assert list(rows[0])[: len(FIG3_COLUMNS)] == FIG3_COLUMNS
    smoke = _load("smoke.yaml")["experiments"]["cnn2"]
    assert len(rows) == len(smoke["widths"]) * len(smoke["data"]["n"])
    for r in rows:
        for k in ("alpha_test_exp", "alpha_test_exp_se", "alpha_test_gp", "alpha_train_exp",
                  "alpha_train_gp"):
            assert _finite(r[k]), (k, r)
        assert float(r["alpha_test_exp_se"]) > 0
        # a non-converged EoS point must be flagged (and then its numbers are not trusted)
        assert r["eos_converged"] in ("True", "False")
        if r["eos_converged"] == "True":
            assert _finite(r["alpha_test_eos"]) and _finite(r["alpha_train_eos"])
    # Fig. 6's trained rows carry the posterior cross-channel and cross-layer correlations,
    # each beside its null (2 chains in the smoke run: the least the null needs)
    trained = [r for r in _check_csv(res / "tables" / "fig6.csv") if r["state"] == "trained"]
    assert trained
    for r in trained:
        for k in ("corr_within_rms", "corr_within_null_rms", "corr_cross_rms",
                  "corr_cross_null_rms", "corr_cross_mean_se"):
            assert _finite(r[k]) and float(r[k]) >= 0, (k, r)
    assert "Posterior correlation" in (res / "tables" / "fig6_summary.rst").read_text()
    for log in (res / "logs").rglob("*.log"):
        assert "Traceback" not in log.read_text(), log
    # the HTML report: every figure with its caption (settings and agreement summary)
    r = _snakemake(["--report", "report.html", "--configfile=config/smoke.yaml"], cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    html = (tmp_path / "report.html").read_text(errors="replace")
    for fig in FIGURES:
        assert f"{fig}.png" in html, f"{fig} missing from the report"
    # the landing page: one verdict line per figure, from its summary's first line
    assert "Verdicts" in html
    for fig in FIGURES:
        first = (tmp_path / "results" / "smoke" / "tables" / f"{fig}_summary.rst").read_text()
        assert first.startswith(f"* **{fig}**: "), first.splitlines()[0]
        assert f"<strong>{fig}</strong>: " in html, f"no verdict line of {fig} on the landing page"
    # the generic rule's caption picks each figure's own section
    for title in ("Fig. 2a - 3-layer FCN", "Fig. 2c - where feature learning", "Fig. 3 - 2-layer",
                  "Fig. 5 - 3-layer CNN", "Fig. 6 - Myrtle-5", "Agreement table of fig4"):
        assert title in html, f"caption {title!r} missing from the report"


# ---------------------------------------------------------------------------------------------
# What an edit of a finished run reruns (the params of each rule: fleos.pipeline)
# ---------------------------------------------------------------------------------------------


def _planned_after_edit(root: Path, edit) -> list[tuple[str, str]]:
    """The jobs a dry run plans after `edit` of the smoke config of the finished run (`edit`
    changes the config in place or returns a new one)."""
    cfg = _load("smoke.yaml")
    cfg = edit(cfg) or cfg
    (root / "config" / "edited.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = _snakemake(["all", "-n", "--configfile=config/edited.yaml"], cwd=root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return sorted(_jobs(r.stdout + r.stderr))


@pytest.mark.slow
def test_edit_reruns_only_what_it_can_change(smoke_run):
    root = smoke_run
    assert _planned_after_edit(root, lambda c: None) == []

    def resources(c):
        c["default_resources"]["runtime"] = 99
        c["default_resources"]["mem_mb"] = 1234
        c["experiments"]["cnn2"]["resources"] = {"runtime": 77, "mem_mb": 999, "threads": 2}

    assert _planned_after_edit(root, resources) == []

    # the same config written back with the keys of every mapping in reverse order
    assert _planned_after_edit(root, _reordered) == []
    tol = _mutate("experiments.cnn2.theory.tol", 1e-7)
    assert _planned_after_edit(root, tol) == [
        ("all", ""), ("figure", "fig=fig3"), ("theory", "key=cnn2/n32")]
    steps = _mutate("experiments.cnn2.sampler.steps", 700)
    assert _planned_after_edit(root, steps) == [
        ("aggregate", "experiment=cnn2, n=32, width=32"),
        ("aggregate", "experiment=cnn2, n=32, width=8"),
        ("all", ""), ("figure", "fig=fig3"),
        ("sample", "experiment=cnn2, n=32, width=32, chunk=0"),
        ("sample", "experiment=cnn2, n=32, width=8, chunk=0")]


# ---------------------------------------------------------------------------------------------
# What a change of the library reruns: a refactor nothing, a numerics version its stage
# ---------------------------------------------------------------------------------------------


def _planned_with_library(root: Path, lib: Path, edit) -> list[tuple[str, str]]:
    """The jobs a dry run of the finished smoke run plans when Snakemake and its jobs import
    a copy of the fleos package changed by `edit(copy)` (first on PYTHONPATH)."""
    if lib.exists():
        shutil.rmtree(lib)
    shutil.copytree(ROOT / "src" / "fleos", lib / "fleos",
                    ignore=shutil.ignore_patterns("__pycache__"))
    edit(lib / "fleos")
    env = dict(os.environ, PYTHONPATH=str(lib), PYTHONUNBUFFERED="1")
    where = subprocess.run([sys.executable, "-c", "import fleos; print(fleos.__file__)"],
                           capture_output=True, text=True, env=env, check=True).stdout
    assert where.strip() == str(lib / "fleos" / "__init__.py"), "the copy is not imported"
    r = subprocess.run([SNAKEMAKE, "all", "-n", "--configfile=config/smoke.yaml"], cwd=root,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return sorted(_jobs(r.stdout + r.stderr))


def _edit_text(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in {path}"
    path.write_text(text.replace(old, new))


def _bump(engine: str):
    def edit(pkg: Path) -> None:
        init = pkg / engine / "__init__.py"
        v = int(re.search(r"^NUMERICS_VERSION = (\d+)$", init.read_text(), re.M).group(1))
        _edit_text(init, f"NUMERICS_VERSION = {v}", f"NUMERICS_VERSION = {v + 1}")
    return edit


@pytest.mark.slow
def test_refactor_reruns_nothing_numerics_version_reruns_its_stage(smoke_run, tmp_path):
    root, lib = smoke_run, tmp_path / "lib"
    cfg = _load("smoke.yaml")

    def refactor(pkg: Path) -> None:
        # a new helper and a comment in the modules a sampling job runs, a pipeline function
        # moved to the end of its module, and every rule file newer than every output (a
        # `script:` rule would rerun on the last alone)
        for mod in ("sampling/sampler.py", "sampling/experiment.py", "theory/runs.py",
                    "nets/data.py", "analysis/aggregate.py"):
            with open(pkg / mod, "a") as fh:
                fh.write("\n\n# moved here\ndef _unused_helper() -> int:\n    return 1\n")
        src = (pkg / "pipeline.py").read_text()
        block = src[src.index("def chunk_seeds("):src.index("def parse_theory_key(")]
        (pkg / "pipeline.py").write_text(src.replace(block, "") + "\n\n" + block)
        for f in [root / "Snakefile", *(root / "workflow").rglob("*")]:
            os.utime(f)

    assert _planned_with_library(root, lib, refactor) == []

    def jobs(rule: str, experiments) -> list[tuple[str, str]]:
        out = []
        for name in experiments:
            e = cfg["experiments"][name]
            for n in e["data"]["n"]:
                if rule == "make_data":
                    out.append((rule, f"experiment={name}, n={n}"))
                    continue
                for w in e["widths"]:
                    if rule == "aggregate":
                        out.append((rule, f"experiment={name}, n={n}, width={w}"))
                    for k in range(wf.n_chunks(e)) if rule == "sample" else ():
                        out.append((rule, f"experiment={name}, n={n}, width={w}, chunk={k}"))
        return out

    def figures(*sources: str) -> list[tuple[str, str]]:
        return [("figure", f"fig={f}") for f, s in wf.FIGURES.items() if s.source in sources]

    exps = list(cfg["experiments"])
    cnn3 = [("theory", f"key={k}") for k in wf.theory_keys(cfg, "cnn3")]
    every_theory = [("theory", f"key={k}") for x in [*exps, wf.FLS] for k in wf.theory_keys(cfg, x)]
    sampled = figures(*exps)
    # the sampler's numbers: every sampling job and what reads it, no data, no other theory
    assert _planned_with_library(root, lib, _bump("sampling")) == sorted(
        jobs("sample", exps) + jobs("aggregate", exps) + cnn3 + sampled + [("all", "")])
    # the aggregation's numbers: no sampling
    assert _planned_with_library(root, lib, _bump("analysis")) == sorted(
        jobs("aggregate", exps) + cnn3 + sampled + [("all", "")])
    # the theory's numbers: every theory job and the figures that read one
    assert _planned_with_library(root, lib, _bump("theory")) == sorted(
        every_theory + [("figure", f"fig={f}") for f, s in wf.FIGURES.items()
                        if "theory" in s.inputs] + [("all", "")])
    # the data: everything of every experiment (not Fig. 2c, which draws its own inputs)
    assert _planned_with_library(root, lib, _bump("nets")) == sorted(
        jobs("make_data", exps) + jobs("sample", exps) + jobs("aggregate", exps)
        + [t for t in every_theory if t != ("theory", f"key={wf.FLS}")] + sampled
        + [("all", "")])

    # the figure code: every figure, nothing else (seconds of work)
    def figure_code(pkg: Path) -> None:
        with open(pkg / "figures" / "fig3.py", "a") as fh:
            fh.write("\n# a comment\n")

    assert _planned_with_library(root, lib, figure_code) == sorted(
        figures(*exps, wf.FLS) + [("all", "")])


# ---------------------------------------------------------------------------------------------
# config/README.md: generated from the schema, whose defaults are the code's
# ---------------------------------------------------------------------------------------------


def test_config_readme_is_generated_from_the_schema():
    text = (ROOT / "config" / "README.md").read_text()
    assert text == wf.config_readme(SCHEMA), (
        "config/README.md is not the schema's text: run `make config/README.md`")
    schema = yaml.safe_load(SCHEMA.read_text())
    for key in schema["$defs"]["sampler"]["properties"]:
        assert f"`experiments.NAME.sampler.{key}`" in text, key


def test_schema_defaults_are_the_codes():
    from fleos.config import THEORY_DEFAULTS, ExperimentConfig, SamplerConfig
    from fleos.core.diagnostics import EquilibriumGates
    from fleos.nets import models
    from fleos.theory import fls

    defs = yaml.safe_load(SCHEMA.read_text())["$defs"]

    def defaults(block: str) -> dict:
        return {k: v["default"] for k, v in defs[block]["properties"].items() if "default" in v}

    def per_arch(block: str) -> dict:
        return {(arch, k): v for k, node in defs[block]["properties"].items()
                for arch, v in node.get("x-defaults", {}).items()}

    # every sampler field but the two required ones has its default in the schema
    sampler = {f.name: f.default for f in dataclasses.fields(SamplerConfig)
               if f.name not in ("steps", "schedule")}
    assert defaults("sampler") == sampler
    resources = defaults("resources")
    assert resources.pop("allow_cpu") == ExperimentConfig.allow_cpu
    assert resources == wf.DEFAULT_RESOURCES
    gates = yaml.safe_load(SCHEMA.read_text())["properties"]["gates"]["properties"]
    assert {k: v["default"] for k, v in gates.items()} == {
        f.name: f.default for f in dataclasses.fields(EquilibriumGates)}
    # defaults per architecture: the code's tables, every entry of them
    assert per_arch("theory") == {(a, k): v for a, opts in THEORY_DEFAULTS.items()
                                  for k, v in opts.items()}
    assert per_arch("model") == {(a, k): v for a, opts in models._OPTIONAL.items()
                                 for k, v in opts.items() if v is not None}
    assert per_arch("fls_overrides") == {(a, k): v for a, opts in fls.DEFAULTS.items()
                                         for k, v in opts.items()}
    fls_block = defs["fls"]["properties"]
    assert fls_block["archs"]["default"] == list(fls.ARCHS)
