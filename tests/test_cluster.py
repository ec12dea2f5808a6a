"""The cluster path without a cluster: the verbatim `snakemake --profile slurm` from a fresh
checkout, the conda environments against pyproject.toml, the GPU request as the SLURM plugin
turns it into `sbatch` arguments, and which rules run locally or write benchmarks.
(The real one-node SLURM cluster is exercised by tests/test_slurm.py.)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))
# conda-forge names of PyPI distributions where they differ
CONDA_TO_PYPI = {"matplotlib-base": "matplotlib"}


def _fresh_checkout(dest: Path) -> Path:
    """The files a fresh clone would have (tracked and not ignored), symlinks kept as links."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
        capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src, dst = ROOT / rel, dest / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree, not yet committed
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    return dest


def _run_snakemake(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess:
    # An empty home: no ~/.config/snakemake/slurm can stand in for the repository's profile.
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               PYTHONUNBUFFERED="1")
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return _fresh_checkout(tmp_path_factory.mktemp("clone"))


# ---- the profile -----------------------------------------------------------------------


def test_verbatim_profile_command_dry_runs_the_paper_config(checkout, tmp_path):
    """`snakemake --profile slurm -n --configfile=config/paper.yaml` from a fresh checkout's
    root, exactly as users type it (docs/cluster.md), with no user-level profile installed."""
    r = _run_snakemake(["--profile", "slurm", "-n", "--configfile=config/paper.yaml"],
                       checkout, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    assert int(counts["sample"]) > 0 and counts["all"] == "1", counts
    # the SLURM profile's own settings were read (default-resources: mem_mb 4000, runtime 60)
    assert re.search(r"rule all:(?:\n .*)*?\n\s+resources: .*mem_mb=4000.*runtime=60", out), \
        out[-3000:]


def _dry_run_resources(extra_profile: dict, tmp_path: Path) -> dict[str, str]:
    """Resources of the first `sample` job in a dry run of config/paper.yaml under the SLURM
    profile plus `extra_profile` keys, as Snakemake prints them."""
    prof = tmp_path / "site-slurm"
    prof.mkdir()
    cfg = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    cfg.update(extra_profile)
    (prof / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = _run_snakemake(["--profile", str(prof), "-n", "-F", "--configfile=config/paper.yaml"],
                       ROOT, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    block = re.search(r"rule sample:(?:\n .*)*?\n\s+resources: (.*)", r.stdout + r.stderr)
    assert block, (r.stdout + r.stderr)[-3000:]
    return dict(kv.split("=", 1) for kv in block.group(1).split(", "))


class _Resources(SimpleNamespace):
    """What the plugin reads from `job.resources`: attributes and `.get`."""

    def get(self, key, default=None):
        return getattr(self, key, default)


def _sbatch_gpu_args(resources: dict[str, str]) -> str:
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    typed = {k: int(v) if v.isdigit() else v for k, v in resources.items()}
    return set_gres_string(SimpleNamespace(resources=_Resources(**typed)))


def test_gpu_request_is_one_gpus_flag(tmp_path):
    args = _sbatch_gpu_args(_dry_run_resources({}, tmp_path))
    assert args.split() == ["--gpus=1"]


def test_gres_advice_gives_gres_alone(tmp_path):
    """The advice of docs/cluster.md and the profile for `--gres` sites: gres AND gpu: 0 (the
    rule's gpu: 1 would otherwise add --gpus, which the plugin calls mutually exclusive)."""
    advice = {"set-resources": {"sample": {"gres": "gpu:1", "gpu": 0}}}
    args = _sbatch_gpu_args(_dry_run_resources(advice, tmp_path))
    assert args.split() == ["--gres=gpu:1"]
    # the shipped text gives exactly this advice
    prof = (ROOT / "profiles" / "slurm" / "config.yaml").read_text()
    assert re.search(r'#\s+gres: "gpu:1"\n#\s+gpu: 0', prof), "profile advice changed"
    doc = (ROOT / "docs" / "cluster.md").read_text()
    assert 'set-resources: {sample: {gres: "gpu:1", gpu: 0}}' in doc


def test_gres_without_gpu_zero_gives_both_flags(tmp_path):
    """Why the advice needs gpu: 0: the old advice produced two conflicting requests."""
    args = _sbatch_gpu_args(_dry_run_resources(
        {"set-resources": {"sample": {"gres": "gpu:1"}}}, tmp_path))
    assert sorted(args.split()) == ["--gpus=1", "--gres=gpu:1"]


# ---- local rules and benchmarks ----------------------------------------------------------


def _rule_blocks() -> dict[str, str]:
    text = "".join(p.read_text() for p in sorted((ROOT / "workflow" / "rules").glob("*.smk")))
    text += (ROOT / "Snakefile").read_text()
    parts = re.split(r"^rule (\w+):\n", text, flags=re.M)
    return {parts[i]: re.split(r"\n(?=\S)", parts[i + 1], maxsplit=1)[0]
            for i in range(1, len(parts), 2)}


def test_cheap_rules_are_local_and_heavy_ones_are_not():
    snakefile = (ROOT / "Snakefile").read_text()
    m = re.search(r"^localrules:\n((?:    \w+,?\n)+)", snakefile, re.M)
    assert m, "no localrules directive in the Snakefile"
    local = set(re.findall(r"\w+", m.group(1)))
    rules = set(_rule_blocks())
    assert local <= rules, f"unknown rules in localrules: {local - rules}"
    # the per-figure target rules (fig2a ... fig6) are declared `localrule: True` where the
    # loop in figures.smk defines them
    assert local == {"all", "make_data", "figure"}
    assert not local & {"sample", "aggregate", "theory"}
    figures = (ROOT / "workflow" / "rules" / "figures.smk").read_text()
    assert re.search(r"for _fig in FIGURES:\n\n    rule:\n(?:.*\n)*?        localrule: True",
                     figures)


@pytest.mark.parametrize("rule, wildcards", [
    ("sample", {"experiment", "n", "width", "chunk"}), ("theory", {"key"})])
def test_sampling_and_theory_rules_write_benchmarks(rule, wildcards):
    block = _rule_blocks()[rule]
    m = re.search(r"\n    benchmark:\n        (.*)", block)
    # bench(...) of common.smk: results/benchmarks/<stage>/...
    assert m and m.group(1).startswith("bench("), block
    # one file per job: every wildcard of the job's output appears in the benchmark path
    assert set(re.findall(r"\{(\w+)\}", m.group(1))) == wildcards


# ---- conda environments ----------------------------------------------------------------


def _runtime_requirements() -> list[Requirement]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [Requirement(r) for r in doc["project"]["dependencies"]]


def _env_pins(path: Path) -> tuple[dict[str, str], list[str]]:
    """{PyPI name: pinned version} of an env file (conda and pip sections), and its pip
    entries that are not name==version (editable installs)."""
    doc = yaml.safe_load(path.read_text())
    pins: dict[str, str] = {}
    other: list[str] = []
    for dep in doc["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                if line.startswith("-e"):
                    other.append(line)
                    continue
                req = Requirement(line)
                spec = [s for s in req.specifier if s.operator == "=="]
                assert len(spec) == 1, f"{path.name}: pip entry {line!r} is not pinned with =="
                pins[req.name.lower()] = spec[0].version
        else:
            name, _, version = re.split(r"(==?)", dep, maxsplit=1) if "=" in dep \
                else (dep, "", "")
            if name in ("python", "pip"):
                continue
            assert version, f"{path.name}: conda entry {dep!r} is not pinned"
            pins[CONDA_TO_PYPI.get(name, name).lower()] = version
    return pins, other


def test_env_files_exist():
    assert {p.name for p in ENV_FILES} == {"cpu.yaml", "sample-gpu.yaml"}


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_file_pins_every_runtime_dependency_within_pyproject(env_file):
    pins, _ = _env_pins(env_file)
    for req in _runtime_requirements():
        name = req.name.lower()
        assert name in pins, f"{env_file.name} lacks {req.name} (pyproject.toml: {req})"
        assert req.specifier.contains(pins[name]), (
            f"{env_file.name} pins {req.name} {pins[name]}, outside pyproject.toml's {req}")


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_file_installs_this_checkout_editable(env_file):
    _, other = _env_pins(env_file)
    assert other == ["-e ${FLEOS_ROOT}"]
    # the Snakefile names the checkout for pip (conda runs pip next to a copy of the file)
    assert "os.environ.update(FLEOS_ROOT=workflow.basedir)" in (ROOT / "Snakefile").read_text()


def test_env_files_agree_on_versions():
    """A package pinned in both files has the same version in both (the GPU env differs only
    by the CUDA build of jax)."""
    a, b = (_env_pins(p)[0] for p in ENV_FILES)
    diff = {k: (a[k], b[k]) for k in set(a) & set(b) if a[k] != b[k]}
    assert not diff, diff


def test_env_check_catches_a_missing_and_a_mispinned_dependency(tmp_path):
    """The check above fails for the two faults it is there for."""
    text = ENV_FILES[0].read_text()
    missing = tmp_path / "missing.yaml"
    missing.write_text(re.sub(r"\n\s+- threadpoolctl==[^\n]*", "", text))
    with pytest.raises(AssertionError, match="lacks threadpoolctl"):
        test_env_file_pins_every_runtime_dependency_within_pyproject(missing)
    old = tmp_path / "old.yaml"
    old.write_text(re.sub(r"h5py=[\d.]+", "h5py=3.1.0", text))
    with pytest.raises(AssertionError, match="pins h5py 3.1.0, outside"):
        test_env_file_pins_every_runtime_dependency_within_pyproject(old)


# ---- GPUs really used --------------------------------------------------------------------

TINY_MODEL = {"S": 4, "N": 3, "sigma_w2": 2.0, "sigma_a2": 2.0}


def _tiny_experiment(resources: dict | None = None):
    from fleos.analysis.aggregate import engine_config
    from fleos.config import ExperimentConfig

    d = {"arch": "cnn2", "model": TINY_MODEL, "data": {"n": [8], "n_test": 5}, "sigma2": 0.1,
         "widths": [4], "seeds": 1, "seeds_per_job": 1,
         "sampler": {"steps": 40, "schedule": {"kind": "constant", "lr": 1e-3, "burn_in": 10},
                     "record_every": 5, "snapshot_every": 20, "checkpoint_every": 20},
         "theory": {}, "label": "x"}
    if resources is not None:
        d["resources"] = resources
    # as the workflow's sampling job builds it (fleos.pipeline.run_rule_job)
    return ExperimentConfig.from_dict("cnn2", engine_config(d))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from fleos.nets.data import make_dataset
    from fleos.nets.datasets import save_dataset

    p = tmp_path_factory.mktemp("data") / "n8.npz"
    save_dataset(make_dataset("cnn2", TINY_MODEL, 8, 5, 0, 1), p)
    return p


def _needs_cpu_backend():
    import jax

    if jax.default_backend() == "gpu":
        pytest.skip("this machine has a GPU: the no-GPU path cannot be shown here")


def test_device_request_reaches_the_job_but_not_the_config_hash():
    from fleos.config import JobSpec, config_hash

    plain = _tiny_experiment({"runtime": 5, "mem_mb": 100, "threads": 1})
    gpu = _tiny_experiment({"runtime": 9, "gpu": 1, "allow_cpu": True})
    assert (plain.gpu, plain.allow_cpu) == (0, False)
    assert (gpu.gpu, gpu.allow_cpu) == (1, True)
    job = JobSpec("cnn2", 8, 4, (0,))
    # a checkpoint written on the CPU may be resumed on a GPU and vice versa
    assert config_hash(plain, job) == config_hash(gpu, job)
    assert "gpu" not in plain.to_dict() and "allow_cpu" not in gpu.to_dict()


@pytest.mark.parametrize("bad", [{"gpu": -1}, {"gpu": 1.5}, {"allow_cpu": "yes"}])
def test_bad_device_request_names_the_key(bad):
    with pytest.raises(ValueError, match=r"experiments\.cnn2\.resources\.(gpu|allow_cpu)"):
        _tiny_experiment(bad)


def test_gpu_job_without_gpu_fails_at_once_saying_what_to_install(tiny_data, tmp_path):
    from fleos.config import JobSpec
    from fleos.sampling.experiment import NoGPUError, run_job

    _needs_cpu_backend()
    lines: list[str] = []
    out = tmp_path / "s.h5"
    with pytest.raises(NoGPUError, match=r"resources\.gpu is 1 but JAX sees no GPU.*"
                                         r"jax\[cuda12\].*allow_cpu: true"):
        run_job(_tiny_experiment({"gpu": 1}), JobSpec("cnn2", 8, 4, (0,)), tiny_data, out,
                checkpoint_path=tmp_path / "c.ckpt", log=lines.append)
    assert not out.exists() and not (tmp_path / "c.ckpt").exists()
    # the backend line came first, and nothing else ran
    assert len(lines) == 1 and "backend cpu" in lines[0], lines


def test_sampling_job_records_backend_devices_and_version(tiny_data, tmp_path):
    import jax

    from fleos.config import JobSpec
    from fleos.sampling.experiment import run_job
    from fleos.sampling.io import read_samples

    lines: list[str] = []
    exp = _tiny_experiment({"gpu": 1, "allow_cpu": True})
    out = run_job(exp, JobSpec("cnn2", 8, 4, (0,)), tiny_data, tmp_path / "s.h5",
                  log=lines.append)
    attrs = read_samples(out)["attrs"]
    assert attrs["jax_backend"] == jax.default_backend()
    assert attrs["jax_version"] == jax.__version__
    assert attrs["jax_devices"].startswith(f"{jax.devices()[0].platform}:0")
    assert f"backend {jax.default_backend()}" in lines[0]
    if jax.default_backend() != "gpu":
        assert any("WARNING" in s and "allow_cpu: true" in s for s in lines), lines


def test_cli_sample_without_gpu_exits_1_with_one_line(tiny_data, tmp_path, capsys):
    from fleos.cli import main

    _needs_cpu_backend()
    cfg = tmp_path / "c.yaml"
    exp = _tiny_experiment().to_dict()
    del exp["name"]
    exp["resources"] = {"gpu": 0}
    cfg.write_text(yaml.safe_dump({"experiments": {"cnn2": exp}}))
    rc = main(["sample", "--config", str(cfg), "--experiment", "cnn2", "--n", "8",
               "--width", "4", "--seeds", "0", "--data", str(tiny_data), "--out",
               str(tmp_path / "s.h5"), "--quiet",
               "--set", "experiments.cnn2.resources.gpu=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1].startswith("fleos sample: error: experiments.cnn2.resources.gpu is 1"), err
