"""fleos.config: validation errors name the key path and the allowed values."""

from __future__ import annotations

import copy

import pytest

from fleos.config import (
    ExperimentConfig,
    JobSpec,
    SamplerConfig,
    apply_overrides,
    config_hash,
    experiment_from_file,
)

BASE = {
    "arch": "cnn2",
    "model": {"S": 16, "N": 8, "activation": "erf", "sigma_w2": 2.0, "sigma_a2": 2.0},
    "data": {"kind": "teacher", "n": [256], "n_test": 1000, "teacher_seed": 0, "data_seed": 1},
    "sigma2": 0.1,
    "widths": [16, 32, 64, 256],
    "seeds": 8,
    "seeds_per_job": 4,
    "sampler": {
        "dtype": "float32",
        "steps": 100000,
        "schedule": {"kind": "constant", "lr": 1.0e-4, "burn_in": 20000},
        "record_every": 10,
        "snapshot_every": 1000,
        "checkpoint_every": 10000,
        "preconditioner": None,
    },
}


def _with(path: str, value) -> dict:
    d = copy.deepcopy(BASE)
    node = d
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return d


_DELETE = object()


def test_valid_config_roundtrip() -> None:
    exp = ExperimentConfig.from_dict("cnn2", BASE)
    assert exp.widths == (16, 32, 64, 256)
    assert exp.sampler.schedule["total_steps"] == 100000  # filled from sampler.steps
    assert exp.kernels == ("sigma",)
    assert exp.ns == (256,)
    assert exp.seed_chunks() == [(0, 1, 2, 3), (4, 5, 6, 7)]
    d = exp.to_dict()
    assert d["sampler"]["steps"] == 100000 and d["widths"] == [16, 32, 64, 256]
    assert ExperimentConfig.from_dict("x", {**BASE, "seeds": 5}).seed_chunks()[-1] == (4,)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("sigma2", -1, "experiments.cnn2.sigma2 must be > 0, got -1"),
        ("sigma2", "big", "experiments.cnn2.sigma2 must be a number > 0"),
        ("arch", "resnet", "experiments.cnn2.arch must be one of ['fcn', 'cnn2', 'cnn3', "
                           "'myrtle5'], got 'resnet'"),
        ("widths", [16, 0], "experiments.cnn2.widths[1] must be >= 1, got 0"),
        ("widths", [], "experiments.cnn2.widths must be a non-empty list"),
        ("seeds_per_job", 9, "experiments.cnn2.seeds_per_job must be <= seeds (8), got 9"),
        ("seeds", 0, "experiments.cnn2.seeds must be >= 1, got 0"),
        ("data.n", [256, -3], "experiments.cnn2.data.n[1] must be >= 1, got -3"),
        ("sampler.steps", 1.5, "experiments.cnn2.sampler.steps must be an integer"),
        ("sampler.steps", True, "experiments.cnn2.sampler.steps must be an integer"),
        ("sampler.dtype", "float16", "experiments.cnn2.sampler.dtype must be one of "
                                     "['float32', 'float64'], got 'float16'"),
        ("sampler.schedule.kind", "cosine", "experiments.cnn2.sampler.schedule.kind must be "
                                            "one of ['constant', 'spike', 'fixed']"),
        ("sampler.preconditioner", "adam", "experiments.cnn2.sampler.preconditioner must be "
                                           "one of [None, 'prior']"),
        ("sampler.backoff_factor", 1.5, "experiments.cnn2.sampler.backoff_factor must be in "
                                        "(0, 1.0)"),
        ("sampler.kernels", ["sigma", "K9"], "experiments.cnn2.sampler.kernels has unknown "
                                             "kernel(s) ['K9']"),
        ("sampler.record_evry", 3, "experiments.cnn2.sampler has unknown key(s) "
                                   "['record_evry']"),
        ("sigma", 0.1, "experiments.cnn2 has unknown key(s) ['sigma']"),
        ("sigma2", _DELETE, "experiments.cnn2.sigma2 is required"),
        ("sigma2", float("inf"), "experiments.cnn2.sigma2 must be finite, got inf"),
        ("sigma2", float("nan"), "experiments.cnn2.sigma2 must be > 0, got nan"),
        ("theory", {"method": "bogus"}, "experiments.cnn2.theory.method must be one of "
                                        "['anderson', 'newton_krylov'], got 'bogus'"),
        ("theory", {"tolerance": 1e-6}, "experiments.cnn2.theory has unknown key(s) "
                                        "['tolerance']"),
        ("theory", {"ridge": 0.1}, "experiments.cnn2.theory has unknown key(s) ['ridge']"),
        ("theory", {"q_train": "third_order"}, "experiments.cnn2.theory.q_train must be a "
                                               "number > 0 or one of"),
        ("theory", {"matched_samples": 1000}, "experiments.cnn2.theory.matched_samples must "
                                              "be 0 (off) or a positive multiple of 128, got "
                                              "1000"),
        ("theory", {"matched_seed": -1}, "experiments.cnn2.theory.matched_seed must be an "
                                         "integer >= 0, got -1"),
        ("theory", {"fluctfield_window": 1}, "experiments.cnn2.theory.fluctfield_window must "
                                             "be an integer >= 2, got 1"),
        ("theory", {"fluctfield_max_iter": 6, "fluctfield_window": 8},
         "experiments.cnn2.theory.fluctfield_window must be at most fluctfield_max_iter = 6, "
         "got 8"),
        ("theory", {"fluctfield_max_iter": 4}, "experiments.cnn2.theory.fluctfield_window must "
                                               "be at most fluctfield_max_iter = 4, got 8 (its "
                                               "default)"),
        ("sampler.steps", _DELETE, "experiments.cnn2.sampler.steps is required"),
        ("sampler.data_blocks", 3, "experiments.cnn2.sampler.data_blocks must divide every "
                                   "data.n, but 3 does not divide [256]"),
        ("sampler.data_blocks", 0, "experiments.cnn2.sampler.data_blocks must be an integer "
                                   ">= 1 or 'auto', got 0"),
        ("sampler.chain_batch", "all", "experiments.cnn2.sampler.chain_batch must be an "
                                       "integer >= 1 or 'auto', got 'all'"),
        ("sampler.rao_blackwell_every", -5, "experiments.cnn2.sampler.rao_blackwell_every "
                                            "must be >= 0, got -5"),
        ("sampler.kernels", ["sigma", "Qf"], "experiments.cnn2.sampler.kernels has 'Qf', which "
                                             "is recorded at the Rao-Blackwellization steps"),
        ("sampler.kernels", ["field"], "experiments.cnn2.sampler.kernels has 'field', which "
                                       "is recorded at the Rao-Blackwellization steps"),
    ],
)
def test_errors_name_the_key(path: str, value, message: str) -> None:
    with pytest.raises(ValueError) as e:
        ExperimentConfig.from_dict("cnn2", _with(path, value))
    assert message in str(e.value)


def test_schedule_keys_checked_by_schedule_module() -> None:
    # A key the constant schedule does not know: the error keeps the config path.
    with pytest.raises(ValueError, match=r"experiments\.cnn2\.sampler\.schedule is invalid"):
        ExperimentConfig.from_dict("cnn2", _with("sampler.schedule.warmup", 3))
    with pytest.raises(ValueError, match=r"experiments\.cnn2\.sampler\.schedule"):
        ExperimentConfig.from_dict("cnn2", _with("sampler.schedule.burn_in", 10**6))


def test_sampler_defaults_and_yaml_floats() -> None:
    sc = SamplerConfig.from_dict({"steps": 1.0e5, "schedule": {"kind": "constant", "lr": 1e-4,
                                                               "burn_in": 0}})
    assert sc.steps == 100000 and isinstance(sc.steps, int)
    assert sc.record_every == 10 and sc.preconditioner is None and sc.max_backoffs == 3


def test_sampler_defaults_live_in_the_dataclass_only() -> None:
    sched = {"kind": "constant", "lr": 1e-4, "burn_in": 0, "total_steps": 50}
    assert SamplerConfig.from_dict({"steps": 50, "schedule": sched}) == SamplerConfig(
        steps=50, schedule=sched)


def test_jobspec_validation() -> None:
    JobSpec("cnn2", 256, 64, (0, 1))
    with pytest.raises(ValueError, match="width"):
        JobSpec("cnn2", 256, 0, (0,))
    with pytest.raises(ValueError, match="distinct"):
        JobSpec("cnn2", 256, 4, (1, 1))
    with pytest.raises(ValueError, match="seeds"):
        JobSpec("cnn2", 256, 4, ())


def test_config_hash_changes_with_anything_that_matters() -> None:
    exp = ExperimentConfig.from_dict("cnn2", BASE)
    job = JobSpec("cnn2", 256, 64, (0, 1))
    h = config_hash(exp, job)
    assert h == config_hash(ExperimentConfig.from_dict("cnn2", copy.deepcopy(BASE)), job)
    assert h != config_hash(exp, JobSpec("cnn2", 256, 64, (0, 2)))
    assert h != config_hash(exp, JobSpec("cnn2", 256, 32, (0, 1)))
    assert h != config_hash(ExperimentConfig.from_dict("cnn2", _with("sigma2", 0.2)), job)
    assert h != config_hash(ExperimentConfig.from_dict("cnn2", _with("sampler.steps", 30000)), job)


def test_overrides_and_file(tmp_path) -> None:
    import yaml

    doc = {"results": "results", "experiments": {"cnn2": BASE}}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(doc))
    exp = experiment_from_file(p, "cnn2", ["experiments.cnn2.sampler.steps=2000",
                                           "experiments.cnn2.sampler.schedule.burn_in=500",
                                           "experiments.cnn2.widths=[4, 8]"])
    assert exp.sampler.steps == 2000 and exp.widths == (4, 8)
    with pytest.raises(ValueError, match=r"experiments\.cnn9 does not exist"):
        apply_overrides(doc, ["experiments.cnn9.sigma2=1"])
    with pytest.raises(ValueError, match="key.path=value"):
        apply_overrides(doc, ["sigma2"])
    with pytest.raises(ValueError, match=r"unknown experiment 'fcn3'; allowed: \['cnn2'\]"):
        experiment_from_file(p, "fcn3")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        experiment_from_file(tmp_path / "nope.yaml", "cnn2")
    with pytest.raises(ValueError, match=r"experiments\.cnn2\.sigma2 must be > 0, got -1"):
        experiment_from_file(p, "cnn2", ["experiments.cnn2.sigma2=-1"])
